#include "ipfixweb/flows/writer.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "group_table.hpp"
#include "ipfixweb/shared/name_guard.hpp"
#include "ipfixweb/shared/sqlite.hpp"
#include "packed.hpp"

namespace ipfixweb::flows {

// ---- series ----------------------------------------------------------------------------

void SeriesBuilder::widen(std::uint64_t ts_ms) {
  min_ms_ = std::min(min_ms_, ts_ms);
  max_ms_ = std::max(max_ms_, ts_ms);
  // The buckets the span needs, less one: counting them would overflow for a span of all of
  // time (an IPFIX record from 0 to 2^64 - 1 ms), which then took one bucket of 1 ms and a
  // later record was spread over 10^19 of them. At most 2^53 ms a bucket: no overflow.
  while (max_ms_ / res_ - min_ms_ / res_ >= kMaxBuckets) res_ *= 2;
  update_bounds();
}

void SeriesBuilder::update_bounds() {
  mask_ = ~(res_ - 1);
  shift_ = static_cast<unsigned>(std::countr_zero(res_));
  if (min_ms_ == UINT64_MAX) {
    fit_ms_ = 0;
    return;
  }
  const std::uint64_t first = min_ms_ / res_, room = UINT64_MAX / res_;
  fit_ms_ = room < kMaxBuckets || first > room - kMaxBuckets ? UINT64_MAX
                                                             : (first + kMaxBuckets) * res_ - 1;
}

std::size_t SeriesBuilder::Cells::slot(std::uint64_t k) {
  if ((used_ + 1) * 2 > slots_.size()) grow();
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = (k * 0x9E3779B97F4A7C15ull) >> 20 & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.key == k + 1) return i;
    if (s.key == 0) {
      s.key = k + 1;
      ++used_;
      return i;
    }
  }
}

void SeriesBuilder::Cells::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? kMinSlots : old.size() * 2, Slot{});
  used_ = 0;
  for (const auto& s : old)
    if (s.key) (*this)[s.key - 1] = s.cell;
}

std::uint32_t SeriesBuilder::key_id(Dim dim, std::string_view name) {
  auto& ids = key_ids_[dim];
  const auto it = ids.find(name);
  if (it != ids.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(keys_.size());
  // kKeyMask itself is not an id: pack() of it with an all-ones bucket index would be
  // UINT64_MAX, the key that marks an empty entry (Near, and Cells' key + 1).
  if (id >= kKeyMask) throw Error("flow store: too many distinct series keys");
  keys_.emplace_back(dim, std::string(name));
  ids.emplace(std::string(name), id);
  return id;
}

std::uint32_t SeriesBuilder::app_key(std::string_view app) {
  if (last_app_ == UINT32_MAX || app != last_app_name_) {
    last_app_ = key_id(kApp, app);
    last_app_name_.assign(app);
  }
  return last_app_;
}

void SeriesBuilder::push(std::uint32_t key, std::uint64_t start_ms, const Cell& c) {
  if (totals_res_ != res_) rebucket();
  // A record's pushes come in pairs (its protocol's cell, its application's) and the next
  // record's are often the same cells: the last two are remembered.
  const std::uint64_t k = pack(key, start_ms >> shift_);
  std::size_t i = 0;
  if (near_[0].key == k) {
    i = near_[0].slot;
  } else if (near_[1].key == k) {
    i = near_[1].slot;
  } else {
    const std::size_t slots = totals_.capacity();
    i = totals_.slot(k);
    if (totals_.capacity() != slots) near_[next_ ^ 1u] = Near{};  // cells moved
    near_[next_] = {k, i};
    next_ ^= 1u;
  }
  totals_.cell(i) += c;
}

void SeriesBuilder::rebucket() {
  Cells merged(totals_.capacity());  // as many cells at most: no growing on the way
  totals_.for_each([&](std::uint64_t k, const Cell& c) {
    merged[pack(key_of(k), (k >> 20) * totals_res_ / res_)] += c;
  });
  totals_ = std::move(merged);
  totals_res_ = res_;
  near_[0] = near_[1] = Near{};
}

void SeriesBuilder::on_flow(RecordBuckets& b, std::string_view app, std::uint8_t proto) {
  const std::uint32_t pkey = proto_key(proto);
  const std::uint32_t akey = app.empty() ? UINT32_MAX : app_key(app);
  b.for_each([&](const BucketEntry& e) {
    const Cell c{e.packets, e.bytes, 0};
    push(pkey, e.start_ms, c);
    if (akey != UINT32_MAX) push(akey, e.start_ms, c);
  });
  b.clear();
}

void SeriesBuilder::add_cell(Dim dim, std::string_view key, std::uint64_t bucket_ms,
                             std::uint64_t start_ms, const Cell& c) {
  if (bucket_ms == 0 || bucket_ms > (std::uint64_t{1} << 62))
    throw Error("flow store: a series bucket of " + std::to_string(bucket_ms) + " ms");
  while (res_ < bucket_ms) res_ *= 2;
  update_bounds();
  const std::uint64_t end_ms =
      start_ms > UINT64_MAX - (bucket_ms - 1) ? UINT64_MAX : start_ms + bucket_ms - 1;
  if (start_ms < min_ms_ || start_ms > max_ms_) widen(start_ms);
  if (end_ms > max_ms_) widen(end_ms);
  push(key_id(dim, key), start_ms, c);
}

void SeriesBuilder::count_record(std::uint64_t start_ms, std::string_view app, std::uint8_t proto) {
  if (start_ms < min_ms_ || start_ms > max_ms_) widen(start_ms);
  const Cell c{0, 0, 1};
  push(proto_key(proto), start_ms, c);
  if (!app.empty()) push(app_key(app), start_ms, c);
}

void SeriesBuilder::on_spread_record(std::uint64_t start_ms, std::uint64_t end_ms,
                                     std::uint64_t packets, std::uint64_t bytes,
                                     std::string_view app, std::uint8_t proto) {
  if (end_ms < start_ms) end_ms = start_ms;
  if (start_ms < min_ms_ || start_ms > max_ms_) widen(start_ms);
  if (end_ms > max_ms_) widen(end_ms);
  count_record(start_ms, app, proto);
  // Spread at the current bucket size (a later, coarser size sums these exactly).
  const std::uint64_t first = start_ms / res_, last = end_ms / res_;
  const std::uint64_t n = last - first + 1;
  const std::uint32_t pkey = proto_key(proto);
  const std::uint32_t akey = app.empty() ? UINT32_MAX : app_key(app);
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t p = packets / n + (i < packets % n ? 1 : 0);
    const std::uint64_t y = bytes / n + (i < bytes % n ? 1 : 0);
    if (p == 0 && y == 0) continue;
    const Cell c{p, y, 0};
    push(pkey, (first + i) * res_, c);
    if (akey != UINT32_MAX) push(akey, (first + i) * res_, c);
  }
}

// ---- writer -----------------------------------------------------------------------------

namespace {

constexpr const char* kInsert =
    "INSERT INTO flow_rows(start_ms, end_ms, ip_version, proto, src, dst, src_ip, dst_ip, sport, "
    "dport, vlan, packets, bytes, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, "
    "rev_tcp_flags, icmp_type_code, rev_icmp_type_code, tos, rev_tos, end_reason, app_id, app, "
    "server_name, ja3c, community_id, risk, risk_score, risks, packed) VALUES(?,?,?,?,?,?,?,?,?,?,"
    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

std::string errno_text() { return std::strerror(errno); }

// ---- top groups ------------------------------------------------------------------------------

struct Totals {
  std::uint64_t bytes = 0, packets = 0, flows = 0;
};

// Totals per group of one dimension, the group's key a short byte string. Past kTopMaxGroups
// groups the dimension is given up (overflowed: left out of the top table).
class Groups {
 public:
  void add(std::string_view key, std::uint64_t bytes, std::uint64_t packets) {
    if (overflowed_) return;
    Totals* t = table_.upsert(key, detail::hash_key(key), kTopMaxGroups);
    if (!t) return overflow();
    t->bytes += bytes;
    t->packets += packets;
    ++t->flows;
  }
  bool overflowed() const { return overflowed_; }
  std::size_t size() const { return table_.size(); }
  std::string_view key(std::size_t i) const { return table_.key(i); }
  const Totals& totals(std::size_t i) const { return table_.value(i); }

 private:
  void overflow() {
    overflowed_ = true;
    table_.clear();
  }
  detail::GroupTable<Totals> table_;
  bool overflowed_ = false;
};

// The keys of a row's groups in every dimension (kTopDims order). Byte strings equal exactly
// when the SQL GROUP BY keys are equal: a text or NULL ('\0' NULL, '\1' text), the address's
// version and bytes (its text is a function of them), the port, the protocol number.
class TopBuilder {
 public:
  void add(const FlowRow& r, std::uint64_t bytes, std::uint64_t packets) {
    std::string& k = key_;
    const auto text = [&](bool has, std::string_view v) {
      k.clear();
      if (has && !v.empty()) {
        k.push_back('\1');
        k.append(v);
      } else {
        k.push_back('\0');
      }
    };
    const auto address = [&](const std::array<std::uint8_t, 16>& a) {
      k.push_back(static_cast<char>(r.ip_version));
      const auto* p = reinterpret_cast<const char*>(a.data());
      if (r.ip_version == 4)
        k.append(p + 12, 4);
      else
        k.append(p, 16);
    };
    text(r.has_app, r.app);
    dims_[0].add(k, bytes, packets);
    k.clear();
    address(r.src);
    dims_[1].add(k, bytes, packets);
    const std::size_t src_len = k.size();
    address(r.dst);
    dims_[3].add(k, bytes, packets);
    dims_[2].add(std::string_view(k).substr(src_len), bytes, packets);
    text(true, r.server_name);
    dims_[4].add(k, bytes, packets);
    text(true, r.ja3c);
    dims_[5].add(k, bytes, packets);
    const char port[2] = {static_cast<char>(r.dport >> 8), static_cast<char>(r.dport & 0xff)};
    dims_[6].add(std::string_view(port, 2), bytes, packets);
    const char proto = static_cast<char>(r.proto);
    dims_[7].add(std::string_view(&proto, 1), bytes, packets);
  }
  const Groups& dim(std::size_t i) const { return dims_[i]; }

 private:
  std::array<Groups, kTopDims.size()> dims_;
  std::string key_;
};

// The text order (SQLite's BINARY collation) of the decimal octets 0..255: dotted IPv4
// texts compare as their octets' ranks do, octet by octet (a shorter octet that is a prefix
// of a longer one is followed by '.' or the end, both below any digit).
const std::array<std::uint8_t, 256>& octet_ranks() {
  static const auto ranks = [] {
    std::array<std::string, 256> texts;
    for (int i = 0; i < 256; ++i) texts[static_cast<std::size_t>(i)] = std::to_string(i);
    std::array<std::uint8_t, 256> order{};
    for (int i = 0; i < 256; ++i) order[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    std::sort(order.begin(), order.end(),
              [&](std::uint8_t a, std::uint8_t b) { return texts[a] < texts[b]; });
    std::array<std::uint8_t, 256> r{};
    for (int i = 0; i < 256; ++i)
      r[order[static_cast<std::size_t>(i)]] = static_cast<std::uint8_t>(i);
    return r;
  }();
  return ranks;
}

// The same order for protocol numbers by their names (proto_name).
const std::array<std::uint8_t, 256>& proto_ranks() {
  static const auto ranks = [] {
    std::array<std::uint8_t, 256> order{};
    for (int i = 0; i < 256; ++i) order[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    std::sort(order.begin(), order.end(),
              [](std::uint8_t a, std::uint8_t b) { return proto_name(a) < proto_name(b); });
    std::array<std::uint8_t, 256> r{};
    for (int i = 0; i < 256; ++i)
      r[order[static_cast<std::size_t>(i)]] = static_cast<std::uint8_t>(i);
    return r;
  }();
  return ranks;
}

// An address key (TopBuilder: version byte, then 4 or 16 bytes): its length and its text.
std::size_t address_key_size(std::string_view k) {
  return static_cast<std::uint8_t>(k[0]) == 4 ? 5 : 17;
}
std::string address_key_text(std::string_view k) {
  std::array<std::uint8_t, 16> a{};
  if (k.size() == 5) {
    a[10] = a[11] = 0xff;
    std::memcpy(a.data() + 12, k.data() + 1, 4);
  } else {
    std::memcpy(a.data(), k.data() + 1, 16);
  }
  return address_text(a, static_cast<std::uint8_t>(k[0]));
}
// <0, 0, >0 as the addresses' texts compare.
int compare_addresses(std::string_view a, std::string_view b) {
  if (a.size() == 5 && b.size() == 5) {
    const auto& r = octet_ranks();
    for (std::size_t i = 1; i < 5; ++i) {
      const int x = r[static_cast<std::uint8_t>(a[i])], y = r[static_cast<std::uint8_t>(b[i])];
      if (x != y) return x - y;
    }
    return 0;
  }
  return address_key_text(a).compare(address_key_text(b));
}

// <0, 0, >0 as the groups' keys compare in /top's order (NULL first, then ascending).
int compare_keys(std::size_t dim, std::string_view a, std::string_view b) {
  switch (dim) {
    case 1:  // src
    case 2:  // dst
      return compare_addresses(a, b);
    case 3: {  // pair
      const std::size_t na = address_key_size(a), nb = address_key_size(b);
      if (int c = compare_addresses(a.substr(0, na), b.substr(0, nb))) return c;
      return compare_addresses(a.substr(na), b.substr(nb));
    }
    case 7: {  // proto: by name
      const auto& r = proto_ranks();
      return r[static_cast<std::uint8_t>(a[0])] - r[static_cast<std::uint8_t>(b[0])];
    }
    default:  // text or NULL ('\0' before '\1'), port (big-endian): as bytes
      return a.compare(b);
  }
}

// A group's key(s) as `flows` holds them (NULL, text or the port number), ready to bind to the
// top table's `key` and `key2`: made while the rows are still being committed, bound after.
struct TopKey {
  enum class Kind : std::uint8_t { Null, Text, Int } kind = Kind::Null;
  std::int64_t number = 0;
  std::string text;
  std::optional<std::string> text2;
};

TopKey top_key(std::size_t dim, std::string_view k) {
  TopKey t;
  const auto text = [&](std::string s) {
    t.kind = TopKey::Kind::Text;
    t.text = std::move(s);
  };
  switch (dim) {
    case 1:
    case 2:
      text(address_key_text(k));
      break;
    case 3: {
      const std::size_t n = address_key_size(k);
      text(address_key_text(k.substr(0, n)));
      t.text2 = address_key_text(k.substr(n));
      break;
    }
    case 6:
      t.kind = TopKey::Kind::Int;
      t.number = static_cast<std::uint8_t>(k[0]) << 8 | static_cast<std::uint8_t>(k[1]);
      break;
    case 7:
      text(proto_name(static_cast<std::uint8_t>(k[0])));
      break;
    default:
      if (k[0] != '\0') text(std::string(k.substr(1)));
  }
  return t;
}

// Binds a key to the parameters at+1 (key) and at+2 (key2); `t` outlives the statement's step.
void bind_key(sqlite3_stmt* s, int at, const TopKey& t) {
  switch (t.kind) {
    case TopKey::Kind::Null:
      sqlite3_bind_null(s, at + 1);
      break;
    case TopKey::Kind::Int:
      sqlite3_bind_int64(s, at + 1, t.number);
      break;
    case TopKey::Kind::Text:
      sqlite3_bind_text(s, at + 1, t.text.data(), static_cast<int>(t.text.size()), SQLITE_STATIC);
  }
  if (t.text2)
    sqlite3_bind_text(s, at + 2, t.text2->data(), static_cast<int>(t.text2->size()), SQLITE_STATIC);
  else
    sqlite3_bind_null(s, at + 2);
}

// The top table's rows (schema.hpp), ranked: for each dimension and metric the first kTopK
// groups in /top's order, in the table's primary key order; `dims` names the dimensions
// ranked, comma-separated (meta's top_dims).
struct RankedTop {
  struct Row {
    std::uint32_t dim;
    std::uint32_t metric;
    std::uint32_t rank;  // 1, 2, ...
    TopKey key;
    Totals totals;
  };
  std::vector<Row> rows;
  std::string dims;
};

}  // namespace

// A batch of rows as the writer's thread receives them: each row packed (packed.hpp) one after
// the other, which copies the strings once and is the `packed` column as it is stored.
struct Batch {
  std::string data;
  std::vector<std::uint32_t> ends;  // the end of each row in data
  std::size_t size() const { return ends.size(); }
  void clear() {
    data.clear();
    ends.clear();
  }
};
constexpr std::size_t kBatchRows = 2048;
constexpr std::size_t kMaxQueued = 8;  // batches waiting for the thread
constexpr std::size_t kBatchesPerCommit = 16;
constexpr std::size_t kIdleCommitBatches = 2;

struct Writer::Impl {
  int dir_fd = -1;  // owned when opened here
  bool own_dir = false;
  int file_fd = -1;
  std::string temp;  // name in dir_fd
  std::string final_name;
  std::optional<NameGuard> name_guard;  // what was under final_name as the writer was made
  [[noreturn]] void replaced(const std::string& name) const {
    throw Replaced("not publishing flow store '" + name +
                   "': another writer put a file under that name while this one was written; "
                   "that file stays");
  }
  // Commit's last step (the class comment in writer.hpp): link when the name was free, else
  // check and rename.
  void put_in_place(const std::string& name) {
    switch (name_guard->link_if_free(dir_fd, temp, 0)) {
      case NameGuard::Link::Linked:
        ::unlinkat(dir_fd, temp.c_str(), 0);
        return;
      case NameGuard::Link::Taken:
        replaced(name);
      case NameGuard::Link::NotLinked:
        break;
    }
    if (name_guard->replaced()) replaced(name);
    if (::renameat(dir_fd, temp.c_str(), dir_fd, final_name.c_str()) != 0)
      fail("cannot rename it into place: " + errno_text(), name);
  }
  sqlite3* db = nullptr;
  sqlite3_stmt* insert = nullptr;

  // The inserting thread and what it is given.
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Batch> queue;
  std::vector<Batch> spare;     // emptied batches for reuse
  Batch current;                // being filled by add()
  bool closing = false;         // no more batches
  bool stop = false;            // abandon what is queued
  std::string error;            // the first insert failure
  std::size_t batches = 0;      // inserted by the thread
  std::size_t uncommitted = 0;  // batches inserted since the last commit (the thread's)
  TopBuilder top;               // the thread's: the groups of every row inserted
  FlowRow row;                  // the thread's: the row being inserted

  void insert_row(const FlowRow& r, std::string_view packed);
  void write_top(const RankedTop& ranked, const std::string& name);
  void run() {
    for (;;) {
      Batch b;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || closing || !queue.empty(); });
        if (stop || (queue.empty() && closing)) return;
        b = std::move(queue.front());
        queue.pop_front();
      }
      cv.notify_all();
      if (error.empty()) {
        try {
          insert_batch(b);
          // Hand the pages to the kernel as they fill and have it start writing them back,
          // so the commit and fsync at the end find little left to do: whenever the thread
          // has caught up (it waits for the next batch anyway), at least every
          // kBatchesPerCommit batches.
          ++batches;
          ++uncommitted;
          bool idle = false;
          {
            std::lock_guard lock(mu);
            idle = queue.empty() && !closing;
          }
          if (uncommitted >= kBatchesPerCommit || (idle && uncommitted >= kIdleCommitBatches)) {
            exec("COMMIT; BEGIN", final_name);
            ::sync_file_range(file_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            uncommitted = 0;
          }
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          error = e.what();
        }
      }
      std::lock_guard lock(mu);
      spare.push_back(std::move(b));
    }
  }
  // The rows of a batch (the thread's, or the committing thread's when there is none).
  void insert_batch(const Batch& b) {
    std::size_t begin = 0;
    for (const std::uint32_t end : b.ends) {
      const std::string_view p(b.data.data() + begin, end - begin);
      std::size_t stored = 0;
      if (!packed::decode(p.data(), p.size(), row, &stored)) throw Error("flow store: bad batch");
      insert_row(row, p.substr(0, stored));
      begin = end;
    }
  }
  // The thread starts with the first full batch: a store of fewer rows (a tiny task's) is
  // written by the thread that commits it, without a thread of its own.
  void hand_over() {
    if (!thread.joinable()) thread = std::thread([this] { run(); });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return queue.size() < kMaxQueued; });
    queue.push_back(std::move(current));
    if (!spare.empty()) {
      current = std::move(spare.back());
      spare.pop_back();
    } else {
      current = Batch();
    }
    current.clear();
    lock.unlock();
    cv.notify_all();
  }
  // Ends the thread: after the queued batches (finish) or at once (abandon).
  void end_thread(bool finish) noexcept {
    if (!thread.joinable()) return;
    {
      std::lock_guard lock(mu);
      (finish ? closing : stop) = true;
    }
    cv.notify_all();
    thread.join();
  }
  std::string first_error() {
    std::lock_guard lock(mu);
    return error;
  }

  [[noreturn]] void fail(const std::string& what, const std::string& name) const {
    throw Error("flow store '" + name + "': " + what);
  }
  // SQLite's message, and the system's word for the error behind it when there is one
  // ("unable to open database file (No space left on device)"): the worker tells a full disk
  // from a task's own failure by it.
  void check(int rc, const char* what, const std::string& name) const {
    if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return;
    std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (const int e = db ? sqlite3_system_errno(db) : 0; e != 0)
      why += std::string(" (") + std::strerror(e) + ")";
    fail(std::string(what) + ": " + why, name);
  }
  // Inserts n rows of `columns` values each into `table`, kRowsPerInsert rows per statement
  // (the small tables written at commit, series and top, go in at about twice the rate of one
  // row per statement). bind(stmt, i, at) binds row i's values to parameters at+1, at+2, ...
  template <class Bind>
  void insert_rows(const char* table, int columns, std::size_t n, Bind&& bind, const char* what,
                   const std::string& name) {
    constexpr std::size_t kRowsPerInsert = 16;
    const auto run = [&](std::size_t first, std::size_t end, std::size_t per) {
      std::string sql = std::string("INSERT INTO ") + table + " VALUES";
      for (std::size_t r = 0; r < per; ++r) {
        sql += r ? ",(" : "(";
        for (int c = 0; c < columns; ++c) sql += c ? ",?" : "?";
        sql += ')';
      }
      sqlite3_stmt* st = nullptr;
      check(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), "prepare", name);
      std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(st, sqlite3_finalize);
      for (std::size_t i = first; i < end; i += per) {
        for (std::size_t r = 0; r < per; ++r) bind(st, i + r, static_cast<int>(r) * columns);
        const int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) check(rc, what, name);
      }
    };
    // A few rows (a tiny task's) go one per statement: preparing the long statements would
    // cost more than they save.
    if (n < 4 * kRowsPerInsert) return run(0, n, 1);
    const std::size_t full = n / kRowsPerInsert * kRowsPerInsert;
    run(0, full, kRowsPerInsert);
    if (n > full) run(full, n, n - full);
  }
  void exec(const std::string& sql, const std::string& name) const {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "failed";
      sqlite3_free(err);
      fail(m, name);
    }
  }
  void close_db() noexcept {
    end_thread(false);
    if (insert) sqlite3_finalize(insert);
    insert = nullptr;
    if (db) sqlite3_close_v2(db);
    db = nullptr;
  }
};

namespace {

// The bytes of an empty store (its schema, with or without the indexes), made once per process
// in SQLite's in-memory database and written into each new store's file. Creating the schema
// from its SQL cost ~0.35 ms of CPU per store (a third of what a tiny task's store costs); a
// store opened on the image costs ~0.12 ms. Throws Error.
const std::string& empty_store_image(bool indexes, std::uint32_t page_size) {
  static std::mutex mu;
  static std::map<std::pair<bool, std::uint32_t>, std::string> images;
  const std::lock_guard lock(mu);
  std::string& image = images[{indexes, page_size}];
  if (!image.empty()) return image;
  sqlite3* db = nullptr;
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(nullptr, sqlite3_close);
  const auto check = [&](int rc, const char* what) {
    if (rc != SQLITE_OK)
      throw Error(std::string("flow store: the empty store's ") + what + ": " +
                  (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  };
  ipfixweb::db::configure_process();
  check(sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr),
        "open");
  guard.reset(db);
  std::string sql =
      "PRAGMA page_size=" + std::to_string(page_size) + "; BEGIN;\n" + create_tables_sql();
  if (indexes) sql += create_indexes_sql();
  sql += "COMMIT;";
  check(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), "schema");
  sqlite3_int64 size = 0;
  unsigned char* bytes = sqlite3_serialize(db, "main", &size, 0);
  if (!bytes || size <= 0) throw Error("flow store: the empty store's image: out of memory");
  image.assign(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(size));
  sqlite3_free(bytes);
  return image;
}

}  // namespace

Writer::Writer(WriterConfig cfg) : cfg_(std::move(cfg)), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string& name = cfg_.name;
  if (name.empty()) throw Error("flow store: no file name given");
  if (cfg_.page_size < 512 || cfg_.page_size > 65536 || (cfg_.page_size & (cfg_.page_size - 1)))
    throw Error("flow store: a page size of " + std::to_string(cfg_.page_size) +
                " bytes (a power of two from 512 to 65536)");
  if (cfg_.dir_fd >= 0) {
    m.dir_fd = cfg_.dir_fd;
    m.final_name = name;
  } else {
    const auto slash = name.rfind('/');
    const std::string dir =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : name.substr(0, slash));
    m.final_name = slash == std::string::npos ? name : name.substr(slash + 1);
    m.dir_fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (m.dir_fd < 0) m.fail("cannot open its directory: " + errno_text(), name);
    m.own_dir = true;
  }
  m.name_guard.emplace(m.dir_fd, m.final_name);
  m.temp = m.final_name + cfg_.temp_suffix;
  if (cfg_.temp_suffix.empty()) m.temp += ".tmp";
  for (int attempt = 0; attempt < 2 && m.file_fd < 0; ++attempt) {
    m.file_fd = ::openat(m.dir_fd, m.temp.c_str(),
                         O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (m.file_fd < 0 && errno == EEXIST) ::unlinkat(m.dir_fd, m.temp.c_str(), 0);  // a leftover
  }
  if (m.file_fd < 0) {
    const std::string e = errno_text();
    if (m.own_dir) ::close(m.dir_fd);
    m.fail("cannot create its temporary file: " + e, name);
  }
  try {
    // The empty store's bytes first (the schema), then SQLite opens the file we just created
    // through its descriptor's /proc link, so the name cannot be swapped for a link elsewhere
    // between creating and opening it.
    const std::string& image = empty_store_image(!cfg_.indexes_last, cfg_.page_size);
    for (std::size_t done = 0; done < image.size();) {
      const ssize_t w =
          ::pwrite(m.file_fd, image.data() + done, image.size() - done, static_cast<off_t>(done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) m.fail("cannot write its schema: " + errno_text(), name);
      done += static_cast<std::size_t>(w);
    }
    const std::string path = "/proc/self/fd/" + std::to_string(m.file_fd);
    ipfixweb::db::configure_process();
    const int rc =
        sqlite3_open_v2(path.c_str(), &m.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    m.check(rc, "cannot open", name);
    m.exec(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE; "
        "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-131072;",
        name);
    m.exec("BEGIN", name);
    m.check(sqlite3_prepare_v3(m.db, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &m.insert, nullptr),
            "prepare", name);
  } catch (...) {
    abort();
    throw;
  }
}

Writer::~Writer() {
  if (!committed_) abort();
}

void Writer::abort() noexcept {
  Impl& m = *impl_;
  m.close_db();
  if (m.file_fd >= 0) {
    ::close(m.file_fd);
    m.file_fd = -1;
    ::unlinkat(m.dir_fd, m.temp.c_str(), 0);
  }
  if (m.own_dir && m.dir_fd >= 0) ::close(m.dir_fd);
  m.dir_fd = -1;
}

namespace {

inline void bind_text(sqlite3_stmt* s, int i, std::string_view v) {
  if (v.empty())
    sqlite3_bind_null(s, i);
  else
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}
inline void bind_u64(sqlite3_stmt* s, int i, std::uint64_t v) {
  sqlite3_bind_int64(s, i, static_cast<sqlite3_int64>(v));
}

}  // namespace

void Writer::Impl::insert_row(const FlowRow& r, std::string_view packed) {
  sqlite3_stmt* s = insert;
  const std::string src = address_text(r.src, r.ip_version);
  const std::string dst = address_text(r.dst, r.ip_version);
  int i = 1;
  bind_u64(s, i++, r.start_ms);
  bind_u64(s, i++, r.end_ms);
  bind_u64(s, i++, r.ip_version);
  bind_u64(s, i++, r.proto);
  bind_text(s, i++, src);
  bind_text(s, i++, dst);
  sqlite3_bind_blob(s, i++, r.src.data(), 16, SQLITE_STATIC);
  sqlite3_bind_blob(s, i++, r.dst.data(), 16, SQLITE_STATIC);
  bind_u64(s, i++, r.sport);
  bind_u64(s, i++, r.dport);
  bind_u64(s, i++, r.vlan);
  const std::uint64_t packets = r.fwd_packets + (r.has_rev ? r.rev_packets : 0);
  const std::uint64_t bytes = r.fwd_bytes + (r.has_rev ? r.rev_bytes : 0);
  bind_u64(s, i++, packets);
  bind_u64(s, i++, bytes);
  bind_u64(s, i++, r.fwd_packets);
  bind_u64(s, i++, r.fwd_bytes);
  const auto opt = [&](bool has, std::uint64_t v) {
    if (has)
      bind_u64(s, i++, v);
    else
      sqlite3_bind_null(s, i++);
  };
  opt(r.has_rev, r.rev_packets);
  opt(r.has_rev, r.rev_bytes);
  opt(r.has_flags, r.tcp_flags);
  opt(r.has_flags && r.has_rev, r.rev_tcp_flags);
  opt(r.has_flags, r.icmp_type_code);
  opt(r.has_flags && r.has_rev, r.rev_icmp_type_code);
  opt(r.has_flags, r.tos);
  opt(r.has_flags && r.has_rev, r.rev_tos);
  opt(r.end_reason != 0, r.end_reason);
  opt(r.has_app, r.app_id);
  if (r.has_app)
    bind_text(s, i++, r.app);
  else
    sqlite3_bind_null(s, i++);
  bind_text(s, i++, r.server_name);
  bind_text(s, i++, r.ja3c);
  bind_text(s, i++, r.community_id);
  opt(r.has_app, r.risk);
  opt(r.has_app, r.risk_score);
  bind_text(s, i++, r.risks);
  sqlite3_bind_blob(s, i++, packed.data(), static_cast<int>(packed.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) check(rc, "insert", final_name);
  top.add(r, bytes, packets);
}

namespace {

// Ranks the groups of `top` (pure: runs on a thread of its own beside the last inserts).
RankedTop rank_top(const TopBuilder& top) {
  static_assert(kMetrics.size() == 3 && kMetrics[0] == "bytes" && kMetrics[1] == "packets" &&
                kMetrics[2] == "flows");  // the order of `value` below
  struct Ranked {
    std::uint32_t dim;
    std::uint32_t metric;
    std::uint32_t rank;   // 1, 2, ...
    std::uint32_t group;  // in top.dim(dim)
  };
  std::vector<Ranked> ranked;
  RankedTop out;
  std::vector<std::uint32_t> order;
  for (std::size_t d = 0; d < kTopDims.size(); ++d) {
    const Groups& g = top.dim(d);
    if (g.overflowed()) continue;
    if (!out.dims.empty()) out.dims += ',';
    out.dims += kTopDims[d];
    for (int metric = 0; metric < 3; ++metric) {
      const auto value = [&](std::uint32_t i) {
        const Totals& t = g.totals(i);
        return metric == 0 ? t.bytes : metric == 1 ? t.packets : t.flows;
      };
      const auto before = [&](std::uint32_t a, std::uint32_t b) {
        const std::uint64_t x = value(a), y = value(b);
        if (x != y) return x > y;
        return compare_keys(d, g.key(a), g.key(b)) < 0;
      };
      // Only groups whose value reaches the kTopK-th largest can be among the first kTopK
      // (the keys decide among those equal to it).
      order.resize(g.size());
      for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
      const auto k = static_cast<std::size_t>(kTopK);
      if (order.size() > k) {
        std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k - 1),
                         order.end(),
                         [&](std::uint32_t a, std::uint32_t b) { return value(a) > value(b); });
        const std::uint64_t threshold = value(order[k - 1]);
        order.erase(std::remove_if(order.begin(), order.end(),
                                   [&](std::uint32_t i) { return value(i) < threshold; }),
                    order.end());
      }
      const std::size_t n = std::min(k, order.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                        before);
      for (std::size_t r = 0; r < n; ++r)
        ranked.push_back({static_cast<std::uint32_t>(d), static_cast<std::uint32_t>(metric),
                          static_cast<std::uint32_t>(r + 1), order[r]});
    }
  }
  // In primary key order (dim, metric, rank by their texts): appended, not inserted all over
  // the table.
  std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    if (a.dim != b.dim) return kTopDims[a.dim] < kTopDims[b.dim];
    return kMetrics[a.metric] < kMetrics[b.metric];
  });
  out.rows.reserve(ranked.size());
  for (const Ranked& r : ranked) {
    const Groups& g = top.dim(r.dim);
    out.rows.push_back(
        {r.dim, r.metric, r.rank, top_key(r.dim, g.key(r.group)), g.totals(r.group)});
  }
  return out;
}

}  // namespace

void Writer::Impl::write_top(const RankedTop& ranked, const std::string& name) {
  insert_rows(
      "top", 8, ranked.rows.size(),
      [&](sqlite3_stmt* s, std::size_t i, int at) {
        const RankedTop::Row& r = ranked.rows[i];
        const std::string_view dim = kTopDims[r.dim], metric = kMetrics[r.metric];
        sqlite3_bind_text(s, at + 1, dim.data(), static_cast<int>(dim.size()), SQLITE_STATIC);
        sqlite3_bind_text(s, at + 2, metric.data(), static_cast<int>(metric.size()), SQLITE_STATIC);
        sqlite3_bind_int64(s, at + 3, r.rank);
        bind_key(s, at + 3, r.key);
        bind_u64(s, at + 6, r.totals.bytes);
        bind_u64(s, at + 7, r.totals.packets);
        bind_u64(s, at + 8, r.totals.flows);
      },
      "top", name);
}

void Writer::add(const FlowRow& r) {
  Impl& m = *impl_;
  if (m.current.size() == kBatchRows) {
    const std::string e = m.first_error();
    if (!e.empty()) throw Error(e);
    m.hand_over();
  }
  packed::encode(m.current.data, r);
  m.current.ends.push_back(static_cast<std::uint32_t>(m.current.data.size()));
  ++rows_;
  packets_ += r.fwd_packets + (r.has_rev ? r.rev_packets : 0);
  bytes_ += r.fwd_bytes + (r.has_rev ? r.rev_bytes : 0);
  first_ms_ = std::min(first_ms_, r.start_ms);
  last_ms_ = std::max(last_ms_, r.end_ms);
}

void Writer::commit(const std::function<void()>& before_rename) {
  Impl& m = *impl_;
  const std::string& name = cfg_.name;
  const bool timing = std::getenv("IPFIXWEB_FLOWS_TIMING") != nullptr;
  auto t0 = std::chrono::steady_clock::now();
  // Wall time and this thread's CPU time of each step (the CPU time tells a step's own cost
  // on a busy machine).
  const auto cpu_ms = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
  };
  double c0 = timing ? cpu_ms() : 0;
  const auto lap = [&](const char* what) {
    if (!timing) return;
    const auto t = std::chrono::steady_clock::now();
    const double c = cpu_ms();
    std::fprintf(stderr, "flows commit: %s %.1f ms (cpu %.1f ms)\n", what,
                 std::chrono::duration<double, std::milli>(t - t0).count(), c - c0);
    t0 = t;
    c0 = c;
  };
  try {
    const bool threaded = m.thread.joinable();
    if (m.current.size() && threaded) m.hand_over();
    // The series are summed and sorted here while the thread inserts its last batches.
    struct SeriesRow {
      const char* dim;
      const std::string* key;
      std::uint64_t start;
      SeriesBuilder::Cell cell;
    };
    std::vector<SeriesRow> series_rows;
    series_.for_each([&](SeriesBuilder::Dim dim, const std::string& key, std::uint64_t start,
                         const SeriesBuilder::Cell& c) {
      series_rows.push_back({dim == SeriesBuilder::kApp ? "app" : "proto", &key, start, c});
    });
    // In primary key order: appended, not inserted all over the table.
    std::sort(series_rows.begin(), series_rows.end(), [](const SeriesRow& a, const SeriesRow& b) {
      if (int c = std::strcmp(a.dim, b.dim)) return c < 0;
      if (*a.key != *b.key) return *a.key < *b.key;
      return a.start < b.start;
    });
    lap("series summed and sorted");
    if (threaded) {
      m.end_thread(true);
      lap("writer thread caught up");
      if (!m.error.empty()) throw Error(m.error);
    } else if (m.current.size()) {
      m.insert_batch(m.current);
      lap("rows inserted");
    }
    // The top table is ranked from the groups the rows gave (the writer's thread is done with
    // them) while the rows are committed and the series inserted: on a thread of its own for a
    // large store (~5 ms for the benchmark capture's 15,591 top rows), here for a small one.
    RankedTop ranked;
    bool ranked_there = false;  // by the thread below, which is joined before `ranked` is read
    std::jthread ranker;
    if (threaded) {
      try {
        ranker = std::jthread([&m, &ranked, &ranked_there] {
          try {
            ranked = rank_top(m.top);
            ranked_there = true;
          } catch (...) {  // ranked again below, where a failure can be thrown
          }
        });
      } catch (const std::system_error&) {  // no thread to be had: ranked below
      }
    }
    // A large store's last rows go to the kernel now and are written back (a thread of its
    // own starts that: it can block for milliseconds) while the series and the top table are
    // inserted: the final fsync then waits for those only. (A small store's fsync is short.)
    std::jthread writeback;
    if (cfg_.sync && !cfg_.indexes_last && m.batches >= kBatchesPerCommit) {
      m.exec("COMMIT; BEGIN", name);
      try {
        writeback =
            std::jthread([fd = m.file_fd] { ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); });
      } catch (const std::system_error&) {  // no thread to be had: the fsync does it all
      }
      lap("rows committed");
    }
    if (cfg_.indexes_last) {
      m.exec("PRAGMA threads=4", name);
      m.exec(create_indexes_sql(), name);
      lap("indexes built");
    }
    sqlite3_finalize(m.insert);
    m.insert = nullptr;
    m.insert_rows(
        "series", 6, series_rows.size(),
        [&](sqlite3_stmt* s, std::size_t i, int at) {
          const SeriesRow& r = series_rows[i];
          sqlite3_bind_text(s, at + 1, r.dim, -1, SQLITE_STATIC);
          sqlite3_bind_text(s, at + 2, r.key->data(), static_cast<int>(r.key->size()),
                            SQLITE_STATIC);
          bind_u64(s, at + 3, r.start);
          bind_u64(s, at + 4, r.cell.packets);
          bind_u64(s, at + 5, r.cell.bytes);
          bind_u64(s, at + 6, r.cell.flows);
        },
        "series", name);
    lap("series inserted");
    if (ranker.joinable()) ranker.join();
    if (!ranked_there) ranked = rank_top(m.top);
    lap("top ranked");
    m.write_top(ranked, name);
    const std::string& top_dims = ranked.dims;
    lap("top inserted");
    // meta
    char created[32] = {};
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    std::strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const bool any = rows_ > 0;
    std::string meta = "INSERT INTO meta VALUES('format','" + std::string(kFormat) + "'),";
    meta += "('version'," + std::to_string(kVersion) + "),";
    meta += "('source','" + (cfg_.source == "ipfix" ? std::string("ipfix") : "pcap") + "'),";
    meta += "('biflow'," + std::string(cfg_.biflow ? "1" : "0") + "),";
    meta += "('dpi'," + std::string(cfg_.dpi ? "1" : "0") + "),";
    meta += "('bucket_ms'," + std::to_string(series_.bucket_ms()) + "),";
    meta += "('first_ms'," + std::to_string(any ? first_ms_ : 0) + "),";
    meta += "('last_ms'," + std::to_string(any ? last_ms_ : 0) + "),";
    meta += "('flows'," + std::to_string(rows_) + "),";
    meta += "('packets'," + std::to_string(packets_) + "),";
    meta += "('bytes'," + std::to_string(bytes_) + "),";
    meta += "('created_at','" + std::string(created) + "'),";
    meta += "('top_k'," + std::to_string(kTopK) + "),";
    meta += "('top_dims','" + top_dims + "')";
    m.exec(meta, name);
    lap("meta");
    m.exec("COMMIT", name);
    lap("commit");
    m.exec("PRAGMA optimize", name);
    const int rc = sqlite3_close(m.db);
    m.db = nullptr;
    if (rc != SQLITE_OK) m.fail(std::string("close: ") + sqlite3_errstr(rc), name);
    lap("optimize and close");
    if (writeback.joinable()) writeback.join();
    if (cfg_.sync && ::fsync(m.file_fd) != 0) m.fail("fsync: " + errno_text(), name);
    lap("fsync");
    if (before_rename) before_rename();
    m.put_in_place(name);
    committed_ = true;
    ::close(m.file_fd);
    m.file_fd = -1;
    if (cfg_.sync_dir) {
      const int d = ::openat(m.dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (d >= 0) {
        ::fsync(d);
        ::close(d);
      }
    }
    if (m.own_dir) ::close(m.dir_fd);
    m.dir_fd = -1;
  } catch (...) {
    abort();
    throw;
  }
}

}  // namespace ipfixweb::flows

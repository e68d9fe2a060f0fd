#include "ipfixweb/flows/writer.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>

namespace ipfixweb::flows {

// ---- series ----------------------------------------------------------------------------

void SeriesBuilder::widen(std::uint64_t ts_ms) {
  min_ms_ = std::min(min_ms_, ts_ms);
  max_ms_ = std::max(max_ms_, ts_ms);
  while ((max_ms_ / res_ - min_ms_ / res_) + 1 > kMaxBuckets) res_ *= 2;
}

SeriesBuilder::Cell& SeriesBuilder::Cells::operator[](std::uint64_t k) {
  if ((used_ + 1) * 2 > slots_.size()) grow();
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = (k * 0x9E3779B97F4A7C15ull) >> 20 & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.key == k + 1) return s.cell;
    if (s.key == 0) {
      s.key = k + 1;
      ++used_;
      return s.cell;
    }
  }
}

void SeriesBuilder::Cells::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  used_ = 0;
  for (const auto& s : old)
    if (s.key) (*this)[s.key - 1] = s.cell;
}

std::uint32_t SeriesBuilder::key_id(Dim dim, std::string_view name) {
  auto& ids = key_ids_[dim];
  const auto it = ids.find(name);
  if (it != ids.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(keys_.size());
  if (id > kKeyMask) throw Error("flow store: too many distinct series keys");
  keys_.emplace_back(dim, std::string(name));
  ids.emplace(std::string(name), id);
  return id;
}

void SeriesBuilder::push(std::uint32_t key, std::uint64_t start_ms, const Cell& c) {
  pending_.push_back({key, start_ms, c});
  if (pending_.size() >= (1u << 20)) fold();
}

void SeriesBuilder::fold() {
  if (totals_res_ != res_) {
    Cells merged;
    totals_.for_each([&](std::uint64_t k, const Cell& c) {
      Cell& m = merged[pack(key_of(k), (k >> 20) * totals_res_ / res_)];
      m.packets += c.packets;
      m.bytes += c.bytes;
      m.flows += c.flows;
    });
    totals_ = std::move(merged);
    totals_res_ = res_;
  }
  for (const auto& p : pending_) {
    Cell& m = totals_[pack(p.key, p.start_ms / res_)];
    m.packets += p.cell.packets;
    m.bytes += p.cell.bytes;
    m.flows += p.cell.flows;
  }
  pending_.clear();
}

void SeriesBuilder::on_flow(RecordBuckets& b, std::string_view app, std::uint8_t proto) {
  const std::uint32_t pkey = proto_key(proto);
  std::uint32_t akey = UINT32_MAX;
  if (!app.empty()) {
    if (last_app_ == UINT32_MAX || app != last_app_name_) {
      last_app_ = key_id(kApp, app);
      last_app_name_.assign(app);
    }
    akey = last_app_;
  }
  b.for_each([&](const BucketEntry& e) {
    const Cell c{e.packets, e.bytes, 0};
    push(pkey, e.start_ms, c);
    if (akey != UINT32_MAX) push(akey, e.start_ms, c);
  });
  b.clear();
}

void SeriesBuilder::count_record(std::uint64_t start_ms, std::string_view app, std::uint8_t proto) {
  if (start_ms < min_ms_ || start_ms > max_ms_) widen(start_ms);
  const Cell c{0, 0, 1};
  push(proto_key(proto), start_ms, c);
  if (!app.empty()) push(key_id(kApp, app), start_ms, c);
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
  const std::uint32_t akey = app.empty() ? UINT32_MAX : key_id(kApp, app);
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
    "server_name, ja3c, community_id, risk, risk_score, risks) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,"
    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// A row as the writer's thread receives it: the strings copied.
struct OwnedRow {
  FlowRow row;
  std::string app, server_name, ja3c, community_id, risks;
  void set(const FlowRow& r) {
    row = r;
    app.assign(r.app);
    server_name.assign(r.server_name);
    ja3c.assign(r.ja3c);
    community_id.assign(r.community_id);
    risks.assign(r.risks);
    row.app = app;
    row.server_name = server_name;
    row.ja3c = ja3c;
    row.community_id = community_id;
    row.risks = risks;
  }
};
using Batch = std::vector<OwnedRow>;
constexpr std::size_t kBatchRows = 2048;
constexpr std::size_t kMaxQueued = 8;  // batches waiting for the thread
constexpr std::size_t kBatchesPerCommit = 16;

struct Writer::Impl {
  int dir_fd = -1;  // owned when opened here
  bool own_dir = false;
  int file_fd = -1;
  std::string temp;  // name in dir_fd
  std::string final_name;
  sqlite3* db = nullptr;
  sqlite3_stmt* insert = nullptr;

  // The inserting thread and what it is given.
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Batch> queue;
  std::vector<Batch> spare;  // emptied batches for reuse
  Batch current;             // being filled by add()
  std::size_t used = 0;      // rows of `current` in use
  bool closing = false;      // no more batches
  bool stop = false;         // abandon what is queued
  std::string error;         // the first insert failure
  std::size_t batches = 0;   // inserted by the thread

  void insert_row(const FlowRow& r);
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
          for (const auto& r : b) insert_row(r.row);
          // Hand the pages to the kernel as they fill and have it start writing them back,
          // so the commit and fsync at the end find little left to do.
          if (++batches % kBatchesPerCommit == 0) {
            exec("COMMIT; BEGIN", final_name);
            ::sync_file_range(file_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
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
  void hand_over() {
    current.resize(used);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return queue.size() < kMaxQueued; });
    queue.push_back(std::move(current));
    if (!spare.empty()) {
      current = std::move(spare.back());
      spare.pop_back();
    } else {
      current = Batch();
    }
    used = 0;
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
  void check(int rc, const char* what, const std::string& name) const {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
      fail(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)), name);
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

Writer::Writer(WriterConfig cfg) : cfg_(std::move(cfg)), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string& name = cfg_.name;
  if (name.empty()) throw Error("flow store: no file name given");
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
    // SQLite opens the file we just created through its descriptor's /proc link, so the
    // name cannot be swapped for a link elsewhere between creating and opening it.
    const std::string path = "/proc/self/fd/" + std::to_string(m.file_fd);
    const int rc =
        sqlite3_open_v2(path.c_str(), &m.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    m.check(rc, "cannot open", name);
    m.exec(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE; "
        "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-131072; PRAGMA page_size=4096;",
        name);
    // The schema in the same transaction as the rows: one write of its pages, at the first
    // commit, instead of a transaction (and writes) per CREATE statement (2 ms per store).
    m.exec("BEGIN", name);
    m.exec(create_tables_sql(), name);
    m.exec(create_indexes_sql(), name);
    m.check(sqlite3_prepare_v3(m.db, kInsert, -1, SQLITE_PREPARE_PERSISTENT, &m.insert, nullptr),
            "prepare", name);
    m.current.resize(kBatchRows);
    m.thread = std::thread([&m] { m.run(); });
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

void Writer::Impl::insert_row(const FlowRow& r) {
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
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) check(rc, "insert", final_name);
}

void Writer::add(const FlowRow& r) {
  Impl& m = *impl_;
  if (m.used == m.current.size()) {
    const std::string e = m.first_error();
    if (!e.empty()) throw Error(e);
    m.hand_over();
    if (m.current.size() < kBatchRows) m.current.resize(kBatchRows);
  }
  m.current[m.used++].set(r);
  ++rows_;
  packets_ += r.fwd_packets + (r.has_rev ? r.rev_packets : 0);
  bytes_ += r.fwd_bytes + (r.has_rev ? r.rev_bytes : 0);
  first_ms_ = std::min(first_ms_, r.start_ms);
  last_ms_ = std::max(last_ms_, r.end_ms);
}

void Writer::commit() {
  Impl& m = *impl_;
  const std::string& name = cfg_.name;
  const bool timing = std::getenv("IPFIXWEB_FLOWS_TIMING") != nullptr;
  auto t0 = std::chrono::steady_clock::now();
  const auto lap = [&](const char* what) {
    if (!timing) return;
    const auto t = std::chrono::steady_clock::now();
    std::fprintf(stderr, "flows commit: %s %.1f ms\n", what,
                 std::chrono::duration<double, std::milli>(t - t0).count());
    t0 = t;
  };
  try {
    if (m.used) m.hand_over();
    m.end_thread(true);
    lap("writer thread caught up");
    if (!m.error.empty()) throw Error(m.error);
    sqlite3_finalize(m.insert);
    m.insert = nullptr;
    // The series.
    sqlite3_stmt* s = nullptr;
    m.check(sqlite3_prepare_v2(m.db, "INSERT INTO series VALUES(?,?,?,?,?,?)", -1, &s, nullptr),
            "prepare", name);
    std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(s, sqlite3_finalize);
    // In primary key order: appended, not inserted all over the table.
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
    lap("series summed");
    std::sort(series_rows.begin(), series_rows.end(), [](const SeriesRow& a, const SeriesRow& b) {
      if (int c = std::strcmp(a.dim, b.dim)) return c < 0;
      if (*a.key != *b.key) return *a.key < *b.key;
      return a.start < b.start;
    });
    lap("series sorted");
    for (const auto& r : series_rows) {
      sqlite3_bind_text(s, 1, r.dim, -1, SQLITE_STATIC);
      sqlite3_bind_text(s, 2, r.key->data(), static_cast<int>(r.key->size()), SQLITE_STATIC);
      bind_u64(s, 3, r.start);
      bind_u64(s, 4, r.cell.packets);
      bind_u64(s, 5, r.cell.bytes);
      bind_u64(s, 6, r.cell.flows);
      const int rc = sqlite3_step(s);
      sqlite3_reset(s);
      if (rc != SQLITE_DONE) m.check(rc, "series", name);
    }
    guard.reset();
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
    meta += "('created_at','" + std::string(created) + "')";
    m.exec(meta, name);
    lap("series and meta");
    m.exec("COMMIT", name);
    lap("commit");
    m.exec("PRAGMA optimize", name);
    const int rc = sqlite3_close(m.db);
    m.db = nullptr;
    if (rc != SQLITE_OK) m.fail(std::string("close: ") + sqlite3_errstr(rc), name);
    lap("optimize and close");
    if (cfg_.sync && ::fsync(m.file_fd) != 0) m.fail("fsync: " + errno_text(), name);
    lap("fsync");
    if (::renameat(m.dir_fd, m.temp.c_str(), m.dir_fd, m.final_name.c_str()) != 0)
      m.fail("cannot rename it into place: " + errno_text(), name);
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

// Writes a flow store (schema.hpp): rows as they come, the time series, then indexes and
// meta, and publishes the file the way the engine publishes its IPFIX file: written under a
// temporary name in the target directory, synced, then renamed over the final name. A
// writer destroyed without commit() removes its temporary file.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ipfixweb/flows/schema.hpp"

namespace ipfixweb::flows {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by Writer::commit when another writer put a different file under the store's name
// while this one was written: nothing is renamed (the temporary goes).
class Replaced : public Error {
 public:
  using Error::Error;
};

// The time buckets one record's packets fell into, kept on the flow while it is metered
// (most records touch one or two buckets: the first entry is inline).
struct BucketEntry {
  std::uint64_t start_ms = 0;  // bucket start at the resolution in force when it was added
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};
class RecordBuckets {
 public:
  void clear() {
    used_ = false;
    more_.clear();
  }
  template <class F>
  void for_each(F&& f) const {
    if (!used_) return;
    f(first_);
    for (const auto& e : more_) f(e);
  }

 private:
  friend class SeriesBuilder;
  BucketEntry* last() { return more_.empty() ? (used_ ? &first_ : nullptr) : &more_.back(); }
  BucketEntry first_;
  bool used_ = false;
  std::vector<BucketEntry> more_;
};

// Packets, bytes and flows per time bucket by application and by IP protocol. The bucket
// size starts at 1 ms and doubles whenever the span seen so far needs more than kMaxBuckets
// buckets, so the whole capture ends up in at most kMaxBuckets buckets of a power of two
// milliseconds, aligned to multiples of that size since 1970. A record's buckets are kept
// on it while it is metered and added to the cells of the current bucket size when it ends
// (cells at a finer size sum exactly into a coarser one when the size grows).
class SeriesBuilder {
 public:
  // One packet of a record at time ts_ms (packet time).
  // Per packet: no division (the bucket size is a power of two) and no call while the span
  // still fits in kMaxBuckets at the current size.
  void on_packet(RecordBuckets& b, std::uint64_t ts_ms, std::uint64_t bytes) {
    if (ts_ms > max_ms_) {
      if (ts_ms > fit_ms_)
        widen(ts_ms);
      else
        max_ms_ = ts_ms;
    } else if (ts_ms < min_ms_) {
      widen(ts_ms);
    }
    const std::uint64_t start = ts_ms & mask_;
    BucketEntry* last = b.last();
    if (last && (last->start_ms & mask_) == start) {
      ++last->packets;
      last->bytes += bytes;
      return;
    }
    if (!b.used_) {
      b.first_ = {start, 1, bytes};
      b.used_ = true;
    } else {
      b.more_.push_back({start, 1, bytes});
    }
  }
  // A packet time seen elsewhere (a threaded conversion's shards bucket their packets with
  // SeriesBuilders of their own): the final bucket size takes it into account.
  void include_time(std::uint64_t ts_ms) {
    if (ts_ms < min_ms_ || ts_ms > max_ms_) widen(ts_ms);
  }
  // A finished flow: its buckets go to the series of its application ("": DPI off, no
  // application series) and protocol; then `b` is cleared.
  void on_flow(RecordBuckets& b, std::string_view app, std::uint8_t proto);
  // One record starting at start_ms counts as a flow of `app` and `proto`.
  void count_record(std::uint64_t start_ms, std::string_view app, std::uint8_t proto);
  // A record without packet times (IPFIX ingest): its packets and bytes spread evenly over
  // [start_ms, end_ms] (whole units, the remainder in the first buckets); counts the record.
  void on_spread_record(std::uint64_t start_ms, std::uint64_t end_ms, std::uint64_t packets,
                        std::uint64_t bytes, std::string_view app, std::uint8_t proto);

  std::uint64_t bucket_ms() const { return res_; }

  struct Cell {
    std::uint64_t packets = 0, bytes = 0, flows = 0;
    Cell& operator+=(const Cell& o) {
      packets += o.packets;
      bytes += o.bytes;
      flows += o.flows;
      return *this;
    }
  };
  enum Dim : std::uint8_t { kApp = 0, kProto = 1 };
  // A cell of another series whose buckets are `bucket_ms` long (a power of two; a merge sums
  // the series of its parts): counted as it is, in the bucket of start_ms. The final bucket
  // size is then at least bucket_ms.
  void add_cell(Dim dim, std::string_view key, std::uint64_t bucket_ms, std::uint64_t start_ms,
                const Cell& c);
  // Calls f(dim, key, bucket_start, cell) for every non-empty cell, at the final bucket size.
  template <class F>
  void for_each(F&& f) {
    if (totals_res_ != res_) rebucket();
    totals_.for_each([&](std::uint64_t k, const Cell& cell) {
      const auto& [dim, name] = keys_[key_of(k)];
      f(dim, name, bucket_of(k), cell);
    });
  }

 private:
  static constexpr std::uint64_t kKeyMask = 0xFFFFF;
  void widen(std::uint64_t ts_ms);
  std::uint32_t key_id(Dim dim, std::string_view name);
  std::uint32_t app_key(std::string_view app);  // key_id(kApp, app), the last one remembered
  // Adds c to the cell of (key, the bucket of start_ms at the current size).
  void push(std::uint32_t key, std::uint64_t start_ms, const Cell& c);
  void rebucket();  // totals_ from totals_res_ to the current bucket size
  static std::uint64_t pack(std::uint32_t key, std::uint64_t bucket_index) {
    return (bucket_index << 20) | key;
  }
  static std::uint32_t key_of(std::uint64_t k) { return static_cast<std::uint32_t>(k & kKeyMask); }
  std::uint64_t bucket_of(std::uint64_t k) const { return (k >> 20) * res_; }

  std::uint64_t res_ = 1;                   // a power of two
  std::uint64_t mask_ = ~std::uint64_t{0};  // ~(res_ - 1): a time's bucket start
  unsigned shift_ = 0;                      // log2(res_): a time's bucket index
  std::uint64_t min_ms_ = UINT64_MAX, max_ms_ = 0;
  std::uint64_t fit_ms_ = 0;  // the last time that still fits in kMaxBuckets at res_
  void update_bounds();       // mask_, shift_ and fit_ms_ after res_ or min_ms_ changed
  std::vector<std::pair<Dim, std::string>> keys_;
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
  };
  std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>> key_ids_[2];
  std::array<std::uint32_t, 256> proto_keys_ = make_proto_keys();
  static std::array<std::uint32_t, 256> make_proto_keys() {
    std::array<std::uint32_t, 256> a{};
    a.fill(UINT32_MAX);
    return a;
  }
  std::uint32_t proto_key(std::uint8_t proto) {
    std::uint32_t& k = proto_keys_[proto];
    if (k == UINT32_MAX) k = key_id(kProto, proto_name(proto));
    return k;
  }
  std::uint32_t last_app_ = UINT32_MAX;  // the key id of the last application name seen
  std::string last_app_name_;
  std::uint64_t totals_res_ = 1;
  // pack(key, start / totals_res_) -> counts, summed as records end (one lookup per bucket of
  // a record; re-bucketed when the bucket size grows, a few times per capture, mostly while
  // the table is small). Open addressing: an unordered_map's node per cell made summing the
  // series a visible part of a conversion, and so did a list of every record's buckets
  // summed later (tens of MB on a large capture).
  class Cells {
   public:
    Cells() = default;
    // Room for slots / 2 cells (slots: a power of two).
    explicit Cells(std::size_t slots) : slots_(std::max(slots, kMinSlots)) {}
    // The slot of key k's cell (added empty if k is new; may grow the table).
    std::size_t slot(std::uint64_t k);
    Cell& cell(std::size_t slot) { return slots_[slot].cell; }
    Cell& operator[](std::uint64_t k) { return cell(slot(k)); }
    std::size_t size() const { return used_; }
    std::size_t capacity() const { return slots_.size(); }  // changes when cells move
    template <class F>
    void for_each(F&& f) const {
      for (const auto& s : slots_)
        if (s.key) f(s.key - 1, s.cell);
    }
    void clear() {
      slots_.clear();
      used_ = 0;
    }

   private:
    struct Slot {
      std::uint64_t key = 0;  // packed key + 1; 0: empty
      Cell cell;
    };
    static constexpr std::size_t kMinSlots = 1024;
    void grow();
    std::vector<Slot> slots_;
    std::size_t used_ = 0;
  };
  Cells totals_;
  struct Near {  // a cell of totals_ pushed to lately: its key and slot
    std::uint64_t key = UINT64_MAX;
    std::size_t slot = 0;
  };
  std::array<Near, 2> near_{};
  unsigned next_ = 0;  // the entry of near_ to replace next
};

struct WriterConfig {
  // >= 0: the store is the file `name` in this directory (borrowed; may be O_PATH).
  // < 0: `name` is a path (relative to the working directory or absolute).
  int dir_fd = -1;
  std::string name;
  // The temporary is "<name><temp_suffix>" beside it (the engine's ".tmp.<host>.<pid>").
  std::string temp_suffix;
  bool sync = true;      // fsync the file before the rename
  bool sync_dir = true;  // fsync the directory after the rename
  // Build the indexes once the last row is in (sorted, with SQLite's helper threads) instead
  // of keeping them up to date row by row: faster when nothing runs beside the writer's thread
  // (a merge, whose records come as fast as they are read), slower when metering does.
  bool indexes_last = false;
  // SQLite's page size (a power of two, 512..65536). Larger pages make a large store faster to
  // write and to read through (fewer page splits, fewer reads), and a small one larger (every
  // table and index takes a page at least): the engine takes kLargeStorePageSize for large
  // inputs (docs/flow-store.md, Pages).
  std::uint32_t page_size = 4096;
  // meta
  std::string source = "pcap";  // "pcap" | "ipfix"
  bool biflow = true;
  bool dpi = true;
};

inline constexpr std::uint32_t kLargeStorePageSize = 16384;

// Rows are inserted by a thread of the writer's own, in batches, while the caller goes on
// metering (on a 2-core machine that takes the store's cost off the conversion's path). An
// insert that fails is reported by the next add() or by commit(), as an Error thrown on the
// caller's thread.
class Writer {
 public:
  explicit Writer(WriterConfig cfg);  // creates the temporary store; throws Error
  ~Writer();                          // without commit(): removes the temporary
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void add(const FlowRow& row);  // the next record (id = rows() after the call); copied
  SeriesBuilder& series() { return series_; }
  // Series and meta; closes, syncs and puts the file in place: when nothing was under its name
  // as the writer was made, by a hard link to the name, which fails if another writer put a
  // file there meanwhile (Replaced; atomic, also on NFS); else (an overwrite, or no hard links
  // on this file system) by a rename, after checking that the name still holds the file it
  // held then (Replaced if not). `before_rename`, when given, runs right before that: what it
  // throws aborts the store (nothing is renamed) and comes out of commit() as it was thrown.
  // With the environment variable IPFIXWEB_FLOWS_TIMING set, prints the time of each step to
  // stderr.
  void commit(const std::function<void()>& before_rename = {});
  std::uint64_t rows() const { return rows_; }

 private:
  struct Impl;
  void abort() noexcept;
  WriterConfig cfg_;
  std::unique_ptr<Impl> impl_;
  SeriesBuilder series_;
  std::uint64_t rows_ = 0;
  std::uint64_t packets_ = 0, bytes_ = 0;
  std::uint64_t first_ms_ = UINT64_MAX, last_ms_ = 0;
  bool committed_ = false;
};

}  // namespace ipfixweb::flows

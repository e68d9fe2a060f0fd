// run_top and run_timeseries' grouping overload (query.hpp): /top's groups and a filtered time
// series, by a hash aggregation of the matching flows on one or more connections
// (docs/flow-store.md, Grouping), with SQLite's GROUP BY as the fallback.
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "group_table.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/flows/store.hpp"
#include "packed.hpp"
#include "series_answer.hpp"

namespace ipfixweb::flows {

namespace {

using Clock = std::chrono::steady_clock;

// ---- keys --------------------------------------------------------------------------------------
//
// A group's key(s) as one byte string whose byte order (memcmp, then length) is the order of
// ORDER BY over the key columns: per key a type byte (NULL 0 < integer 1 < text 2, as SQLite
// orders the storage classes) then, for an integer, its 8 bytes big-endian with the sign bit
// flipped, for a text its bytes (BINARY collation). A text followed by a second key must not
// hold a byte below 3, or a shorter text could sort after a longer one (the second key of a
// pair follows an address).

constexpr char kNull = 0, kInteger = 1, kText = 2;

// Appends a value's key; false for what it does not order (a float, a blob, a text as above).
bool append_key(std::string& k, sqlite3_value* v, bool last) {
  switch (sqlite3_value_type(v)) {
    case SQLITE_NULL:
      k.push_back(kNull);
      return true;
    case SQLITE_INTEGER: {
      const auto u = static_cast<std::uint64_t>(sqlite3_value_int64(v)) ^ (std::uint64_t{1} << 63);
      k.push_back(kInteger);
      for (int shift = 56; shift >= 0; shift -= 8) k.push_back(static_cast<char>(u >> shift));
      return true;
    }
    case SQLITE_TEXT: {
      const auto* p = reinterpret_cast<const char*>(sqlite3_value_text(v));
      const auto n = static_cast<std::size_t>(sqlite3_value_bytes(v));
      if (!last && std::any_of(p, p + n, [](char c) { return static_cast<unsigned char>(c) < 3; }))
        return false;
      k.push_back(kText);
      k.append(p, n);
      return true;
    }
    default:
      return false;
  }
}

// The keys of a group back as values.
std::vector<TopGroup::Key> decode_keys(std::string_view k, std::size_t count) {
  std::vector<TopGroup::Key> keys;
  std::size_t i = 0;
  for (std::size_t j = 0; j < count && i < k.size(); ++j) {
    const char type = k[i++];
    if (type == kNull) {
      keys.emplace_back(std::monostate{});
    } else if (type == kInteger) {
      std::uint64_t u = 0;
      for (int b = 0; b < 8; ++b) u = u << 8 | static_cast<unsigned char>(k[i + b]);
      keys.emplace_back(static_cast<std::int64_t>(u ^ (std::uint64_t{1} << 63)));
      i += 8;
    } else {
      // A text ends where the next key's type byte (below 3) starts, or at the end.
      std::size_t end = i;
      if (j + 1 < count)
        while (end < k.size() && static_cast<unsigned char>(k[end]) >= 3) ++end;
      else
        end = k.size();
      keys.emplace_back(std::string(k.substr(i, end - i)));
      i = end;
    }
  }
  return keys;
}

// ---- totals ------------------------------------------------------------------------------------

struct Sums {
  std::int64_t bytes = 0, packets = 0, flows = 0;
  // false when a total leaves int64 (SQLite's sum() fails with "integer overflow" there).
  [[nodiscard]] bool add(std::int64_t b, std::int64_t p, std::int64_t f) {
    return !__builtin_add_overflow(bytes, b, &bytes) &&
           !__builtin_add_overflow(packets, p, &packets) &&
           !__builtin_add_overflow(flows, f, &flows);
  }
  std::int64_t metric(std::size_t m) const { return m == 0 ? bytes : m == 1 ? packets : flows; }
};

// ---- one connection's scan ---------------------------------------------------------------------

constexpr std::size_t kParts = 64;  // partitions by the key's hash (its lowest bits)

// Why the grouping gives way to SQL: a key it does not order or a value it does not sum exactly
// (a float, a blob), a total beyond int64, the groups beyond the memory limit, a store whose
// flow ids or a second connection it cannot have. Aborted: another connection stopped first.
enum class Stop : std::uint8_t { None, Unordered, Overflow, Memory, Unreadable, Aborted };

// A spilled group: its key as a packed string (a varint length, then the bytes), then bytes,
// packets and flows as varints of their 64 bits (packed.hpp's: a row's flows is 1, one byte).
void append_record(std::string& out, std::string_view key, const Sums& s) {
  packed::put_varint(out, key.size());
  out.append(key);
  char tail[30];
  char* end = tail;
  for (const std::int64_t v : {s.bytes, s.packets, s.flows})
    end = packed::put_varint(end, static_cast<std::uint64_t>(v));
  out.append(tail, static_cast<std::size_t>(end - tail));
}

// Calls f(key, sums) for each record of a partition (which this process wrote: whole).
template <class F>
void for_each_record(const std::string& part, F&& f) {
  packed::Reader in(reinterpret_cast<const std::uint8_t*>(part.data()), part.size());
  while (in.left() > 0) {
    const std::string_view key = in.string();
    Sums s;
    s.bytes = static_cast<std::int64_t>(in.varint());
    s.packets = static_cast<std::int64_t>(in.varint());
    s.flows = static_cast<std::int64_t>(in.varint());
    f(key, s);
  }
}

// The aggregate function's state: ipfixweb_group(key [, key2], bytes, packets) over one range of
// flow ids.
struct Scan {
  std::size_t key_count = 1;
  std::size_t memory_limit = 0;  // of this scan: its table and its partitions' capacity
  std::size_t local_groups = 0;
  detail::GroupTable<Sums> local;
  std::array<std::string, kParts> parts;
  std::array<std::size_t, kParts> records{};
  std::size_t spilled = 0;  // capacity of the partitions, bytes
  // Bytes a partition reserves when it spills first: room for its share of the range's rows,
  // so that it rarely grows by copying.
  std::size_t first_reserve = 0;
  bool use_local = true;
  std::size_t hits = 0, misses = 0;  // since the table was last judged
  Stop stop = Stop::None;
  std::atomic<bool>* abort = nullptr;  // shared by the scans of a grouping: set by the first
                                       // that stops, the others then stop too
  std::string key;                     // scratch

  static constexpr std::size_t kSampleRows = 4096;

  std::size_t memory() const { return local.footprint() + spilled; }

  void add(sqlite3_value** v) {
    if (abort && abort->load(std::memory_order_relaxed)) {
      stop = Stop::Aborted;
      return;
    }
    key.clear();
    // (A key over 64 KiB, which no store of ours has, is left to SQL too.)
    for (std::size_t i = 0; i < key_count; ++i)
      if (!append_key(key, v[i], i + 1 == key_count) || key.size() > 0xffff) {
        stop = Stop::Unordered;
        return;
      }
    if (sqlite3_value_type(v[key_count]) != SQLITE_INTEGER ||
        sqlite3_value_type(v[key_count + 1]) != SQLITE_INTEGER) {
      stop = Stop::Unordered;  // sum() of a float is a float
      return;
    }
    const Sums one{sqlite3_value_int64(v[key_count]), sqlite3_value_int64(v[key_count + 1]), 1};
    const std::uint64_t h = detail::hash_key(key);
    if (use_local) {
      const std::size_t groups = local.size();
      if (Sums* s = local.upsert(key, h, local_groups)) {
        if (!s->add(one.bytes, one.packets, one.flows)) stop = Stop::Overflow;
        if (local.size() != groups && memory() > memory_limit) stop = Stop::Memory;
        ++hits;
        return;
      }
      // Once the table is full, it is searched only while most rows find their group there:
      // a search that misses costs as much as spilling. Judged every kSampleRows misses; once
      // given up, the table is not searched again (its groups' later rows are spilled, and
      // summed with them in the partitions).
      if (++misses >= kSampleRows) {
        use_local = hits >= misses;
        hits = misses = 0;
      }
    }
    const std::size_t p = h & (kParts - 1);
    std::string& part = parts[p];
    const std::size_t before = part.capacity();
    if (part.empty()) part.reserve(first_reserve);
    append_record(part, key, one);
    ++records[p];
    spilled += part.capacity() - before;
    if (memory() > memory_limit) stop = Stop::Memory;
  }

  // Moves the table's groups into the partitions (when others' must be added to them).
  void spill_local() {
    for (std::size_t i = 0; i < local.size(); ++i) {
      const std::size_t p = detail::hash_key(local.key(i)) & (kParts - 1);
      append_record(parts[p], local.key(i), local.value(i));
      ++records[p];
    }
    local.clear();
  }
};

void group_step(sqlite3_context* ctx, int, sqlite3_value** v) {
  auto* scan = static_cast<Scan*>(sqlite3_user_data(ctx));
  if (scan->stop != Stop::None) return;
  try {
    scan->add(v);
  } catch (const std::bad_alloc&) {
    scan->stop = Stop::Memory;
  }
  if (scan->stop != Stop::None) {
    if (scan->abort) scan->abort->store(true, std::memory_order_relaxed);
    sqlite3_result_error(ctx, "grouping stopped", -1);
  }
}

void group_final(sqlite3_context* ctx) { sqlite3_result_null(ctx); }

// ipfixweb_group registered on a connection for as long as this lives (its user data is a Scan
// that must not outlive it).
class GroupFunction {
 public:
  GroupFunction(sqlite3* db, int args, Scan* scan) : db_(db), args_(args) {
    rc_ = sqlite3_create_function_v2(db, "ipfixweb_group", args, SQLITE_UTF8, scan, nullptr,
                                     group_step, group_final, nullptr);
  }
  ~GroupFunction() {
    if (rc_ == SQLITE_OK)  // every statement is finalized by now (run_query)
      sqlite3_create_function_v2(db_, "ipfixweb_group", args_, SQLITE_UTF8, nullptr, nullptr,
                                 nullptr, nullptr, nullptr);
  }
  GroupFunction(const GroupFunction&) = delete;
  GroupFunction& operator=(const GroupFunction&) = delete;
  int rc() const { return rc_; }

 private:
  sqlite3* db_;
  int args_;
  int rc_;
};

// The statement that selects the grouping's rows: its key expressions and the summed columns,
// as the arguments of ipfixweb_group (`function`) or as plain columns (for its query plan);
// with a range of flow ids (two more parameters) or over every matching flow.
std::string rows_sql(const Grouping& g, bool function, bool ranged) {
  std::string sql = function ? "SELECT ipfixweb_group(" : "SELECT ";
  for (const auto& k : g.keys) sql += k + ", ";
  sql += function ? "bytes, packets) FROM flows" : "bytes, packets FROM flows";
  if (!g.where.empty() || ranged) sql += " WHERE ";
  if (!g.where.empty()) sql += "(" + g.where + ")";
  if (!g.where.empty() && ranged) sql += " AND ";
  if (ranged) sql += "id BETWEEN ? AND ?";
  return sql;
}

// Steps through the flows that match the grouping's condition on `db`: those with ids
// first..last, or all of them (range nullopt).
QueryOutcome scan_rows(sqlite3* db, const Grouping& g,
                       std::optional<std::pair<std::int64_t, std::int64_t>> range,
                       Clock::time_point deadline, Scan& scan) {
  const std::string sql = rows_sql(g, true, range.has_value());
  std::vector<SqlValue> binds = g.binds;
  if (range) {
    binds.push_back({range->first});
    binds.push_back({range->second});
  }
  GroupFunction function(db, static_cast<int>(g.keys.size()) + 2, &scan);
  if (function.rc() != SQLITE_OK) return {QueryStatus::Failed, sqlite3_errmsg(db)};
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  QueryBudget budget(db, std::max(left, std::chrono::milliseconds(0)));
  QueryOutcome o = run_query(db, sql, binds, nullptr, &budget);
  if (scan.stop != Stop::None) return {};  // the caller looks at scan.stop
  return o;
}

// The indexes a statement's query plan uses (EXPLAIN QUERY PLAN: "… USING [COVERING] INDEX
// name …"); nullopt when it cannot be planned.
std::optional<std::vector<std::string>> plan_indexes(sqlite3* db, const std::string& sql) {
  std::vector<std::string> names;
  const auto o = run_query(db, "EXPLAIN QUERY PLAN " + sql, {}, [&](sqlite3_stmt* s) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, 3));
    const std::string_view detail = p ? p : "";
    const auto at = detail.find(" INDEX ");
    if (at != std::string_view::npos) {
      const auto name = detail.substr(at + 7);
      names.emplace_back(name.substr(0, name.find(' ')));
    }
    return true;
  });
  if (!o.ok()) return std::nullopt;
  std::sort(names.begin(), names.end());
  return names;
}

// Whether the flows can be scanned in ranges of ids without losing an index the filter would use
// (a range on an indexed column, `bytes > 1M` or a time window, cannot be combined with a range
// of ids: SQLite would then scan every row of each range instead of the index's few).
bool ranges_keep_the_plan(sqlite3* db, const Grouping& g) {
  const auto whole = plan_indexes(db, rows_sql(g, false, false));
  const auto ranged = plan_indexes(db, rows_sql(g, false, true));
  return whole && ranged &&
         std::includes(ranged->begin(), ranged->end(), whole->begin(), whole->end());
}

// ---- ranking -----------------------------------------------------------------------------------

// Whether group (x, key a) comes before group (y, key b): the metric descending, then the key as
// ORDER BY orders it.
bool ranks_before(std::int64_t x, std::string_view a, std::int64_t y, std::string_view b) {
  return x != y ? x > y : a < b;
}

struct Candidate {
  std::string key;
  Sums sums;
};

// Appends the best n of `table` (metric descending, then key ascending) to `out`; n 0: every
// group, in no order.
void best_of(const detail::GroupTable<Sums>& table, std::size_t metric, std::size_t n,
             std::vector<Candidate>& out) {
  if (n == 0) {
    for (std::size_t i = 0; i < table.size(); ++i)
      out.push_back({std::string(table.key(i)), table.value(i)});
    return;
  }
  std::vector<std::uint32_t> order(table.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto before = [&](std::uint32_t a, std::uint32_t b) {
    return ranks_before(table.value(a).metric(metric), table.key(a), table.value(b).metric(metric),
                        table.key(b));
  };
  n = std::min(n, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    before);
  for (std::size_t i = 0; i < n; ++i)
    out.push_back({std::string(table.key(order[i])), table.value(order[i])});
}

// Sums partitions p = first, first + step, ... of every scan and keeps the best n of each.
Stop rank_parts(const std::vector<Scan>& scans, std::size_t first, std::size_t step,
                std::size_t metric, std::size_t n, Clock::time_point deadline, bool& timed_out,
                std::vector<Candidate>& out) {
  for (std::size_t p = first; p < kParts; p += step) {
    if (Clock::now() >= deadline) {
      timed_out = true;
      return Stop::None;
    }
    detail::GroupTable<Sums> table;
    std::size_t records = 0;
    for (const Scan& s : scans) records += s.records[p];
    table.reserve(records);
    bool overflow = false, full = false;
    for (const Scan& s : scans)
      for_each_record(s.parts[p], [&](std::string_view key, const Sums& add) {
        Sums* sums = table.upsert(key);
        if (!sums)
          full = true;
        else if (!sums->add(add.bytes, add.packets, add.flows))
          overflow = true;
      });
    if (full) return Stop::Memory;
    if (overflow) return Stop::Overflow;
    best_of(table, metric, n, out);
  }
  return Stop::None;
}

// The best n of `all`, in order (n 0: all of them, in no order).
void keep_best(std::vector<Candidate>& all, std::size_t metric, std::size_t n) {
  if (n == 0) return;
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n), all.end(),
                    [&](const Candidate& a, const Candidate& b) {
                      return ranks_before(a.sums.metric(metric), a.key, b.sums.metric(metric),
                                          b.key);
                    });
  all.resize(n);
}

// ---- the SQL answer ----------------------------------------------------------------------------

QueryOutcome run_sql(sqlite3* db, const TopQuery& q, std::chrono::milliseconds limit,
                     std::vector<TopGroup>& out) {
  QueryBudget budget(db, limit);
  const int k = static_cast<int>(q.key_count);
  return run_query(
      db, q.sql, q.binds,
      [&](sqlite3_stmt* s) {
        TopGroup g;
        for (int i = 0; i < k; ++i) {
          switch (sqlite3_column_type(s, i)) {
            case SQLITE_NULL:
              g.keys.emplace_back(std::monostate{});
              break;
            case SQLITE_INTEGER:
              g.keys.emplace_back(static_cast<std::int64_t>(sqlite3_column_int64(s, i)));
              break;
            case SQLITE_FLOAT:
              g.keys.emplace_back(sqlite3_column_double(s, i));
              break;
            default: {
              const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
              g.keys.emplace_back(
                  std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(s, i))));
            }
          }
        }
        g.bytes = sqlite3_column_int64(s, k);
        g.packets = sqlite3_column_int64(s, k + 1);
        g.flows = sqlite3_column_int64(s, k + 2);
        out.push_back(std::move(g));
        return true;
      },
      &budget);
}

// The store's first or last flow id (`which`: "min" or "max"): nullopt for an empty store,
// false when it cannot be read.
bool id_bound(sqlite3* db, const char* which, std::optional<std::int64_t>& id) {
  id.reset();
  const auto o =
      run_query(db, std::string("SELECT ") + which + "(id) FROM flows", {}, [&](sqlite3_stmt* s) {
        if (sqlite3_column_type(s, 0) == SQLITE_INTEGER) id = sqlite3_column_int64(s, 0);
        return false;
      });
  return o.ok();
}

__extension__ using Wide = __int128;  // id ranges: a span of ids may exceed int64

// The ranges of flow ids the scans take: one per connection, nullopt (every flow, no range)
// when one connection does it all.
std::vector<std::optional<std::pair<std::int64_t, std::int64_t>>> id_ranges(sqlite3* db,
                                                                            const Grouping& g,
                                                                            const GroupRun& run,
                                                                            Stop& stop) {
  stop = Stop::None;
  if (run.threads < 2 || !run.open) return {std::nullopt};
  std::optional<std::int64_t> low, high;
  if (!id_bound(db, "min", low) || !id_bound(db, "max", high)) {
    stop = Stop::Unreadable;
    return {};
  }
  if (!low || !high) return {std::nullopt};  // no flows
  const Wide rows = Wide{*high} - Wide{*low} + 1;
  const Wide per = std::max<std::int64_t>(1, run.rows_per_thread);
  if (rows < 2 * per || !ranges_keep_the_plan(db, g)) return {std::nullopt};
  const auto threads = static_cast<std::size_t>(std::min<Wide>(run.threads, rows / per));
  std::vector<std::optional<std::pair<std::int64_t, std::int64_t>>> ranges;
  for (std::size_t i = 0; i < threads; ++i) {
    const Wide a = Wide{*low} + rows * static_cast<Wide>(i) / static_cast<Wide>(threads);
    const Wide b = Wide{*low} + rows * static_cast<Wide>(i + 1) / static_cast<Wide>(threads) - 1;
    ranges.emplace_back(std::pair{static_cast<std::int64_t>(a), static_cast<std::int64_t>(b)});
  }
  return ranges;
}

// The groups of `g` in `out` (the best g.n in order, or all); Stop::None and the outcome, or
// why SQL must answer instead.
Stop group_flows(sqlite3* db, const Grouping& g, const GroupRun& run, Clock::time_point deadline,
                 QueryOutcome& outcome, std::vector<Candidate>& out) {
  Stop unreadable = Stop::None;
  const auto ranges = id_ranges(db, g, run, unreadable);
  if (unreadable != Stop::None) return unreadable;
  const std::size_t threads = ranges.size();

  std::atomic<bool> abort{false};
  std::vector<Scan> scans(threads);
  std::vector<QueryOutcome> outcomes(threads);
  for (Scan& s : scans) {
    s.key_count = g.keys.size();
    s.memory_limit = run.memory_limit / threads;
    s.local_groups = run.local_groups;
    s.abort = &abort;
  }
  const auto scan_on = [&](std::size_t i, sqlite3* conn) {
    const auto& r = ranges[i];
    const std::size_t rows = r ? static_cast<std::size_t>(Wide{r->second} - r->first + 1) : 0;
    scans[i].first_reserve =
        std::min(std::min<std::size_t>(rows, std::size_t{1} << 26) / kParts * 32 + 4096,
                 scans[i].memory_limit / kParts);
    outcomes[i] = scan_rows(conn, g, r, deadline, scans[i]);
  };
  // Every thread beyond the caller's opens its own connection; one that cannot gives the
  // answer to SQL on the caller's.
  const auto scan_opened = [&](std::size_t i) {
    try {
      auto store = run.open();
      if (!store) throw std::runtime_error("no connection");
      scan_on(i, store->handle());
    } catch (const std::exception&) {
      scans[i].stop = Stop::Unreadable;
      abort.store(true);
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (std::size_t i = 1; i < threads; ++i) helpers.emplace_back(scan_opened, i);
    scan_on(0, db);
  }
  // The first reason a scan stopped for (not Aborted, which only follows another's).
  for (const Scan& s : scans)
    if (s.stop != Stop::None && s.stop != Stop::Aborted) return s.stop;
  for (const QueryOutcome& o : outcomes)
    if (!o.ok()) {
      outcome = o;
      return Stop::None;
    }

  std::vector<Candidate>& all = out;
  const auto n = static_cast<std::size_t>(g.n);
  const bool spilled = threads > 1 || std::any_of(scans[0].parts.begin(), scans[0].parts.end(),
                                                  [](const std::string& p) { return !p.empty(); });
  if (!spilled) {
    best_of(scans[0].local, g.metric, n, all);
  } else {
    for (Scan& s : scans) s.spill_local();
    std::vector<std::vector<Candidate>> best(threads);
    std::vector<Stop> stops(threads, Stop::None);
    std::vector<char> late(threads, 0);
    const auto rank_on = [&](std::size_t i) {
      bool timed_out = false;
      try {
        stops[i] = rank_parts(scans, i, threads, g.metric, n, deadline, timed_out, best[i]);
      } catch (const std::bad_alloc&) {
        stops[i] = Stop::Memory;
      }
      late[i] = timed_out;
    };
    {
      std::vector<std::jthread> helpers;
      for (std::size_t i = 1; i < threads; ++i) helpers.emplace_back(rank_on, i);
      rank_on(0);
    }
    for (Stop s : stops)
      if (s != Stop::None) return s;
    if (std::any_of(late.begin(), late.end(), [](char c) { return c != 0; })) {
      outcome = {QueryStatus::TimedOut, "the query ran out of time"};
      return Stop::None;
    }
    for (auto& b : best) std::move(b.begin(), b.end(), std::back_inserter(all));
  }
  keep_best(all, g.metric, n);
  if (run.plan) *run.plan = {true, static_cast<int>(threads), spilled};
  return Stop::None;
}

// Groups with g; true when it answered (ok or not: `outcome`), false when SQL must.
bool try_grouping(sqlite3* db, const Grouping& g, const GroupRun& run, Clock::time_point deadline,
                  QueryOutcome& outcome, std::vector<Candidate>& out) {
  Stop stop = Stop::None;
  try {
    stop = group_flows(db, g, run, deadline, outcome, out);
  } catch (const std::bad_alloc&) {
    stop = Stop::Memory;
  } catch (const std::system_error&) {  // no thread to be had
    stop = Stop::Unreadable;
  }
  if (stop == Stop::None) return true;
  out.clear();
  outcome = {};
  return false;
}

}  // namespace

QueryOutcome run_top(sqlite3* db, const TopQuery& q, const GroupRun& run,
                     std::vector<TopGroup>& out) {
  out.clear();
  if (run.plan) *run.plan = {};
  if (q.grouping) {
    QueryOutcome outcome;
    std::vector<Candidate> groups;
    if (try_grouping(db, *q.grouping, run, Clock::now() + run.budget, outcome, groups)) {
      for (const Candidate& c : groups)
        out.push_back(
            {decode_keys(c.key, q.key_count), c.sums.bytes, c.sums.packets, c.sums.flows});
      return outcome;
    }
  }
  // SQLite answers what the grouping could not, within a budget of its own (a grouping that
  // gave way late must not leave the GROUP BY without the time it needs).
  return run_sql(db, q, run.budget, out);
}

QueryOutcome run_timeseries(sqlite3* db, const TimeseriesQuery& q, const GroupRun& run,
                            nlohmann::json& out) {
  if (run.plan) *run.plan = {};
  if (q.grouping) {
    QueryOutcome outcome;
    std::vector<Candidate> groups;
    if (try_grouping(db, *q.grouping, run, Clock::now() + run.budget, outcome, groups)) {
      if (!outcome.ok()) return outcome;
      std::vector<detail::SeriesRow> rows;
      rows.reserve(groups.size());
      for (const Candidate& c : groups) {
        auto keys = decode_keys(c.key, 2);
        detail::SeriesRow row;
        if (const auto* text = std::get_if<std::string>(&keys[0])) row.key = *text;
        if (const auto* number = std::get_if<std::int64_t>(&keys[0]))
          row.key = std::to_string(*number);
        const auto* t = keys.size() == 2 ? std::get_if<std::int64_t>(&keys[1]) : nullptr;
        if (!t) return {QueryStatus::Failed, "a bucket that is not a number"};
        row.t = *t;
        row.value = c.sums.metric(q.grouping->metric);
        rows.push_back(std::move(row));
      }
      return detail::build_series(q, rows, out);
    }
  }
  QueryBudget budget(db, run.budget);  // as for run_top: SQLite's own budget
  return run_timeseries(db, q, out, &budget);
}

}  // namespace ipfixweb::flows

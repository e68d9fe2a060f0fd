// Reading a flow store: the filter language (docs/flow-filter.md) and the queries behind
// GET /api/v1/tasks/{id}/flows, /top and /timeseries.
//
// Everything here is pure: it turns request parameters into SQL text plus bound values (or an
// error naming the parameter), and, for the time series, runs the statement on a connection
// the caller opened. Values from a request are only ever bound ("?" placeholders); the SQL
// text holds nothing but names from kFlowColumns (schema.hpp), operators and placeholders.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

struct sqlite3;
struct sqlite3_stmt;

namespace ipfixweb::flows {

// ---------------------------------------------------------------------------------------------
// Bound values

struct SqlValue {
  std::variant<std::int64_t, double, std::string, std::vector<std::uint8_t>> v;
};

// Binds values to ?1, ?2, ... in order (text and blobs copied). Returns the first SQLite
// error code, else SQLITE_OK.
int bind_values(sqlite3_stmt* stmt, const std::vector<SqlValue>& values);

// ---------------------------------------------------------------------------------------------
// The filter language

// A condition over the flows table: `sql` is a boolean SQL expression with "?" placeholders,
// `binds` their values in order. sql "" means no condition (an empty or blank filter).
struct Where {
  std::string sql;
  std::vector<SqlValue> binds;
};

// Why a filter was rejected. position is the 0-based byte offset in the filter text where the
// problem is (the text's length for "it ended too early"); message says what is wrong,
// expected what would have been accepted there.
struct FilterError {
  std::size_t position = 0;
  std::string message;
  std::string expected;
};

// Bounds on a filter: longer texts, deeper nesting or more terms are errors.
inline constexpr std::size_t kMaxFilterBytes = 4096;
inline constexpr std::size_t kMaxFilterDepth = 64;   // nested '(' and 'not' together
inline constexpr std::size_t kMaxFilterTerms = 256;  // terms plus the values of 'in' lists
// 'and' inside 'or' inside 'and' ...: the parentheses the SQL needs, once 'not' is pushed down
// to the terms and redundant parentheses are gone. SQLite's parser stack (YYSTACKDEPTH 100 in
// 3.40) takes about 16 such levels; the bound leaves room for the terms' own parentheses and
// for a caller's "(filter) AND (...)".
inline constexpr std::size_t kMaxFilterAlternation = 10;

// Parses a filter (docs/flow-filter.md) into a condition over the flows table. Never throws
// for any input text (only std::bad_alloc).
//
// The SQL relies on SQLite defaults the caller must keep: '~' is LIKE, case-insensitive for
// ASCII unless PRAGMA case_sensitive_like is on; text '=' and 'in' use COLLATE NOCASE (ASCII
// case folding). A missing (NULL) value satisfies no comparison, and '!=', '!~', 'not in' and
// 'not' are exact complements (they match it). The SQL is a plain boolean expression, safe to
// embed as "WHERE <sql>" or "(<sql>) AND ...".
std::variant<Where, FilterError> parse_filter(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Request parameters

// A bad request parameter: the api answers 422 naming it. For parameter "filter", `filter`
// holds the parse error (position, message, expected).
struct ParamError {
  std::string parameter;
  std::string message;
  std::optional<FilterError> filter;
};

// All parameters are the raw text of the query string; "" (absent or empty) takes the default.

// Every name `fields` and `sort` take (case-insensitive): the exported columns of
// kFlowColumns, then the aliases (kAliases).
std::vector<std::string_view> field_names();

// GET /flows: a page of flow records.
struct ListParams {
  std::string_view filter{};
  std::string_view fields{};  // "src,dst,bytes": exported columns or aliases; default all exported
  std::string_view sort{};    // "-bytes,start_ms": '-' descending, '+' or nothing ascending;
                              // default "id"; id is always the final tiebreaker
  std::string_view limit{};   // 1..kMaxListLimit, default kDefaultListLimit
  std::string_view cursor{};  // a previous page's next cursor (same filter and sort)
  // Exports: no upper bound on `limit`, and without a limit every matching row (no LIMIT).
  bool unbounded = false;
};
inline constexpr std::int64_t kDefaultListLimit = 100;
inline constexpr std::int64_t kMaxListLimit = 10000;

struct SortKey {
  std::string column;  // the SQL column ordered by (src and dst order by src_ip / dst_ip)
  bool descending = false;
};

struct ListQuery {
  std::string sql;
  std::vector<SqlValue> binds;
  // Names of the result columns 0..columns.size()-1 (canonical column names, in the order of
  // `fields`): render these. Columns after them are the sort keys, for next_cursor().
  std::vector<std::string> columns;
  std::int64_t limit = kDefaultListLimit;
  // The statement yields up to limit + 1 rows. Render the first `limit`; if row limit + 1
  // exists there is a next page, and its cursor is next_cursor(stmt) taken while the
  // statement is on row `limit` (the last rendered).
  std::string next_cursor(sqlite3_stmt* row) const;

  // The same rows with result columns id, packed, app, server_name, ja3c, community_id, risks
  // (then the sort keys): what an export
  // renders from on a store of format version 2 (flow_rows.packed; store.hpp).
  std::string packed_sql;

  // The ORDER BY keys, id last; tag identifies the sort and filter a cursor belongs to.
  std::vector<SortKey> keys;
  std::string tag;
};

std::variant<ListQuery, ParamError> build_list(const ListParams& params);

// How run_top and run_timeseries group the flows themselves, for the answer of
//   SELECT <keys>, sum(bytes), sum(packets), count(*) FROM flows WHERE <where> GROUP BY <keys>
// ordered by a metric (descending), then the keys (ascending): a hash aggregation (run_top).
struct Grouping {
  std::vector<std::string> keys;  // SQL expressions over the flows' columns
  std::string where;              // a condition over flows; "": every flow
  std::vector<SqlValue> binds;    // the keys' parameters, then the condition's
  std::size_t metric = 0;         // index into kMetrics (schema.hpp)
  std::int64_t n = 0;             // the first n groups; 0: every group, in no order
};

// GET /top: the n largest groups of flows.
struct TopParams {
  std::string_view filter{};
  std::string_view by{};      // a name of kTopDimensions (schema.hpp), required
  std::string_view metric{};  // a name of kMetrics (schema.hpp), default the first (bytes)
  std::string_view n{};       // 1..kMaxTopN, default kDefaultTopN
  // The store's series is there and has an application series (a store written with DPI; the
  // caller knows from its meta). Without a filter, top by app and by proto are then summed
  // from the series table (a few thousand rows; the same
  // totals as the flows, FlowsApi.TopFromTheSeriesIsTopFromTheFlows) instead of every flow.
  bool series_has_app = false;
  // The store's meta top_dims and top_k (format version 2): without a filter, top by a
  // dimension listed there, for n up to top_k, is read from the top table (the first n rows
  // of its ranking) instead of grouping every flow.
  std::string_view top_dims{};
  std::int64_t top_k = 0;
};
inline constexpr std::int64_t kDefaultTopN = 20;
inline constexpr std::int64_t kMaxTopN = 1000;

struct TopQuery {
  std::string sql;
  std::vector<SqlValue> binds;
  // Result columns: the key column(s) (kTopDimensions' key and key2) then the metrics in
  // kMetrics order ("bytes", "packets", "flows"). `by` and `metric`: the canonical names. A null
  // key (no server name, no DPI) is a group of its own. Rows are ordered by the metric descending,
  // then by the key(s) ascending (null first).
  std::vector<std::string> columns;
  std::size_t key_count = 1;
  std::string by, metric;
  // Set when the answer groups the flows (a filter, or a dimension or n that neither the top
  // table nor the series answers): run_top then groups them itself, and `sql` is the same
  // answer as a GROUP BY, which it falls back to.
  std::optional<Grouping> grouping;
};

std::variant<TopQuery, ParamError> build_top(const TopParams& params);

// A group of /top's answer: its key(s) as `flows` holds them (NULL, a number or a text) and its
// totals.
struct TopGroup {
  using Key = std::variant<std::monostate, std::int64_t, double, std::string>;
  std::vector<Key> keys;
  std::int64_t bytes = 0, packets = 0, flows = 0;
};

class Store;

// How run_top may group the flows.
struct GroupRun {
  // Connections that group at once, each over a range of flow ids (1: the caller's alone; more
  // only for stores of at least rows_per_thread flows per connection). `open` gives another
  // read-only connection to the same store for each one beyond the first.
  int threads = 1;
  std::function<std::unique_ptr<Store>()> open;
  std::chrono::milliseconds budget{std::chrono::seconds(10)};
  // The groups' memory beyond which the answer is left to SQLite's GROUP BY (which spills to
  // temporary files): each connection's first local_groups groups, then every matching
  // flow's key and totals (about 30 to 60 bytes a flow).
  std::size_t memory_limit = std::size_t{256} << 20;
  // Flows per connection at least; groups each connection keeps in its table before it
  // spills (smaller values in tests exercise the partitions on small stores).
  std::int64_t rows_per_thread = 65536;
  std::size_t local_groups = 65536;
  // What run_top did, when not null: grouped the flows itself (or left it to SQL), on how
  // many connections, and whether any spilled into partitions.
  struct Plan {
    bool grouped = false;
    int threads = 0;
    bool spilled = false;
  };
  Plan* plan = nullptr;
};

// GET /timeseries: a metric per time bucket for the largest applications or protocols.
//
// Without a filter the answer comes from the series table, where packets and bytes are in the
// bucket of each packet's time (pcap tasks) or spread over the record's span (IPFIX ingest).
// The series table has no flow ids, so with a filter it is computed from the flows table
// instead, and then each flow's packets, bytes and count all fall into the bucket of its
// start (start_ms): a long flow's bytes are not spread over its life. `basis` in the query
// says which was used. The buckets and the answer's shape are the same either way.
struct TimeseriesParams {
  std::string_view filter{};
  std::string_view by{};         // a name of kSeriesDims (schema.hpp), required
  std::string_view metric{};     // a name of kMetrics (schema.hpp), default the first (bytes)
  std::string_view bucket_ms{};  // a multiple of store_bucket_ms; default: the smallest one
                                 // giving at most kTimeseriesTargetBuckets over the span
  std::string_view top{};        // 1..kMaxTimeseriesTop series kept, default 10; the rest are
                                 // summed into one series with key "other"
  // From the store's meta table, read by the caller: bucket_ms, first_ms, last_ms.
  std::int64_t store_bucket_ms = 0;
  std::int64_t first_ms = 0;
  std::int64_t last_ms = -1;  // last_ms < first_ms: an empty store (no buckets)
};
inline constexpr std::int64_t kTimeseriesTargetBuckets = 500;
inline constexpr std::int64_t kDefaultTimeseriesTop = 10;
inline constexpr std::int64_t kMaxTimeseriesTop = 100;

struct TimeseriesQuery {
  enum class Basis { Series, Flows };
  std::string sql;  // yields (key, bucket start, value) per key and bucket
  std::vector<SqlValue> binds;
  Basis basis = Basis::Series;
  std::int64_t bucket_ms = 0;
  std::int64_t first_bucket = 0;  // the time axis: first_bucket + i * bucket_ms,
  std::int64_t bucket_count = 0;  //   i = 0 .. bucket_count - 1
  std::int64_t top = kDefaultTimeseriesTop;
  // Basis::Flows: the same rows as `sql`, grouped by run_timeseries itself (keys: the series'
  // key, the bucket) when it is given a GroupRun; `sql` is what it falls back to.
  std::optional<Grouping> grouping;
};

std::variant<TimeseriesQuery, ParamError> build_timeseries(const TimeseriesParams& params);

// ---------------------------------------------------------------------------------------------
// Running statements within a time budget

enum class QueryStatus {
  Ok,
  TimedOut,  // the QueryBudget ran out and SQLite interrupted the statement
  Failed,    // any other SQLite error (message says which)
};

struct QueryOutcome {
  QueryStatus status = QueryStatus::Ok;
  std::string message;
  bool ok() const { return status == QueryStatus::Ok; }
};

// While it lives, statements on `db` are interrupted (SQLITE_INTERRUPT) once `limit` has passed
// since construction: it installs sqlite3_progress_handler, checked every `ops` virtual machine
// instructions, and removes it (sets none) when destroyed. A connection has one progress
// handler, so budgets must not overlap on one connection.
class QueryBudget {
 public:
  QueryBudget(sqlite3* db, std::chrono::milliseconds limit, int ops = 1000);
  ~QueryBudget();
  QueryBudget(const QueryBudget&) = delete;
  QueryBudget& operator=(const QueryBudget&) = delete;

  bool exhausted() const { return exhausted_; }
  // The outcome of a SQLite result code: TimedOut for SQLITE_INTERRUPT after the budget ran
  // out, Failed for other errors, Ok for SQLITE_OK/ROW/DONE.
  QueryStatus classify(int rc) const;

 private:
  static int on_progress(void* self);
  sqlite3* db_;
  std::chrono::steady_clock::time_point deadline_;
  bool exhausted_ = false;
};

// Prepares `sql`, binds `binds` and steps through the rows, calling on_row on each (it may
// return false to stop early). With a budget, its running out is reported as TimedOut.
QueryOutcome run_query(sqlite3* db, std::string_view sql, const std::vector<SqlValue>& binds,
                       const std::function<bool(sqlite3_stmt*)>& on_row,
                       const QueryBudget* budget = nullptr);

// Runs a TopQuery and puts its groups in `out`, in its order. Without `grouping`, `sql` as it
// is. With it, a hash aggregation instead of SQLite's sorting GROUP BY (docs/flow-store.md,
// "Grouping"): each connection steps through its range of the matching flows once, keeping
// its first groups in a table and spilling the rest by the key's hash into partitions; the
// partitions are then summed and ranked one by one, on every connection's thread, and the
// best n of each ranked together. Same groups, totals and order as `sql` (ties by the key
// as SQLite orders it), which it runs instead when the keys are of a type it does not order
// (floats, blobs), a total overflows, or the groups outgrow memory_limit. Within the budget,
// else TimedOut.
QueryOutcome run_top(sqlite3* db, const TopQuery& q, const GroupRun& run,
                     std::vector<TopGroup>& out);

// Runs a time series query and builds the api's answer:
//   {"bucket_ms": N, "time": [t0, t1, ...],
//    "series": [{"key": "TLS", "values": [v0, v1, ...]}, ..., {"key": "other", ...}]}
// time has every bucket of the span (gaps are zeros in values); series are ordered by their
// total descending (ties by key), "other" last and only when some series were left out. A
// null key (flows without DPI, filtered timeseries only) is JSON null.
QueryOutcome run_timeseries(sqlite3* db, const TimeseriesQuery& query, nlohmann::json& out,
                            const QueryBudget* budget = nullptr);
// The same, grouping the flows as run_top does (a filtered series over many flows), within
// run.budget.
QueryOutcome run_timeseries(sqlite3* db, const TimeseriesQuery& query, const GroupRun& run,
                            nlohmann::json& out);

}  // namespace ipfixweb::flows

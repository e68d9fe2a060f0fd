// libFuzzer target: the flow filter language and the queries of GET /api/v1/tasks/{id}/flows,
// /top and /timeseries (shared/src/flows/filter.cpp, query.cpp; docs/flow-filter.md), run as
// SQL against a real flow store: an in-memory SQLite database with the store's schema
// (create_tables_sql, create_indexes_sql) and a few rows with ties and NULLs.
//
// Input: lines (separated by '\n'), each a request parameter as its raw query-string value;
// missing lines are empty (the default):
//   1 filter   2 sort   3 fields   4 limit (also the page size below)   5 cursor
//   6 top's by   7 metric   8 top's n   9 timeseries' bucket_ms   10 timeseries' top
//
// Properties checked besides "no crash, no sanitizer report":
//  - parse_filter never throws;
//  - an accepted filter's SQL prepares (SQLite accepts it), takes exactly its bound values
//    and runs without error; its SQL text holds only column names, SQL keywords, operators
//    and placeholders (no byte of the filter's values: those are bound);
//  - "not (F)" selects exactly the rows F does not (the language's complement rule, NULLs
//    included) whenever both parse;
//  - a listing read page by page through its cursors is the same rows in the same order as
//    the listing in one go;
//  - the queries of /flows, /top and /timeseries built from the parameters prepare and run.
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/schema.hpp"

namespace flows = ipfixweb::flows;

namespace {

// The store: every row of the hand-made set below (ids 1..N).
constexpr const char* kRows = R"sql(
INSERT INTO flow_rows(id, start_ms, end_ms, ip_version, proto, src, dst, src_ip, dst_ip, sport,
  dport, vlan, packets, bytes, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags,
  rev_tcp_flags, icmp_type_code, rev_icmp_type_code, tos, rev_tos, end_reason, app_id, app,
  server_name, ja3c, community_id, risk, risk_score, risks) VALUES
(1, 1577836800000, 1577836801000, 4, 6, '10.0.0.1', '93.184.216.34',
  X'00000000000000000000ffff0a000001', X'00000000000000000000ffff5db8d822', 51234, 443, 0,
  12, 5000, 7, 1000, 5, 4000, 27, 27, NULL, NULL, 0, 0, 3, 91, 'TLS', 'example.com',
  'e7d705a3286e19ea42f587b344ee6865', '1:LQU9qZlK+B5F3KDmev6m5PMibrg=', 0, 0, NULL),
(2, 1577836800500, 1577836800600, 4, 17, '10.0.0.2', '8.8.8.8',
  X'00000000000000000000ffff0a000002', X'00000000000000000000ffff08080808', 5353, 53, 20,
  2, 150, 1, 70, 1, 80, NULL, NULL, NULL, NULL, 0, NULL, 1, 5, 'DNS', 'example.com', NULL,
  NULL, 2, 10, 'Unsafe Protocol'),
(3, 1577836800500, 1577836805000, 6, 6, '2001:db8::1', '2001:db8::2',
  X'20010db8000000000000000000000001', X'20010db8000000000000000000000002', 80, 51000, 0,
  1000000, 1500000000, 600000, 1000000000, 400000, 500000000, 2, 18, NULL, NULL, 32, 32, 2,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(4, 1577836802000, 1577836802000, 4, 1, '192.168.1.1', '10.0.0.1',
  X'00000000000000000000ffffc0a80101', X'00000000000000000000ffff0a000001', 0, 0, 4095,
  1, 84, 1, 84, NULL, NULL, NULL, NULL, 2048, NULL, 0, NULL, 4, 81, 'ICMP', NULL, NULL, NULL,
  0, 0, NULL),
(5, 1577836803000, 1577836809000, 6, 58, 'fe80::1', 'ff02::1',
  X'fe800000000000000000000000000001', X'ff020000000000000000000000000001', 0, 0, 0,
  3, 216, 3, 216, 0, 0, NULL, NULL, 34560, 0, 0, 0, 1, 102, 'ICMPV6', NULL, NULL, NULL, 0, 0,
  NULL),
(6, 1577836800000, 1577836801000, 4, 6, '10.0.0.1', '93.184.216.34',
  X'00000000000000000000ffff0a000001', X'00000000000000000000ffff5db8d822', 51235, 443, 0,
  12, 5000, 7, 1000, 5, 4000, 27, 27, NULL, NULL, 0, 0, 3, 7, 'HTTP', 'Example.COM', NULL,
  NULL, 4096, 100, 'Known Proto on Non Std Port,Unsafe Protocol'),
(7, 1577836900000, 1577836900001, 4, 47, '172.16.0.1', '172.16.0.2',
  X'00000000000000000000ffffac100001', X'00000000000000000000ffffac100002', 0, 0, 0,
  1000000000000000, 1000000000000000, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, 0, 'Unknown', '', '', '', 0, 0, NULL),
(8, 1577836800000, 1577836800000, 4, 132, '0.0.0.0', '255.255.255.255',
  X'00000000000000000000ffff00000000', X'00000000000000000000ffffffffffff', 65535, 1, 0,
  1, 20, 1, 20, 0, 0, NULL, NULL, NULL, NULL, 255, 255, 5, 7, 'TLS.YouTube', 'ÿ%_\x',
  'E7D705A3286E19EA42F587B344EE6865', NULL, 1, 1, 'a"b');
INSERT INTO series VALUES ('app', 'TLS', 1577836800000, 12, 5000, 1),
  ('app', 'DNS', 1577836800000, 2, 150, 1), ('proto', 'tcp', 1577836800000, 24, 10000, 2);
INSERT INTO top VALUES ('app', 'bytes', 1, 'TLS', NULL, 5000, 12, 1),
  ('pair', 'bytes', 1, '10.0.0.1', '93.184.216.34', 10000, 24, 2);
)sql";
constexpr std::int64_t kFirstMs = 1577836800000, kLastMs = 1577836909000;

class Store {
 public:
  Store() {
    FUZZ_CHECK(sqlite3_open(":memory:", &db_) == SQLITE_OK);
    exec(flows::create_tables_sql());
    exec(flows::create_indexes_sql());
    exec(kRows);
    all_ = ids("");
    FUZZ_CHECK(all_.size() == 8);
  }
  ~Store() { sqlite3_close(db_); }
  sqlite3* db() const { return db_; }
  const std::vector<std::int64_t>& all() const { return all_; }

  void exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    FUZZ_CHECK(rc == SQLITE_OK, err ? err : sql);
  }

  // The rows a condition selects, by id.
  std::vector<std::int64_t> ids(const std::string& where,
                                const std::vector<flows::SqlValue>& binds = {}) {
    std::vector<std::int64_t> out;
    run("SELECT id FROM flows" + (where.empty() ? "" : " WHERE " + where) + " ORDER BY id", binds,
        [&](sqlite3_stmt* s) { out.push_back(sqlite3_column_int64(s, 0)); });
    return out;
  }

  // Prepares (SQLite must accept the SQL), checks the number of placeholders, binds and steps
  // through every row.
  template <class OnRow>
  void run(const std::string& sql, const std::vector<flows::SqlValue>& binds, OnRow&& on_row) {
    sqlite3_stmt* s = nullptr;
    const int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &s, nullptr);
    FUZZ_CHECK(rc == SQLITE_OK, std::string(sqlite3_errmsg(db_)) + " in: " + sql);
    FUZZ_CHECK(sqlite3_bind_parameter_count(s) == static_cast<int>(binds.size()),
               std::to_string(binds.size()) + " values for: " + sql);
    FUZZ_CHECK(flows::bind_values(s, binds) == SQLITE_OK, sql);
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) on_row(s);
    FUZZ_CHECK(step == SQLITE_DONE, std::string(sqlite3_errmsg(db_)) + " in: " + sql);
    sqlite3_finalize(s);
  }

 private:
  sqlite3* db_ = nullptr;
  std::vector<std::int64_t> all_;
};

// The words a filter's SQL may contain: column names (kFlowColumns) and the keywords
// filter.cpp writes. Anything else would be text of the filter that reached the SQL.
bool allowed_word(std::string_view w) {
  static const std::set<std::string, std::less<>> words = [] {
    std::set<std::string, std::less<>> s = {"AND",     "OR",     "NOT",    "IN",    "LIKE",
                                            "ESCAPE",  "IS",     "TRUE",   "FALSE", "NULL",
                                            "COLLATE", "NOCASE", "BETWEEN"};
    for (const auto& c : flows::kFlowColumns) s.emplace(c.name);
    return s;
  }();
  return words.count(w) > 0;
}

void check_sql_text(const std::string& sql) {
  for (std::size_t i = 0; i < sql.size();) {
    const unsigned char c = static_cast<unsigned char>(sql[i]);
    if (std::isalpha(c) || c == '_') {
      std::size_t j = i;
      while (j < sql.size() && (std::isalnum(static_cast<unsigned char>(sql[j])) || sql[j] == '_'))
        ++j;
      FUZZ_CHECK(allowed_word(std::string_view(sql).substr(i, j - i)),
                 "word '" + sql.substr(i, j - i) + "' in: " + sql);
      i = j;
    } else if (std::isdigit(c)) {
      while (i < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i]))) ++i;
    } else if (c == '\'') {  // the one literal filter.cpp writes: ESCAPE '\'
      FUZZ_CHECK(sql.compare(i, 3, "'\\'") == 0, "a literal in: " + sql);
      i += 3;
    } else {
      FUZZ_CHECK(
          std::string_view(" ()?=<>!,-+*/%").find(static_cast<char>(c)) != std::string_view::npos,
          "byte " + std::to_string(c) + " in: " + sql);
      ++i;
    }
  }
}

std::vector<std::string_view> lines(std::string_view in, std::size_t n) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < n) {
    const auto nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    out.push_back(in.substr(0, nl));
    in.remove_prefix(nl + 1);
  }
  out.push_back(in);
  out.resize(n);
  return out;
}

void check_filter(Store& st, std::string_view text) {
  std::variant<flows::Where, flows::FilterError> parsed;
  try {
    parsed = flows::parse_filter(text);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, std::string("parse_filter threw: ") + e.what());
  }
  if (auto* e = std::get_if<flows::FilterError>(&parsed)) {
    FUZZ_CHECK(e->position <= text.size() || e->position == flows::kMaxFilterBytes,
               "position " + std::to_string(e->position));
    FUZZ_CHECK(!e->message.empty());
    return;
  }
  const auto& w = std::get<flows::Where>(parsed);
  check_sql_text(w.sql);
  const auto selected = st.ids(w.sql, w.binds);
  if (w.sql.empty()) return;  // a blank filter (every row): "not ()" is an error

  // The complement: not (F) selects exactly the other rows.
  const std::string negated = "not (" + std::string(text) + ")";
  auto neg = flows::parse_filter(negated);
  if (auto* n = std::get_if<flows::Where>(&neg)) {
    FUZZ_CHECK(!n->sql.empty(), negated);
    const auto others = st.ids(n->sql, n->binds);
    std::vector<std::int64_t> both;
    std::merge(selected.begin(), selected.end(), others.begin(), others.end(),
               std::back_inserter(both));
    FUZZ_CHECK(both == st.all(), "F: " + w.sql + "  not F: " + n->sql);
  }
}

// The listing in pages of `page` rows through next cursors equals the listing in one go.
void check_pages(Store& st, const flows::ListParams& base, std::int64_t page) {
  flows::ListParams all = base;
  all.limit = "";
  all.cursor = "";
  all.unbounded = true;
  auto whole = flows::build_list(all);
  auto* wq = std::get_if<flows::ListQuery>(&whole);
  if (!wq) return;
  std::vector<std::int64_t> want;
  const int id_col = static_cast<int>(wq->columns.size() + wq->keys.size()) - 1;  // id is last
  st.run(wq->sql, wq->binds,
         [&](sqlite3_stmt* s) { want.push_back(sqlite3_column_int64(s, id_col)); });

  std::vector<std::int64_t> got;
  std::string cursor;
  const std::string limit = std::to_string(page);
  for (int round = 0; round < 20; ++round) {
    flows::ListParams p = base;
    p.limit = limit;
    p.cursor = cursor;
    p.unbounded = false;
    auto built = flows::build_list(p);
    auto* q = std::get_if<flows::ListQuery>(&built);
    FUZZ_CHECK(
        q, "page " + std::to_string(round) + " of a listing that builds in one go: " +
               (std::get_if<flows::ParamError>(&built) ? std::get<flows::ParamError>(built).message
                                                       : std::string()));
    std::int64_t rows = 0;
    std::string next;
    st.run(q->sql, q->binds, [&](sqlite3_stmt* s) {
      ++rows;
      if (rows <= q->limit) got.push_back(sqlite3_column_int64(s, id_col));
      if (rows == q->limit) next = q->next_cursor(s);
    });
    if (rows <= q->limit) break;  // no row after this page
    FUZZ_CHECK(!next.empty());
    cursor = next;
  }
  FUZZ_CHECK(got == want, "paged listing differs from the whole (sort '" + std::string(base.sort) +
                              "', filter '" + std::string(base.filter) + "')");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Store st;
  const auto p = lines(std::string_view(reinterpret_cast<const char*>(data), size), 10);
  check_filter(st, p[0]);

  flows::ListParams lp{.filter = p[0], .fields = p[2], .sort = p[1], .limit = p[3], .cursor = p[4]};
  auto list = flows::build_list(lp);
  if (auto* q = std::get_if<flows::ListQuery>(&list)) {
    st.run(q->sql, q->binds, [&](sqlite3_stmt* s) { (void)q->next_cursor(s); });
    st.run(q->packed_sql, q->binds, [](sqlite3_stmt*) {});
    if (p[4].empty() && q->limit <= 10) check_pages(st, lp, q->limit);
  }

  for (int variant = 0; variant < 2; ++variant) {
    flows::TopParams tp{.filter = p[0],
                        .by = p[5],
                        .metric = p[6],
                        .n = p[7],
                        .series_has_app = variant == 1,
                        .top_dims = variant == 1 ? "app,pair" : "",
                        .top_k = variant ? 1000 : 0};
    auto top = flows::build_top(tp);
    if (auto* q = std::get_if<flows::TopQuery>(&top))
      st.run(q->sql, q->binds, [](sqlite3_stmt*) {});
  }

  flows::TimeseriesParams sp{.filter = p[0],
                             .by = p[5],
                             .metric = p[6],
                             .bucket_ms = p[8],
                             .top = p[9],
                             .store_bucket_ms = 1000,
                             .first_ms = kFirstMs,
                             .last_ms = kLastMs};
  auto ts = flows::build_timeseries(sp);
  if (auto* q = std::get_if<flows::TimeseriesQuery>(&ts)) {
    nlohmann::json out;
    const auto outcome = flows::run_timeseries(st.db(), *q, out);
    FUZZ_CHECK(outcome.ok(), outcome.message + " in: " + q->sql);
  }
  return 0;
}

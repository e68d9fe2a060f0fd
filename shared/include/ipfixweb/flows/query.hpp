// Reading a flow store: the filter language (docs/flow-filter.md), for the queries behind
// GET /api/v1/tasks/{id}/flows, /flows/top and /flows/timeseries.
//
// Everything here is pure: a filter becomes SQL text plus bound values (or an error with its
// position), run on a connection the caller opened. Values from a request are only ever bound
// ("?" placeholders); the SQL text holds nothing but names from kFlowColumns (schema.hpp),
// operators and placeholders.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

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

}  // namespace ipfixweb::flows

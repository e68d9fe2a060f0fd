// Binding values and running statements on a flow store within a time budget.
#include "ipfixweb/flows/query.hpp"

#include <sqlite3.h>

namespace ipfixweb::flows {
namespace {

template <class... Ts>
struct overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
overloaded(Ts...) -> overloaded<Ts...>;

}  // namespace

// -----------------------------------------------------------------------------------------------
// Binding

int bind_values(sqlite3_stmt* stmt, const std::vector<SqlValue>& values) {
  int i = 0;
  for (const auto& value : values) {
    ++i;
    int rc = std::visit(overloaded{[&](std::int64_t v) { return sqlite3_bind_int64(stmt, i, v); },
                                   [&](double v) { return sqlite3_bind_double(stmt, i, v); },
                                   [&](const std::string& v) {
                                     return sqlite3_bind_text64(stmt, i, v.data(), v.size(),
                                                                SQLITE_TRANSIENT, SQLITE_UTF8);
                                   },
                                   [&](const std::vector<std::uint8_t>& v) {
                                     return v.empty()
                                                ? sqlite3_bind_zeroblob(stmt, i, 0)
                                                : sqlite3_bind_blob64(stmt, i, v.data(), v.size(),
                                                                      SQLITE_TRANSIENT);
                                   }},
                        value.v);
    if (rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

// -----------------------------------------------------------------------------------------------
// Budgets

QueryBudget::QueryBudget(sqlite3* db, std::chrono::milliseconds limit, int ops)
    : db_(db), deadline_(std::chrono::steady_clock::now() + limit) {
  sqlite3_progress_handler(db_, ops > 0 ? ops : 1, &QueryBudget::on_progress, this);
}

QueryBudget::~QueryBudget() { sqlite3_progress_handler(db_, 0, nullptr, nullptr); }

int QueryBudget::on_progress(void* self) {
  auto* b = static_cast<QueryBudget*>(self);
  if (!b->exhausted_ && std::chrono::steady_clock::now() >= b->deadline_) b->exhausted_ = true;
  return b->exhausted_ ? 1 : 0;
}

QueryStatus QueryBudget::classify(int rc) const {
  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return QueryStatus::Ok;
  if ((rc & 0xff) == SQLITE_INTERRUPT && exhausted_) return QueryStatus::TimedOut;
  return QueryStatus::Failed;
}

QueryOutcome run_query(sqlite3* db, std::string_view sql, const std::vector<SqlValue>& binds,
                       const std::function<bool(sqlite3_stmt*)>& on_row,
                       const QueryBudget* budget) {
  auto outcome = [&](int rc) -> QueryOutcome {
    QueryStatus status = budget                                   ? budget->classify(rc)
                         : (rc == SQLITE_OK || rc == SQLITE_DONE) ? QueryStatus::Ok
                                                                  : QueryStatus::Failed;
    if (status == QueryStatus::Ok) return {};
    if (status == QueryStatus::TimedOut) return {status, "the query ran out of time"};
    return {status, sqlite3_errmsg(db)};
  };
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return outcome(rc);
  }
  rc = bind_values(stmt, binds);
  if (rc != SQLITE_OK) {
    QueryOutcome o = outcome(rc);
    sqlite3_finalize(stmt);
    return o;
  }
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (on_row && !on_row(stmt)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  QueryOutcome o = outcome(rc);
  sqlite3_finalize(stmt);
  return o;
}

}  // namespace ipfixweb::flows

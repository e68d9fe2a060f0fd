#include "ipfixweb/flows/export.hpp"

#include <sqlite3.h>

#include <optional>

namespace ipfixweb::flows {

RowExport::RowExport(sqlite3* db, ListQuery q, Format format)
    : db_(db), q_(std::move(q)), format_(format) {
  for (const auto& n : q_.columns) columns_.push_back(column_index(n));
  if (sqlite3_prepare_v2(db_, q_.sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
    throw Error(sqlite3_errmsg(db_));
  const int rc = bind_values(stmt_, q_.binds);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt_);
    throw Error(sqlite3_errstr(rc));
  }
}

RowExport::~RowExport() { sqlite3_finalize(stmt_); }

bool RowExport::fill(std::string& out, std::size_t piece, std::chrono::milliseconds budget) {
  if (!header_done_) {
    header_done_ = true;
    if (format_ == Format::Csv) append_csv_header(out, columns_);
  }
  std::optional<QueryBudget> limit;
  if (budget.count() > 0) limit.emplace(db_, budget);
  while (out.size() < piece) {
    if (q_.limit > 0 && rows_ == q_.limit) return false;
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_DONE) return false;
    if (rc != SQLITE_ROW) {
      if (limit && limit->classify(rc) == QueryStatus::TimedOut)
        throw Error("export stopped: a piece took longer than " + std::to_string(budget.count()) +
                    " ms");
      throw Error(std::string("export stopped: ") + sqlite3_errmsg(db_));
    }
    append_row(out, stmt_, columns_, format_);
    ++rows_;
  }
  return true;
}

}  // namespace ipfixweb::flows

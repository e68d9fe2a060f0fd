#include "ipfixweb/shared/sqlite.hpp"

#include <sqlite3.h>

namespace ipfixweb::db {

void configure_process() {
  // A no-op (SQLITE_MISUSE) if SQLite was initialised before: settings stay the defaults.
  [[maybe_unused]] static const int once = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

Database::Database(const std::string& path, Mode mode) {
  configure_process();
  int flags = SQLITE_OPEN_NOMUTEX;  // one connection per thread; never shared
  flags |=
      mode == Mode::ReadOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &h_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg =
        "cannot open database " + path + ": " + (h_ ? sqlite3_errmsg(h_) : sqlite3_errstr(rc));
    sqlite3_close_v2(h_);
    h_ = nullptr;
    throw Error(msg, rc);
  }
  sqlite3_extended_result_codes(h_, 1);
  sqlite3_busy_timeout(h_, 5000);
}

Database::~Database() {
  if (h_) sqlite3_close_v2(h_);
}

void Database::fail(const std::string& what, int rc) const {
  throw Error(what + ": " + (h_ ? sqlite3_errmsg(h_) : sqlite3_errstr(rc)), rc);
}

void Database::exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(h_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    throw Error("sql failed (" + sql.substr(0, 60) + "): " + msg, rc);
  }
}

std::int64_t Database::scalar_int(const std::string& sql) {
  Statement st(*this, sql);
  return st.step() ? st.col_int(0) : 0;
}

std::int64_t Database::changes() const { return sqlite3_changes64(h_); }
std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(h_); }

Statement::Statement(Database& db, std::string_view sql) : db_(&db) {
  int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  if (rc != SQLITE_OK) db.fail("prepare " + std::string(sql.substr(0, 60)), rc);
}

Statement::~Statement() {
  if (s_) sqlite3_finalize(s_);
}

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    if (s_) sqlite3_finalize(s_);
    db_ = o.db_;
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

Statement& Statement::bind(int idx, std::int64_t v) {
  int rc = sqlite3_bind_int64(s_, idx, v);
  if (rc != SQLITE_OK) db_->fail("bind", rc);
  return *this;
}

Statement& Statement::bind(int idx, double v) {
  int rc = sqlite3_bind_double(s_, idx, v);
  if (rc != SQLITE_OK) db_->fail("bind", rc);
  return *this;
}

Statement& Statement::bind(int idx, std::string_view v) {
  int rc = sqlite3_bind_text64(s_, idx, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) db_->fail("bind", rc);
  return *this;
}

Statement& Statement::bind_null(int idx) {
  int rc = sqlite3_bind_null(s_, idx);
  if (rc != SQLITE_OK) db_->fail("bind", rc);
  return *this;
}

Statement& Statement::bind_opt(int idx, std::string_view v) {
  return v.empty() ? bind_null(idx) : bind(idx, v);
}

bool Statement::step() {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  int code = rc;
  sqlite3_reset(s_);
  db_->fail("step", code);
}

void Statement::run() {
  while (step()) {
  }
  reset();
}

void Statement::reset() {
  sqlite3_reset(s_);
  sqlite3_clear_bindings(s_);
}

std::int64_t Statement::col_int(int i) const { return sqlite3_column_int64(s_, i); }
double Statement::col_double(int i) const { return sqlite3_column_double(s_, i); }
bool Statement::col_null(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
std::string Statement::col_text(int i) const {
  auto p = sqlite3_column_text(s_, i);
  if (!p) return {};
  return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, i))};
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
      // Nothing sensible to do in a destructor; the connection rolls back on close.
    }
  }
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace ipfixweb::db

// Thin RAII owners for SQLite handles: Database (sqlite3*), Statement
// (sqlite3_stmt*) and Transaction (BEGIN IMMEDIATE ... COMMIT, rollback on
// scope exit unless committed). Failures throw db::Error.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace ipfixweb::db {

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// Process-wide SQLite settings, applied once before the process's first connection (every
// open in the project calls it): no memory statistics. With them on (SQLite's default), every
// allocation of every connection takes one global mutex, which the api's handler threads and
// the grouping's connections then share; the project never reads those statistics.
void configure_process();

class Database {
 public:
  enum class Mode { ReadWriteCreate, ReadOnly };
  Database(const std::string& path, Mode mode);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  Database(Database&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }

  void exec(const std::string& sql);
  std::int64_t scalar_int(const std::string& sql);
  std::int64_t changes() const;
  std::int64_t last_insert_rowid() const;
  sqlite3* handle() const { return h_; }
  [[noreturn]] void fail(const std::string& what, int rc) const;

 private:
  sqlite3* h_ = nullptr;
};

class Statement {
 public:
  Statement() = default;
  Statement(Database& db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement(Statement&& o) noexcept : db_(o.db_), s_(o.s_) { o.s_ = nullptr; }
  Statement& operator=(Statement&& o) noexcept;

  Statement& bind(int idx, std::int64_t v);
  Statement& bind(int idx, int v) { return bind(idx, static_cast<std::int64_t>(v)); }
  Statement& bind(int idx, double v);
  Statement& bind(int idx, std::string_view v);  // copied (SQLITE_TRANSIENT)
  Statement& bind(int idx, const char* v) { return bind(idx, std::string_view(v)); }
  Statement& bind(int idx, const std::string& v) { return bind(idx, std::string_view(v)); }
  Statement& bind_null(int idx);
  // Binds NULL when the string is empty.
  Statement& bind_opt(int idx, std::string_view v);

  bool step();  // true: a row is ready; false: done
  void run();   // step to completion (for writes), then reset
  void reset();

  std::int64_t col_int(int i) const;
  double col_double(int i) const;
  std::string col_text(int i) const;  // "" for NULL
  bool col_null(int i) const;

 private:
  Database* db_ = nullptr;
  sqlite3_stmt* s_ = nullptr;
};

class Transaction {
 public:
  explicit Transaction(Database& db);  // BEGIN IMMEDIATE: takes the write lock now
  ~Transaction();                      // rolls back unless committed
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace ipfixweb::db

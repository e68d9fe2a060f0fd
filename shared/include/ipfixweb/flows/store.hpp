// Reading a flow store (schema.hpp): opening one read-only with its format checked, and
// rendering rows as NDJSON or CSV, the one rendering that the api's exports, its /flows
// answers and pcap2ipfix --ndjson/--csv share.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ipfixweb/flows/writer.hpp"  // Error

struct sqlite3;
struct sqlite3_stmt;

namespace ipfixweb::flows {

// A flow store opened read-only. Throws Error with a message a user can act on when the
// file is missing, is not an SQLite database, is damaged or is not a flow store (or one of a
// newer version).
class Store {
 public:
  explicit Store(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  sqlite3* handle() const { return db_; }
  // meta values as text ("" when absent) and as numbers (0 when absent or not a number).
  std::string meta(const std::string& key) const;
  std::uint64_t meta_u64(const std::string& key) const;

 private:
  sqlite3* db_ = nullptr;
  std::map<std::string, std::string> meta_;
};

enum class Format { Ndjson, Csv };

// Exported columns by name, in schema order; `names` empty: every exported column. Returns
// the schema indexes, or nullopt with `bad` set to the first unknown or internal name.
std::optional<std::vector<int>> select_columns(const std::vector<std::string>& names,
                                               std::string* bad = nullptr);
// "name, name, ..." of the columns, for a SELECT.
std::string column_list_sql(std::span<const int> columns);

// The CSV header line (column names, CRLF-terminated as RFC 4180 has it).
void append_csv_header(std::string& out, std::span<const int> columns);
// One row of a statement whose result columns 0.. are `columns`, as one NDJSON line (a JSON
// object, '\n'-terminated; NULL as null) or one CSV line (NULL as an empty field).
void append_row(std::string& out, sqlite3_stmt* row, std::span<const int> columns, Format f);
// The same row as a JSON object without the line end (for /flows pages).
void append_json_object(std::string& out, sqlite3_stmt* row, std::span<const int> columns);

}  // namespace ipfixweb::flows

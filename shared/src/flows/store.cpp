#include "ipfixweb/flows/store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "ipfixweb/shared/json_escape.hpp"

namespace ipfixweb::flows {

namespace {

// Text of a column that may not be UTF-8 (server names come off the wire): every byte of
// an ill-formed string stands for itself (as Latin-1), so the JSON stays valid.
void append_json_text(std::string& out, std::string_view s) {
  out.push_back('"');
  if (is_valid_utf8(s)) {
    append_json_escaped(out, s);
  } else {
    for (unsigned char c : s) {
      if (c < 0x80) {
        append_json_escaped(out, std::string_view(reinterpret_cast<const char*>(&c), 1));
      } else {
        out.push_back(static_cast<char>(0xC0 | (c >> 6)));
        out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
      }
    }
  }
  out.push_back('"');
}

void append_csv_text(std::string& out, std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
    out.append(s);
    return;
  }
  out.push_back('"');
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
}

std::string_view col_text(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)))
           : std::string_view();
}

void append_int(std::string& out, sqlite3_stmt* s, int i) {
  char buf[24];
  const int n =
      std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(sqlite3_column_int64(s, i)));
  out.append(buf, static_cast<std::size_t>(n));
}

}  // namespace

Store::Store(const std::string& path) : path_(path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error(errno == ENOENT
                    ? "no flow store"
                    : "cannot open the flow store: " + std::string(std::strerror(errno)));
  }
  // immutable=1: the file never changes once published, so no locks and no journal lookups.
  std::string encoded = "file:";
  for (char c : path) {
    if (c == '%' || c == '#' || c == '?') {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", static_cast<unsigned char>(c));
      encoded += b;
    } else {
      encoded += c;
    }
  }
  encoded += "?mode=ro&immutable=1";
  int rc = sqlite3_open_v2(encoded.c_str(), &db_,
                           SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    const std::string m = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error("cannot open the flow store: " + m);
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_stmt* s = nullptr;
  rc = sqlite3_prepare_v2(db_, "SELECT key, value FROM meta", -1, &s, nullptr);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      meta_[std::string(col_text(s, 0))] = std::string(col_text(s, 1));
  }
  const std::string err = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db_);
  sqlite3_finalize(s);
  if (!err.empty() || meta_["format"] != kFormat) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error("the flow store is damaged or not a flow store" +
                (err.empty() ? std::string() : ": " + err));
  }
  if (meta_u64("version") > static_cast<std::uint64_t>(kVersion)) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw Error("the flow store has version " + meta("version") + "; this build reads up to " +
                std::to_string(kVersion));
  }
}

Store::~Store() {
  if (db_) sqlite3_close_v2(db_);
}

std::string Store::meta(const std::string& key) const {
  const auto it = meta_.find(key);
  return it == meta_.end() ? std::string() : it->second;
}

std::uint64_t Store::meta_u64(const std::string& key) const {
  const std::string v = meta(key);
  if (v.empty()) return 0;
  try {
    return std::stoull(v);
  } catch (...) {
    return 0;
  }
}

std::optional<std::vector<int>> select_columns(const std::vector<std::string>& names,
                                               std::string* bad) {
  std::vector<int> out;
  if (names.empty()) {
    for (std::size_t i = 0; i < kFlowColumns.size(); ++i)
      if (kFlowColumns[i].exported) out.push_back(static_cast<int>(i));
    return out;
  }
  for (const auto& n : names) {
    const int i = column_index(n);
    if (i < 0 || !kFlowColumns[static_cast<std::size_t>(i)].exported) {
      if (bad) *bad = n;
      return std::nullopt;
    }
    out.push_back(i);
  }
  return out;
}

std::string column_list_sql(std::span<const int> columns) {
  std::string s;
  for (int c : columns) {
    if (!s.empty()) s += ", ";
    s += kFlowColumns[static_cast<std::size_t>(c)].name;
  }
  return s;
}

void append_csv_header(std::string& out, std::span<const int> columns) {
  bool first = true;
  for (int c : columns) {
    if (!first) out.push_back(',');
    first = false;
    out.append(kFlowColumns[static_cast<std::size_t>(c)].name);
  }
  out.append("\r\n");
}

void append_json_object(std::string& out, sqlite3_stmt* row, std::span<const int> columns) {
  out.push_back('{');
  for (std::size_t i = 0; i < columns.size(); ++i) {
    const Column& col = kFlowColumns[static_cast<std::size_t>(columns[i])];
    if (i) out.push_back(',');
    out.push_back('"');
    out.append(col.name);
    out.append("\":");
    const int k = static_cast<int>(i);
    if (sqlite3_column_type(row, k) == SQLITE_NULL) {
      out.append("null");
    } else if (col.type == ColumnType::Integer) {
      append_int(out, row, k);
    } else {
      append_json_text(out, col_text(row, k));
    }
  }
  out.push_back('}');
}

void append_row(std::string& out, sqlite3_stmt* row, std::span<const int> columns, Format f) {
  if (f == Format::Ndjson) {
    append_json_object(out, row, columns);
    out.push_back('\n');
    return;
  }
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out.push_back(',');
    const int k = static_cast<int>(i);
    if (sqlite3_column_type(row, k) == SQLITE_NULL) continue;
    if (kFlowColumns[static_cast<std::size_t>(columns[i])].type == ColumnType::Integer)
      append_int(out, row, k);
    else
      append_csv_text(out, col_text(row, k));
  }
  out.append("\r\n");
}

}  // namespace ipfixweb::flows

#include "ipfixweb/flows/store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "ipfixweb/shared/json_escape.hpp"

namespace ipfixweb::flows {

namespace {

// Text of a column that may not be UTF-8 (server names come off the wire): every byte of
// an ill-formed string stands for itself (as Latin-1), so the JSON stays valid.
void append_json_text(std::string& out, std::string_view s) {
  out.push_back('"');
  bool plain = true;  // printable ASCII without quotes or backslashes: as it is
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x80 || c == '"' || c == '\\') {
      plain = false;
      break;
    }
  }
  if (plain) {
    out.append(s);
  } else if (is_valid_utf8(s)) {
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
  const auto r = std::to_chars(buf, buf + sizeof buf, sqlite3_column_int64(s, i));
  out.append(buf, r.ptr);
}

// "2015-04-26T17:23:48.075Z" from milliseconds since 1970 (proleptic Gregorian, UTC), as
// SQLite's strftime('%Y-%m-%dT%H:%M:%fZ') writes it, at a fraction of its cost.
void append_iso_time(std::string& out, std::int64_t ms) {
  std::int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  const int millis = static_cast<int>(ms - secs * 1000);
  std::int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  const int sod = static_cast<int>(secs - days * 86400);
  // civil_from_days (H. Hinnant's algorithm)
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  char buf[8];
  const auto two = [&](unsigned v) {
    buf[0] = static_cast<char>('0' + v / 10);
    buf[1] = static_cast<char>('0' + v % 10);
    out.append(buf, 2);
  };
  if (y >= 0 && y <= 9999) {
    const auto yy = static_cast<unsigned>(y);
    two(yy / 100);
    two(yy % 100);
  } else {
    out.append(std::to_string(y));
  }
  out.push_back('-');
  two(m);
  out.push_back('-');
  two(d);
  out.push_back('T');
  two(static_cast<unsigned>(sod / 3600));
  out.push_back(':');
  two(static_cast<unsigned>(sod / 60 % 60));
  out.push_back(':');
  two(static_cast<unsigned>(sod % 60));
  out.push_back('.');
  out.push_back(static_cast<char>('0' + millis / 100));
  two(static_cast<unsigned>(millis % 100));
  out.push_back('Z');
}

// How a column's values are written.
enum class Kind : std::uint8_t { Integer, Text, Time, Proto };
const std::array<Kind, kFlowColumns.size()>& kinds() {
  static const auto table = [] {
    std::array<Kind, kFlowColumns.size()> k{};
    for (std::size_t i = 0; i < kFlowColumns.size(); ++i) {
      const Column& c = kFlowColumns[i];
      k[i] = c.name == "start_time" || c.name == "end_time" ? Kind::Time
             : c.name == "proto_name"                       ? Kind::Proto
             : c.type == ColumnType::Integer                ? Kind::Integer
                                                            : Kind::Text;
    }
    return k;
  }();
  return table;
}

// A value that is not NULL. Time and Proto columns come as their stored integers (schema's
// select_expression) or, selected by name from the view, as text.
void append_value(std::string& out, Kind kind, int type, sqlite3_stmt* s, int i, bool json) {
  if (type == SQLITE_INTEGER && (kind == Kind::Time || kind == Kind::Proto)) {
    if (json) out.push_back('"');
    if (kind == Kind::Time)
      append_iso_time(out, sqlite3_column_int64(s, i));
    else
      out.append(proto_name(static_cast<std::uint8_t>(sqlite3_column_int64(s, i))));
    if (json) out.push_back('"');
  } else if (kind == Kind::Integer && type == SQLITE_INTEGER) {
    append_int(out, s, i);
  } else if (json) {
    append_json_text(out, col_text(s, i));
  } else {
    append_csv_text(out, col_text(s, i));
  }
}

}  // namespace

Store::Store(const std::string& path) {
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
    s += select_expression(kFlowColumns[static_cast<std::size_t>(c)].name);
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
  const auto& k = kinds();
  out.push_back('{');
  for (std::size_t i = 0; i < columns.size(); ++i) {
    const auto c = static_cast<std::size_t>(columns[i]);
    if (i) out.push_back(',');
    out.push_back('"');
    out.append(kFlowColumns[c].name);
    out.append("\":");
    const int at = static_cast<int>(i);
    const int type = sqlite3_column_type(row, at);
    if (type == SQLITE_NULL)
      out.append("null");
    else
      append_value(out, k[c], type, row, at, true);
  }
  out.push_back('}');
}

void append_row(std::string& out, sqlite3_stmt* row, std::span<const int> columns, Format f) {
  if (f == Format::Ndjson) {
    append_json_object(out, row, columns);
    out.push_back('\n');
    return;
  }
  const auto& k = kinds();
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (i) out.push_back(',');
    const int at = static_cast<int>(i);
    const int type = sqlite3_column_type(row, at);
    if (type != SQLITE_NULL)
      append_value(out, k[static_cast<std::size_t>(columns[i])], type, row, at, false);
  }
  out.append("\r\n");
}

}  // namespace ipfixweb::flows

#include "ipfixweb/flows/store.hpp"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "ipfixweb/shared/json_escape.hpp"
#include "ipfixweb/shared/sqlite.hpp"
#include "render.hpp"

namespace ipfixweb::flows {

namespace {

// One byte of an ill-formed string as the character of that code point (Latin-1), in UTF-8.
void append_latin1(std::string& out, unsigned char c) {
  out.push_back(static_cast<char>(0xC0 | (c >> 6)));
  out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
}

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
        append_latin1(out, c);
      }
    }
  }
  out.push_back('"');
}

// A CSV field (RFC 4180 quoting), UTF-8 as the JSON one: an ill-formed string's bytes stand
// for themselves (as Latin-1).
void append_csv_text(std::string& out, std::string_view s) {
  const bool utf8 = is_valid_utf8(s);
  const bool quoted = s.find_first_of(",\"\r\n") != std::string_view::npos;
  if (utf8 && !quoted) {
    out.append(s);
    return;
  }
  if (quoted) out.push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"') out.push_back('"');
    if (!utf8 && u >= 0x80)
      append_latin1(out, u);
    else
      out.push_back(c);
  }
  if (quoted) out.push_back('"');
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
enum class RenderKind : std::uint8_t { Integer, Text, Time, Proto };
const std::array<RenderKind, kFlowColumns.size()>& kinds() {
  static const auto table = [] {
    std::array<RenderKind, kFlowColumns.size()> k{};
    for (std::size_t i = 0; i < kFlowColumns.size(); ++i) {
      const Column& c = kFlowColumns[i];
      k[i] = c.name == "start_time" || c.name == "end_time" ? RenderKind::Time
             : c.name == "proto_name"                       ? RenderKind::Proto
             : c.type == ColumnType::Integer                ? RenderKind::Integer
                                                            : RenderKind::Text;
    }
    return k;
  }();
  return table;
}

// A value that is not NULL. Time and Proto columns come as their stored integers (schema's
// select_expression) or, selected by name from the view, as text.
void append_value(std::string& out, RenderKind kind, int type, sqlite3_stmt* s, int i, bool json) {
  if (type == SQLITE_INTEGER && (kind == RenderKind::Time || kind == RenderKind::Proto)) {
    if (json) out.push_back('"');
    if (kind == RenderKind::Time)
      append_iso_time(out, sqlite3_column_int64(s, i));
    else
      out.append(proto_name(static_cast<std::uint8_t>(sqlite3_column_int64(s, i))));
    if (json) out.push_back('"');
  } else if (kind == RenderKind::Integer && type == SQLITE_INTEGER) {
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
  ipfixweb::db::configure_process();
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

// ---- RowRenderer ----------------------------------------------------------------------------

namespace detail {

namespace {

enum Field : std::uint8_t {
  kId,
  kStartMs,
  kEndMs,
  kStartTime,
  kEndTime,
  kDuration,
  kIpVersion,
  kProto,
  kProtoName,
  kSrc,
  kDst,
  kSport,
  kDport,
  kVlan,
  kPackets,
  kBytes,
  kFwdPackets,
  kFwdBytes,
  kRevPackets,
  kRevBytes,
  kTcpFlags,
  kRevTcpFlags,
  kIcmp,
  kRevIcmp,
  kTos,
  kRevTos,
  kEndReason,
  kAppId,
  kApp,
  kServerName,
  kJa3c,
  kCommunityId,
  kRisk,
  kRiskScore,
  kRisks,
};

Field field_of(std::string_view name) {
  static constexpr std::pair<std::string_view, Field> kNames[] = {
      {"id", kId},
      {"start_ms", kStartMs},
      {"end_ms", kEndMs},
      {"start_time", kStartTime},
      {"end_time", kEndTime},
      {"duration_ms", kDuration},
      {"ip_version", kIpVersion},
      {"proto", kProto},
      {"proto_name", kProtoName},
      {"src", kSrc},
      {"dst", kDst},
      {"sport", kSport},
      {"dport", kDport},
      {"vlan", kVlan},
      {"packets", kPackets},
      {"bytes", kBytes},
      {"fwd_packets", kFwdPackets},
      {"fwd_bytes", kFwdBytes},
      {"rev_packets", kRevPackets},
      {"rev_bytes", kRevBytes},
      {"tcp_flags", kTcpFlags},
      {"rev_tcp_flags", kRevTcpFlags},
      {"icmp_type_code", kIcmp},
      {"rev_icmp_type_code", kRevIcmp},
      {"tos", kTos},
      {"rev_tos", kRevTos},
      {"end_reason", kEndReason},
      {"app_id", kAppId},
      {"app", kApp},
      {"server_name", kServerName},
      {"ja3c", kJa3c},
      {"community_id", kCommunityId},
      {"risk", kRisk},
      {"risk_score", kRiskScore},
      {"risks", kRisks},
  };
  for (const auto& [n, f] : kNames)
    if (n == name) return f;
  throw Error("flow store: no packed rendering for column " + std::string(name));
}

char* put(char* p, std::string_view s) {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char* put_int(char* p, std::int64_t v) { return std::to_chars(p, p + 24, v).ptr; }

char* put_two(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
  return p + 2;
}

// Text as append_json_text / append_csv_text write it.
char* put_text(char* p, std::string_view s, bool json) {
  bool plain = true;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (json ? (u < 0x20 || u >= 0x80 || c == '"' || c == '\\')
             : (u >= 0x80 || c == ',' || c == '"' || c == '\r' || c == '\n')) {
      plain = false;
      break;
    }
  }
  if (plain) {
    if (json) *p++ = '"';
    p = put(p, s);
    if (json) *p++ = '"';
    return p;
  }
  std::string t;
  if (json)
    append_json_text(t, s);
  else
    append_csv_text(t, s);
  return put(p, t);
}

}  // namespace

RowRenderer::RowRenderer(std::span<const int> columns, Format format)
    : columns_(columns.begin(), columns.end()), format_(format) {
  const bool json = format == Format::Ndjson;
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    const auto& c = kFlowColumns[static_cast<std::size_t>(columns_[i])];
    fields_.push_back(field_of(c.name));  // throws for a column the renderer does not know
    if (json)
      prefix_.push_back((i ? ",\"" : "{\"") + std::string(c.name) + "\":");
    else
      prefix_.emplace_back(i ? "," : "");
  }
  suffix_ = json ? (columns_.empty() ? "{}\n" : "}\n") : "\r\n";
}

char* RowRenderer::time(char* p, std::int64_t ms) {
  std::int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  const int millis = static_cast<int>(ms - secs * 1000);
  const std::int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  const int sod = static_cast<int>(secs - days * 86400);
  if (days != day_) {
    std::string d;
    append_iso_time(d, days * 86400000);  // "YYYY-MM-DDT00:00:00.000Z"
    const auto t = d.find('T');
    date_len_ = std::min(t + 1, sizeof date_);
    std::memcpy(date_, d.data(), date_len_);
    day_ = days;
  }
  p = put(p, std::string_view(date_, date_len_));
  p = put_two(p, static_cast<unsigned>(sod / 3600));
  *p++ = ':';
  p = put_two(p, static_cast<unsigned>(sod / 60 % 60));
  *p++ = ':';
  p = put_two(p, static_cast<unsigned>(sod % 60));
  *p++ = '.';
  *p++ = static_cast<char>('0' + millis / 100);
  p = put_two(p, static_cast<unsigned>(millis % 100));
  *p++ = 'Z';
  return p;
}

void RowRenderer::append(std::string& out, std::int64_t id, const FlowRow& r) {
  const bool json = format_ == Format::Ndjson;
  const std::size_t strings =
      r.app.size() + r.server_name.size() + r.ja3c.size() + r.community_id.size() + r.risks.size();
  const std::size_t bound = 16 + columns_.size() * 80 + 6 * strings;
  if (scratch_.size() < bound) scratch_.resize(bound);
  char* const start = scratch_.data();
  char* p = start;
  const auto null = [&] {
    if (json) p = put(p, "null");
  };
  const auto opt = [&](bool has, std::int64_t v) {
    if (has)
      p = put_int(p, v);
    else
      null();
  };
  const auto text = [&](std::string_view s) {
    if (s.empty())
      null();
    else
      p = put_text(p, s, json);
  };
  const auto s64 = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    p = put(p, prefix_[i]);
    switch (static_cast<Field>(fields_[i])) {
      case kId:
        p = put_int(p, id);
        break;
      case kStartMs:
        p = put_int(p, s64(r.start_ms));
        break;
      case kEndMs:
        p = put_int(p, s64(r.end_ms));
        break;
      case kStartTime:
      case kEndTime:
        if (json) *p++ = '"';
        p = time(p, s64(static_cast<Field>(fields_[i]) == kStartTime ? r.start_ms : r.end_ms));
        if (json) *p++ = '"';
        break;
      case kDuration:
        p = put_int(p, s64(r.end_ms) - s64(r.start_ms));
        break;
      case kIpVersion:
        p = put_int(p, r.ip_version);
        break;
      case kProto:
        p = put_int(p, r.proto);
        break;
      case kProtoName:
        if (json) *p++ = '"';
        p = put(p, proto_name(r.proto));
        if (json) *p++ = '"';
        break;
      case kSrc:
      case kDst: {
        const std::string a =
            address_text(static_cast<Field>(fields_[i]) == kSrc ? r.src : r.dst, r.ip_version);
        p = put_text(p, a, json);
        break;
      }
      case kSport:
        p = put_int(p, r.sport);
        break;
      case kDport:
        p = put_int(p, r.dport);
        break;
      case kVlan:
        p = put_int(p, r.vlan);
        break;
      case kPackets:
        p = put_int(p, s64(r.fwd_packets + (r.has_rev ? r.rev_packets : 0)));
        break;
      case kBytes:
        p = put_int(p, s64(r.fwd_bytes + (r.has_rev ? r.rev_bytes : 0)));
        break;
      case kFwdPackets:
        p = put_int(p, s64(r.fwd_packets));
        break;
      case kFwdBytes:
        p = put_int(p, s64(r.fwd_bytes));
        break;
      case kRevPackets:
        opt(r.has_rev, s64(r.rev_packets));
        break;
      case kRevBytes:
        opt(r.has_rev, s64(r.rev_bytes));
        break;
      case kTcpFlags:
        opt(r.has_flags, r.tcp_flags);
        break;
      case kRevTcpFlags:
        opt(r.has_flags && r.has_rev, r.rev_tcp_flags);
        break;
      case kIcmp:
        opt(r.has_flags, r.icmp_type_code);
        break;
      case kRevIcmp:
        opt(r.has_flags && r.has_rev, r.rev_icmp_type_code);
        break;
      case kTos:
        opt(r.has_flags, r.tos);
        break;
      case kRevTos:
        opt(r.has_flags && r.has_rev, r.rev_tos);
        break;
      case kEndReason:
        opt(r.end_reason != 0, r.end_reason);
        break;
      case kAppId:
        opt(r.has_app, r.app_id);
        break;
      case kApp:
        if (r.has_app)
          text(r.app);
        else
          null();
        break;
      case kServerName:
        text(r.server_name);
        break;
      case kJa3c:
        text(r.ja3c);
        break;
      case kCommunityId:
        text(r.community_id);
        break;
      case kRisk:
        opt(r.has_app, s64(r.risk));
        break;
      case kRiskScore:
        opt(r.has_app, r.risk_score);
        break;
      case kRisks:
        text(r.risks);
        break;
    }
  }
  p = put(p, suffix_);
  out.append(start, p);
}

}  // namespace detail

}  // namespace ipfixweb::flows

// The queries of /flows, /flows/top and /flows/timeseries over a flow store, the cursor of
// keyset pagination, and running statements within a time budget.
#include "ipfixweb/flows/query.hpp"

#include "series_answer.hpp"

#include <limits>

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "fields.hpp"
#include "series_answer.hpp"

namespace ipfixweb::flows {
namespace {

template <class... Ts>
struct overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
overloaded(Ts...) -> overloaded<Ts...>;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    auto p = s.find(sep);
    out.push_back(trim(s.substr(0, p)));
    if (p == std::string_view::npos) break;
    s.remove_prefix(p + 1);
  }
  return out;
}

// A decimal integer parameter in [lo, hi]; "" is `def`.
std::optional<std::int64_t> int_param(std::string_view text, std::int64_t lo, std::int64_t hi,
                                      std::int64_t def) {
  text = trim(text);
  if (text.empty()) return def;
  if (text.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) return std::nullopt;
  return v;
}

ParamError range_error(std::string name, std::int64_t lo, std::int64_t hi) {
  return {name,
          name + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi),
          std::nullopt};
}

// The filter parameter as a condition, or the error naming it.
std::variant<Where, ParamError> filter_param(std::string_view text) {
  auto parsed = parse_filter(text);
  if (auto* e = std::get_if<FilterError>(&parsed))
    return ParamError{"filter",
                      "at byte " + std::to_string(e->position) + ": " + e->message +
                          (e->expected.empty() ? "" : " (expected " + e->expected + ")"),
                      *e};
  return std::get<Where>(std::move(parsed));
}

ParamError unknown_column(std::string parameter, std::string_view name) {
  bool not_exported = false;
  detail::find_exported(detail::lower(name), &not_exported);
  std::string msg =
      (not_exported ? "not an exported column: '" : "unknown field '") + std::string(name) + "'";
  if (!not_exported)
    if (auto near = detail::closest(name, detail::exported_names()); !near.empty())
      msg += " (did you mean '" + std::string(near) + "'?)";
  return {std::move(parameter), msg, std::nullopt};
}

// "by must be one of app, src, dst": the names of a table (schema.hpp).
template <std::size_t N>
std::string one_of_text(std::string_view name, const std::array<std::string_view, N>& allowed) {
  std::string text = std::string(name) + " must be one of ";
  for (std::size_t i = 0; i < N; ++i) {
    if (i) text += ", ";
    text += allowed[i];
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Cursors: base64url (no padding) of
//   version byte 1, 8-byte tag, then per sort key a typed value:
//   'n' null | 'i' int64 (8 bytes big-endian) | 'f' double (8 bytes big-endian IEEE) |
//   't' text (4-byte big-endian length, bytes) | 'b' blob (1-byte length, bytes)

constexpr std::size_t kMaxCursorChars = 16384;
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url(const std::string& in) {
  std::string out;
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = byte(i) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    unsigned v = (byte(i) << 16) | (byte(i + 1) << 8);
    for (int s = 18; s >= 6; s -= 6) out += kB64[(v >> s) & 63];
  }
  return out;
}

std::optional<std::string> unbase64url(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = c ? std::strchr(kB64, c) : nullptr;
    if (!p) return std::nullopt;
    acc = (acc << 6) | static_cast<unsigned>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (acc & ((1u << bits) - 1)) return std::nullopt;  // non-canonical trailing bits
  return out;
}

void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) s += static_cast<char>((v >> (i * 8)) & 0xff);
}

struct Reader {
  std::string_view s;
  bool take(std::size_t n, std::string_view& out) {
    if (s.size() < n) return false;
    out = s.substr(0, n);
    s.remove_prefix(n);
    return true;
  }
  bool u64(std::uint64_t& v) {
    std::string_view b;
    if (!take(8, b)) return false;
    v = 0;
    for (char c : b) v = (v << 8) | static_cast<unsigned char>(c);
    return true;
  }
};

std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 14695981039346656037ull) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// What identifies the order of a listing: the sort keys and the filter's SQL and values.
std::string tag_of(const std::vector<SortKey>& keys, const Where& where) {
  std::string s;
  for (const auto& k : keys) s.append(k.descending ? "-" : "+").append(k.column).append(",");
  s += '\n';
  s += where.sql;
  for (const auto& b : where.binds) {
    s += '\n';
    std::visit(overloaded{[&](std::int64_t v) { s += "i" + std::to_string(v); },
                          [&](double v) { s += "f" + std::to_string(v); },
                          [&](const std::string& v) { s += "t" + v; },
                          [&](const std::vector<std::uint8_t>& v) {
                            s += "b";
                            s.append(v.begin(), v.end());
                          }},
               b.v);
  }
  std::string tag;
  put_u64(tag, fnv1a(s));
  return tag;
}

struct KeyInfo {
  ColumnType type;  // Blob for the address keys
  bool nullable;
};

KeyInfo key_info(std::string_view column) {
  if (column == "src_ip" || column == "dst_ip") return {ColumnType::Blob, false};
  const Column& c = kFlowColumns[static_cast<std::size_t>(column_index(column))];
  return {c.type, detail::nullable(c)};
}

// The sort keys' values a cursor carries; nullopt = NULL.
using CursorValues = std::vector<std::optional<SqlValue>>;

std::optional<CursorValues> decode_cursor(std::string_view text, const std::vector<SortKey>& keys,
                                          const std::string& tag, bool& wrong_query) {
  wrong_query = false;
  if (text.size() > kMaxCursorChars) return std::nullopt;
  auto raw = unbase64url(text);
  if (!raw) return std::nullopt;
  Reader r{*raw};
  std::string_view head, t;
  if (!r.take(1, head) || head[0] != 1 || !r.take(8, t)) return std::nullopt;
  if (t != tag) {
    wrong_query = true;
    return std::nullopt;
  }
  CursorValues values;
  for (const auto& k : keys) {
    KeyInfo info = key_info(k.column);
    std::string_view type;
    if (!r.take(1, type)) return std::nullopt;
    switch (type[0]) {
      case 'n':
        if (!info.nullable) return std::nullopt;
        values.emplace_back(std::nullopt);
        break;
      case 'i': {
        std::uint64_t v = 0;
        if (info.type != ColumnType::Integer || !r.u64(v)) return std::nullopt;
        values.emplace_back(SqlValue{static_cast<std::int64_t>(v)});
        break;
      }
      case 'f': {
        std::uint64_t v = 0;
        if (info.type != ColumnType::Integer || !r.u64(v)) return std::nullopt;
        double d = 0;
        std::memcpy(&d, &v, sizeof d);
        values.emplace_back(SqlValue{d});
        break;
      }
      case 't': {
        std::uint64_t n = 0;
        std::string_view len, body;
        if (info.type != ColumnType::Text || !r.take(4, len)) return std::nullopt;
        for (char c : len) n = (n << 8) | static_cast<unsigned char>(c);
        if (!r.take(n, body)) return std::nullopt;
        values.emplace_back(SqlValue{std::string(body)});
        break;
      }
      case 'b': {
        std::string_view len, body;
        if (info.type != ColumnType::Blob || !r.take(1, len)) return std::nullopt;
        if (!r.take(static_cast<unsigned char>(len[0]), body)) return std::nullopt;
        values.emplace_back(SqlValue{std::vector<std::uint8_t>(body.begin(), body.end())});
        break;
      }
      default:
        return std::nullopt;
    }
  }
  if (!r.s.empty()) return std::nullopt;
  return values;
}

// Rows strictly after the cursor's row in the order of `keys`. SQLite orders NULL before
// every value: first in ascending, last in descending order.
std::string keyset_condition(const std::vector<SortKey>& keys, const CursorValues& c,
                             std::vector<SqlValue>& binds) {
  std::string disjunction;
  std::vector<SqlValue> dbinds;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const SortKey& k = keys[i];
    const bool nullable = key_info(k.column).nullable;
    std::string after;
    std::vector<SqlValue> abinds;
    if (!k.descending) {
      if (c[i]) {
        after = k.column + " > ?";
        abinds.push_back(*c[i]);
      } else {
        after = k.column + " IS NOT NULL";
      }
    } else {
      if (!c[i]) continue;  // nothing sorts after NULL in descending order
      after = nullable ? "(" + k.column + " < ? OR " + k.column + " IS NULL)" : k.column + " < ?";
      abinds.push_back(*c[i]);
    }
    std::string conj;
    for (std::size_t j = 0; j < i; ++j) {
      if (c[j]) {
        conj += keys[j].column + " = ? AND ";
        dbinds.push_back(*c[j]);
      } else {
        conj += keys[j].column + " IS NULL AND ";
      }
    }
    conj += after;
    dbinds.insert(dbinds.end(), abinds.begin(), abinds.end());
    disjunction += (disjunction.empty() ? "(" : " OR (") + conj + ")";
  }
  if (disjunction.empty()) return "0";
  // A range on the first key that an index can use; the disjunction decides.
  const SortKey& k0 = keys[0];
  if (c[0] && (!k0.descending || !key_info(k0.column).nullable)) {
    binds.push_back(*c[0]);
    binds.insert(binds.end(), dbinds.begin(), dbinds.end());
    return k0.column + (k0.descending ? " <= ?" : " >= ?") + " AND (" + disjunction + ")";
  }
  binds.insert(binds.end(), dbinds.begin(), dbinds.end());
  return disjunction;
}

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
// /flows

std::string ListQuery::next_cursor(sqlite3_stmt* row) const {
  std::string raw(1, '\1');
  raw += tag;
  int col = static_cast<int>(columns.size());
  for (std::size_t i = 0; i < keys.size(); ++i, ++col) {
    switch (sqlite3_column_type(row, col)) {
      case SQLITE_NULL:
        raw += 'n';
        break;
      case SQLITE_INTEGER:
        raw += 'i';
        put_u64(raw, static_cast<std::uint64_t>(sqlite3_column_int64(row, col)));
        break;
      case SQLITE_FLOAT: {
        double d = sqlite3_column_double(row, col);
        std::uint64_t v = 0;
        std::memcpy(&v, &d, sizeof v);
        raw += 'f';
        put_u64(raw, v);
        break;
      }
      case SQLITE_TEXT: {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(row, col));
        auto n = static_cast<std::uint32_t>(sqlite3_column_bytes(row, col));
        raw += 't';
        for (int s = 24; s >= 0; s -= 8) raw += static_cast<char>((n >> s) & 0xff);
        raw.append(p ? p : "", n);
        break;
      }
      default: {  // SQLITE_BLOB
        const auto* p = static_cast<const char*>(sqlite3_column_blob(row, col));
        int n = std::min(sqlite3_column_bytes(row, col), 255);
        raw += 'b';
        raw += static_cast<char>(n);
        raw.append(p ? p : "", static_cast<std::size_t>(n));
        break;
      }
    }
  }
  return base64url(raw);
}

std::variant<ListQuery, ParamError> build_list(const ListParams& params) {
  ListQuery q;
  auto where = filter_param(params.filter);
  if (auto* e = std::get_if<ParamError>(&where)) return *e;
  const Where& w = std::get<Where>(where);

  // fields
  if (trim(params.fields).empty()) {
    for (const auto& c : kFlowColumns)
      if (c.exported) q.columns.emplace_back(c.name);
  } else {
    for (auto name : split(params.fields, ',')) {
      if (name.empty()) return ParamError{"fields", "empty field name in the list", std::nullopt};
      const Column* c = detail::find_exported(detail::lower(name));
      if (!c) return unknown_column("fields", name);
      if (std::find(q.columns.begin(), q.columns.end(), c->name) == q.columns.end())
        q.columns.emplace_back(c->name);
    }
  }

  // sort
  std::string_view sort = trim(params.sort).empty() ? std::string_view("id") : params.sort;
  for (auto item : split(sort, ',')) {
    SortKey k;
    if (!item.empty() && (item[0] == '-' || item[0] == '+')) {
      k.descending = item[0] == '-';
      item.remove_prefix(1);
    }
    if (item.empty()) return ParamError{"sort", "empty field name in the list", std::nullopt};
    const Column* c = detail::find_exported(detail::lower(item));
    if (!c) return unknown_column("sort", item);
    k.column = c->type == ColumnType::Address ? std::string(c->name) + "_ip" : std::string(c->name);
    for (const auto& other : q.keys)
      if (other.column == k.column)
        return ParamError{"sort", "'" + std::string(c->name) + "' is named twice", std::nullopt};
    q.keys.push_back(k);
    if (k.column == "id") break;  // unique: later keys could never matter
  }
  if (q.keys.back().column != "id") q.keys.push_back(SortKey{"id", false});

  // limit
  const std::int64_t max_limit =
      params.unbounded ? std::numeric_limits<std::int64_t>::max() - 1 : kMaxListLimit;
  auto limit =
      int_param(params.limit, 1, max_limit, params.unbounded ? std::int64_t{0} : kDefaultListLimit);
  if (!limit) return range_error("limit", 1, max_limit);
  q.limit = *limit;

  q.tag = tag_of(q.keys, w);

  // cursor
  std::string keyset;
  std::vector<SqlValue> keyset_binds;
  if (!trim(params.cursor).empty()) {
    bool wrong_query = false;
    auto values = decode_cursor(trim(params.cursor), q.keys, q.tag, wrong_query);
    if (!values)
      return ParamError{"cursor",
                        wrong_query ? "the cursor belongs to a listing with another sort or filter"
                                    : "not a cursor of this api",
                        std::nullopt};
    keyset = keyset_condition(q.keys, *values, keyset_binds);
  }

  q.sql = "SELECT ";
  bool first = true;
  for (const auto& c : q.columns) {
    q.sql += (first ? "" : ", ") + select_expression(c);
    first = false;
  }
  std::string rest;  // after the result columns
  for (const auto& k : q.keys) rest += ", " + k.column;
  rest += " FROM flows";
  if (!w.sql.empty() && !keyset.empty()) {
    rest += " WHERE (" + w.sql + ") AND (" + keyset + ")";
  } else if (!w.sql.empty()) {
    rest += " WHERE " + w.sql;
  } else if (!keyset.empty()) {
    rest += " WHERE " + keyset;
  }
  q.binds = w.binds;
  q.binds.insert(q.binds.end(), keyset_binds.begin(), keyset_binds.end());
  rest += " ORDER BY ";
  first = true;
  for (const auto& k : q.keys) {
    rest += (first ? "" : ", ") + k.column + (k.descending ? " DESC" : "");
    first = false;
  }
  if (q.limit > 0) {
    rest += " LIMIT ?";
    q.binds.push_back({q.limit + 1});
  }
  q.sql += rest;
  q.packed_sql = "SELECT id, packed, app, server_name, ja3c, community_id, risks" + rest;
  return q;
}

// -----------------------------------------------------------------------------------------------
// /flows/top

std::variant<TopQuery, ParamError> build_top(const TopParams& params) {
  TopQuery q;
  const std::string by = detail::lower(trim(params.by));
  const TopDimension* dim = nullptr;
  for (const auto& d : kTopDimensions)
    if (d.name == by) dim = &d;
  if (!dim) return ParamError{"by", one_of_text("by", kTopDims), std::nullopt};
  q.columns = {std::string(dim->key)};
  if (!dim->key2.empty()) q.columns.emplace_back(dim->key2);
  q.key_count = q.columns.size();
  q.by = by;

  const std::string metric = detail::lower(trim(params.metric));
  std::size_t metric_col = 0;  // 1-based ordinal of the ordering column
  for (std::size_t i = 0; i < kMetrics.size(); ++i)
    if (metric == kMetrics[i] || (metric.empty() && i == 0)) metric_col = q.key_count + 1 + i;
  if (!metric_col) return ParamError{"metric", one_of_text("metric", kMetrics), std::nullopt};
  q.metric = kMetrics[metric_col - q.key_count - 1];

  auto n = int_param(params.n, 1, kMaxTopN, kDefaultTopN);
  if (!n) return range_error("n", 1, kMaxTopN);

  auto where = filter_param(params.filter);
  if (auto* e = std::get_if<ParamError>(&where)) return *e;
  Where& w = std::get<Where>(where);

  std::string keys, order;
  for (std::size_t i = 0; i < q.key_count; ++i) {
    keys += (i ? ", " : "") + q.columns[i];
    order += ", " + std::to_string(i + 1);
  }
  if (w.sql.empty() && *n <= params.top_k) {
    bool listed = false;
    for (auto d : split(params.top_dims, ','))
      if (d == by) listed = true;
    if (listed) {
      q.sql = "SELECT key AS " + q.columns[0];
      if (q.key_count == 2) q.sql += ", key2 AS " + q.columns[1];
      q.sql +=
          ", bytes, packets, flows FROM top WHERE dim = ? AND metric = ? ORDER BY rank LIMIT ?";
      q.binds = {{by}, {q.metric}, {*n}};
      q.columns.insert(q.columns.end(), {"bytes", "packets", "flows"});
      return q;
    }
  }
  const bool from_series = w.sql.empty() && params.series_has_app &&
                           (q.columns[0] == "app" || q.columns[0] == "proto_name");
  if (from_series) {
    q.sql = "SELECT key AS " + q.columns[0] +
            ", sum(bytes) AS bytes, sum(packets) AS packets, sum(flows) AS flows FROM series "
            "WHERE dim = ? GROUP BY key ORDER BY " +
            std::to_string(metric_col) + " DESC, 1 LIMIT ?";
    q.binds = {{std::string(q.columns[0] == "app" ? "app" : "proto")}, {*n}};
    q.columns.insert(q.columns.end(), {"bytes", "packets", "flows"});
    return q;
  }
  q.sql = "SELECT " + keys +
          ", sum(bytes) AS bytes, sum(packets) AS packets, count(*) AS flows FROM flows";
  if (!w.sql.empty()) q.sql += " WHERE " + w.sql;
  q.sql += " GROUP BY " + keys + " ORDER BY " + std::to_string(metric_col) + " DESC" + order +
           " LIMIT ?";
  q.grouping =
      Grouping{std::vector<std::string>(
                   q.columns.begin(), q.columns.begin() + static_cast<std::ptrdiff_t>(q.key_count)),
               w.sql, w.binds, metric_col - q.key_count - 1, *n};
  q.binds = std::move(w.binds);
  q.binds.push_back({*n});
  q.columns.insert(q.columns.end(), {"bytes", "packets", "flows"});
  return q;
}

// -----------------------------------------------------------------------------------------------
// /flows/timeseries

namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::int64_t bucket_count(std::int64_t first, std::int64_t last, std::int64_t bucket) {
  if (last < first) return 0;
  return floor_div(last, bucket) - floor_div(first, bucket) + 1;
}

}  // namespace

std::variant<TimeseriesQuery, ParamError> build_timeseries(const TimeseriesParams& params) {
  TimeseriesQuery q;
  const std::string by = detail::lower(trim(params.by));
  if (std::find(kSeriesDims.begin(), kSeriesDims.end(), by) == kSeriesDims.end())
    return ParamError{"by", one_of_text("by", kSeriesDims), std::nullopt};
  const std::string metric = detail::lower(trim(params.metric));
  std::string column = metric.empty() ? std::string(kMetrics[0]) : metric;
  if (std::find(kMetrics.begin(), kMetrics.end(), column) == kMetrics.end())
    return ParamError{"metric", one_of_text("metric", kMetrics), std::nullopt};

  const std::int64_t b = params.store_bucket_ms;
  if (b <= 0) return ParamError{"bucket_ms", "the flow store records no bucket size", std::nullopt};
  const std::int64_t first = params.first_ms, last = params.last_ms;
  if (trim(params.bucket_ms).empty()) {
    // The smallest multiple of the store's bucket that gives at most the target count.
    std::int64_t m = 1;
    if (last >= first) {
      auto span = static_cast<std::uint64_t>(last) - static_cast<std::uint64_t>(first) + 1;
      auto per =
          static_cast<std::uint64_t>(kTimeseriesTargetBuckets) * static_cast<std::uint64_t>(b);
      m = static_cast<std::int64_t>(std::max<std::uint64_t>(1, (span + per - 1) / per));
      while (bucket_count(first, last, m * b) > kTimeseriesTargetBuckets) ++m;
    }
    q.bucket_ms = m * b;
  } else {
    auto v = int_param(params.bucket_ms, 1, std::numeric_limits<std::int64_t>::max() / 2, 0);
    if (!v || *v % b != 0)
      return ParamError{"bucket_ms",
                        "bucket_ms must be a positive multiple of the store's bucket size, " +
                            std::to_string(b) + " ms",
                        std::nullopt};
    q.bucket_ms = *v;
    if (bucket_count(first, last, q.bucket_ms) > static_cast<std::int64_t>(kMaxBuckets))
      return ParamError{"bucket_ms",
                        "bucket_ms gives more than " + std::to_string(kMaxBuckets) +
                            " buckets over the store's span",
                        std::nullopt};
  }
  q.bucket_count = bucket_count(first, last, q.bucket_ms);
  q.first_bucket = q.bucket_count ? floor_div(first, q.bucket_ms) * q.bucket_ms : 0;

  auto top = int_param(params.top, 1, kMaxTimeseriesTop, kDefaultTimeseriesTop);
  if (!top) return range_error("top", 1, kMaxTimeseriesTop);
  q.top = *top;

  auto where = filter_param(params.filter);
  if (auto* e = std::get_if<ParamError>(&where)) return *e;
  Where& w = std::get<Where>(where);

  if (w.sql.empty()) {
    q.basis = TimeseriesQuery::Basis::Series;
    q.sql = "SELECT key, bucket_ms / ? * ? AS t, sum(" + column +
            ") FROM series WHERE dim = ? GROUP BY 1, 2";
    q.binds = {{q.bucket_ms}, {q.bucket_ms}, {by}};
  } else {
    q.basis = TimeseriesQuery::Basis::Flows;
    std::string value = column == "flows" ? "count(*)" : "sum(" + column + ")";
    const std::string key = by == "app" ? "app" : "proto_name";
    // As the per-packet series: by application only the records that have one (a store
    // without DPI has none; an ingest's unlabelled records neither).
    const std::string labelled =
        by == "app" ? "(" + w.sql + ") AND app IS NOT NULL AND app <> ''" : w.sql;
    q.sql = "SELECT " + key + ", start_ms / ? * ? AS t, " + value + " FROM flows WHERE " +
            labelled + " GROUP BY 1, 2";
    q.binds = {{q.bucket_ms}, {q.bucket_ms}};
    q.binds.insert(q.binds.end(), w.binds.begin(), w.binds.end());
    const auto metric_index = static_cast<std::size_t>(
        std::find(kMetrics.begin(), kMetrics.end(), column) - kMetrics.begin());
    q.grouping = Grouping{{key, "start_ms / ? * ?"}, labelled, q.binds, metric_index, 0};
  }
  return q;
}

QueryOutcome run_timeseries(sqlite3* db, const TimeseriesQuery& q, nlohmann::json& out,
                            const QueryBudget* budget) {
  std::vector<detail::SeriesRow> rows;
  QueryOutcome r = run_query(
      db, q.sql, q.binds,
      [&](sqlite3_stmt* s) {
        detail::SeriesRow row;
        if (sqlite3_column_type(s, 0) != SQLITE_NULL) {
          const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
          row.key = std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(s, 0)));
        }
        row.t = sqlite3_column_int64(s, 1);
        row.value = sqlite3_column_int64(s, 2);
        rows.push_back(std::move(row));
        return true;
      },
      budget);
  if (!r.ok()) return r;
  return detail::build_series(q, rows, out);
}

QueryOutcome detail::build_series(const TimeseriesQuery& q, const std::vector<SeriesRow>& rows,
                                  nlohmann::json& out) {
  // The axis: the store's span, widened to any bucket the data has outside it.
  const std::int64_t B = q.bucket_ms;
  std::int64_t lo = q.first_bucket, count = q.bucket_count;
  if (!rows.empty()) {
    std::int64_t min_t = rows[0].t, max_t = rows[0].t;
    for (const auto& row : rows) {
      min_t = std::min(min_t, row.t);
      max_t = std::max(max_t, row.t);
    }
    std::int64_t hi = count ? lo + (count - 1) * B : max_t;
    if (!count) lo = min_t;
    lo = std::min(lo, min_t);
    hi = std::max(hi, max_t);
    count = (hi - lo) / B + 1;
    if (count > 4 * static_cast<std::int64_t>(kMaxBuckets))
      return {QueryStatus::Failed, "the series reach far outside the store's span"};
  }

  std::map<std::optional<std::string>, std::vector<std::int64_t>> series;
  for (const auto& row : rows) {
    auto& values = series[row.key];
    if (values.empty()) values.assign(static_cast<std::size_t>(count), 0);
    values[static_cast<std::size_t>((row.t - lo) / B)] += row.value;
  }
  struct Total {
    const std::optional<std::string>* key;
    const std::vector<std::int64_t>* values;
    std::int64_t total;
  };
  std::vector<Total> totals;
  for (const auto& [key, values] : series) {
    std::int64_t sum = 0;
    for (auto v : values) sum += v;
    totals.push_back({&key, &values, sum});
  }
  // Ties keep the map's key order (null first).
  std::stable_sort(totals.begin(), totals.end(),
                   [](const Total& a, const Total& b) { return a.total > b.total; });

  out = nlohmann::json::object();
  out["bucket_ms"] = B;
  auto& time = out["time"] = nlohmann::json::array();
  for (std::int64_t i = 0; i < count; ++i) time.push_back(lo + i * B);
  auto& list = out["series"] = nlohmann::json::array();
  std::vector<std::int64_t> other;
  for (std::size_t i = 0; i < totals.size(); ++i) {
    if (static_cast<std::int64_t>(i) < q.top) {
      nlohmann::json s;
      s["key"] = *totals[i].key ? nlohmann::json(**totals[i].key) : nlohmann::json(nullptr);
      s["values"] = *totals[i].values;
      list.push_back(std::move(s));
    } else {
      if (other.empty()) other.assign(static_cast<std::size_t>(count), 0);
      for (std::size_t k = 0; k < other.size(); ++k) other[k] += (*totals[i].values)[k];
    }
  }
  if (!other.empty()) list.push_back({{"key", "other"}, {"values", other}});
  return {};
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

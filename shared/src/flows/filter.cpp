// The flow filter language (docs/flow-filter.md): a PEGTL grammar whose actions turn each term
// into a parameterised SQL condition over the flows table as soon as it is parsed, and combine
// them on a stack as 'not', 'and' and 'or' complete.
//
// Errors are thrown inside as Failure (by the grammar's must<> rules through Control::raise,
// and by the actions for what the grammar cannot know: unknown fields, bad numbers and
// networks) and returned by parse_filter as FilterError.
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <tao/pegtl.hpp>

#include "fields.hpp"
#include "ipfixweb/flows/query.hpp"

namespace ipfixweb::flows {
namespace {

namespace pegtl = tao::pegtl;

struct Failure {
  std::size_t position;
  std::string message;
  std::string expected;
};

enum class Op { None, Eq, Ne, Lt, Le, Gt, Ge, Contains, NotContains, In, NotIn };

struct ValueTok {
  std::string text;  // unescaped, without quotes
  std::size_t pos = 0;
};

// The pieces of one term as the grammar finds them.
struct TermTok {
  std::string subject;             // as typed: "bytes", "src  host"
  std::vector<std::string> words;  // lower-case: {"bytes"}, {"src", "host"}
  std::size_t pos = 0, after = 0;  // subject start; first non-space byte after it
  Op op = Op::None;
  std::string op_text;
  std::size_t op_pos = 0;
  std::vector<ValueTok> values;
};

// A filter as a tree of and/or over terms. A term (leaf) carries its SQL condition and the
// exact complement of it, so that 'not' is pushed down to the terms (negation normal form) and
// the SQL nests no deeper than the and/or alternation (SQLite's parser has a fixed stack).
struct Expr {
  enum class Kind { Leaf, And, Or } kind = Kind::Leaf;
  std::string sql, complement;  // a leaf's condition and its complement
  std::vector<SqlValue> binds;  // a leaf's values, the same for both
  std::vector<Expr> children;   // And, Or: never of their own kind (flattened)
  std::size_t pos = 0;          // where it starts in the filter text
};

struct State {
  std::string_view text;
  std::size_t depth = 0;
  std::size_t terms = 0;
  std::vector<std::size_t> open_parens;
  std::size_t quote_pos = 0;  // of the string being read
  TermTok cur;
  std::vector<Expr> stack;

  std::size_t pos(const char* p) const { return static_cast<std::size_t>(p - text.data()); }
  std::size_t skip_space(std::size_t p) const {
    while (p < text.size() && (text[p] == ' ' || (text[p] >= '\t' && text[p] <= '\r'))) ++p;
    return p;
  }
};

[[noreturn]] void fail(std::size_t pos, std::string message, std::string expected) {
  throw Failure{pos, std::move(message), std::move(expected)};
}

// ---------------------------------------------------------------------------------------------
// Grammar

namespace g {
using namespace pegtl;

struct ident_char : ranges<'a', 'z', 'A', 'Z', '0', '9', '_'> {};
struct word_end : not_at<ident_char> {};
template <char... Cs>
struct kw : seq<istring<Cs...>, word_end> {};
struct kw_and : sor<kw<'a', 'n', 'd'>, string<'&', '&'>> {};
struct kw_or : sor<kw<'o', 'r'>, string<'|', '|'>> {};
struct kw_not : sor<kw<'n', 'o', 't'>, seq<one<'!'>, not_at<one<'=', '~'>>>> {};
struct kw_in : kw<'i', 'n'> {};
struct keyword : sor<kw_and, kw_or, kw_not, kw_in> {};
struct ws : star<space> {};

// Values: a double-quoted string (\" and \\ escapes) or a bare word.
struct escaped : one<'"', '\\'> {};
struct escape : seq<one<'\\'>, must<escaped>> {};
struct string_char : sor<escape, not_one<'"'>> {};
struct string_body : until<one<'"'>, string_char> {};
struct string_open : one<'"'> {};
struct quoted : seq<string_open, must<string_body>> {};
struct bare_char
    : seq<not_at<range<'\x00', ' '>>,
          not_one<'\x7f', '(', ')', ',', '"', '&', '|', '!', '=', '<', '>', '~', '\\'>> {};
struct bare : plus<bare_char> {};
struct value : sor<quoted, bare> {};

struct op : sor<string<'=', '='>, string<'!', '='>, string<'!', '~'>, string<'<', '='>,
                string<'>', '='>, one<'='>, one<'<'>, one<'>'>, one<'~'>> {};
struct cmp_value : value {};
struct comparison : seq<op, ws, must<cmp_value>> {};

struct not_in : seq<kw_not, ws, kw_in> {};
struct in_op : sor<kw_in, not_in> {};
struct list_value : value {};
struct list_next : seq<ws, one<','>, ws, must<list_value>> {};
struct list_close : one<')'> {};
struct in_list : seq<one<'('>, ws, must<list_value>, star<list_next>, ws, must<list_close>> {};
struct membership : seq<in_op, ws, must<in_list>> {};

struct implicit_value : value {};
struct rhs : sor<membership, comparison, seq<not_at<keyword>, implicit_value>> {};

struct direction : sor<kw<'s', 'r', 'c'>, kw<'d', 's', 't'>> {};
struct qualifier
    : sor<kw<'h', 'o', 's', 't'>, kw<'i', 'p'>, kw<'n', 'e', 't'>, kw<'p', 'o', 'r', 't'>> {};
struct ident : seq<ranges<'a', 'z', 'A', 'Z', '_'>, star<ident_char>> {};
struct subject : sor<seq<direction, ws, qualifier>, ident> {};
struct term : seq<not_at<keyword>, subject, opt<ws, rhs>> {};

struct expr;
struct not_expr;
struct group_open : one<'('> {};
struct group_expr : seq<expr> {};
struct group_close : one<')'> {};
struct group : seq<group_open, ws, must<group_expr>, ws, must<group_close>> {};
struct negated : seq<not_expr> {};
struct negation : seq<kw_not, ws, must<negated>> {};
struct not_expr : sor<group, negation, term> {};
struct and_operand : seq<not_expr> {};
struct and_tail : seq<ws, kw_and, ws, must<and_operand>> {};
struct and_expr : seq<not_expr, star<and_tail>> {};
struct or_operand : seq<and_expr> {};
struct or_tail : seq<ws, kw_or, ws, must<or_operand>> {};
struct expr : seq<and_expr, star<or_tail>> {};
struct first_expr : seq<expr> {};
struct end_of_filter : eof {};
struct filter : seq<ws, sor<eof, seq<must<first_expr>, ws, must<end_of_filter>>>> {};
}  // namespace g

// ---------------------------------------------------------------------------------------------
// Values

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A non-negative number: decimal with an optional fraction and unit suffix (units: name and
// multiplier; "" = no suffix, multiplier 1), or 0x hex without a suffix. Integral results bind
// as integers, others as doubles. False when the text is not such a number or overflows.
struct Unit {
  std::string_view suffix;
  std::uint64_t multiplier;
};
constexpr std::array kCountUnits{Unit{"k", 1000},    Unit{"K", 1000},       Unit{"m", 1000000},
                                 Unit{"M", 1000000}, Unit{"g", 1000000000}, Unit{"G", 1000000000}};
constexpr std::array kDurationUnits{Unit{"ms", 1}, Unit{"s", 1000}, Unit{"m", 60000},
                                    Unit{"h", 3600000}, Unit{"d", 86400000}};

template <std::size_t N>
bool parse_number(std::string_view s, const std::array<Unit, N>& units, bool allow_hex,
                  SqlValue& out) {
  if (allow_hex && s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    if (s.size() > 18) return false;
    std::uint64_t v = 0;
    for (char c : s.substr(2)) {
      int d = is_digit(c)              ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0) return false;
      v = v * 16 + static_cast<std::uint64_t>(d);
    }
    if (v > static_cast<std::uint64_t>(kInt64Max)) return false;
    out.v = static_cast<std::int64_t>(v);
    return true;
  }
  std::size_t i = 0;
  std::uint64_t whole = 0;
  while (i < s.size() && is_digit(s[i])) {
    if (__builtin_mul_overflow(whole, 10u, &whole) ||
        __builtin_add_overflow(whole, static_cast<std::uint64_t>(s[i] - '0'), &whole))
      return false;
    ++i;
  }
  if (i == 0) return false;
  std::uint64_t frac = 0, frac_den = 1;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    while (i < s.size() && is_digit(s[i])) {
      if (i - start >= 9) return false;  // at most 9 decimal places
      frac = frac * 10 + static_cast<std::uint64_t>(s[i] - '0');
      frac_den *= 10;
      ++i;
    }
    if (i == start) return false;
  }
  std::string_view suffix = s.substr(i);
  std::uint64_t mult = 0;
  if (suffix.empty()) mult = 1;
  for (const auto& u : units)
    if (u.suffix == suffix) mult = u.multiplier;
  if (mult == 0) return false;
  std::uint64_t v = 0;
  if (__builtin_mul_overflow(whole, mult, &v)) return false;
  std::uint64_t fnum = frac * mult;  // < 1e9 * 1e8: no overflow
  if (__builtin_add_overflow(v, fnum / frac_den, &v) || v > static_cast<std::uint64_t>(kInt64Max))
    return false;
  if (fnum % frac_den == 0) {
    out.v = static_cast<std::int64_t>(v);
  } else {
    out.v = static_cast<double>(v) +
            static_cast<double>(fnum % frac_den) / static_cast<double>(frac_den);
  }
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// Milliseconds since 1970 of "YYYY-MM-DD[(T| )HH:MM[:SS[.fraction]]][Z|±HH:MM|±HHMM|±HH]"
// (no zone: UTC), or of a plain integer (already milliseconds).
bool parse_time(std::string_view s, SqlValue& out) {
  if (!s.empty() && std::all_of(s.begin(), s.end(), is_digit)) {
    static constexpr std::array<Unit, 0> kNone{};
    return parse_number(s, kNone, false, out);
  }
  std::size_t i = 0;
  auto num = [&](std::size_t n, int& v) {
    if (i + n > s.size()) return false;
    v = 0;
    for (std::size_t k = 0; k < n; ++k) {
      if (!is_digit(s[i + k])) return false;
      v = v * 10 + (s[i + k] - '0');
    }
    i += n;
    return true;
  };
  auto lit = [&](char c) {
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!num(4, y) || !lit('-') || !num(2, mo) || !lit('-') || !num(2, d)) return false;
  if (mo < 1 || mo > 12) return false;
  static constexpr std::array<int, 12> kDays{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int dim = kDays[static_cast<std::size_t>(mo - 1)] + (mo == 2 && leap(y) ? 1 : 0);
  if (d < 1 || d > dim) return false;
  std::int64_t ns = 0;  // fraction of a second, nanoseconds
  std::int64_t offset_min = 0;
  if (i < s.size()) {
    if (!(lit('T') || lit('t') || lit(' '))) return false;
    if (!num(2, h) || !lit(':') || !num(2, mi)) return false;
    if (lit(':')) {
      if (!num(2, sec)) return false;
      if (lit('.')) {
        std::size_t start = i;
        std::int64_t scale = 100000000;
        while (i < s.size() && is_digit(s[i])) {
          ns += (s[i] - '0') * scale;
          scale /= 10;
          ++i;
        }
        if (i == start || i - start > 9) return false;
      }
    }
    if (h > 23 || mi > 59 || sec > 59) return false;
    if (lit('Z') || lit('z')) {
    } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
      int sign = s[i] == '+' ? 1 : -1;
      ++i;
      int oh = 0, om = 0;
      if (!num(2, oh)) return false;
      if (lit(':')) {
        if (!num(2, om)) return false;
      } else if (i < s.size()) {
        if (!num(2, om)) return false;
      }
      if (oh > 23 || om > 59) return false;
      offset_min = sign * (oh * 60 + om);
    }
    if (i != s.size()) return false;
  }
  std::int64_t ms =
      days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400000 +
      h * 3600000LL + mi * 60000LL + sec * 1000LL + ns / 1000000 - offset_min * 60000;
  if (ns % 1000000 == 0) {
    out.v = ms;
  } else {
    out.v = static_cast<double>(ms) + static_cast<double>(ns % 1000000) / 1e6;
  }
  return true;
}

// An address or a network ("a.b.c.d", "a.b.c.d/n", "x::y", "x::y/n") as a range of 16-byte
// keys. Host bits below the prefix are ignored (masked), not an error.
struct Net {
  std::array<std::uint8_t, 16> lo{}, hi{};
  bool prefix = false;  // written with "/n"
};

enum class NetParse { Ok, BadAddress, BadPrefix };

NetParse parse_net(std::string_view s, Net& out) {
  std::string addr(s.substr(0, s.find('/')));
  int len = -1;
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    std::string_view l = s.substr(slash + 1);
    if (l.empty() || l.size() > 3 || !std::all_of(l.begin(), l.end(), is_digit))
      return NetParse::BadPrefix;
    len = 0;
    for (char c : l) len = len * 10 + (c - '0');
    out.prefix = true;
  }
  std::array<std::uint8_t, 16> key{};
  int bits = 0;
  std::uint8_t v4[4];
  if (::inet_pton(AF_INET, addr.c_str(), v4) == 1) {
    key = v4_key(v4);
    if (len > 32) return NetParse::BadPrefix;
    bits = len < 0 ? 128 : 96 + len;
  } else if (::inet_pton(AF_INET6, addr.c_str(), key.data()) == 1) {
    if (len > 128) return NetParse::BadPrefix;
    bits = len < 0 ? 128 : len;
  } else {
    return out.prefix ? NetParse::BadPrefix : NetParse::BadAddress;
  }
  out.lo = key;
  out.hi = key;
  for (int b = bits; b < 128; ++b) {
    auto byte = static_cast<std::size_t>(b / 8);
    auto mask = static_cast<std::uint8_t>(0x80u >> (b % 8));
    out.lo[byte] = static_cast<std::uint8_t>(out.lo[byte] & ~mask);
    out.hi[byte] = static_cast<std::uint8_t>(out.hi[byte] | mask);
  }
  return NetParse::Ok;
}

struct ProtoName {
  std::string_view name;
  int number;
};
constexpr std::array kProtoNames{
    ProtoName{"icmp", 1},  ProtoName{"igmp", 2},  ProtoName{"tcp", 6}, ProtoName{"udp", 17},
    ProtoName{"gre", 47},  ProtoName{"esp", 50},  ProtoName{"ah", 51}, ProtoName{"icmpv6", 58},
    ProtoName{"ospf", 89}, ProtoName{"sctp", 132}};

int proto_number(std::string_view lowered) {
  for (const auto& p : kProtoNames)
    if (p.name == lowered) return p.number;
  return -1;
}

std::vector<std::string_view> proto_names() {
  std::vector<std::string_view> v;
  for (const auto& p : kProtoNames) v.push_back(p.name);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Terms to SQL

// What a term's subject is.
enum class Kind { Integer, Duration, Time, Proto, Text, Address, Host, Net, Port, Bare };
enum class Dir { Both, Src, Dst };

struct Subject {
  Kind kind = Kind::Integer;
  Dir dir = Dir::Both;
  std::string column;  // for single-column kinds
  bool nullable = false;
  bool implicit_eq = false;  // "port 53", "host 10.0.0.1": the operator may be left out
  SqlValue bare_value;       // Bare: column = bare_value
};

const char* op_sql(Op op) {
  switch (op) {
    case Op::Eq:
      return "=";
    case Op::Ne:
      return "!=";
    case Op::Lt:
      return "<";
    case Op::Le:
      return "<=";
    case Op::Gt:
      return ">";
    case Op::Ge:
      return ">=";
    default:
      return "=";
  }
}

std::string placeholders(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += i ? ", ?" : "?";
  return s;
}

std::string like_pattern(std::string_view s) {
  std::string p = "%";
  for (char c : s) {
    if (c == '%' || c == '_' || c == '\\') p += '\\';
    p += c;
  }
  p += '%';
  return p;
}

constexpr const char* kValueExpected = "a number, an address, a word or a \"quoted string\"";
constexpr const char* kIntOps = "a comparison operator (= == != < <= > >=) or 'in'";
constexpr const char* kTextOps = "a comparison operator (= == != ~ !~) or 'in'";

Subject resolve_subject(const TermTok& t) {
  Subject s;
  const std::string& w0 = t.words[0];
  if (t.words.size() == 2) {
    s.dir = w0 == "src" ? Dir::Src : Dir::Dst;
    const std::string& q = t.words[1];
    s.kind = (q == "host" || q == "ip") ? Kind::Host : q == "net" ? Kind::Net : Kind::Port;
    if (s.kind == Kind::Port) {
      s.kind = Kind::Integer;
      s.column = s.dir == Dir::Src ? "sport" : "dport";
    }
    s.implicit_eq = true;
    return s;
  }
  if (w0 == "host" || w0 == "ip") {
    s.kind = Kind::Host;
    s.implicit_eq = true;
    return s;
  }
  if (w0 == "net") {
    s.kind = Kind::Net;
    s.implicit_eq = true;
    return s;
  }
  if (w0 == "port") {
    s.kind = Kind::Port;
    s.implicit_eq = true;
    return s;
  }
  if (int p = proto_number(w0); p >= 0) {
    s.kind = Kind::Bare;
    s.column = "proto";
    s.bare_value.v = std::int64_t{p};
    return s;
  }
  if (w0 == "ipv4" || w0 == "inet" || w0 == "ipv6" || w0 == "inet6") {
    s.kind = Kind::Bare;
    s.column = "ip_version";
    s.bare_value.v = std::int64_t{w0 == "ipv4" || w0 == "inet" ? 4 : 6};
    return s;
  }
  bool not_exported = false;
  const Column* c = detail::find_exported(w0, &not_exported);
  if (!c) {
    std::vector<std::string_view> names = detail::exported_names();
    for (std::string_view k : {"host", "ip", "net", "port", "ipv4", "ipv6", "inet", "inet6"})
      names.push_back(k);
    for (auto p : proto_names()) names.push_back(p);
    std::string msg = "unknown field '" + t.subject + "'";
    if (not_exported) {
      msg += " (the address keys are not fields: use src, dst, host or net)";
    } else if (auto near = detail::closest(w0, names); !near.empty()) {
      msg += " (did you mean '" + std::string(near) + "'?)";
    }
    fail(t.pos, msg, "a field name (docs/flow-filter.md lists them)");
  }
  s.column = std::string(c->name);
  s.nullable = detail::nullable(*c);
  if (c->name == "start_ms" || c->name == "start_time") {
    s.kind = Kind::Time;
    s.column = "start_ms";
    s.nullable = false;
  } else if (c->name == "end_ms" || c->name == "end_time") {
    s.kind = Kind::Time;
    s.column = "end_ms";
    s.nullable = false;
  } else if (c->name == "duration_ms") {
    s.kind = Kind::Duration;
  } else if (c->name == "proto") {
    s.kind = Kind::Proto;
    s.implicit_eq = true;  // "proto tcp"
  } else if (c->type == ColumnType::Address) {
    s.kind = Kind::Address;
    s.dir = c->name == "src" ? Dir::Src : Dir::Dst;
  } else if (c->type == ColumnType::Text) {
    s.kind = Kind::Text;
  } else {
    s.kind = Kind::Integer;
  }
  return s;
}

SqlValue convert_value(const Subject& s, const TermTok& t, const ValueTok& v) {
  SqlValue out;
  switch (s.kind) {
    case Kind::Integer:
    case Kind::Port:
      if (!parse_number(v.text, kCountUnits, true, out))
        fail(v.pos, "invalid number '" + v.text + "' for '" + t.subject + "'",
             "a number like 1500, 1.5k, 2M, 1G or 0x10");
      return out;
    case Kind::Duration:
      if (!parse_number(v.text, kDurationUnits, false, out))
        fail(v.pos, "invalid duration '" + v.text + "' for '" + t.subject + "'",
             "a duration like 500ms, 10s, 2m, 1h, 1d or 250 (milliseconds)");
      return out;
    case Kind::Time:
      if (!parse_time(v.text, out))
        fail(v.pos, "invalid time '" + v.text + "' for '" + t.subject + "'",
             "an ISO 8601 UTC time like 2020-01-01T00:00:00Z or milliseconds since 1970");
      return out;
    case Kind::Proto: {
      std::string l = detail::lower(v.text);
      if (int p = proto_number(l); p >= 0) {
        out.v = std::int64_t{p};
        return out;
      }
      static constexpr std::array<Unit, 0> kNone{};
      if (!l.empty() && std::all_of(l.begin(), l.end(), is_digit) &&
          parse_number(l, kNone, false, out) && std::get<std::int64_t>(out.v) <= 255)
        return out;
      std::string msg = "unknown protocol '" + v.text + "'";
      if (auto near = detail::closest(l, proto_names()); !near.empty())
        msg += " (did you mean '" + std::string(near) + "'?)";
      fail(v.pos, msg,
           "a protocol name (tcp, udp, icmp, icmpv6, sctp, gre, esp, ah, igmp, ospf) or a "
           "number 0-255");
    }
    default:
      out.v = v.text;
      return out;
  }
}

// The conditions on one address key column for a list of addresses and networks.
void net_conditions(std::string_view key, const std::vector<Net>& nets,
                    std::vector<SqlValue>& binds, std::vector<std::string>& out) {
  for (const auto& n : nets) {
    std::vector<std::uint8_t> lo(n.lo.begin(), n.lo.end()), hi(n.hi.begin(), n.hi.end());
    if (lo == hi) {
      out.push_back(std::string(key) + " = ?");
      binds.push_back({std::move(lo)});
    } else {
      out.push_back(std::string(key) + " BETWEEN ? AND ?");
      binds.push_back({std::move(lo)});
      binds.push_back({std::move(hi)});
    }
  }
}

Op flip(Op op) {
  switch (op) {
    case Op::Eq:
      return Op::Ne;
    case Op::Lt:
      return Op::Ge;
    case Op::Le:
      return Op::Gt;
    case Op::Gt:
      return Op::Le;
    case Op::Ge:
      return Op::Lt;
    default:
      return Op::Eq;
  }
}

Expr compile_term(const TermTok& t) {
  Subject s = resolve_subject(t);
  Op op = t.op;
  const std::string& name = t.subject;

  // Is the operator (or its absence) allowed here?
  if (s.kind == Kind::Bare) {
    if (op != Op::None || !t.values.empty())
      fail(op != Op::None ? t.op_pos : t.values[0].pos,
           "'" + name + "' takes no value; join terms with 'and' or 'or'",
           "'and', 'or' or the end of the filter");
    Expr n;
    n.pos = t.pos;
    n.sql = s.column + " = ?";
    n.complement = s.column + " != ?";
    n.binds.push_back(s.bare_value);
    return n;
  }
  if (op == Op::None) {
    if (!t.values.empty() && s.implicit_eq) {
      op = Op::Eq;
    } else if (s.implicit_eq) {
      fail(t.after, "expected a value after '" + name + "'",
           s.kind == Kind::Host    ? "an address, or a comparison operator"
           : s.kind == Kind::Net   ? "a network like 10.0.0.0/8, or a comparison operator"
           : s.kind == Kind::Proto ? "a protocol name or number, or a comparison operator"
                                   : "a port number, or a comparison operator");
    } else if (s.kind == Kind::Address) {
      fail(t.after, "expected a comparison operator or 'host', 'net', 'port' after '" + name + "'",
           std::string(kTextOps) + ", or 'host', 'net' or 'port'");
    } else {
      fail(t.after, "expected a comparison operator after '" + name + "'",
           s.kind == Kind::Text ? kTextOps : kIntOps);
    }
  }
  const bool text_op = op == Op::Contains || op == Op::NotContains;
  const bool order_op = op == Op::Lt || op == Op::Le || op == Op::Gt || op == Op::Ge;
  switch (s.kind) {
    case Kind::Text:
      if (order_op)
        fail(t.op_pos,
             "operator '" + t.op_text + "' does not apply to the text field '" + name + "'",
             kTextOps);
      break;
    case Kind::Address:
      if (order_op)
        fail(t.op_pos, "operator '" + t.op_text + "' does not apply to the address '" + name + "'",
             kTextOps);
      break;
    case Kind::Host:
    case Kind::Net:
      if (order_op || text_op)
        fail(t.op_pos, "operator '" + t.op_text + "' does not apply to '" + name + "'",
             "=, ==, != or 'in'");
      break;
    default:
      if (text_op)
        fail(t.op_pos,
             "operator '" + t.op_text + "' applies only to text fields; '" + name + "' is a number",
             kIntOps);
      break;
  }

  Expr n;
  n.pos = t.pos;
  auto& b = n.binds;
  // The term is a positive condition (=, <, ~, in, ...) or the complement of one (!=, !~,
  // not in); p is the positive condition and c its exact complement.
  const bool negative = op == Op::Ne || op == Op::NotIn || op == Op::NotContains;
  const Op pos_op = op == Op::Ne            ? Op::Eq
                    : op == Op::NotIn       ? Op::In
                    : op == Op::NotContains ? Op::Contains
                                            : op;
  const bool list = pos_op == Op::In;
  auto leaf = [&](std::string p, std::string c) {
    n.sql = negative ? std::move(c) : std::move(p);
    n.complement = negative ? std::move(p) : std::move(c);
    return n;
  };
  // A comparison with a nullable column is NULL for a missing value; its complement counts
  // NULL as false, so that 'app != TLS' and 'not app = TLS' include flows without an app.
  auto null_complement = [](const std::string& p) { return "(" + p + ") IS NOT TRUE"; };

  // Addresses and networks.
  if (s.kind == Kind::Host || s.kind == Kind::Net || (s.kind == Kind::Address && !text_op)) {
    std::vector<Net> nets;
    for (const auto& v : t.values) {
      Net net;
      switch (parse_net(v.text, net)) {
        case NetParse::BadAddress:
          fail(v.pos, "invalid address '" + v.text + "'",
               s.kind == Kind::Host ? "an IPv4 or IPv6 address"
                                    : "an IPv4 or IPv6 address or network (10.0.0.0/8)");
        case NetParse::BadPrefix:
          fail(v.pos, "invalid network '" + v.text + "'",
               "an address with a prefix length of at most 32 (IPv4) or 128 (IPv6)");
        case NetParse::Ok:
          break;
      }
      if (s.kind == Kind::Host && net.prefix)
        fail(v.pos, "'" + name + "' takes an address, not a network like '" + v.text + "'",
             "an address (use 'net' for a network)");
      nets.push_back(net);
    }
    std::vector<std::string> conds;
    if (s.dir != Dir::Dst) net_conditions("src_ip", nets, b, conds);
    if (s.dir != Dir::Src) net_conditions("dst_ip", nets, b, conds);
    std::string p;
    for (const auto& c : conds) p += (p.empty() ? "" : " OR ") + c;
    if (conds.size() == 1 && conds[0].find(" BETWEEN ") == std::string::npos) {
      std::string c = p;
      c.replace(c.size() - 4, 4, " != ?");  // "src_ip = ?" -> "src_ip != ?"
      return leaf(p, c);
    }
    p = "(" + p + ")";
    return leaf(p, "NOT " + p);
  }

  std::vector<SqlValue> values;
  for (const auto& v : t.values) values.push_back(convert_value(s, t, v));

  // Text (and the address columns' text): exact, case-insensitive, or contains.
  if (s.kind == Kind::Text || s.kind == Kind::Address) {
    const std::string& c = s.column;
    std::string p, q;  // q: the complement where the column is never null
    if (pos_op == Op::Contains) {
      p = c + " LIKE ? ESCAPE '\\'";
      q = c + " NOT LIKE ? ESCAPE '\\'";
      b.push_back({like_pattern(std::get<std::string>(values[0].v))});
    } else if (list) {
      p = c + " COLLATE NOCASE IN (" + placeholders(values.size()) + ")";
      q = c + " COLLATE NOCASE NOT IN (" + placeholders(values.size()) + ")";
      b = std::move(values);
    } else {
      p = c + " = ? COLLATE NOCASE";
      q = c + " != ? COLLATE NOCASE";
      b.push_back(std::move(values[0]));
    }
    return leaf(p, s.nullable ? null_complement(p) : q);
  }

  // Numbers: one column, or sport and dport for "port".
  auto compare = [&](const std::string& c, bool complement) {
    if (list) return c + (complement ? " NOT IN (" : " IN (") + placeholders(values.size()) + ")";
    return c + " " + op_sql(complement ? flip(pos_op) : pos_op) + " ?";
  };
  if (s.kind == Kind::Port) {
    std::string p = "(" + compare("sport", false) + " OR " + compare("dport", false) + ")";
    b = values;
    b.insert(b.end(), values.begin(), values.end());
    return leaf(p, "NOT " + p);
  }
  std::string p = compare(s.column, false);
  std::string c = s.nullable ? null_complement(p) : compare(s.column, true);
  b = std::move(values);
  return leaf(std::move(p), std::move(c));
}

// a and b, or a or b, flattening chains of one kind.
Expr combine(Expr a, Expr b, Expr::Kind kind) {
  Expr r;
  r.kind = kind;
  r.pos = a.pos;
  for (Expr* x : {&a, &b}) {
    if (x->kind == kind) {
      for (auto& c : x->children) r.children.push_back(std::move(c));
    } else {
      r.children.push_back(std::move(*x));
    }
  }
  return r;
}

// not x, by De Morgan down to the terms, which swap to their complements.
void negate(Expr& x) {
  if (x.kind == Expr::Kind::Leaf) {
    std::swap(x.sql, x.complement);
    return;
  }
  x.kind = x.kind == Expr::Kind::And ? Expr::Kind::Or : Expr::Kind::And;
  for (auto& c : x.children) negate(c);
}

// The SQL of x: 'or' inside 'and' is parenthesised, which is the only nesting there is.
void emit(const Expr& x, std::size_t depth, std::string& sql, std::vector<SqlValue>& binds) {
  if (x.kind == Expr::Kind::Leaf) {
    sql += x.sql;
    binds.insert(binds.end(), x.binds.begin(), x.binds.end());
    return;
  }
  bool first = true;
  for (const auto& c : x.children) {
    if (!first) sql += x.kind == Expr::Kind::And ? " AND " : " OR ";
    first = false;
    const bool wrap = x.kind == Expr::Kind::And && c.kind == Expr::Kind::Or;
    if (wrap && depth + 1 > kMaxFilterAlternation)
      fail(c.pos,
           "'and' and 'or' alternate more than " + std::to_string(kMaxFilterAlternation) +
               " levels deep",
           "fewer nested groups (parentheses that change nothing do not count)");
    if (wrap) sql += '(';
    emit(c, depth + (wrap ? 1 : 0), sql, binds);
    if (wrap) sql += ')';
  }
}

// ---------------------------------------------------------------------------------------------
// Actions and control

template <typename Rule>
struct Action : pegtl::nothing<Rule> {};

template <>
struct Action<g::subject> {
  template <typename In>
  static void apply(const In& in, State& st) {
    TermTok& t = st.cur;
    t.subject = in.string();
    t.pos = st.pos(in.begin());
    t.after = st.skip_space(t.pos + in.size());
    std::string word;
    for (char c : detail::lower(t.subject)) {
      if (c == ' ' || (c >= '\t' && c <= '\r')) {
        if (!word.empty()) t.words.push_back(std::move(word));
        word.clear();
      } else {
        word += c;
      }
    }
    t.words.push_back(std::move(word));
  }
};

template <>
struct Action<g::op> {
  template <typename In>
  static void apply(const In& in, State& st) {
    const std::string s = in.string();
    st.cur.op_text = s;
    st.cur.op_pos = st.pos(in.begin());
    st.cur.op = s == "=" || s == "==" ? Op::Eq
                : s == "!="           ? Op::Ne
                : s == "<"            ? Op::Lt
                : s == "<="           ? Op::Le
                : s == ">"            ? Op::Gt
                : s == ">="           ? Op::Ge
                : s == "~"            ? Op::Contains
                                      : Op::NotContains;
  }
};

template <>
struct Action<g::in_op> {
  template <typename In>
  static void apply(const In& in, State& st) {
    st.cur.op_text = in.string();
    st.cur.op_pos = st.pos(in.begin());
    st.cur.op = detail::lower(st.cur.op_text) == "in" ? Op::In : Op::NotIn;
  }
};

struct ValueAction {
  template <typename In>
  static void apply(const In& in, State& st) {
    ValueTok v;
    v.pos = st.pos(in.begin());
    std::string_view s(in.begin(), in.size());
    if (!s.empty() && s.front() == '"') {
      s = s.substr(1, s.size() - 2);
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        v.text += s[i];
      }
    } else {
      v.text = std::string(s);
    }
    st.cur.values.push_back(std::move(v));
  }
};
template <>
struct Action<g::cmp_value> : ValueAction {};
template <>
struct Action<g::list_value> : ValueAction {};
template <>
struct Action<g::implicit_value> : ValueAction {};

template <>
struct Action<g::term> {
  template <typename In>
  static void apply(const In& /*in*/, State& st) {
    st.terms += std::max<std::size_t>(1, st.cur.values.size());
    if (st.terms > kMaxFilterTerms)
      fail(st.cur.pos,
           "too many terms (at most " + std::to_string(kMaxFilterTerms) +
               ", counting each value of an 'in' list)",
           "a shorter filter");
    st.stack.push_back(compile_term(st.cur));
  }
};

template <>
struct Action<g::negation> {
  template <typename In>
  static void apply(const In& /*in*/, State& st) {
    negate(st.stack.back());
  }
};

template <Expr::Kind K>
struct CombineAction {
  template <typename In>
  static void apply(const In& /*in*/, State& st) {
    Expr b = std::move(st.stack.back());
    st.stack.pop_back();
    Expr a = std::move(st.stack.back());
    st.stack.back() = combine(std::move(a), std::move(b), K);
  }
};
template <>
struct Action<g::and_tail> : CombineAction<Expr::Kind::And> {};
template <>
struct Action<g::or_tail> : CombineAction<Expr::Kind::Or> {};

template <>
struct Action<g::string_open> {
  template <typename In>
  static void apply(const In& in, State& st) {
    st.quote_pos = st.pos(in.begin());
  }
};

template <>
struct Action<g::group_open> {
  template <typename In>
  static void apply(const In& in, State& st) {
    st.open_parens.push_back(st.pos(in.begin()));
  }
};
template <>
struct Action<g::group> {
  template <typename In>
  static void apply(const In& /*in*/, State& st) {
    st.stack.back().pos = st.open_parens.back();
    st.open_parens.pop_back();
  }
};

template <typename Rule>
constexpr bool kNeedsTerm =
    std::is_same_v<Rule, g::first_expr> || std::is_same_v<Rule, g::group_expr> ||
    std::is_same_v<Rule, g::negated> || std::is_same_v<Rule, g::and_operand> ||
    std::is_same_v<Rule, g::or_operand>;

// Every must<> failure becomes a Failure with a message for the rule that was required.
template <typename Rule>
struct RaiseControl : pegtl::normal<Rule> {
  template <typename In>
  [[noreturn]] static void raise(const In& in, State& st) {
    const std::size_t p = st.pos(in.current());
    if constexpr (std::is_same_v<Rule, g::escaped>) {
      if (p >= st.text.size()) fail(st.quote_pos, "unterminated string", "a closing '\"'");
      fail(p - 1, "invalid escape sequence in a string", "\\\" or \\\\ (a quote or a backslash)");
    } else if constexpr (std::is_same_v<Rule, g::string_body>) {
      fail(st.quote_pos, "unterminated string", "a closing '\"'");
    } else if constexpr (std::is_same_v<Rule, g::cmp_value>) {
      fail(p, "expected a value after '" + st.cur.op_text + "'", kValueExpected);
    } else if constexpr (std::is_same_v<Rule, g::list_value>) {
      fail(p, "expected a value in the list", kValueExpected);
    } else if constexpr (std::is_same_v<Rule, g::list_close>) {
      fail(p, "expected ',' or ')' in the list", "',' or ')'");
    } else if constexpr (std::is_same_v<Rule, g::in_list>) {
      fail(p, "expected a list after '" + st.cur.op_text + "'", "a list like (80, 443)");
    } else if constexpr (kNeedsTerm<Rule>) {
      std::string after = std::is_same_v<Rule, g::group_expr>    ? " after '('"
                          : std::is_same_v<Rule, g::negated>     ? " after 'not'"
                          : std::is_same_v<Rule, g::and_operand> ? " after 'and'"
                          : std::is_same_v<Rule, g::or_operand>  ? " after 'or'"
                                                                 : "";
      fail(p, "expected a filter term" + after, "a field name, 'not' or '('");
    } else if constexpr (std::is_same_v<Rule, g::group_close>) {
      fail(p, "missing ')' for the '(' at " + std::to_string(st.open_parens.back()),
           "')', 'and' or 'or'");
    } else if constexpr (std::is_same_v<Rule, g::end_of_filter>) {
      if (st.text[p] == ')') fail(p, "unmatched ')'", "'and', 'or' or the end of the filter");
      std::size_t e = p;
      while (e < st.text.size() && e - p < 24 && st.text[e] != ' ') ++e;
      fail(p, "unexpected '" + std::string(st.text.substr(p, e - p)) + "'",
           "'and', 'or' or the end of the filter");
    } else {
      fail(p, "syntax error", "");
    }
  }
};

// Nesting: '(' and 'not' each open a level; deeper than kMaxFilterDepth is an error (and the
// recursive descent never gets deeper than that).
template <typename Rule>
struct Control : RaiseControl<Rule> {};

template <typename Rule>
struct NestingControl : RaiseControl<Rule> {
  template <typename In>
  static void start(const In& in, State& st) {
    if (++st.depth > kMaxFilterDepth) {
      std::size_t p =
          std::is_same_v<Rule, g::group_expr> ? st.open_parens.back() : st.pos(in.current());
      fail(p, "nesting deeper than " + std::to_string(kMaxFilterDepth) + " levels",
           "fewer nested '(' and 'not'");
    }
  }
  template <typename In>
  static void success(const In& /*in*/, State& st) {
    --st.depth;
  }
  template <typename In>
  static void failure(const In& /*in*/, State& st) {
    --st.depth;
  }
};
template <>
struct Control<g::group_expr> : NestingControl<g::group_expr> {};
template <>
struct Control<g::negated> : NestingControl<g::negated> {};

template <>
struct Control<g::term> : RaiseControl<g::term> {
  template <typename In>
  static void start(const In& /*in*/, State& st) {
    st.cur = TermTok{};
  }
};

}  // namespace

std::variant<Where, FilterError> parse_filter(std::string_view text) {
  if (text.size() > kMaxFilterBytes)
    return FilterError{kMaxFilterBytes,
                       "the filter is longer than " + std::to_string(kMaxFilterBytes) + " bytes",
                       "a shorter filter"};
  State st;
  st.text = text;
  try {
    pegtl::memory_input in(text.data(), text.size(), "filter");
    pegtl::parse<g::filter, Action, Control>(in, st);
    Where w;
    if (!st.stack.empty()) emit(st.stack.back(), 0, w.sql, w.binds);
    return w;
  } catch (const Failure& f) {
    return FilterError{f.position, f.message, f.expected};
  } catch (const pegtl::parse_error& e) {
    // Not expected: every must<> has a message in Control::raise.
    std::size_t p = e.positions().empty() ? 0 : e.positions().front().byte;
    return FilterError{p, "syntax error", ""};
  }
}

}  // namespace ipfixweb::flows

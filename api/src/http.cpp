// The pure parts of the HTTP layer: fields, targets, the router (unit-tested).
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <stdexcept>

#include "ipfixweb/api/http.hpp"
#include "ipfixweb/shared/json_escape.hpp"

namespace ipfixweb::api::http {

bool iequals(std::string_view a, std::string_view b) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "/a/b/" → {"a", "b", ""}; "/" → {""}.
std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  path.remove_prefix(1);
  for (;;) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

bool is_param(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

const std::string* find_field(const Fields& fields, std::string_view name) {
  for (auto& [k, v] : fields)
    if (iequals(k, name)) return &v;
  return nullptr;
}

std::string Request::header(std::string_view name) const {
  auto* v = find_field(headers, name);
  return v ? *v : std::string();
}

std::string Request::query_value(std::string_view name) const {
  auto* v = find_field(query, name);
  return v ? *v : std::string();
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

void Response::set_header(std::string name, std::string value) {
  for (auto& [k, v] : headers)
    if (iequals(k, name)) {
      v = std::move(value);
      return;
    }
  headers.emplace_back(std::move(name), std::move(value));
}

void Response::set_content(std::string content, std::string content_type) {
  body = std::move(content);
  set_header("Content-Type", std::move(content_type));
}

void Router::add(Route route) {
  if (route.path.empty() || route.path.front() != '/')
    throw std::invalid_argument("route path must start with '/': " + route.path);
  std::vector<std::string> segs;
  for (auto s : segments(route.path)) segs.emplace_back(s);
  routes_.push_back({std::move(route), std::move(segs)});
}

std::vector<const Route*> Router::routes() const {
  std::vector<const Route*> out;
  out.reserve(routes_.size());
  for (const auto& e : routes_) out.push_back(&e.route);
  return out;
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  if (path.empty() || path.front() != '/') return m;
  if (method == "HEAD") {
    m = match_exact("HEAD", path);
    return m.route ? m : match_exact("GET", path);
  }
  return match_exact(method, path);
}

Router::Match Router::match_exact(std::string_view method, std::string_view path) const {
  Match m;
  const auto segs = segments(path);
  for (auto& e : routes_) {
    if (e.route.method != method || e.segments.size() != segs.size()) continue;
    m.params.clear();
    bool ok = true;
    for (std::size_t i = 0; ok && i < segs.size(); ++i) {
      if (!is_param(e.segments[i]))
        ok = e.segments[i] == segs[i];
      else if (segs[i].empty())
        ok = false;
      else
        m.params.emplace_back(segs[i]);
    }
    if (ok) {
      m.route = &e.route;
      return m;
    }
  }
  m.params.clear();
  return m;
}

std::string attachment(std::string_view file_name) {
  static const char* const kHex = "0123456789ABCDEF";
  std::string ascii, encoded;
  for (char c : file_name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      ascii.push_back('_');
    } else {
      if (c == '"' || c == '\\') ascii.push_back('\\');
      ascii.push_back(c);
    }
    // RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else percent-encoded.
    if (std::isalnum(u) || (c != '\0' && std::strchr("!#$&+-.^_`|~", c))) {
      encoded.push_back(c);
    } else {
      encoded.push_back('%');
      encoded.push_back(kHex[u >> 4]);
      encoded.push_back(kHex[u & 15]);
    }
  }
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded;
}

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      const int hi = i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
      const int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
      if (lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0') return std::nullopt;
    out.push_back(c);
  }
  if (!is_valid_utf8(out)) return std::nullopt;
  return out;
}

std::optional<Target> parse_target(std::string_view target) {
  if (target.empty() || target.front() != '/') return std::nullopt;
  const auto q = target.find('?');
  Target t;
  auto path = percent_decode(target.substr(0, q), false);
  if (!path) return std::nullopt;
  t.path = std::move(*path);
  if (q == std::string_view::npos) return t;
  auto query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    if (!pair.empty()) {
      const auto eq = pair.find('=');
      auto name = percent_decode(pair.substr(0, eq), true);
      auto value = percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
      if (!name || !value) return std::nullopt;
      t.query.emplace_back(std::move(*name), std::move(*value));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return t;
}

}  // namespace ipfixweb::api::http

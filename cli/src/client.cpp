#include "ipfixweb/cli/client.hpp"

#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <cmath>

namespace ipfixweb::cli {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

Headers from_httplib(const httplib::Headers& h) {
  Headers out;
  out.reserve(h.size());
  for (const auto& [k, v] : h) out.emplace_back(k, v);
  return out;
}

httplib::Headers to_httplib(const Headers& h) {
  httplib::Headers out;
  for (const auto& [k, v] : h) out.emplace(k, v);
  return out;
}

void set_timeouts(httplib::Client& c, double connect_s, double read_s, double write_s) {
  auto split = [](double s) {
    const double whole = std::floor(s);
    return std::pair<time_t, time_t>{static_cast<time_t>(whole),
                                     static_cast<time_t>((s - whole) * 1e6)};
  };
  auto [cs, cu] = split(connect_s);
  auto [rs, ru] = split(read_s);
  auto [ws, wu] = split(write_s);
  c.set_connection_timeout(cs, cu);
  c.set_read_timeout(rs, ru);
  c.set_write_timeout(ws, wu);
}

}  // namespace

std::string Reply::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

bool Reply::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& kv) { return iequals(kv.first, name); });
}

nlohmann::json Reply::json() const {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded())
    throw Failure(kExitUnreachable, "the server answered " + std::to_string(status) +
                                        " with a body that is not JSON");
  return j;
}

void expect_ok(const Reply& r, const std::string& doing) {
  if (r.ok()) return;
  nlohmann::json problem = nlohmann::json::parse(r.body, nullptr, false);
  if (problem.is_discarded() || !problem.is_object()) problem = nullptr;
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) about `" " + s`.
  std::string msg = doing;
  msg.append(": ").append(std::to_string(r.status));
  if (problem.is_object() && problem.value("title", "") != "")
    msg.append(" ").append(problem.value("title", ""));
  if (problem.is_object() && problem.contains("detail") && problem["detail"].is_string())
    msg.append(": ").append(problem["detail"].get<std::string>());
  else if (!problem.is_object() && !r.body.empty() && r.body.size() < 300)
    msg.append(": ").append(r.body);
  if (r.status == 503 || r.status == 507) {
    const std::string retry = r.header("Retry-After");
    if (!retry.empty()) msg += " (retry after " + retry + " s)";
  }
  const int code = r.status >= 400 && r.status < 500 ? kExitRefused : kExitUnreachable;
  throw Failure(code, msg, problem);
}

std::vector<std::string> failure_lines(const Failure& f) {
  std::vector<std::string> out{f.what()};
  const auto& p = f.problem();
  if (!p.is_object() || !p.contains("errors") || !p["errors"].is_array()) return out;
  for (const auto& e : p["errors"]) {
    if (!e.is_object()) continue;
    const std::string message = e.value("message", std::string());
    std::string line = "  " + e.value("field", std::string("?")) + ": " + message;
    // A filter's error: where and what was expected, unless the message says so already.
    if (e.contains("position") && e["position"].is_number() &&
        message.find("at byte") == std::string::npos)
      line += " (at byte " + std::to_string(e["position"].get<long long>()) + ")";
    if (e.contains("expected") && e["expected"].is_string() &&
        message.find(e["expected"].get<std::string>()) == std::string::npos)
      line += "; expected " + e["expected"].get<std::string>();
    out.push_back(std::move(line));
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string query(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [k, v] : params) {
    if (v.empty()) continue;
    out += out.empty() ? '?' : '&';
    out += percent_encode(k) + "=" + percent_encode(v);
  }
  return out;
}

Endpoint parse_url(const std::string& url) {
  const auto bad = [&](const std::string& why) {
    return Failure(kExitUsage, "the server URL '" + url + "' " + why +
                                   " (expected http://HOST[:PORT][/PREFIX] or https://...)");
  };
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw bad("has no scheme");
  std::string scheme = url.substr(0, scheme_end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme != "http" && scheme != "https") throw bad("is not http or https");
  const std::string rest = url.substr(scheme_end + 3);
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  if (authority.empty()) throw bad("names no host");
  if (authority.find('@') != std::string::npos)
    throw bad("holds credentials (use --token or IPFIXWEB_TOKEN)");
  if (rest.find_first_of("?#") != std::string::npos) throw bad("has a query or fragment");
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  return {scheme + "://" + authority, prefix};
}

Api::Api(const std::string& url, std::string token, double timeout_s)
    : url_(url), endpoint_(parse_url(url)), token_(std::move(token)), timeout_s_(timeout_s) {
  client_ = make_client(timeout_s_);
}

Api::~Api() = default;

std::unique_ptr<httplib::Client> Api::make_client(double read_timeout_s) const {
  auto c = std::make_unique<httplib::Client>(endpoint_.origin);
  if (!c->is_valid()) throw Failure(kExitUsage, "cannot use the server URL '" + url_ + "'");
  if (!token_.empty()) c->set_bearer_token_auth(token_);
  c->set_url_encode(false);  // targets are encoded here (query())
  c->set_keep_alive(false);
  set_timeouts(*c, std::min(timeout_s_, 10.0), read_timeout_s, timeout_s_);
  return c;
}

Reply Api::finish(const std::string& what, const std::string& target, void* result) {
  auto& r = *static_cast<httplib::Result*>(result);
  if (!r)
    throw Failure(kExitUnreachable, "cannot reach " + url_ + " (" + what + " " + target +
                                        "): " + httplib::to_string(r.error()));
  return Reply{r->status, from_httplib(r->headers), r->body};
}

Reply Api::get(const std::string& target, const Headers& headers) {
  auto r = client_->Get(full(target), to_httplib(headers));
  return finish("GET", target, &r);
}

Reply Api::head(const std::string& target, const Headers& headers) {
  auto r = client_->Head(full(target), to_httplib(headers));
  return finish("HEAD", target, &r);
}

Reply Api::del(const std::string& target, const Headers& headers) {
  auto r = client_->Delete(full(target), to_httplib(headers));
  return finish("DELETE", target, &r);
}

Reply Api::options(const std::string& target, const Headers& headers) {
  auto r = client_->Options(full(target), to_httplib(headers));
  return finish("OPTIONS", target, &r);
}

Reply Api::post(const std::string& target, const Headers& headers, const std::string& body,
                const std::string& content_type) {
  auto r = client_->Post(full(target), to_httplib(headers), body, content_type);
  return finish("POST", target, &r);
}

bool Api::send_body(const std::string& method, const std::string& target, const Headers& headers,
                    std::uint64_t length, const std::string& content_type, const BodySource& next,
                    Reply& reply, std::string* error) {
  std::string chunk;
  httplib::ContentProvider provider = [&](std::size_t offset, std::size_t,
                                          httplib::DataSink& sink) {
    chunk.clear();
    if (!next(offset, chunk) || chunk.empty()) return false;
    return sink.write(chunk.data(), chunk.size());
  };
  auto c = make_client(timeout_s_);
  httplib::Result r = method == "POST"
                          ? c->Post(full(target), to_httplib(headers),
                                    static_cast<std::size_t>(length), provider, content_type)
                          : c->Patch(full(target), to_httplib(headers),
                                     static_cast<std::size_t>(length), provider, content_type);
  if (!r) {
    if (error) *error = httplib::to_string(r.error());
    return false;
  }
  reply = Reply{r->status, from_httplib(r->headers), r->body};
  return true;
}

Api::Streamed Api::stream(const std::string& target, const Headers& headers,
                          const std::function<bool(const Reply&)>& on_head,
                          const std::function<bool(const char*, std::size_t)>& on_data,
                          double read_timeout_s, bool stop_unless_streamed) {
  Streamed out;
  bool stopped_by_us = false;
  auto c = make_client(read_timeout_s > 0 ? read_timeout_s : timeout_s_);
  auto r = c->Get(
      full(target), to_httplib(headers),
      [&](const httplib::Response& res) {
        out.reply.status = res.status;
        out.reply.headers = from_httplib(res.headers);
        out.streamed = on_head(out.reply);
        if (!out.streamed && stop_unless_streamed && res.status >= 200 && res.status < 300) {
          stopped_by_us = true;
          return false;
        }
        return true;
      },
      [&](const char* data, std::size_t n) {
        if (!out.streamed) {
          if (out.reply.body.size() < (1u << 20)) out.reply.body.append(data, n);
          return true;
        }
        if (!on_data(data, n)) {
          stopped_by_us = true;
          return false;
        }
        return true;
      });
  if (r) {
    out.end = End::Complete;
    // A HEAD-less answer without a body (204) never reaches the handler.
    if (out.reply.status == 0) {
      out.reply.status = r->status;
      out.reply.headers = from_httplib(r->headers);
    }
  } else if (stopped_by_us) {
    out.end = End::Stopped;
  } else {
    out.end = End::Broken;
    out.error = httplib::to_string(r.error());
    if (out.reply.status == 0)
      throw Failure(kExitUnreachable,
                    "cannot reach " + url_ + " (GET " + target + "): " + out.error);
  }
  return out;
}

}  // namespace ipfixweb::cli

#include "ipfixweb/api/ui_routes.hpp"

#include <chrono>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/http.hpp"
#include "ipfixweb/api/metrics.hpp"

namespace ipfixweb::api::ui {

namespace {

// Whether an If-None-Match value (a list of entity tags, or "*") names `etag`. The comparison
// is the weak one RFC 9110 prescribes for If-None-Match: W/"x" matches "x".
bool none_match_hits(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view tag = header.substr(0, comma);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag == "*") return true;
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

void common_headers(http::Response& res) {
  res.set_header("Content-Security-Policy", std::string(kContentSecurityPolicy));
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Cross-Origin-Opener-Policy", "same-origin");
}

void serve(const Asset* a, std::string_view name, const http::Request& req, http::Response& res) {
  common_headers(res);
  if (!a) {
    // Not the router's "no such route": the route exists, the file does not.
    const nlohmann::json body = {{"type", "about:blank"},
                                 {"title", "Not Found"},
                                 {"status", 404},
                                 {"detail", "the web page has no file " + std::string(name)}};
    res.status = 404;
    res.set_content(body.dump(), "application/problem+json");
    return;
  }
  res.set_header("ETag", std::string(a->etag));
  res.set_header("Cache-Control", "no-cache");
  if (none_match_hits(req.header("If-None-Match"), a->etag)) {
    res.status = 304;
    return;
  }
  res.status = 200;
  res.set_content(std::string(a->data, a->size), std::string(a->content_type));
}

}  // namespace

const Asset* find(std::string_view name) {
  for (const Asset* a : assets())
    if (a->name == name) return a;
  return nullptr;
}

void add_routes(http::Router& router, Metrics& metrics) {
  auto add = [&](const std::string& path, http::Handler fn) {
    const int idx = metrics.route("GET", path);
    http::Route route;
    route.method = "GET";
    route.path = path;
    route.open = true;       // the page asks for the token itself
    route.blocking = false;  // served from memory
    route.handler = [&metrics, idx, fn = std::move(fn)](const http::Request& q, http::Response& r) {
      const auto t0 = std::chrono::steady_clock::now();
      fn(q, r);
      metrics.observe(idx, r.status,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };
    router.add(std::move(route));
  };
  add("/", [](const http::Request&, http::Response& res) {
    common_headers(res);
    res.status = 308;
    res.set_header("Location", "/ui");
    res.set_content("see /ui\n", "text/plain; charset=utf-8");
  });
  auto index = [](const http::Request& q, http::Response& r) {
    serve(find("index.html"), "index.html", q, r);
  };
  add("/ui", index);
  add("/ui/", index);
  add("/ui/{file}", [](const http::Request& q, http::Response& r) {
    const std::string& name = q.path_params.at(0);
    serve(find(name), name, q, r);
  });
  add("/ui/vendor/{file}", [](const http::Request& q, http::Response& r) {
    const std::string name = "vendor/" + q.path_params.at(0);
    serve(find(name), name, q, r);
  });
}

}  // namespace ipfixweb::api::ui

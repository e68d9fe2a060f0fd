// The web page (docs/ui.md): plain HTML, CSS and JavaScript modules from api/ui/, embedded in
// the binary at build time (api/cmake/EmbedUiFile.cmake) and served from memory:
//   GET /                   redirects to /ui (308)
//   GET /ui, GET /ui/       index.html
//   GET /ui/{file}          a file of api/ui/
//   GET /ui/vendor/{file}   a file of api/ui/vendor/ (third-party code: uPlot)
// The routes need no token (the page asks for one when the api answers 401). Every answer has
// a strong ETag (If-None-Match: 304), Cache-Control: no-cache (revalidated each time, cheap
// with the ETag), X-Content-Type-Options: nosniff and a strict Content-Security-Policy (no
// inline script or style, nothing from elsewhere).
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace ipfixweb::api {

class Metrics;
namespace http {
class Router;
}

namespace ui {

// One embedded file.
struct Asset {
  std::string_view name;          // path below api/ui/: "app.js", "vendor/uPlot.esm.js"
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view etag;          // strong, quoted: "\"<32 hex digits of its SHA-256>\""
  const char* data;
  std::size_t size;
};

// Every embedded file (generated at build time from the files of api/ui/).
std::span<const Asset* const> assets();
// The file of that name, or nullptr.
const Asset* find(std::string_view name);

// The Content-Security-Policy of every answer of these routes.
inline constexpr std::string_view kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

// Adds the routes above (open: no token needed; never blocking), each counted in `metrics`.
void add_routes(http::Router& router, Metrics& metrics);

}  // namespace ui
}  // namespace ipfixweb::api

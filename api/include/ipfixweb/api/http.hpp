// The api's HTTP layer: requests, responses, a router and an event-driven server (Boost.Beast
// on Boost.Asio; nothing of either shows in this header).
//
// Threading: a few I/O threads run only asynchronous I/O (accepting, reading headers and
// bodies, finishing writes a client was slow to take). A request reaches a handler only once
// its header and body are complete; handlers run on a bounded pool of handler threads (they
// may block: SQLite reads, waiting for the broker; handler_pool.hpp), and the handler
// thread writes the answer without waiting (what the socket does not take at once, an I/O
// thread sends later). A slow or idle client therefore costs a socket and a little memory,
// never a handler thread. Every phase of a connection has a limit (see Limits); whatever the
// server refuses by itself (400, 401, 403, 404, 413, 431, 503) it refuses before reading a
// body.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipfixweb/api/auth.hpp"

namespace ipfixweb::api::http {

using Fields = std::vector<std::pair<std::string, std::string>>;

// The value of the first field named `name` (ASCII case-insensitive); nullptr when absent.
const std::string* find_field(const Fields& fields, std::string_view name);

struct Request {
  std::string method;                    // as sent: "GET", "HEAD", "POST", …
  std::string path;                      // percent-decoded
  Fields query;                          // percent-decoded ('+' is a space), in order
  Fields headers;                        // as sent
  std::string body;                      // complete (the server read it before the handler ran)
  std::vector<std::string> path_params;  // the route's {…} segments, in order

  bool has_header(std::string_view name) const { return find_field(headers, name) != nullptr; }
  std::string header(std::string_view name) const;  // "" when absent
  bool has_query(std::string_view name) const { return find_field(query, name) != nullptr; }
  std::string query_value(std::string_view name) const;  // the first value; "" when absent
};

// An open file sent as a response body, read in pieces while it is written (never whole).
// Owns the descriptor.
class File {
 public:
  File(int fd, std::uint64_t size) : fd_(fd), size_(size) {}
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  int fd() const { return fd_; }
  std::uint64_t size() const { return size_; }

 private:
  int fd_;
  std::uint64_t size_;
};

struct Response {
  int status = 200;
  Fields headers;
  std::string body;
  // When set, sent instead of `body` (Content-Length: its size). A body produced later on the
  // connection (e.g. server-sent events, written as they come without holding a handler
  // thread) is another member beside this one: the connection writes the header, then the
  // pieces, the way it streams a file.
  std::shared_ptr<File> file;

  void set_header(std::string name, std::string value);  // replaces a field of that name
  void set_content(std::string content, std::string content_type);
};

using Handler = std::function<void(const Request&, Response&)>;

struct Route {
  std::string method;  // "GET" routes also answer HEAD (the same header, no body)
  std::string path;    // a template: literal segments and {name} segments ("/tasks/{id}")
  Handler handler;
  Role role = Role::Read;  // the least role a bearer token needs (when tokens are configured)
  bool open = false;       // needs no token at all
  // The largest body accepted; nullopt: Limits::max_other_body (routes that take no body).
  std::optional<std::size_t> max_body;
  // false: the handler never blocks (no I/O, no locks held by others) and runs on the I/O
  // thread, saving the hand-off to a handler thread.
  bool blocking = true;
};

class Router {
 public:
  void add(Route route);
  struct Match {
    const Route* route = nullptr;  // nullptr: no route has this method and path
    std::vector<std::string> params;
  };
  // HEAD matches GET routes. `path` is the decoded path.
  Match match(std::string_view method, std::string_view path) const;

 private:
  struct Entry {
    Route route;
    std::vector<std::string> segments;  // "{…}" matches any one non-empty segment
  };
  std::vector<Entry> routes_;
};

// Percent-decodes `s` ('+' as a space when `plus_is_space`). nullopt when a '%' is not
// followed by two hex digits, or the result is not UTF-8 or contains a NUL byte.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);

struct Target {
  std::string path;
  Fields query;
};
// An origin-form request target ("/path?a=1&b=x+y") split and decoded; nullopt when it does
// not start with '/' or a part does not decode (see percent_decode).
std::optional<Target> parse_target(std::string_view target);

struct Limits {
  std::size_t max_header = 8 * 1024;  // request line and header fields; 431 and close beyond
  double header_timeout_s = 10;       // from a request's first byte to the end of its header; close
  double idle_timeout_s = 30;         // a connection waiting for its (next) request; close
  // A body must arrive within body_timeout_s plus one second per min_body_rate bytes received
  // (0: no allowance: the whole body within body_timeout_s); close beyond.
  double body_timeout_s = 30;
  std::size_t min_body_rate = 16 * 1024;
  double write_timeout_s = 30;  // each write of an answer; close beyond
  // Open connections. When full, the longest-idle connection is closed to make room; when
  // none is idle, the newcomer gets 503 with Retry-After and is closed.
  std::size_t max_connections = 4096;
  // Routes without Route::max_body and unknown routes read and ignore a body up to this
  // size; beyond it they answer 413 (404 for an unknown route) and close.
  std::size_t max_other_body = 4 * 1024;
};

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port (see Server::port())
  int io_threads = 2;
  int handler_threads = 64;
  Limits limits;
  std::vector<Token> tokens;  // empty: no authentication
  // Fills in an answer the server makes by itself (400, 401, 403, 404, 413, 431, 500, 503).
  std::function<void(Response&, int status, const std::string& detail)> error;
};

class Server {
 public:
  Server(Options opts, Router routes);  // binds and listens; throws when it cannot
  ~Server();
  int port() const;
  bool loopback_only() const;  // listening on 127.0.0.0/8 or ::1 only
  // Runs until stop(); the calling thread is one of the I/O threads.
  void serve();
  // Safe from any thread: stops accepting, closes idle connections, lets the requests in
  // progress finish (for at most a few seconds) and makes serve() return.
  void stop();

  struct Impl;  // opaque; public only so that the implementation's parts can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::api::http

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
//
// A request body is read whole into Request::body before the handler runs, except on a route
// with a BodySink (Route::sink): uploads of any size are taken piece by piece as they arrive,
// one piece in memory at a time (see BodySink).
//
// A response body is one of four kinds (see Response):
//   body    a string, sent with Content-Length;
//   file    an open file of known size, sent in pieces as the socket takes them;
//   stream  a Producer's pieces, generated one at a time on a handler thread and sent as they
//           come (Transfer-Encoding: chunked on HTTP/1.1; on HTTP/1.0 without a length, and
//           the connection closes after it), for bodies of unknown length such as exports of
//           millions of rows. At most one piece per connection is ever buffered: the next is
//           asked for only when the socket has taken the last one whole, so a slow client
//           slows the producer down instead of filling memory, and between pieces no thread
//           waits for it. Only the status and header are decided before the first piece: a
//           handler finds its errors (400, 404, …) first and answers them as usual, and
//           returns a stream only once it knows the body can be made.
//   feed    pieces pushed when they come (server-sent events), framed like a stream: see
//           Feed. A connection waiting for its feed holds no thread.
#pragma once

#include <cstddef>
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
// ASCII case-insensitive equality (header names, media types).
bool iequals(std::string_view a, std::string_view b);

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

// A body produced piece by piece (Response::stream), of a length not known in advance.
//
// next() appends the next piece to `out` (which the server hands over empty) and returns true
// when more may follow, false when this piece (possibly empty) is the last. A piece should
// stay near kStreamPiece bytes: larger ones are sent whole, but cost that much memory per
// connection; an empty piece with true is allowed (nothing is sent, next() is asked again)
// but costs a round trip through the handler pool.
//
// Thread rules. next() runs on a handler thread (it may block, e.g. on SQLite reads), never
// on an I/O thread and never concurrently with itself; successive calls may run on different
// handler threads, each seeing what the previous one did. It is called again only once the
// socket has taken the previous piece whole. The producer is destroyed after the last call
// of next() has returned, never during one, and on a handler thread (only when the server
// itself is being destroyed may that be the destroying thread): when the stream is complete,
// or the connection closes early (a client that stops reading for Limits::write_timeout_s,
// a client that goes away, the server stopping). HEAD gets the header only: next() is never
// called. A call of next() holds its handler thread, and a client that went away is noticed
// only when the piece is written: next() may block for a piece's worth of work, not for
// something that may take long to come (a body that waits for events needs another way).
//
// An exception from next() ends the stream: the error is logged and the connection closed
// without the terminating chunk, so the client sees a truncated transfer, never a complete
// one (on HTTP/1.0, which has no chunks, the client cannot tell). (The status line went out
// before the first piece; a handler that can fail before producing anything should find that
// out before it returns the stream.) Likewise when the server stops: a stream still under way
// after a few seconds is cut off (Server::stop()).
class Producer {
 public:
  virtual ~Producer() = default;
  virtual bool next(std::string& out) = 0;
};

// The size a Producer's piece should stay near.
inline constexpr std::size_t kStreamPiece = 64 * 1024;

// A body whose pieces come when they come (Response::feed), such as server-sent events: the
// server takes what is ready, and when nothing is, waits for the feed's wake-up without
// holding any thread (hundreds of feeds cost hundreds of sockets and queues, no threads).
//
// attach() is called once, after the header was written (never for HEAD), with `wake`:
// calling it says something is ready, and the server calls take() soon after. wake may be
// called from any thread, any number of times, also after the connection closed (it then
// does nothing); it never runs take() itself, so a feed may call it holding its own lock.
// take() appends what is ready to `out` (which the server hands over empty; nothing is
// fine) and returns false when the feed has ended (`out` then holds its last piece, possibly
// empty). It runs right after attach() (on the thread that wrote the header), after each
// piece was written whole, and after wake-ups (on an I/O thread), never concurrently with
// itself: it must not block (take from a queue, under a short lock at most).
//
// The connection (and the server's share of the feed: feeds are shared, e.g. with whatever
// fills them) is released when the feed ends, when the client closes the connection or
// sends anything on it, when a piece is not taken within Limits::write_timeout_s (a client
// that stopped reading), and at once when the server stops (clients of an event stream
// reconnect). Keep-alives against proxies that drop quiet connections are the feed's job
// (e.g. an SSE comment line now and then), which also notices a client gone without a word.
// An exception from take() ends the body without its terminating chunk.
class Feed {
 public:
  virtual ~Feed() = default;
  virtual void attach(std::function<void()> wake) = 0;
  virtual bool take(std::string& out) = 0;
};

struct Response {
  int status = 200;
  Fields headers;
  std::string body;
  // When set, sent instead of `body` (Content-Length: its size).
  std::shared_ptr<File> file;
  // When set (and `file` is not), sent instead of `body`: see Producer. Content-Length and
  // Transfer-Encoding in `headers` are replaced by the server's framing.
  std::shared_ptr<Producer> stream;
  // When set (and neither `file` nor `stream` is), sent instead of `body`: see Feed. Framed
  // like a stream.
  std::shared_ptr<Feed> feed;

  void set_header(std::string name, std::string value);  // replaces a field of that name
  void set_content(std::string content, std::string content_type);
};

using Handler = std::function<void(const Request&, Response&)>;

// The answer of a deferred handler (Route::deferred): call it once, from any thread, now or
// later. Further calls do nothing. Dropping every copy of it unanswered answers 500 (a
// handler that forgot its request never leaves the client waiting). Every copy must be called
// or dropped before the Server is destroyed (it refers to the server's connection).
using Respond = std::function<void(Response)>;
// A handler whose answer may come later, from another thread (e.g. once the broker has
// answered): no thread waits for it meanwhile. The Request is valid only during the call.
using DeferredHandler = std::function<void(const Request&, Respond)>;

// A request body taken piece by piece as it arrives (Route::sink), for bodies too large to
// hold (uploads). A route's SinkFactory runs once the header is in and the request passed the
// server's checks (route, token, announced size), before any of the body is read (and before
// "100 Continue" is sent): it returns the sink, or nullptr with the answer in `res` (a refusal
// such as 404, 409, 413, 415; the connection closes after it when a body was announced).
//
// Then write() gets the body's pieces in order (each at most kSinkPiece bytes; the next piece
// is read from the socket only once write() returned), and finish() fills in the answer once
// the body is complete (also when it is empty: finish() at once). write() returning false
// refuses the rest: `res` holds the answer (e.g. 413, 415, 422, 507), the connection closes
// after it, and neither finish() nor abort() follows. abort() says the body will never
// complete: the client went away or sent broken framing, it was slower than the body limits
// allow, it sent more than Route::max_body, or the server stops. A sink destroyed without
// finish() or abort() having been called must behave as if aborted.
//
// Thread rules: every call (the factory too) runs on a handler thread (it may block: disk
// writes, fsync), never two at a time for one request; the sink is destroyed on a handler
// thread. An exception from the factory, write() or finish() answers 500 and closes the
// connection (then abort() is called).
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual bool write(std::string_view piece, Response& res) = 0;
  virtual void finish(Response& res) = 0;
  virtual void abort() = 0;
};
using SinkFactory = std::function<std::unique_ptr<BodySink>(const Request&, Response&)>;

// The largest piece a BodySink is given. 1 MiB: an upload's pieces go from the I/O thread to
// a handler thread (the write) and to the hashing thread, and a quarter as many hand-offs made
// a 1 GiB upload 10-15 % faster than 256 KiB pieces (docs/benchmarks.md, Uploads), for about
// 2.5 MiB more memory per upload in flight.
inline constexpr std::size_t kSinkPiece = 1024 * 1024;

struct Route {
  std::string method;  // "GET" routes also answer HEAD (the same header, no body)
  std::string path;    // a template: literal segments and {name} segments ("/tasks/{id}")
  Handler handler;
  Role role = Role::Read;  // the least role a bearer token needs (when tokens are configured)
  bool open = false;       // needs no token at all
  // The largest body accepted; nullopt: Limits::max_other_body (routes that take no body).
  std::optional<std::size_t> max_body;
  // When set, the body goes to the sink this makes instead of Request::body, and `handler`
  // is not used (see BodySink).
  SinkFactory sink;
  // false: the handler never blocks (no I/O, no locks held by others) and runs on the I/O
  // thread, saving the hand-off to a handler thread.
  bool blocking = true;
  // When set (and `sink` is not), runs instead of `handler`, on a handler thread (on the I/O
  // thread when !blocking): see DeferredHandler. An answer given during the call is sent by
  // the calling thread, one given later by an I/O thread.
  DeferredHandler deferred;
};

class Router {
 public:
  void add(Route route);
  struct Match {
    const Route* route = nullptr;  // nullptr: no route has this method and path
    std::vector<std::string> params;
  };
  // HEAD matches a HEAD route of the path, else its GET route. `path` is the decoded path.
  Match match(std::string_view method, std::string_view path) const;
  // Every route, in the order added (the OpenAPI document is checked against them).
  std::vector<const Route*> routes() const;

 private:
  Match match_exact(std::string_view method, std::string_view path) const;
  struct Entry {
    Route route;
    std::vector<std::string> segments;  // "{…}" matches any one non-empty segment
  };
  std::vector<Entry> routes_;
};

// Percent-decodes `s` ('+' as a space when `plus_is_space`). nullopt when a '%' is not
// followed by two hex digits, or the result is not UTF-8 or contains a NUL byte.
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);

// A Content-Disposition value that offers `file_name` for saving (RFC 6266): a quoted ASCII
// filename (quotes and backslashes escaped, other bytes outside printable ASCII as '_') for
// old clients, and filename*=UTF-8''<percent-encoded> with the name as it is.
std::string attachment(std::string_view file_name);

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
  // progress finish (for at most a few seconds) and makes serve() return. A streamed body
  // (Response::stream) still under way after a few seconds is cut off: its connection
  // closes without the terminating chunk and its producer is destroyed before serve()
  // returns (unless next() is blocked in a call that long).
  void stop();

  struct Impl;  // opaque; public only so that the implementation's parts can name it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::api::http

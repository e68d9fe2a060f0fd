// The event-driven HTTP server (Boost.Beast on Boost.Asio): see http.hpp for the model.
//
// A connection lives on its own strand and goes through these phases:
//   idle    waiting for a request's first byte (no buffer held; idle timeout)
//   header  reading the request line and header fields (header limit, header timeout)
//   checks  decode the target, route, authenticate, check the body size: refusals here are
//           answered before any body is read
//   body    reading the body (body limit, body timeout and minimum rate)
//   handler the request runs on the handler pool; the connection waits (no timer: the
//           handler's own time is bounded by --broker-timeout and SQLite)
//   write   the answer (write timeout per write; a file is sent in pieces)
// then idle again (keep-alive), or a graceful close: shut down sending, read and drop what
// the client still sends for a short while (so it can read the answer rather than a reset),
// close.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "ipfixweb/api/http.hpp"
#include "ipfixweb/shared/logging.hpp"

namespace ipfixweb::api::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// A graceful close reads and drops at most this much, for at most this long.
constexpr std::size_t kLingerBytes = 1 << 20;
constexpr auto kLingerTime = std::chrono::seconds(2);
// A file is sent in pieces of this size; the same buffer drops what a closing client sends.
constexpr std::size_t kPiece = 64 * 1024;
// A connection's read buffer is given back between requests when it grew beyond this.
constexpr std::size_t kKeptBuffer = 16 * 1024;
// stop() lets requests in progress finish for this long.
constexpr auto kStopGrace = std::chrono::seconds(5);

class Connection;

// Every open connection, in the order they last became idle: the first idle one is the
// longest idle. Shared by the I/O threads (a mutex; the list is short-held).
class Registry {
 public:
  struct Entry {
    std::weak_ptr<Connection> conn;
    bool idle = false;
  };
  using Slot = std::list<Entry>::iterator;

  Slot add(std::weak_ptr<Connection> c) {
    std::lock_guard lock(mu_);
    entries_.push_back({std::move(c), false});
    return std::prev(entries_.end());
  }
  void remove(Slot s) {
    std::lock_guard lock(mu_);
    entries_.erase(s);
  }
  void set_idle(Slot s, bool idle) {
    std::lock_guard lock(mu_);
    s->idle = idle;
    if (idle) entries_.splice(entries_.end(), entries_, s);
  }
  std::size_t size() {
    std::lock_guard lock(mu_);
    return entries_.size();
  }
  // The longest-idle connection, no longer counted as idle (so it is chosen only once).
  std::shared_ptr<Connection> take_longest_idle() {
    std::lock_guard lock(mu_);
    for (auto& e : entries_)
      if (e.idle) {
        e.idle = false;
        if (auto c = e.conn.lock()) return c;
      }
    return nullptr;
  }
  std::vector<std::shared_ptr<Connection>> all() {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<Connection>> out;
    for (auto& e : entries_)
      if (auto c = e.conn.lock()) out.push_back(std::move(c));
    return out;
  }

 private:
  std::mutex mu_;
  std::list<Entry> entries_;
};

}  // namespace

struct Server::Impl {
  Options opts;
  Router router;
  std::shared_ptr<spdlog::logger> log = logger("api");
  Registry registry;  // before the io_context: connections unregister when it destroys them
  std::atomic<bool> stopping{false};
  Clock::time_point stop_deadline;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  asio::steady_timer accept_retry{ioc};
  asio::steady_timer stop_timer{ioc};
  asio::thread_pool handlers;  // last: joined first, while everything it uses still exists
  Clock::time_point last_accept_error;

  Impl(Options o, Router r)
      : opts(std::move(o)),
        router(std::move(r)),
        ioc(std::max(1, opts.io_threads)),
        handlers(static_cast<std::size_t>(std::max(1, opts.handler_threads))) {}

  void error(Response& res, int status, const std::string& detail) {
    if (opts.error) {
      opts.error(res, status, detail);
    } else {
      res.status = status;
      res.set_content(detail + "\n", "text/plain");
    }
  }

  void accept();
  void on_accept(const beast::error_code& ec, tcp::socket sock);
  void wait_drained();
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server::Impl& s, tcp::socket sock)
      : s_(s),
        stream_(std::move(sock)),
        idle_timer_(stream_.get_executor()),
        buffer_(s.opts.limits.max_header + kPiece) {}

  ~Connection() {
    if (registered_) s_.registry.remove(slot_);
  }

  // Counts the connection and starts waiting for its first request.
  void start() {
    slot_ = s_.registry.add(weak_from_this());
    registered_ = true;
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->wait_request(); });
  }

  // Answers 503 at once and closes (the server is full and no connection is idle).
  void reject() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      Response res;
      self->s_.error(res, 503, "the server has too many connections; try again");
      res.set_header("Retry-After", "1");
      self->send(std::move(res), true);
    });
  }

  // From another strand, when the server is full: closes the connection if it is still
  // between requests.
  void shed() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == Phase::Idle) self->close();
    });
  }

  // From another strand, when the server stops: closes the connection unless a request is
  // being handled or answered; that one closes once it is answered.
  void stop() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == Phase::Handler || self->phase_ == Phase::Write)
        self->keep_alive_ = false;
      else
        self->close();
    });
  }

 private:
  enum class Phase { Idle, Header, Body, Handler, Write, Closing };

  const Limits& limits() const { return s_.opts.limits; }

  void set_idle(bool idle) {
    if (registered_) s_.registry.set_idle(slot_, idle);
  }

  void wait_request() {
    req_ = Request{};
    route_ = nullptr;
    parser_.reset();
    if (buffer_.size() > 0) return read_header();  // the next request is already here
    if (buffer_.capacity() > kKeptBuffer) buffer_.shrink_to_fit();
    phase_ = Phase::Idle;
    set_idle(true);
    idle_timer_.expires_after(seconds(limits().idle_timeout_s));
    idle_timer_.async_wait([self = shared_from_this()](const beast::error_code& ec) {
      if (!ec && self->phase_ == Phase::Idle) self->close();
    });
    stream_.socket().async_wait(tcp::socket::wait_read,
                                [self = shared_from_this()](const beast::error_code& ec) {
                                  self->idle_timer_.cancel();
                                  if (self->phase_ != Phase::Idle) return;
                                  self->set_idle(false);
                                  if (ec) return self->close();
                                  self->read_header();
                                });
  }

  void read_header() {
    phase_ = Phase::Header;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits().max_header));
    // Checked per route once the header is in. (Not boost::none: Beast 1.74 then refuses
    // every body, comparing the length with the empty optional.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_.expires_after(seconds(limits().header_timeout_s));
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
                               self->on_header(ec);
                             });
  }

  void on_header(const beast::error_code& ec) {
    if (ec == bhttp::error::header_limit)
      return refuse(431, "the request header is larger than " +
                             std::to_string(limits().max_header) + " bytes");
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::eof ||
        ec == asio::error::connection_reset)
      return close();
    if (ec) {
      s_.log->debug("bad request: {}", ec.message());
      return refuse(400, "the request is not valid HTTP/1.1");
    }
    stream_.expires_never();
    auto& head = parser_->get();
    keep_alive_ = head.keep_alive();
    version_ = head.version();
    req_.method = head.method_string();
    req_.headers.reserve(8);
    for (auto& f : head) req_.headers.emplace_back(f.name_string(), f.value());
    auto target = parse_target(head.target());
    if (!target) {
      Response res;
      s_.error(res, 400, "the request target is not valid: bad percent-encoding or not UTF-8");
      return answer_now(std::move(res));
    }
    req_.path = std::move(target->path);
    req_.query = std::move(target->query);
    auto m = s_.router.match(req_.method, req_.path);
    route_ = m.route;
    req_.path_params = std::move(m.params);

    // Authentication, before any body is read. An unknown route needs a token too.
    if (!s_.opts.tokens.empty() && !(route_ && route_->open)) {
      auto role = role_of(s_.opts.tokens, req_.header("Authorization"));
      if (!role) {
        Response res;
        s_.error(res, 401, "a valid bearer token is required");
        res.set_header("WWW-Authenticate", "Bearer");
        return answer_now(std::move(res));
      }
      if (route_ && *role < route_->role) {
        Response res;
        s_.error(res, 403,
                 "a " + std::string(role_name(*role)) + " token may not " + req_.method + " " +
                     route_->path + " (needs " + std::string(role_name(route_->role)) + ")");
        return answer_now(std::move(res));
      }
    }

    // The body: refused unread when it is announced too large.
    const std::size_t limit =
        route_ && route_->max_body ? *route_->max_body : limits().max_other_body;
    if (auto length = parser_->content_length(); length && *length > limit) return refuse_body();
    if (parser_->is_done()) return dispatch();
    parser_->body_limit(limit);
    if (beast::iequals(req_.header("Expect"), "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(seconds(limits().write_timeout_s));
      return asio::async_write(
          stream_, asio::buffer(kContinue),
          [self = shared_from_this()](const beast::error_code& wec, std::size_t) {
            if (wec) return self->close();
            self->read_body();
          });
    }
    read_body();
  }

  void read_body() {
    phase_ = Phase::Body;
    body_start_ = Clock::now();
    body_bytes_ = 0;
    read_body_some();
  }

  // Each read's deadline: the body's start + body timeout + one second per min_body_rate
  // bytes received so far. A client keeping that average may take as long as it needs.
  void read_body_some() {
    auto allowance = limits().min_body_rate ? seconds(static_cast<double>(body_bytes_) /
                                                      static_cast<double>(limits().min_body_rate))
                                            : Clock::duration::zero();
    stream_.expires_at(body_start_ + seconds(limits().body_timeout_s) + allowance);
    bhttp::async_read_some(stream_, buffer_, *parser_,
                           [self = shared_from_this()](const beast::error_code& ec, std::size_t n) {
                             self->body_bytes_ += n;
                             if (ec == bhttp::error::body_limit) return self->refuse_body();
                             if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
                                 ec == asio::error::eof || ec == asio::error::connection_reset ||
                                 ec == asio::error::operation_aborted)
                               return self->close();
                             if (ec)
                               return self->refuse(400, "the request body is not valid HTTP/1.1");
                             if (!self->parser_->is_done()) return self->read_body_some();
                             self->stream_.expires_never();
                             self->dispatch();
                           });
  }

  // The request is complete: to the handler pool (unknown routes are answered here).
  void dispatch() {
    if (!route_) {
      Response res;
      s_.error(res, 404, "no such route");
      return send(std::move(res), false);
    }
    req_.body = std::move(parser_->get().body());
    phase_ = Phase::Handler;
    asio::post(s_.handlers, [self = shared_from_this()] {
      Response res;
      try {
        self->route_->handler(self->req_, res);
      } catch (const std::exception& e) {
        self->s_.log->error("request failed: {}", e.what());
        res = Response{};
        self->s_.error(res, 500, "the request failed; see the api log");
      }
      asio::post(self->stream_.get_executor(),
                 [self, res = std::move(res)]() mutable { self->send(std::move(res), false); });
    });
  }

  // A refusal before the request was read whole: the connection closes after the answer.
  void refuse(int status, const std::string& detail) {
    Response res;
    s_.error(res, status, detail);
    send(std::move(res), true);
  }

  // A body beyond the limit (announced, or found while reading a chunked one).
  void refuse_body() {
    if (route_)
      refuse(413, "the request body is too large");
    else
      refuse(404, "no such route");
  }

  // An answer before the body: keep-alive only when there is no body left to skip.
  void answer_now(Response res) { send(std::move(res), !parser_->is_done()); }

  void send(Response res, bool close_after) {
    phase_ = Phase::Write;
    if (close_after || s_.stopping) keep_alive_ = false;
    out_ = std::make_shared<Outgoing>();
    auto& msg = out_->msg;
    msg.version(version_);
    msg.result(static_cast<unsigned>(res.status));
    for (auto& [name, value] : res.headers) {
      if (value.find_first_of("\r\n") != std::string::npos) {  // would split the header
        s_.log->warn("dropped response header {}: it contains a line break", name);
        continue;
      }
      msg.insert(name, value);
    }
    out_->file = std::move(res.file);
    if (out_->file) {
      msg.content_length(out_->file->size());
    } else {
      msg.body() = std::move(res.body);
      msg.prepare_payload();
    }
    msg.keep_alive(keep_alive_);
    out_->sr.emplace(msg);
    stream_.expires_after(seconds(limits().write_timeout_s));
    auto done = [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      if (ec) return self->close();
      if (self->out_->file && !self->head_request()) return self->send_piece();
      self->sent();
    };
    if (out_->file || head_request())
      bhttp::async_write_header(stream_, *out_->sr, std::move(done));
    else
      bhttp::async_write(stream_, *out_->sr, std::move(done));
  }

  bool head_request() const { return req_.method == "HEAD"; }

  void send_piece() {
    auto& f = *out_->file;
    if (out_->offset == f.size()) return sent();
    if (!piece_) piece_ = std::make_unique<char[]>(kPiece);
    const auto want =
        static_cast<std::size_t>(std::min<std::uint64_t>(kPiece, f.size() - out_->offset));
    const ssize_t n = ::pread(f.fd(), piece_.get(), want, static_cast<off_t>(out_->offset));
    if (n <= 0) {  // the file shrank: the announced length cannot be kept
      s_.log->warn("download cut short: {}", n < 0 ? std::strerror(errno) : "file shrank");
      return close();
    }
    out_->offset += static_cast<std::uint64_t>(n);
    stream_.expires_after(seconds(limits().write_timeout_s));
    asio::async_write(stream_, asio::buffer(piece_.get(), static_cast<std::size_t>(n)),
                      [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
                        if (ec) return self->close();
                        self->send_piece();
                      });
  }

  void sent() {
    out_.reset();
    stream_.expires_never();
    if (keep_alive_) return wait_request();
    linger();
  }

  // Graceful close: stop sending, then read and drop what the client still sends (bounded)
  // until it closes, so that it reads the answer instead of a connection reset.
  void linger() {
    phase_ = Phase::Closing;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    if (!piece_) piece_ = std::make_unique<char[]>(kPiece);
    stream_.expires_after(kLingerTime);
    linger_some(0);
  }

  void linger_some(std::size_t dropped) {
    stream_.async_read_some(
        asio::buffer(piece_.get(), kPiece),
        [self = shared_from_this(), dropped](const beast::error_code& ec, std::size_t n) {
          if (ec || dropped + n >= kLingerBytes) return self->close();
          self->linger_some(dropped + n);
        });
  }

  void close() {
    phase_ = Phase::Closing;
    idle_timer_.cancel();
    stream_.close();
  }

  struct Outgoing {
    bhttp::response<bhttp::string_body> msg;
    std::optional<bhttp::response_serializer<bhttp::string_body>> sr;
    std::shared_ptr<File> file;
    std::uint64_t offset = 0;
  };

  Server::Impl& s_;
  beast::tcp_stream stream_;
  asio::steady_timer idle_timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Phase phase_ = Phase::Idle;
  Registry::Slot slot_;
  bool registered_ = false;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  Request req_;
  const Route* route_ = nullptr;
  Clock::time_point body_start_;
  std::uint64_t body_bytes_ = 0;
  std::shared_ptr<Outgoing> out_;
  std::unique_ptr<char[]> piece_;  // a file's piece in flight, or what a closing client sends
};

}  // namespace

void Server::Impl::accept() {
  acceptor.async_accept(
      asio::make_strand(ioc),
      [this](const beast::error_code& ec, tcp::socket sock) { on_accept(ec, std::move(sock)); });
}

void Server::Impl::on_accept(const beast::error_code& ec, tcp::socket sock) {
  if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;
  if (ec) {
    // Out of descriptors (EMFILE) or similar: try again shortly instead of spinning.
    if (Clock::now() - last_accept_error > std::chrono::seconds(10)) {
      log->warn("accept failed: {} (open connections: {})", ec.message(), registry.size());
      last_accept_error = Clock::now();
    }
    accept_retry.expires_after(std::chrono::milliseconds(50));
    accept_retry.async_wait([this](const beast::error_code& wec) {
      if (!wec) accept();
    });
    return;
  }
  beast::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  auto conn = std::make_shared<Connection>(*this, std::move(sock));
  if (registry.size() >= opts.limits.max_connections) {
    if (auto idle = registry.take_longest_idle()) {
      idle->shed();
    } else {
      conn->reject();
      return accept();
    }
  }
  conn->start();
  accept();
}

// After stop(): serve() returns once every connection has closed, or after the grace.
void Server::Impl::wait_drained() {
  if (registry.size() == 0 || Clock::now() >= stop_deadline) return ioc.stop();
  stop_timer.expires_after(std::chrono::milliseconds(20));
  stop_timer.async_wait([this](const beast::error_code& ec) {
    if (!ec) wait_drained();
  });
}

Server::Server(Options opts, Router routes)
    : impl_(std::make_unique<Impl>(std::move(opts), std::move(routes))) {
  auto& im = *impl_;
  tcp::resolver resolver(im.ioc);
  beast::error_code ec;
  auto found =
      resolver.resolve(im.opts.host, std::to_string(im.opts.port), tcp::resolver::passive, ec);
  if (ec || found.empty())
    throw std::runtime_error("cannot resolve " + im.opts.host + ": " + ec.message());
  const tcp::endpoint ep = *found.begin();
  im.acceptor.open(ep.protocol());
  // SO_REUSEADDR for quick restarts, but not SO_REUSEPORT, which would let a second stack
  // silently share this port.
  im.acceptor.set_option(asio::socket_base::reuse_address(true));
  im.acceptor.bind(ep, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + im.opts.host + ":" +
                             std::to_string(im.opts.port) + ": " + ec.message());
  im.acceptor.listen(asio::socket_base::max_listen_connections);  // SOMAXCONN
}

Server::~Server() = default;

int Server::port() const { return impl_->acceptor.local_endpoint().port(); }

bool Server::loopback_only() const {
  return impl_->acceptor.local_endpoint().address().is_loopback();
}

namespace {
// An exception escaping a completion handler (e.g. bad_alloc) costs that connection, not
// the I/O thread.
void run_io(Server::Impl& im) {
  for (;;) {
    try {
      im.ioc.run();
      return;
    } catch (const std::exception& e) {
      im.log->error("HTTP I/O thread: {}", e.what());
    }
  }
}
}  // namespace

void Server::serve() {
  auto& im = *impl_;
  im.accept();
  std::vector<std::thread> more;
  for (int i = 1; i < im.opts.io_threads; ++i) more.emplace_back([&im] { run_io(im); });
  run_io(im);
  for (auto& t : more) t.join();
}

void Server::stop() {
  auto& im = *impl_;
  if (im.stopping.exchange(true)) return;
  asio::post(im.ioc, [&im] {
    beast::error_code ec;
    im.acceptor.close(ec);
    im.accept_retry.cancel();
    for (auto& c : im.registry.all()) c->stop();
    im.stop_deadline = Clock::now() + kStopGrace;
    im.wait_drained();
  });
}

}  // namespace ipfixweb::api::http

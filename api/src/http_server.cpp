// The event-driven HTTP server (Boost.Beast on Boost.Asio): see http.hpp for the model.
//
// A connection goes through these phases:
//   idle    waiting for a request's first byte (no buffer held; idle timeout)
//   header  reading the request line and header fields (header limit, header timeout)
//   checks  decode the target, route, authenticate, check the body size: refusals here are
//           answered before any body is read
//   body    reading the body (body limit, body timeout and minimum rate); on a route with a
//           BodySink, the route's factory first makes the sink on a handler thread, then the
//           body's pieces go to the sink on a handler thread while the next piece is read
//           (two piece buffers: one with the sink, one being read or waiting for it)
//   handler the request runs on a handler thread (or on the I/O thread for a route that
//           never blocks); no deadline: the handler's time is bounded by --broker-timeout
//   write   the answer (write timeout per write; a file is sent in pieces; a stream takes
//           turns: its producer makes a piece on a handler thread, then the piece is written,
//           then the next is asked for, so that one piece at most is ever buffered)
// then idle again (keep-alive), or a graceful close: shut down sending, read and drop what
// the client still sends for a short while (so it can read the answer rather than a reset),
// close.
//
// Who runs a connection's code: its completion handlers run on the I/O threads, and after a
// handler the handler thread itself writes the answer (a non-blocking write, which usually
// takes all of it) and starts waiting for the next request, so an answer costs no hand-back
// to an I/O thread. One thing at a time either way: every entry point holds the
// connection's mutex, and there is never more than one operation in flight. Other threads
// (the sweeper of deadlines, shedding, stop) only shut the socket down; the pending
// operation then fails and the connection closes itself. While a stream's producer runs
// (on a handler thread, without the mutex) the connection has no operation in flight either:
// nothing else of it runs meanwhile but those others, which touch neither the producer nor
// its piece; the same handler thread then takes the mutex and writes the piece.
//
// Deadlines are not a timer per operation: each connection keeps its current deadline, and
// one sweeper closes the connections whose deadline has passed.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "ipfixweb/api/handler_pool.hpp"
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

// A graceful close reads and drops at most this much, for at most this long (nginx drains by
// time alone, 30 s): a client that writes its whole body before it reads, as cpp-httplib and
// curl without "Expect: 100-continue" do, then reads its 413 instead of a reset when the body
// is a few MiB over; one that sends more pays a reset. Draining is ~15 ms per 32 MiB here.
constexpr std::size_t kLingerBytes = 32u << 20;
constexpr auto kLingerTime = std::chrono::seconds(2);
// A file is sent in pieces of this size; the same buffer drops what a closing client sends.
constexpr std::size_t kPiece = 64 * 1024;
// A connection's read buffer is given back between requests when it grew beyond this.
constexpr std::size_t kKeptBuffer = 16 * 1024;
// stop() lets requests in progress finish for this long.
constexpr auto kStopGrace = std::chrono::seconds(5);
// A stream (which may never end) is cut off this long after stop(): early enough that the
// sweeper still runs and the producer is gone before serve() returns.
constexpr auto kStreamStopGrace = kStopGrace - std::chrono::seconds(1);

// (A body cut short by the client comes from Beast as partial_message: the stream ended
// before the message did.)
bool closed_by_peer(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::broken_pipe ||
         ec == asio::error::shut_down || ec == asio::error::bad_descriptor;
}

class Connection;

// Every open connection. Touched when a connection opens or closes and by the sweeper; the
// connections keep their own state (phase, deadline) in atomics.
class Registry {
 public:
  using Slot = std::list<std::weak_ptr<Connection>>::iterator;
  Slot add(std::weak_ptr<Connection> c) {
    std::lock_guard lock(mu_);
    list_.push_back(std::move(c));
    return std::prev(list_.end());
  }
  void remove(Slot s) {
    std::lock_guard lock(mu_);
    list_.erase(s);
  }
  std::size_t size() {
    std::lock_guard lock(mu_);
    return list_.size();
  }
  std::vector<std::shared_ptr<Connection>> all() {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<Connection>> out;
    out.reserve(list_.size());
    for (auto& w : list_)
      if (auto c = w.lock()) out.push_back(std::move(c));
    return out;
  }

 private:
  std::mutex mu_;
  std::list<std::weak_ptr<Connection>> list_;
};

}  // namespace

struct Server::Impl {
  Options opts;
  Router router;
  std::shared_ptr<spdlog::logger> log = logger("api");
  Registry registry;  // before the io_context: connections unregister when it destroys them
  std::atomic<bool> stopping{false};
  Clock::time_point stop_deadline;
  Clock::duration sweep_interval;
  asio::io_context ioc;
  // The acceptor and the timers below run their handlers one at a time (connections do not:
  // each runs on whichever I/O thread is free).
  asio::strand<asio::io_context::executor_type> control{ioc.get_executor()};
  tcp::acceptor acceptor{control};
  asio::steady_timer accept_retry{control};
  asio::steady_timer sweeper{control};
  asio::steady_timer stop_timer{control};
  HandlerPool handlers;  // last: joined first, while everything it uses still exists
  tcp::endpoint bound;   // where the acceptor listens (also known after stop())
  Clock::time_point last_accept_error;

  Impl(Options o, Router r)
      : opts(std::move(o)),
        router(std::move(r)),
        ioc(std::max(1, opts.io_threads)),
        handlers(opts.handler_threads, static_cast<int>(std::thread::hardware_concurrency())) {
    // Deadlines are kept to within a quarter of the shortest timeout (at most 250 ms late).
    const auto& l = opts.limits;
    const double shortest =
        std::min({l.header_timeout_s, l.idle_timeout_s, l.body_timeout_s, l.write_timeout_s, 1.0});
    sweep_interval = std::max(seconds(shortest / 4), Clock::duration(std::chrono::milliseconds(5)));
  }

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
  void sweep();
  void shed_longest_idle_or(const std::shared_ptr<Connection>& newcomer);
  void wait_drained();
};

namespace {

// What a connection is sending: the response and where it is in it. (At namespace scope, not
// nested in Connection: clang cannot default-construct a nested class with member initialisers
// from within its enclosing class, CWG 1397.)
struct Outgoing {
  bhttp::response<bhttp::string_body> msg;
  std::optional<bhttp::response_serializer<bhttp::string_body>> sr;
  std::shared_ptr<File> file;
  std::uint64_t offset = 0;  // of the file
  std::size_t piece_at = 0, piece_left = 0;
  std::shared_ptr<Producer> stream;
  std::shared_ptr<Feed> feed;
  std::string head, piece, tail;  // a stream's (or feed's) piece and its chunk framing
  std::size_t written = 0, total = 0;
  bool last = false;  // the piece is the stream's last
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class Phase { Idle, Header, Body, Handler, Write, Closing };

  Connection(Server::Impl& s, tcp::socket sock)
      : s_(s), socket_(std::move(sock)), buffer_(s.opts.limits.max_header + kSinkPiece) {}

  ~Connection() {
    if (slot_) s_.registry.remove(*slot_);
  }

  // Counts the connection and starts waiting for its first request.
  void start() {
    std::lock_guard lock(mu_);
    slot_ = s_.registry.add(weak_from_this());
    guarded([this] { wait_request(); });
  }

  // Answers 503 at once and closes (the server is full and no connection is idle). Counted
  // too, for the few seconds it may linger, so that the sweeper sees its deadline.
  void reject() {
    std::lock_guard lock(mu_);
    slot_ = s_.registry.add(weak_from_this());
    guarded([this] {
      Response res;
      s_.error(res, 503, "the server has too many connections; try again");
      res.set_header("Retry-After", "1");
      send(std::move(res), true);
    });
  }

  Phase phase() const { return phase_; }
  Clock::time_point deadline() const { return Clock::time_point(Clock::duration(deadline_)); }

  // From the sweeper: ends the connection when its deadline has passed.
  void expire(Clock::time_point now) {
    std::lock_guard lock(mu_);
    if (deadline() <= now) abort();
  }

  // When the server is full: ends the connection if it is still between requests.
  void shed() {
    std::lock_guard lock(mu_);
    if (phase_ == Phase::Idle) abort();
  }

  // When the server stops: ends the connection, unless a request is being handled or
  // answered; that one closes once it is answered. A streamed answer (which may never end)
  // is cut off at kStreamStopGrace, a feed at once (its clients reconnect).
  void stop() {
    std::lock_guard lock(mu_);
    if (streaming_ && out_ && out_->feed) {
      abort();
    } else if (phase_ == Phase::Handler || phase_ == Phase::Write) {
      keep_alive_ = false;
      stop_by_ = Clock::now() + kStreamStopGrace;
      if (streaming_ && deadline() > stop_by_) set_deadline(stop_by_);
    } else {
      abort();
    }
  }

 private:
  const Limits& limits() const { return s_.opts.limits; }

  void set_deadline(Clock::time_point t) { deadline_ = t.time_since_epoch().count(); }
  void set_deadline_in(Clock::duration d) { set_deadline(Clock::now() + d); }
  void no_deadline() { set_deadline(Clock::time_point::max()); }
  // A stream's deadlines end at stop_by_ when the server stops.
  void set_stream_deadline(Clock::time_point t) { set_deadline(std::min(t, stop_by_)); }

  // The completion handler of an operation: runs `step` under the connection's mutex,
  // unless the connection was closed meanwhile.
  using Step = void (Connection::*)(const beast::error_code&, std::size_t);
  auto resume(Step step) {
    return [self = shared_from_this(), step](const beast::error_code& ec, std::size_t n = 0) {
      std::lock_guard lock(self->mu_);
      if (!self->closed_) self->guarded([&] { ((*self).*step)(ec, n); });
    };
  }

  // Runs a step of the connection; one that throws (e.g. bad_alloc) closes the connection
  // instead of leaving it without an operation in flight, or ending a thread.
  template <class F>
  void guarded(F&& step) {
    try {
      step();
    } catch (const std::exception& e) {
      s_.log->error("HTTP connection failed: {}", e.what());
      close();
    }
  }

  void wait_request() {
    req_ = Request{};
    route_ = nullptr;
    finished_sink_ = false;
    sink_dead_ = false;
    ready_.reset();
    sink_refusal_.reset();
    read_into_ = 0;
    parser_.reset();
    if (buffer_.size() > 0) return read_header();  // the next request is already here
    if (buffer_.capacity() > kKeptBuffer) buffer_.shrink_to_fit();
    phase_ = Phase::Idle;
    set_deadline_in(seconds(limits().idle_timeout_s));
    socket_.async_wait(tcp::socket::wait_read, resume(&Connection::on_readable));
  }

  void on_readable(const beast::error_code& ec, std::size_t) {
    if (ec) return close();
    if (peek() == Readiness::Nothing)  // a stale readiness report: keep waiting (same deadline)
      return socket_.async_wait(tcp::socket::wait_read, resume(&Connection::on_readable));
    read_header();
  }

  // What a wait for readability found. The reactor may report a socket readable when it is
  // not (an edge-triggered report that arrived after a speculative read took the data, e.g.
  // under load), so a wait's success is checked with a peek before it is acted on.
  enum class Readiness { Data, Closed, Nothing };
  Readiness peek() {
    char c;
    const ssize_t n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return Readiness::Data;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return Readiness::Nothing;
    return Readiness::Closed;  // end of stream, or an error the next operation would meet
  }

  void read_header() {
    phase_ = Phase::Header;
    set_deadline_in(seconds(limits().header_timeout_s));  // from the request's first byte
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits().max_header));
    // Checked per route once the header is in. (Not boost::none: Beast 1.74 then refuses
    // every body, comparing the length with the empty optional.)
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    bhttp::async_read_header(socket_, buffer_, *parser_, resume(&Connection::on_header));
  }

  void on_header(const beast::error_code& ec, std::size_t) {
    if (ec == bhttp::error::header_limit)
      return refuse(431, "the request header is larger than " +
                             std::to_string(limits().max_header) + " bytes");
    if (closed_by_peer(ec)) return close();
    if (ec) return refuse(400, "the request is not valid HTTP/1.1");
    no_deadline();
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

    // The body: refused unread when it is announced too large. A request without
    // Content-Length or Transfer-Encoding has none (RFC 9112 6.3) and is handled at once.
    const std::size_t limit =
        route_ && route_->max_body ? *route_->max_body : limits().max_other_body;
    if (auto length = parser_->content_length(); length && *length > limit) return refuse_body();
    parser_->body_limit(limit);
    if (route_ && route_->sink) return open_sink();
    if (parser_->is_done()) return dispatch();
    start_body();
  }

  // Reads the body, after "100 Continue" when the client waits for it.
  void start_body() {
    if (beast::iequals(req_.header("Expect"), "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      set_deadline_in(seconds(limits().write_timeout_s));
      return asio::async_write(socket_, asio::buffer(kContinue), resume(&Connection::on_continue));
    }
    read_body();
  }

  void on_continue(const beast::error_code& ec, std::size_t) {
    if (ec) return close();
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
  // (Time a sink spends with a piece counts too: a disk slower than min_body_rate is a
  // client's problem only when it is the client's.)
  // The body is read into Request::body, growing a piece at a time, or for a sink into the
  // one piece buffer it is handed from.
  void read_body_some() {
    phase_ = Phase::Body;
    auto allowance = limits().min_body_rate ? seconds(static_cast<double>(body_bytes_) /
                                                      static_cast<double>(limits().min_body_rate))
                                            : Clock::duration::zero();
    set_deadline(body_start_ + seconds(limits().body_timeout_s) + allowance);
    auto& body = parser_->get().body();
    // sink_running_ first: while a handler thread has the sink, sink_ is that thread's alone.
    read_to_sink_ = sink_running_ || sink_;
    if (read_to_sink_) {
      auto& piece = sink_pieces_[read_into_];
      if (!piece) piece = std::make_unique<char[]>(kSinkPiece);
      body.data = piece.get();
      body.size = kSinkPiece;
    } else {
      read_from_ = req_.body.size();
      // Room for what the header announced (a task's JSON is a few hundred bytes: a whole
      // piece, zero-filled by resize, was 4 % of the api's time under submissions).
      std::size_t want = kPiece;
      if (const auto length = parser_->content_length(); length && *length > read_from_)
        want = static_cast<std::size_t>(std::min<std::uint64_t>(want, *length - read_from_));
      req_.body.resize(read_from_ + want);
      read_size_ = want;
      body.data = req_.body.data() + read_from_;
      body.size = want;
    }
    body.more = true;
    // Beast reads at most the buffer's free capacity (at least 512 bytes): room for a whole
    // piece, or a large body arrives 512 bytes per read.
    buffer_.reserve(read_to_sink_ ? kSinkPiece : kPiece);
    reading_ = true;
    bhttp::async_read_some(socket_, buffer_, *parser_, resume(&Connection::on_body));
  }

  void on_body(const beast::error_code& read_ec, std::size_t n) {
    reading_ = false;
    body_bytes_ += n;
    auto& body = parser_->get().body();
    const bool to_sink = read_to_sink_;  // what the read was for (the sink may have gone)
    beast::error_code ec = read_ec;
    if (ec == bhttp::error::need_buffer) ec = {};  // the piece is full
    // A sink's piece is filled with what is already waiting, without waiting for more: one
    // hand-off per piece rather than per segment the socket happened to hold.
    if (!ec && to_sink && !sink_refusal_)
      while (body.size > 0 && !parser_->is_done()) {
        beast::error_code more;
        const std::size_t m = bhttp::read_some(socket_, buffer_, *parser_, more);
        body_bytes_ += m;
        if (more == bhttp::error::need_buffer) more = {};
        if (more) {
          if (more != asio::error::would_block && more != asio::error::try_again) ec = more;
          break;
        }
        if (m == 0) break;
      }
    const std::size_t got = (to_sink ? kSinkPiece : read_size_) - body.size;
    body.data = nullptr;
    if (!to_sink) req_.body.resize(read_from_ + got);
    if (sink_refusal_) return send(std::move(*sink_refusal_), true);  // the sink refused meanwhile
    if (ec == bhttp::error::body_limit) return abort_sink_then([this] { refuse_body(); });
    if (closed_by_peer(ec)) return body_cut_short(to_sink ? got : 0);
    if (ec)
      return abort_sink_then([this] { refuse(400, "the request body is not valid HTTP/1.1"); });
    const bool done = parser_->is_done();
    if (to_sink && (got > 0 || done)) {
      if (sink_running_) {  // the sink is busy with the other piece: this one waits
        ready_ = Ready{read_into_, got, done};
        read_into_ ^= 1;
        return;
      }
      start_feed(read_into_, got, done);
      read_into_ ^= 1;
      if (!done) read_body_some();  // the next piece comes in while the sink takes this one
      return;
    }
    if (!done) return read_body_some();
    no_deadline();
    dispatch();
  }

  // The client went (or was cut off) before the body's end, `got` bytes into the piece just
  // read. What it sent still goes to the sink, that piece and one waiting for the sink, before
  // the connection closes and the sink is aborted: a resumable upload keeps every byte that
  // arrived (its offset is where the client goes on), not only the pieces written before.
  void body_cut_short(std::size_t got) {
    const bool sink_alive = (sink_running_ || sink_) && !sink_dead_ && !sink_refusal_;
    if (!sink_alive || (got == 0 && !ready_)) return close();
    peer_gone_ = true;
    if (got == 0) return;  // the waiting piece goes once the sink is done (feed_sink)
    if (sink_running_) {
      ready_ = Ready{read_into_, got, false};  // after the piece the sink has now
    } else {
      start_feed(read_into_, got, false);
    }
    read_into_ ^= 1;
  }

  // A route with a BodySink: the factory runs on a handler thread. The body is read only
  // once the sink exists (and "100 Continue" sent only then): a refusal costs no upload.
  void open_sink() {
    phase_ = Phase::Handler;
    no_deadline();
    s_.handlers.post([self = shared_from_this()] { self->make_sink(); });
  }

  // On a handler thread, without the mutex until the sink is made (the request and the
  // parser are this thread's alone meanwhile: no operation is in flight).
  void make_sink() {
    Response res;
    std::unique_ptr<BodySink> sink;
    const bool done = parser_->is_done();
    try {
      sink = route_->sink(req_, res);
      if (sink && done) {  // no body: finished at once
        sink->finish(res);
        sink.reset();
        finished_sink_ = true;
      }
    } catch (const std::exception& e) {
      s_.log->error("request {} {} failed: {}", req_.method, req_.path, e.what());
      if (sink) sink->abort();
      sink.reset();
      res = Response{};
      s_.error(res, 500, "the request failed; see the api log");
    }
    std::lock_guard lock(mu_);
    if (closed_) {
      if (sink) sink->abort();
      return;
    }
    guarded([&] {
      if (!sink) return finished_sink_ ? send(std::move(res), false) : answer_now(std::move(res));
      sink_ = std::move(sink);
      body_start_ = Clock::now();
      body_bytes_ = 0;
      start_body();
    });
  }

  // A piece read (`got` bytes of piece buffer `buf`, possibly none when the body just ended):
  // the sink takes it on a handler thread, and finishes when the body is complete. Meanwhile
  // the sink is the handler thread's alone (sink_running_): nothing else touches sink_.
  void start_feed(int buf, std::size_t got, bool done) {
    sink_running_ = true;
    s_.handlers.post(
        [self = shared_from_this(), buf, got, done] { self->feed_sink(buf, got, done); });
  }

  void feed_sink(int buf, std::size_t got, bool done) {
    Response res;
    bool refused = false;
    try {
      if (got > 0 && !sink_->write(std::string_view(sink_pieces_[buf].get(), got), res))
        refused = true;
      if (!refused && done) sink_->finish(res);
    } catch (const std::exception& e) {
      s_.log->error("request {} {} failed: {}", req_.method, req_.path, e.what());
      sink_->abort();
      refused = true;
      res = Response{};
      s_.error(res, 500, "the request failed; see the api log");
    }
    if (refused || done) sink_.reset();  // destroyed here, on the handler thread
    std::lock_guard lock(mu_);
    sink_running_ = false;
    if (closed_ || sink_dead_) {  // the connection ended, or answered, meanwhile
      if (sink_) sink_->abort();
      sink_.reset();
      return;
    }
    guarded([&] {
      if (refused) {
        sink_dead_ = true;
        // A read in flight must complete before the answer is written (one operation at a
        // time): on_body sends it then.
        // (The read may wait for bytes the client will not send: it is cancelled.)
        if (reading_) {
          sink_refusal_.emplace(std::move(res));
          beast::error_code ignored;
          socket_.cancel(ignored);
          return;
        }
        return send(std::move(res), true);
      }
      if (done) return send(std::move(res), false);
      if (ready_) {
        const Ready r = *ready_;
        ready_.reset();
        start_feed(r.buf, r.got, r.done);
        if (!r.done && !reading_ && !peer_gone_) read_body_some();
        return;
      }
      if (peer_gone_) close();  // every piece the client sent is with the sink: it is aborted
    });
  }

  // The body will not complete: the sink hears so (on a handler thread), then `then` runs.
  template <class F>
  void abort_sink_then(F&& then) {
    release_sink();
    then();
  }

  void release_sink() {
    if (sink_running_) {  // the handler thread aborts it when it is done with its piece
      sink_dead_ = true;
      return;
    }
    if (!sink_) return;
    s_.handlers.post([sink = std::shared_ptr<BodySink>(std::move(sink_))]() mutable {
      sink->abort();
      sink.reset();
    });
  }

  // The request is complete: its handler runs on a handler thread, or right here for a
  // route that never blocks; unknown routes are answered here.
  void dispatch() {
    if (!route_) {
      Response res;
      s_.error(res, 404, "no such route");
      return send(std::move(res), false);
    }
    phase_ = Phase::Handler;
    if (route_->deferred) {
      if (!route_->blocking) {  // here, under the lock: an answer given during the call waits
        if (auto now = handle_deferred()) send(std::move(*now), false);
        return;
      }
      s_.handlers.post([self = shared_from_this()] {
        auto now = self->handle_deferred();
        if (now) self->answer(std::move(*now));
      });
      return;
    }
    if (!route_->blocking) return send(handle(), false);
    // The request is this thread's alone while handle() runs.
    s_.handlers.post([self = shared_from_this()] { self->answer(self->handle()); });
  }

  Response handle() {
    Response res;
    try {
      route_->handler(req_, res);
    } catch (const std::exception& e) {
      s_.log->error("request failed: {}", e.what());
      res = Response{};
      s_.error(res, 500, "the request failed; see the api log");
    }
    return res;
  }

  // A deferred route's answer (Route::deferred), given once: during the handler's call it is
  // kept for the calling thread to send (returned by handle_deferred), after it an I/O
  // thread sends it. Dropped unanswered, it answers 500.
  class Deferred {
   public:
    explicit Deferred(std::shared_ptr<Connection> c) : conn_(std::move(c)) {}
    Deferred(const Deferred&) = delete;
    Deferred& operator=(const Deferred&) = delete;
    ~Deferred() {
      if (answered_) return;
      try {
        conn_->s_.log->error("a deferred handler dropped its request unanswered");
        Response res;
        conn_->s_.error(res, 500, "the request was not answered; see the api log");
        later(std::move(res));
      } catch (...) {  // no memory for the answer: the connection closes when the server stops
      }
    }
    void answer(Response res) {
      std::unique_lock lock(mu_);
      if (answered_) return;
      answered_ = true;
      if (in_call_) {
        early_ = std::move(res);
        return;
      }
      lock.unlock();
      try {
        later(std::move(res));
      } catch (...) {  // not sent: the destructor's 500 is the answer then
        lock.lock();
        answered_ = false;
        throw;
      }
    }
    // The handler returned: the answer it gave meanwhile, if any.
    std::optional<Response> returned() {
      std::lock_guard lock(mu_);
      in_call_ = false;
      return std::exchange(early_, std::nullopt);
    }

   private:
    void later(Response res) {
      auto& conn = *conn_;
      asio::post(conn.socket_.get_executor(),
                 [c = conn_, r = std::move(res)]() mutable { c->answer(std::move(r)); });
    }
    std::shared_ptr<Connection> conn_;
    std::mutex mu_;
    bool in_call_ = true;
    bool answered_ = false;
    std::optional<Response> early_;
  };

  // Runs a deferred route's handler; returns the answer it gave during the call, if any.
  std::optional<Response> handle_deferred() {
    auto deferred = std::make_shared<Deferred>(shared_from_this());
    try {
      route_->deferred(req_, [deferred](Response res) { deferred->answer(std::move(res)); });
    } catch (const std::exception& e) {
      s_.log->error("request failed: {}", e.what());
      Response res;
      s_.error(res, 500, "the request failed; see the api log");
      deferred->answer(std::move(res));  // unless it answered before it threw
    }
    return deferred->returned();
  }

  // An answer from outside the connection's own steps (a handler thread, a deferred answer).
  void answer(Response res) {
    std::lock_guard lock(mu_);
    if (!closed_) guarded([&] { send(std::move(res), false); });
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

  // Writes the answer: as much as the socket takes at once, here, and the rest (or a
  // file's further pieces) when the socket can take more. A stream's pieces follow the
  // header (next_piece).
  void send(Response res, bool close_after) {
    phase_ = Phase::Write;
    if (close_after || s_.stopping) keep_alive_ = false;
    out_.emplace();
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
    if (!out_->file) out_->stream = std::move(res.stream);
    if (!out_->file && !out_->stream) out_->feed = std::move(res.feed);
    if (out_->file) {
      msg.content_length(out_->file->size());
    } else if (out_->stream || out_->feed) {
      msg.erase(bhttp::field::content_length);  // the framing is the server's
      msg.erase(bhttp::field::transfer_encoding);
      if (version_ >= 11)
        msg.chunked(true);
      else
        keep_alive_ = false;  // HTTP/1.0: the body ends where the connection does
      streaming_ = req_.method != "HEAD";
    } else {
      msg.body() = std::move(res.body);
      msg.prepare_payload();
    }
    msg.keep_alive(keep_alive_);
    out_->sr.emplace(msg);
    if (out_->file || out_->stream || out_->feed || req_.method == "HEAD")
      out_->sr->split(true);  // the header alone
    write_message();
  }

  void write_message() {
    beast::error_code ec;
    auto& sr = *out_->sr;
    while (!ec && !done_writing_message()) bhttp::write_some(socket_, sr, ec);
    if (ec == asio::error::would_block) {
      set_deadline_in(seconds(limits().write_timeout_s));
      return bhttp::async_write_some(socket_, sr, resume(&Connection::on_message_written));
    }
    on_message_written(ec, 0);
  }

  bool done_writing_message() {
    auto& sr = *out_->sr;
    return sr.split() ? sr.is_header_done() : sr.is_done();
  }

  void on_message_written(const beast::error_code& ec, std::size_t) {
    if (ec) return close();
    if (!done_writing_message()) return write_message();
    if (req_.method != "HEAD") {
      if (out_->file) return send_pieces();
      if (out_->stream) return next_piece();
      if (out_->feed) return start_feed();
    }
    sent();
  }

  // The file after the header, piece by piece (pread at the offset: the file is shared).
  void send_pieces() {
    auto& f = *out_->file;
    if (!piece_) piece_ = std::make_unique<char[]>(kPiece);
    while (out_->offset < f.size()) {
      if (out_->piece_left == 0) {
        const auto want =
            static_cast<std::size_t>(std::min<std::uint64_t>(kPiece, f.size() - out_->offset));
        const ssize_t n = ::pread(f.fd(), piece_.get(), want, static_cast<off_t>(out_->offset));
        if (n <= 0) {  // the file shrank: the announced length cannot be kept
          s_.log->warn("download cut short: {}", n < 0 ? std::strerror(errno) : "file shrank");
          return close();
        }
        out_->piece_at = 0;
        out_->piece_left = static_cast<std::size_t>(n);
      }
      beast::error_code ec;
      const std::size_t w =
          socket_.write_some(asio::buffer(piece_.get() + out_->piece_at, out_->piece_left), ec);
      if (ec == asio::error::would_block) {
        set_deadline_in(seconds(limits().write_timeout_s));
        return socket_.async_wait(tcp::socket::wait_write, resume(&Connection::on_writable));
      }
      if (ec) return close();
      out_->piece_at += w;
      out_->piece_left -= w;
      out_->offset += w;
    }
    sent();
  }

  void on_writable(const beast::error_code& ec, std::size_t) {
    if (ec) return close();
    send_pieces();
  }

  // A stream after its header: a handler thread asks the producer for the next piece
  // (produce), then writes it (write_piece); once the socket has taken it whole, the next
  // piece is asked for. The producer's time is its own: no deadline (but stop_by_).
  void next_piece() {
    set_stream_deadline(Clock::time_point::max());
    s_.handlers.post([self = shared_from_this()] { self->produce(); });
  }

  // On a handler thread, without the mutex until the piece is there: the producer and the
  // piece are this thread's alone meanwhile (see the top of this file).
  void produce() {
    auto& o = *out_;
    o.piece.clear();
    bool more = false;
    std::optional<std::string> error;
    try {
      more = o.stream->next(o.piece);
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "an exception not derived from std::exception";
    }
    std::lock_guard lock(mu_);
    if (closed_) return;
    guarded([&] {
      if (error) {  // cut off: no terminating chunk, so the client sees a truncated answer
        s_.log->error("streamed answer to {} {} failed: {}", req_.method, req_.path, *error);
        return close();
      }
      if (Clock::now() >= stop_by_) {
        s_.log->warn("streamed answer to {} {} cut off: the server stops", req_.method, req_.path);
        return close();
      }
      frame_piece(more);
    });
  }

  // HTTP/1.1: the piece as a chunk (none when it is empty), and after the last one the
  // terminating chunk; HTTP/1.0: the piece as it is.
  void frame_piece(bool more) {
    auto& o = *out_;
    o.last = !more;
    o.head.clear();
    o.tail.clear();
    if (version_ >= 11) {
      if (!o.piece.empty()) {
        char hex[2 * sizeof(std::size_t)];
        const auto r = std::to_chars(hex, hex + sizeof hex, o.piece.size(), 16);
        o.head.assign(hex, r.ptr);
        o.head += "\r\n";
        o.tail = "\r\n";
      }
      if (o.last) o.tail += "0\r\n\r\n";
    }
    o.written = 0;
    o.total = o.head.size() + o.piece.size() + o.tail.size();
    write_piece();
  }

  void write_piece() {
    auto& o = *out_;
    const std::array<asio::const_buffer, 3> parts{asio::buffer(o.head), asio::buffer(o.piece),
                                                  asio::buffer(o.tail)};
    while (o.written < o.total) {
      beast::buffers_suffix<std::array<asio::const_buffer, 3>> rest(parts);
      rest.consume(o.written);
      beast::error_code ec;
      const std::size_t w = socket_.write_some(rest, ec);
      if (ec == asio::error::would_block) {
        set_stream_deadline(Clock::now() + seconds(limits().write_timeout_s));
        return socket_.async_wait(tcp::socket::wait_write, resume(&Connection::on_stream_writable));
      }
      if (ec) return close();
      o.written += w;
    }
    if (o.last) return sent();
    if (o.feed) return pump();
    next_piece();
  }

  void on_stream_writable(const beast::error_code& ec, std::size_t) {
    if (ec) return close();
    write_piece();
  }

  // A feed after its header: take what is ready and write it, or wait for a wake-up. While
  // it waits, the only operation in flight is a wait for the socket to become readable: a
  // client that closes (or sends anything) ends the stream; a wake-up cancels the wait.
  void start_feed() {
    feed_state_ = FeedState::Taking;
    out_->feed->attach([w = weak_from_this()] {
      if (auto c = w.lock()) c->wake_feed();
    });
    pump();
  }

  // From any thread: at most one wake-up is posted at a time.
  void wake_feed() {
    if (wake_posted_.exchange(true)) return;
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
      self->wake_posted_ = false;
      std::lock_guard lock(self->mu_);
      if (self->closed_ || self->feed_state_ != FeedState::Parked) return;
      self->feed_state_ = FeedState::Waking;
      beast::error_code ec;
      self->socket_.cancel(ec);  // on_parked takes it from there
    });
  }

  void pump() {
    auto& o = *out_;
    o.piece.clear();
    bool more = false;
    try {
      more = o.feed->take(o.piece);
    } catch (const std::exception& e) {
      s_.log->error("event stream to {} {} failed: {}", req_.method, req_.path, e.what());
      return close();
    }
    if (more && o.piece.empty()) {
      feed_state_ = FeedState::Parked;
      set_stream_deadline(Clock::time_point::max());
      return socket_.async_wait(tcp::socket::wait_read, resume(&Connection::on_parked));
    }
    feed_state_ = FeedState::Taking;
    frame_piece(more);
  }

  void on_parked(const beast::error_code& ec, std::size_t) {
    if (feed_state_ == FeedState::Waking) {
      feed_state_ = FeedState::Taking;
      return pump();
    }
    if (!ec && peek() == Readiness::Nothing)  // a stale readiness report: stay parked
      return socket_.async_wait(tcp::socket::wait_read, resume(&Connection::on_parked));
    close();  // the client closed, sent something, or the server shut the socket down
  }

  // A producer is destroyed on a handler thread, like its next() (its destructor may block
  // too), and never during next(): this runs only in the connection's own flow, which waits
  // while next() runs. A feed is released here (its destructor must not block).
  void release_stream() {
    streaming_ = false;
    if (!out_) return;
    out_->feed.reset();
    feed_state_ = FeedState::None;
    if (!out_->stream) return;
    s_.handlers.post([p = std::move(out_->stream)]() mutable { p.reset(); });
  }

  void sent() {
    release_stream();
    out_.reset();
    if (keep_alive_) return wait_request();
    linger();
  }

  // Graceful close: stop sending, then read and drop what the client still sends (bounded)
  // until it closes, so that it reads the answer instead of a connection reset.
  void linger() {
    phase_ = Phase::Closing;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    if (!piece_) piece_ = std::make_unique<char[]>(kPiece);
    set_deadline_in(kLingerTime);
    lingered_ = 0;
    socket_.async_read_some(asio::buffer(piece_.get(), kPiece), resume(&Connection::on_linger));
  }

  void on_linger(const beast::error_code& ec, std::size_t n) {
    lingered_ += n;
    if (ec || lingered_ >= kLingerBytes) return close();
    socket_.async_read_some(asio::buffer(piece_.get(), kPiece), resume(&Connection::on_linger));
  }

  // Ends whatever the connection waits for, from another thread: the pending operation
  // fails and the connection closes itself.
  void abort() {
    if (closed_) return;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
  }

  void close() {
    phase_ = Phase::Closing;
    closed_ = true;
    no_deadline();
    release_stream();
    release_sink();
    beast::error_code ec;
    socket_.close(ec);
  }

  Server::Impl& s_;
  std::mutex mu_;
  tcp::socket socket_;
  std::atomic<Phase> phase_{Phase::Idle};
  std::atomic<Clock::rep> deadline_{Clock::time_point::max().time_since_epoch().count()};
  bool closed_ = false;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::buffer_body>> parser_;
  std::size_t read_from_ = 0;               // Request::body's size before the current read
  std::size_t read_size_ = 0;               // ... and the room that read has in it
  std::unique_ptr<BodySink> sink_;          // a sink route's, while its body is read
  std::unique_ptr<char[]> sink_pieces_[2];  // one with the sink, one read meanwhile
  int read_into_ = 0;                       // the piece buffer the next read fills
  bool reading_ = false;                    // a body read is in flight
  bool read_to_sink_ = false;               // ... into a sink's piece, not Request::body
  bool sink_running_ = false;               // a handler thread has the sink and a piece
  bool sink_dead_ = false;                  // answered or aborted: the sink goes
  struct Ready {
    int buf;
    std::size_t got;
    bool done;
  };
  std::optional<Ready> ready_;            // a piece read while the sink was busy
  bool peer_gone_ = false;                // the body was cut short: its pieces still go to
                                          // the sink, then the connection closes
  std::optional<Response> sink_refusal_;  // the sink's refusal, sent once the read ends
  bool finished_sink_ = false;            // the sink finished without a body
  std::optional<Registry::Slot> slot_;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  Request req_;
  const Route* route_ = nullptr;
  Clock::time_point body_start_;
  std::uint64_t body_bytes_ = 0;
  std::optional<Outgoing> out_;
  std::unique_ptr<char[]> piece_;  // a file's piece in flight, or what a closing client sends
  std::size_t lingered_ = 0;
  bool streaming_ = false;  // sending a stream's or feed's pieces (not for HEAD)
  // A feed's: taking or writing a piece; waiting for a wake-up (a read wait in flight);
  // woken (that wait cancelled, its completion takes again).
  enum class FeedState { None, Taking, Parked, Waking };
  FeedState feed_state_ = FeedState::None;
  std::atomic<bool> wake_posted_{false};
  Clock::time_point stop_by_ = Clock::time_point::max();  // a stream is cut off then
};

}  // namespace

void Server::Impl::accept() {
  acceptor.async_accept(ioc.get_executor(), [this](const beast::error_code& ec, tcp::socket sock) {
    on_accept(ec, std::move(sock));
  });
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
  sock.non_blocking(true, ignored);  // answers are written at once where the socket allows
  auto conn = std::make_shared<Connection>(*this, std::move(sock));
  if (registry.size() >= opts.limits.max_connections)
    shed_longest_idle_or(conn);
  else
    conn->start();
  accept();
}

// At the connection cap: the longest-idle connection (the idle one whose deadline comes
// first) makes room for the newcomer; when none is idle, the newcomer gets 503.
void Server::Impl::shed_longest_idle_or(const std::shared_ptr<Connection>& newcomer) {
  std::shared_ptr<Connection> oldest;
  for (auto& c : registry.all())
    if (c->phase() == Connection::Phase::Idle && (!oldest || c->deadline() < oldest->deadline()))
      oldest = c;
  if (!oldest) return newcomer->reject();
  oldest->shed();
  newcomer->start();
}

void Server::Impl::sweep() {
  const auto now = Clock::now();
  for (auto& c : registry.all())
    if (c->deadline() <= now) c->expire(now);
  sweeper.expires_after(sweep_interval);
  sweeper.async_wait([this](const beast::error_code& ec) {
    if (!ec) sweep();
  });
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
  im.bound = im.acceptor.local_endpoint();
}

Server::~Server() = default;

int Server::port() const { return impl_->bound.port(); }

bool Server::loopback_only() const { return impl_->bound.address().is_loopback(); }

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
  im.sweep();
  std::vector<std::thread> more;
  for (int i = 1; i < im.opts.io_threads; ++i) more.emplace_back([&im] { run_io(im); });
  run_io(im);
  for (auto& t : more) t.join();
}

void Server::stop() {
  auto& im = *impl_;
  if (im.stopping.exchange(true)) return;
  asio::post(im.control, [&im] {
    beast::error_code ec;
    im.acceptor.close(ec);
    im.accept_retry.cancel();
    for (auto& c : im.registry.all()) c->stop();
    im.stop_deadline = Clock::now() + kStopGrace;
    im.wait_drained();
  });
}

}  // namespace ipfixweb::api::http

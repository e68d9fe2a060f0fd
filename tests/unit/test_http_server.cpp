// The api's HTTP server itself (http.hpp), in this process on a loopback port, spoken to over
// raw sockets: streamed bodies (Response::stream) and how they meet slow clients, failing
// producers, HEAD, keep-alive and stop().
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipfixweb/api/http.hpp"

using namespace ipfixweb::api::http;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Polls `done` until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
  const auto until = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// The bytes a test stream carries: byte i is kPattern[i % its size] (a prime, so that a
// piece lost, doubled or swapped shows).
const std::string& pattern() {
  static const std::string p = [] {
    std::string s(1000003, '\0');
    std::uint32_t x = 12345;
    for (auto& c : s) {
      x = x * 1103515245u + 12345u;
      c = static_cast<char>(x >> 24);
    }
    return s;
  }();
  return p;
}

void append_pattern(std::string& out, std::uint64_t at, std::size_t n) {
  const auto& p = pattern();
  while (n > 0) {
    const std::size_t from = static_cast<std::size_t>(at % p.size());
    const std::size_t take = std::min(n, p.size() - from);
    out.append(p, from, take);
    at += take;
    n -= take;
  }
}

bool matches_pattern(std::uint64_t at, const char* data, std::size_t n) {
  const auto& p = pattern();
  while (n > 0) {
    const std::size_t from = static_cast<std::size_t>(at % p.size());
    const std::size_t take = std::min(n, p.size() - from);
    if (std::memcmp(p.data() + from, data, take) != 0) return false;
    at += take;
    data += take;
    n -= take;
  }
  return true;
}

// What a test learns about its producers (which the server owns).
struct Probe {
  std::atomic<int> created{0};
  std::atomic<int> destroyed{0};
  std::atomic<int> calls{0};
  std::atomic<std::uint64_t> produced{0};
  std::atomic<bool> overlapped{false};  // a next() ran concurrently with another of the same
                                        // producer, or with its destructor
  std::atomic<std::thread::id> destroyed_on{};
  std::atomic<std::thread::id> called_on{};
};

// Pieces of kStreamPiece bytes of the pattern, `total` bytes in all (max: endless); throws
// instead of making piece number `throw_at` (counting from 1) when that is set; takes
// `delay` over each piece (as a slow query would).
class PatternProducer : public Producer {
 public:
  PatternProducer(std::shared_ptr<Probe> probe, std::uint64_t total, int throw_at,
                  std::chrono::milliseconds delay = 0ms)
      : probe_(std::move(probe)), total_(total), throw_at_(throw_at), delay_(delay) {
    ++probe_->created;
  }
  ~PatternProducer() override {
    if (running_ > 0) probe_->overlapped = true;
    probe_->destroyed_on = std::this_thread::get_id();
    ++probe_->destroyed;
  }

  bool next(std::string& out) override {
    if (++running_ > 1) probe_->overlapped = true;
    probe_->called_on = std::this_thread::get_id();
    const int call = ++probe_->calls;
    std::this_thread::sleep_for(delay_);
    if (call == throw_at_) {
      --running_;
      throw std::runtime_error("the export broke");
    }
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kStreamPiece, total_ - at_));
    append_pattern(out, at_, n);
    at_ += n;
    probe_->produced += n;
    --running_;
    return at_ < total_;
  }

 private:
  std::shared_ptr<Probe> probe_;
  std::uint64_t total_;
  int throw_at_;
  std::chrono::milliseconds delay_;
  std::uint64_t at_ = 0;
  std::atomic<int> running_{0};  // calls of next() under way
};

constexpr std::uint64_t kEndless = std::numeric_limits<std::uint64_t>::max();

// What a test learns about the body sinks of POST /sink.
struct SinkProbe {
  std::mutex mu;
  std::string received;  // every piece written, in order
  std::vector<std::size_t> pieces;
  int made = 0, finished = 0, aborted = 0, destroyed = 0;
  bool overlapped = false;    // two calls of one sink at once
  bool on_io_thread = false;  // a call ran on the server's I/O thread
  std::thread::id io_thread;
  std::atomic<bool> hold{false};  // write() waits while this is set
};

// Records what it is given; refuses with 507 once `refuse_after` bytes arrived (0: never).
class RecordingSink : public BodySink {
 public:
  RecordingSink(std::shared_ptr<SinkProbe> p, std::uint64_t refuse_after)
      : p_(std::move(p)), refuse_after_(refuse_after) {}
  ~RecordingSink() override {
    std::lock_guard lock(p_->mu);
    ++p_->destroyed;
  }
  bool write(std::string_view piece, Response& res) override {
    enter();
    while (p_->hold) std::this_thread::sleep_for(5ms);
    {
      std::lock_guard lock(p_->mu);
      p_->received.append(piece);
      p_->pieces.push_back(piece.size());
      got_ += piece.size();
    }
    leave();
    if (refuse_after_ && got_ >= refuse_after_) {
      res.status = 507;
      res.set_content("full\n", "text/plain");
      return false;
    }
    return true;
  }
  void finish(Response& res) override {
    enter();
    {
      std::lock_guard lock(p_->mu);
      ++p_->finished;
    }
    res.status = 201;
    res.set_content(std::to_string(got_) + "\n", "text/plain");
    leave();
  }
  void abort() override {
    enter();
    {
      std::lock_guard lock(p_->mu);
      ++p_->aborted;
    }
    leave();
  }

 private:
  void enter() {
    if (busy_.exchange(true)) p_->overlapped = true;
    if (std::this_thread::get_id() == p_->io_thread) p_->on_io_thread = true;
  }
  void leave() { busy_ = false; }
  std::shared_ptr<SinkProbe> p_;
  std::uint64_t refuse_after_;
  std::uint64_t got_ = 0;
  std::atomic<bool> busy_{false};
};

std::shared_ptr<SinkProbe> g_sinks = std::make_shared<SinkProbe>();

// A feed the test fills (GET /feed): pieces pushed from the test's threads, a wake-up each.
class QueueFeed : public Feed {
 public:
  ~QueueFeed() override { ++destroyed; }
  void attach(std::function<void()> wake) override {
    std::lock_guard lock(mu_);
    wake_ = std::move(wake);
    ++attached;
  }
  bool take(std::string& out) override {
    if (std::this_thread::get_id() == io_thread) ++io_takes;
    std::lock_guard lock(mu_);
    ++takes;
    out.swap(queue_);
    queue_.clear();
    return !ended_;
  }
  void push(std::string_view piece, bool end = false) {
    std::function<void()> wake;
    {
      std::lock_guard lock(mu_);
      queue_ += piece;
      ended_ = ended_ || end;
      wake = wake_;
    }
    if (wake) wake();
  }
  bool attached_yet() {
    std::lock_guard lock(mu_);
    return attached > 0;
  }
  static inline std::atomic<int> destroyed{0};
  static inline std::thread::id io_thread{};  // the server's only one
  std::atomic<int> attached{0}, takes{0};
  std::atomic<int> io_takes{0};  // after wake-ups: on the I/O thread

 private:
  std::mutex mu_;
  std::string queue_;
  bool ended_ = false;
  std::function<void()> wake_;
};

// The feeds GET /feed made, in order.
struct Feeds {
  std::mutex mu;
  std::vector<std::shared_ptr<QueueFeed>> made;
  std::size_t size() {
    std::lock_guard lock(mu);
    return made.size();
  }
  std::shared_ptr<QueueFeed> at(std::size_t i) {
    std::lock_guard lock(mu);
    return made.at(i);
  }
  void clear() {
    std::lock_guard lock(mu);
    made.clear();
  }
};
Feeds g_feeds;

// Deferred routes' answers not yet given: GET /later keeps its Respond here.
struct Later {
  std::mutex mu;
  std::vector<std::pair<std::string, Respond>> waiting;  // the request's ?id=, its answer
  std::size_t size() {
    std::lock_guard lock(mu);
    return waiting.size();
  }
  std::vector<std::pair<std::string, Respond>> take() {
    std::lock_guard lock(mu);
    return std::exchange(waiting, {});
  }
};
Later g_later;

// Drops the answers a test left waiting (a failed assertion) before its server goes: declared
// after the test's Running, so destroyed before it.
struct ForgetLater {
  ~ForgetLater() { g_later.take(); }
};

Response text(int status, const std::string& body) {
  Response res;
  res.status = status;
  res.set_content(body, "text/plain");
  return res;
}

// Deferred routes: GET /later?id=X answers later (the test gives the answer, g_later);
// GET /now answers during the call (/now-io likewise, on the I/O thread); GET /forget drops
// its Respond unanswered; GET /throw throws; GET /twice answers twice.
void add_deferred_routes(Router& r) {
  const auto add = [&](const char* path, DeferredHandler h, bool blocking = true) {
    Route route;
    route.method = "GET";
    route.path = path;
    route.deferred = std::move(h);
    route.blocking = blocking;
    r.add(std::move(route));
  };
  add("/later", [](const Request& req, Respond respond) {
    std::lock_guard lock(g_later.mu);
    g_later.waiting.emplace_back(req.query_value("id"), std::move(respond));
  });
  add("/now", [](const Request&, Respond respond) { respond(text(200, "now\n")); });
  add(
      "/now-io", [](const Request&, Respond respond) { respond(text(200, "now-io\n")); }, false);
  add("/forget", [](const Request&, Respond) {});
  add("/throw", [](const Request&, Respond) -> void { throw std::runtime_error("broken"); });
  add("/twice", [](const Request&, Respond respond) {
    respond(text(200, "first\n"));
    respond(text(201, "second\n"));
  });
}

// Routes: GET /stream?bytes=N&throw_at=K&delay_ms=D streams the pattern (each parameter
// optional; endless without bytes);
// GET /export?missing=1 is a handler that answers 404 before it would stream; GET /plain
// answers "ok" (on a handler thread, like any blocking route).
Router routes(std::shared_ptr<Probe> probe) {
  Router r;
  Route stream;
  stream.method = "GET";
  stream.path = "/stream";
  stream.handler = [probe](const Request& req, Response& res) {
    const std::uint64_t total =
        req.has_query("bytes") ? std::stoull(req.query_value("bytes")) : kEndless;
    const int throw_at = req.has_query("throw_at") ? std::stoi(req.query_value("throw_at")) : 0;
    res.set_header("Content-Type", "application/octet-stream");
    const auto delay = std::chrono::milliseconds(
        req.has_query("delay_ms") ? std::stoi(req.query_value("delay_ms")) : 0);
    res.stream = std::make_shared<PatternProducer>(probe, total, throw_at, delay);
  };
  r.add(stream);
  Route exp;
  exp.method = "GET";
  exp.path = "/export";
  exp.handler = [probe](const Request& req, Response& res) {
    if (req.has_query("missing")) {
      res.status = 404;
      res.set_content("no such export\n", "text/plain");
      return;
    }
    res.stream = std::make_shared<PatternProducer>(probe, 3 * kStreamPiece, 0);
  };
  r.add(exp);
  Route plain;
  plain.method = "GET";
  plain.path = "/plain";
  plain.handler = [](const Request&, Response& res) { res.set_content("ok\n", "text/plain"); };
  r.add(plain);
  Route feed;
  feed.method = "GET";
  feed.path = "/feed";
  feed.handler = [](const Request&, Response& res) {
    res.set_header("Content-Type", "text/event-stream");
    auto f = std::make_shared<QueueFeed>();
    {
      std::lock_guard lock(g_feeds.mu);
      g_feeds.made.push_back(f);
    }
    res.feed = std::move(f);
  };
  r.add(feed);
  // POST /sink?refuse=1 refuses before the body (409); ?refuse_after=N refuses after N bytes.
  Route sink;
  sink.method = "POST";
  sink.path = "/sink";
  sink.max_body = 8u << 20;
  sink.sink = [](const Request& req, Response& res) -> std::unique_ptr<BodySink> {
    if (req.has_query("refuse")) {
      res.status = 409;
      res.set_content("refused\n", "text/plain");
      return nullptr;
    }
    {
      std::lock_guard lock(g_sinks->mu);
      ++g_sinks->made;
    }
    const std::uint64_t after =
        req.has_query("refuse_after") ? std::stoull(req.query_value("refuse_after")) : 0;
    return std::make_unique<RecordingSink>(g_sinks, after);
  };
  r.add(sink);
  // POST /count answers the size of the body it was given, and the body's pattern check.
  Route count;
  count.method = "POST";
  count.path = "/count";
  count.max_body = 1u << 20;
  count.handler = [](const Request& req, Response& res) {
    bool same = true;
    for (std::size_t i = 0; i < req.body.size(); ++i)
      same = same && req.body[i] == static_cast<char>('a' + i % 23);
    res.set_content(std::to_string(req.body.size()) + (same ? " same\n" : " differs\n"),
                    "text/plain");
  };
  r.add(count);
  add_deferred_routes(r);
  return r;
}

// A Server serving on its own thread (the only I/O thread) until stop() or destruction.
class Running {
 public:
  explicit Running(std::shared_ptr<Probe> probe, Options o = {})
      : server_(std::move(o), routes(std::move(probe))), thread_([this] { serve(); }) {}
  ~Running() { stop(); }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  int port() const { return server_.port(); }
  std::thread::id io_thread() const { return thread_.get_id(); }
  // Stops the server; returns once serve() has returned.
  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool served() const { return served_; }

 private:
  void serve() {
    server_.serve();
    served_ = true;
  }
  Server server_;
  std::atomic<bool> served_{false};
  std::thread thread_;
};

Options small_pool(int handler_threads = 4) {
  Options o;
  o.io_threads = 1;
  o.handler_threads = handler_threads;
  return o;
}

// A client connection spoken byte by byte, with a decoder for chunked bodies.
class Client {
 public:
  // rcvbuf > 0: the socket's receive buffer (set before connecting, so that the window the
  // server sees stays that small).
  explicit Client(int port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  bool closed() const { return closed_; }
  std::uint64_t received() const { return received_; }
  int receive_buffer() const {
    int n = 0;
    socklen_t len = sizeof n;
    ::getsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &n, &len);
    return n;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // An answer's status line and header fields (up to the blank line, which is consumed);
  // "" when they do not arrive within `timeout`.
  std::string head(std::chrono::milliseconds timeout = 5s) {
    const auto until = Clock::now() + timeout;
    for (;;) {
      if (auto end = buf_.find("\r\n\r\n"); end != std::string::npos) {
        std::string h = buf_.substr(0, end + 2);
        buf_.erase(0, end + 4);
        return h;
      }
      if (!fill(until)) return "";
    }
  }

  // A body of `length` bytes (after head()).
  std::string body(std::size_t length, std::chrono::milliseconds timeout = 5s) {
    const auto until = Clock::now() + timeout;
    while (buf_.size() < length)
      if (!fill(until)) break;
    std::string b = buf_.substr(0, std::min(length, buf_.size()));
    buf_.erase(0, b.size());
    return b;
  }

  // Everything until the server closes (or `timeout` passes).
  std::string rest(std::chrono::milliseconds timeout = 5s) {
    const auto until = Clock::now() + timeout;
    while (fill(until)) {
    }
    std::string b;
    b.swap(buf_);
    return b;
  }

  struct Chunked {
    std::uint64_t bytes = 0;  // of data, checked against the pattern
    int chunks = 0;           // not counting the terminating one
    std::size_t largest = 0;  // chunk
    bool exact = true;        // every byte as the pattern has it
    bool terminated = false;  // the terminating chunk arrived
    bool malformed = false;   // not chunked framing
  };
  // Decodes a chunked body (after head()) until its terminating chunk, or until the server
  // closes or `timeout` passes, checking the data against the pattern as it comes. Stops
  // early once `stop_after` data bytes have been decoded; the next call goes on with the same
  // body (the counts are the body's so far) until it is terminated.
  Chunked chunked(std::chrono::milliseconds timeout = 5s,
                  std::uint64_t stop_after = std::numeric_limits<std::uint64_t>::max()) {
    if (chunked_.terminated || chunked_.malformed) chunked_ = {};
    Chunked c = chunked_;
    const auto until = Clock::now() + timeout;
    auto need = [&](std::size_t n) {
      while (buf_.size() < n)
        if (!fill(until)) return false;
      return true;
    };
    for (;;) {
      if (c.bytes >= stop_after) break;
      if (chunk_left_ == 0) {  // a size line
        std::size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos)
          if (!fill(until)) goto out;
        std::size_t size = 0;
        const auto r = std::from_chars(buf_.data(), buf_.data() + eol, size, 16);
        if (r.ec != std::errc() || r.ptr != buf_.data() + eol) {
          c.malformed = true;
          break;
        }
        buf_.erase(0, eol + 2);
        if (size == 0) {
          if (!need(2)) break;
          c.terminated = buf_.compare(0, 2, "\r\n") == 0;
          c.malformed = !c.terminated;
          buf_.erase(0, 2);
          break;
        }
        ++c.chunks;
        c.largest = std::max(c.largest, size);
        chunk_left_ = size + 2;  // with its CRLF
      }
      while (chunk_left_ > 2) {
        if (buf_.empty() && !fill(until)) goto out;
        const std::size_t take = std::min(chunk_left_ - 2, buf_.size());
        if (!matches_pattern(c.bytes, buf_.data(), take)) c.exact = false;
        c.bytes += take;
        chunk_left_ -= take;
        buf_.erase(0, take);
        if (c.bytes >= stop_after) goto out;
      }
      if (!need(2)) break;
      if (buf_.compare(0, 2, "\r\n") != 0) {
        c.malformed = true;
        break;
      }
      buf_.erase(0, 2);
      chunk_left_ = 0;
    }
  out:
    chunked_ = c;
    return c;
  }

 private:
  // One read (at most 64 KiB) within `until`; false on timeout or when the server closed.
  bool fill(Clock::time_point until) {
    if (closed_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char b[65536];
    const ssize_t n = ::recv(fd_, b, sizeof b, 0);
    if (n <= 0) {  // end of stream or reset: closed either way
      closed_ = true;
      return false;
    }
    buf_.append(b, static_cast<std::size_t>(n));
    received_ += static_cast<std::uint64_t>(n);
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string buf_;
  std::uint64_t received_ = 0;
  Chunked chunked_;
  std::size_t chunk_left_ = 0;  // of the current chunk, with its CRLF
};

int status_of(const std::string& head) {
  if (head.size() < 12 || head.rfind("HTTP/1.", 0) != 0) return 0;
  return std::stoi(head.substr(9, 3));
}

bool has_field(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

bool has_field_named(const std::string& head, const std::string& name) {
  return head.find("\r\n" + name + ":") != std::string::npos;
}

std::string get(const std::string& target, const char* version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\nHost: x\r\n\r\n";
}

// The largest send buffer the kernel may give the server's socket (tcp_wmem's maximum).
std::uint64_t max_send_buffer() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_wmem");
  std::uint64_t lo = 0, def = 0, hi = 0;
  in >> lo >> def >> hi;
  return hi ? hi : 4u << 20;
}

}  // namespace

TEST(HttpServer, AStreamedBodyArrivesWholeAndByteExactInChunks) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.connected());
  const std::uint64_t total = 200ull << 20;  // 3200 pieces, the last one full
  ASSERT_TRUE(c.send(get("/stream?bytes=" + std::to_string(total))));
  const std::string head = c.head();
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_TRUE(has_field(head, "Transfer-Encoding: chunked")) << head;
  EXPECT_FALSE(has_field_named(head, "Content-Length")) << head;
  EXPECT_TRUE(has_field(head, "Content-Type: application/octet-stream")) << head;

  const auto r = c.chunked(60s);
  EXPECT_FALSE(r.malformed);
  EXPECT_TRUE(r.terminated);
  EXPECT_EQ(r.bytes, total);
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.chunks, probe->calls.load());  // a chunk per piece, no empty chunk
  EXPECT_LE(r.largest, kStreamPiece);
  EXPECT_TRUE(eventually([&] { return probe->destroyed == 1; }));
  EXPECT_FALSE(probe->overlapped);
  EXPECT_NE(probe->called_on.load(), s.io_thread());
  EXPECT_NE(probe->destroyed_on.load(), s.io_thread());
}

// The next piece is asked for only once the socket has taken the last one: a client that
// pauses stops the producer, which stays ahead of it by no more than the kernel's buffers
// and the one piece the connection holds.
TEST(HttpServer, TheProducerStaysAtMostOnePieceAheadOfWhatTheSocketTook) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port(), 64 * 1024);
  ASSERT_TRUE(c.send(get("/stream")));  // endless: only a slow client bounds it
  ASSERT_EQ(status_of(c.head()), 200);
  const std::uint64_t slack =
      max_send_buffer() + static_cast<std::uint64_t>(c.receive_buffer()) + kStreamPiece;
  Client::Chunked r;
  for (int round = 0; round < 3; ++round) {
    r = c.chunked(10s, r.bytes + (8u << 20));  // read 8 MB more
    ASSERT_TRUE(r.exact);
    ASSERT_FALSE(r.malformed);
    // Pause: the producer must stop (a server buffering ahead would produce at full speed).
    std::this_thread::sleep_for(500ms);
    const int calls = probe->calls;
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(probe->calls.load(), calls) << "round " << round << ": made pieces nobody took";
    EXPECT_LE(probe->produced.load(), c.received() + slack)
        << "round " << round << ": produced " << probe->produced << ", received " << c.received();
  }
  // A pause is not a stall: the same handler threads answer other requests meanwhile.
  Client other(s.port());
  other.send(get("/plain"));
  EXPECT_EQ(status_of(other.head(1s)), 200);
  EXPECT_EQ(probe->destroyed.load(), 0);
}

// A client that stops reading costs a socket until the write timeout, no thread; then the
// connection closes and the producer is destroyed (on a handler thread, never during next()).
TEST(HttpServer, AClientThatStopsReadingIsClosedAfterTheWriteTimeoutAndItsProducerDestroyed) {
  auto probe = std::make_shared<Probe>();
  Options o = small_pool();
  o.limits.write_timeout_s = 0.5;
  Running s(probe, o);
  Client c(s.port(), 16 * 1024);
  ASSERT_TRUE(c.send(get("/stream")));
  ASSERT_EQ(status_of(c.head()), 200);
  const auto t0 = Clock::now();
  ASSERT_TRUE(eventually([&] { return probe->destroyed == 1; }, 10s));
  const double took = seconds_since(t0);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(probe->overlapped);
  EXPECT_NE(probe->destroyed_on.load(), s.io_thread());
  EXPECT_NE(probe->destroyed_on.load(), std::this_thread::get_id());
  // What the kernel held arrives, then the end: no terminating chunk.
  const auto r = c.chunked(5s);
  EXPECT_TRUE(c.closed());
  EXPECT_FALSE(r.terminated);
  EXPECT_TRUE(r.exact);
  EXPECT_LT(r.bytes, probe->produced.load() + 1);
}

TEST(HttpServer, AProducerThatThrowsMidStreamLeavesTheTransferWithoutItsTerminatingChunk) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/stream?bytes=10000000&throw_at=4")));
  ASSERT_EQ(status_of(c.head()), 200);
  const auto r = c.chunked(5s);
  EXPECT_TRUE(c.closed());
  EXPECT_FALSE(r.terminated);
  EXPECT_FALSE(r.malformed);
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.bytes, 3 * kStreamPiece);  // the three pieces before the failure, whole
  EXPECT_TRUE(eventually([&] { return probe->destroyed == 1; }));
  EXPECT_EQ(probe->calls.load(), 4);
  // The server goes on serving.
  Client other(s.port());
  other.send(get("/plain"));
  EXPECT_EQ(status_of(other.head()), 200);
}

// A client that goes away while next() is under way: the producer finishes that call, then
// is destroyed (never during it), and is not called again.
TEST(HttpServer, AProducerOutlivesItsRunningCallWhenTheClientGoesAway) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  {
    Client c(s.port());
    ASSERT_TRUE(c.send(get("/stream?delay_ms=300")));
    ASSERT_EQ(status_of(c.head()), 200);
    // The first piece is sent, the second under way; the client leaves without reading the
    // first (so its kernel answers the next write with a reset).
    ASSERT_TRUE(eventually([&] { return probe->calls == 2; }));
  }
  const auto gone = Clock::now();
  ASSERT_TRUE(eventually([&] { return probe->destroyed == 1; }));
  EXPECT_GT(seconds_since(gone), 0.1);  // it waited for the call under way
  EXPECT_FALSE(probe->overlapped);
  EXPECT_EQ(probe->calls.load(), 2);
}

TEST(HttpServer, HeadGetsAStreamsHeaderWithoutCallingItsProducer) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send("HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string head = c.head();
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_TRUE(has_field(head, "Transfer-Encoding: chunked")) << head;
  EXPECT_TRUE(eventually([&] { return probe->destroyed == 1; }));
  EXPECT_EQ(probe->calls.load(), 0);
  // No body followed: the next answer on the connection is the next request's.
  ASSERT_TRUE(c.send(get("/plain")));
  const std::string next = c.head();
  EXPECT_EQ(status_of(next), 200) << next;
  EXPECT_EQ(c.body(3), "ok\n");
}

TEST(HttpServer, AConnectionStaysUsableAfterACompleteStream) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  const std::uint64_t total = 3 * kStreamPiece + 1000;  // the last piece short
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.send(get("/stream?bytes=" + std::to_string(total))));
    ASSERT_EQ(status_of(c.head()), 200) << i;
    const auto r = c.chunked();
    EXPECT_TRUE(r.terminated) << i;
    EXPECT_EQ(r.bytes, total) << i;
    EXPECT_TRUE(r.exact) << i;
    ASSERT_TRUE(c.send(get("/plain")));
    EXPECT_EQ(status_of(c.head()), 200) << i;
    EXPECT_EQ(c.body(3), "ok\n") << i;
  }
  EXPECT_FALSE(c.closed());
  EXPECT_TRUE(eventually([&] { return probe->destroyed == 2; }));
}

// HTTP/1.0 has no chunks: the body is the data as it is, and its end is the connection's.
TEST(HttpServer, OnHttp10AStreamIsSentPlainAndEndsWithTheConnection) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  const std::uint64_t total = 5 * kStreamPiece + 7;
  ASSERT_TRUE(c.send(get("/stream?bytes=" + std::to_string(total), "HTTP/1.0")));
  const std::string head = c.head();
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_FALSE(has_field_named(head, "Transfer-Encoding")) << head;
  EXPECT_FALSE(has_field_named(head, "Content-Length")) << head;
  const std::string body = c.rest();
  EXPECT_TRUE(c.closed());
  ASSERT_EQ(body.size(), total);
  EXPECT_TRUE(matches_pattern(0, body.data(), body.size()));
}

// Handlers decide the status before they return a stream: an error is an ordinary answer.
TEST(HttpServer, AHandlerAnswersAnErrorNormallyBeforeItWouldStream) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/export?missing=1")));
  const std::string head = c.head();
  EXPECT_EQ(status_of(head), 404) << head;
  EXPECT_TRUE(has_field(head, "Content-Length: 15")) << head;
  EXPECT_EQ(c.body(15), "no such export\n");
  EXPECT_EQ(probe->created.load(), 0);
  ASSERT_TRUE(c.send(get("/export")));
  EXPECT_EQ(status_of(c.head()), 200);
  const auto r = c.chunked();
  EXPECT_TRUE(r.terminated);
  EXPECT_EQ(r.bytes, 3 * kStreamPiece);
}

// 200 streams to clients that do not read hold no handler thread: with 4 of them, a request
// still answers at once.
TEST(HttpServer, AStreamedBodyReachesASlowClientWithoutHoldingAHandlerThread) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(4));
  constexpr int kStreams = 200;
  std::vector<std::unique_ptr<Client>> slow;
  for (int i = 0; i < kStreams; ++i) {
    slow.push_back(std::make_unique<Client>(s.port(), 16 * 1024));
    ASSERT_TRUE(slow.back()->connected()) << i;
    ASSERT_TRUE(slow.back()->send(get("/stream")));
  }
  ASSERT_TRUE(eventually([&] { return probe->created == kStreams; }, 10s)) << probe->created;
  // Every stream is under way and stalled (its client reads nothing): no more pieces made.
  int calls = -1;
  ASSERT_TRUE(eventually(
      [&] {
        const int now = probe->calls;
        std::this_thread::sleep_for(200ms);
        return now == probe->calls && now >= kStreams;
      },
      20s));
  calls = probe->calls;
  for (int i = 0; i < 5; ++i) {
    Client c(s.port());
    const auto t0 = Clock::now();
    ASSERT_TRUE(c.send(get("/plain")));
    EXPECT_EQ(status_of(c.head(2s)), 200) << i;
    EXPECT_LT(seconds_since(t0), 0.5) << i;
  }
  // A slow client reads on: its stream goes on (once the kernel's buffers are drained), the
  // others stay parked.
  auto& one = *slow.front();
  EXPECT_EQ(status_of(one.head()), 200);
  const std::uint64_t want = max_send_buffer() + (4u << 20);
  const auto r = one.chunked(20s, want);
  EXPECT_GE(r.bytes, want);
  EXPECT_TRUE(r.exact);
  EXPECT_GT(probe->calls.load(), calls);
  EXPECT_EQ(probe->destroyed.load(), 0);
  // Clients that go away take their producers with them.
  slow.clear();
  EXPECT_TRUE(eventually([&] { return probe->destroyed == kStreams; }, 10s)) << probe->destroyed;
  EXPECT_FALSE(probe->overlapped);
}

// A body read whole for its handler arrives whole, whatever its size against the server's
// read piece (64 KiB) and however it is framed and cut up on the way.
TEST(HttpServer, ABodyOfAnySizeReachesItsHandlerWholeAsSentOrChunked) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  Client c(s.port());
  const auto answer = [&](std::size_t n) {
    const std::string head = c.head();
    EXPECT_EQ(status_of(head), 200) << n << "\n" << head;
    const std::string want = std::to_string(n) + " same\n";
    EXPECT_EQ(c.body(want.size()), want) << n;
  };
  for (const std::size_t n : {0, 1, 300, 65535, 65536, 65537, 200000}) {
    std::string body(n, ' ');
    for (std::size_t i = 0; i < n; ++i) body[i] = static_cast<char>('a' + i % 23);
    // Announced, sent in three writes with pauses.
    ASSERT_TRUE(c.send("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(n) +
                       "\r\n\r\n"));
    for (std::size_t at = 0, part = n / 3 + 1; at < n; at += part) {
      ASSERT_TRUE(c.send(body.substr(at, part)));
      std::this_thread::sleep_for(2ms);
    }
    answer(n);
    // Chunked, in chunks of 1000 bytes.
    std::string framed = "POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (std::size_t at = 0; at < n; at += 1000) {
      const std::string chunk = body.substr(at, 1000);
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
      framed += size + chunk + "\r\n";
    }
    framed += "0\r\n\r\n";
    ASSERT_TRUE(c.send(framed));
    answer(n);
  }
}

// Deferred answers (Route::deferred): a request whose answer comes later holds no thread;
// the answer given later, from a thread of the test's, reaches its own client, and the
// connection stays usable for the next request.
TEST(HttpServer, ADeferredAnswerGivenLaterFromAnotherThreadReachesItsClientAndHoldsNoThread) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  ForgetLater forget;
  g_later.take();
  constexpr int kWaiting = 50;  // far more than the handler threads
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kWaiting; ++i) {
    clients.push_back(std::make_unique<Client>(s.port()));
    ASSERT_TRUE(clients.back()->send(get("/later?id=" + std::to_string(i))));
  }
  ASSERT_TRUE(eventually([&] { return g_later.size() == kWaiting; })) << g_later.size();
  for (int i = 0; i < 3; ++i) {  // the handler threads are free for other requests
    Client c(s.port());
    const auto t0 = Clock::now();
    ASSERT_TRUE(c.send(get("/plain")));
    EXPECT_EQ(status_of(c.head(2s)), 200) << i;
    EXPECT_LT(seconds_since(t0), 0.5) << i;
  }
  std::thread answering([waiting = g_later.take()] {
    for (const auto& [id, respond] : waiting) respond(text(200, "answer " + id + "\n"));
  });
  answering.join();
  for (int i = 0; i < kWaiting; ++i) {
    auto& c = *clients[static_cast<std::size_t>(i)];
    const std::string head = c.head();
    ASSERT_EQ(status_of(head), 200) << i;
    const std::string want = "answer " + std::to_string(i) + "\n";
    EXPECT_TRUE(has_field(head, "Content-Length: " + std::to_string(want.size()))) << head;
    EXPECT_EQ(c.body(want.size()), want);
    ASSERT_TRUE(c.send(get("/plain")));  // keep-alive: the next request on the same connection
    EXPECT_EQ(status_of(c.head()), 200) << i;
    EXPECT_EQ(c.body(3), "ok\n");
  }
}

TEST(HttpServer, ADeferredAnswerGivenDuringTheCallIsSentAsAnOrdinaryHandlersIs) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  Client c(s.port());
  for (int round = 0; round < 3; ++round) {
    for (const std::string path : {"/now", "/now-io"}) {
      ASSERT_TRUE(c.send(get(path)));
      EXPECT_EQ(status_of(c.head()), 200) << path;
      EXPECT_EQ(c.body(path.size()), path.substr(1) + "\n");  // "/now": "now\n"
    }
  }
}

TEST(HttpServer, ADeferredHandlerThatDropsItsRequestOrThrowsAnswers500) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  Client c(s.port());
  for (const char* path : {"/forget", "/throw", "/forget"}) {
    ASSERT_TRUE(c.send(get(path)));
    const std::string head = c.head();
    EXPECT_EQ(status_of(head), 500) << path << "\n" << head;
    const auto at = head.find("Content-Length: ");
    ASSERT_NE(at, std::string::npos) << head;
    c.body(std::stoul(head.substr(at + 16)));
  }
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
}

// A second answer is ignored: the next request on the connection gets its own answer.
TEST(HttpServer, OnlyTheFirstAnswerOfADeferredHandlerIsSent) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/twice")));
  EXPECT_EQ(status_of(c.head()), 200);
  EXPECT_EQ(c.body(6), "first\n");
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
  EXPECT_EQ(c.body(3), "ok\n");
}

// A client that went away before its answer: the answer is dropped, the server serves on.
TEST(HttpServer, ADeferredAnswerForAClientThatWentAwayIsDropped) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool(2));
  ForgetLater forget;
  g_later.take();
  {
    Client gone(s.port());
    ASSERT_TRUE(gone.send(get("/later?id=gone")));
    ASSERT_TRUE(eventually([&] { return g_later.size() == 1; }));
  }
  std::this_thread::sleep_for(100ms);  // the server notices the close or not: either is fine
  for (auto& [id, respond] : g_later.take()) respond(text(200, "too late\n"));
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
}

// stop() lets a stream run for a few seconds, then cuts it off (no terminating chunk), the
// producers destroyed and serve() returned within the grace.
TEST(HttpServer, StopCutsOffStreamsInProgressWithinTheGrace) {
  auto probe = std::make_shared<Probe>();
  Running s(probe, small_pool());
  Client reading(s.port());
  Client stalled(s.port(), 16 * 1024);
  ASSERT_TRUE(reading.send(get("/stream")));
  ASSERT_TRUE(stalled.send(get("/stream")));
  ASSERT_EQ(status_of(reading.head()), 200);
  ASSERT_EQ(status_of(stalled.head()), 200);
  ASSERT_TRUE(eventually([&] { return probe->created == 2; }));
  Client::Chunked r;
  std::thread reader([&] {  // reads on, at about 6 MB/s, until the server closes
    while (!reading.closed()) {
      r = reading.chunked(100ms, r.bytes + (64u << 10));
      std::this_thread::sleep_for(10ms);
    }
  });
  const auto t0 = Clock::now();
  s.stop();
  const double took = seconds_since(t0);
  reader.join();
  EXPECT_TRUE(s.served());
  EXPECT_LT(took, 5.5);
  EXPECT_GT(took, 3.0);  // the streams had their grace
  EXPECT_EQ(probe->destroyed.load(), 2);
  EXPECT_FALSE(r.terminated);
  EXPECT_TRUE(r.exact);
  EXPECT_GT(r.bytes, 0u);
  const auto st = stalled.chunked(2s);
  EXPECT_TRUE(stalled.closed());
  EXPECT_FALSE(st.terminated);
}

// --- Bodies pushed when they come (Response::feed) ---

namespace {
struct FeedTest : ::testing::Test {
  void SetUp() override {
    g_feeds.clear();
    QueueFeed::destroyed = 0;
  }
  void TearDown() override { g_feeds.clear(); }
  std::shared_ptr<Probe> probe = std::make_shared<Probe>();
  // Pattern bytes from `at`.
  static std::string piece(std::uint64_t at, std::size_t n) {
    std::string s;
    append_pattern(s, at, n);
    return s;
  }
};
}  // namespace

TEST_F(FeedTest, PiecesArriveAsTheyArePushedAndTheFeedsEndTerminatesTheBody) {
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/feed")));
  const auto head = c.head();
  ASSERT_EQ(status_of(head), 200);
  EXPECT_TRUE(has_field(head, "Transfer-Encoding: chunked"));
  ASSERT_TRUE(eventually([] { return g_feeds.size() == 1 && g_feeds.at(0)->attached_yet(); }));
  auto f = g_feeds.at(0);
  // Nothing is ready: nothing comes.
  EXPECT_EQ(c.chunked(300ms).bytes, 0u);
  f->push(piece(0, 100));
  EXPECT_EQ(c.chunked(2s, 100).bytes, 100u);
  std::this_thread::sleep_for(200ms);
  f->push(piece(100, 5000));
  f->push(piece(5100, 1));
  const auto r = c.chunked(2s, 5101);
  EXPECT_EQ(r.bytes, 5101u);
  EXPECT_TRUE(r.exact);
  f->push(piece(5101, 10), true);
  const auto end = c.chunked(2s);
  EXPECT_TRUE(end.terminated);
  EXPECT_EQ(end.bytes, 5111u);
  EXPECT_TRUE(end.exact);
  // The connection serves the next request.
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
}

// 300 feeds waiting for events hold no thread: with 2 handler threads and one I/O thread a
// request still answers at once, and every feed still delivers.
TEST_F(FeedTest, HundredsOfWaitingFeedsHoldNoThreadAndAllStayLive) {
  Running s(probe, small_pool(2));
  QueueFeed::io_thread = s.io_thread();
  constexpr int kFeeds = 300;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kFeeds; ++i) {
    clients.push_back(std::make_unique<Client>(s.port()));
    ASSERT_TRUE(clients.back()->send(get("/feed"))) << i;
    ASSERT_EQ(status_of(clients.back()->head()), 200) << i;
  }
  ASSERT_TRUE(eventually([] { return g_feeds.size() == kFeeds; }, 10s));
  for (int i = 0; i < 5; ++i) {
    Client c(s.port());
    const auto t0 = Clock::now();
    ASSERT_TRUE(c.send(get("/plain")));
    EXPECT_EQ(status_of(c.head(2s)), 200) << i;
    EXPECT_LT(seconds_since(t0), 0.5) << i;
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kFeeds; ++i)
      g_feeds.at(static_cast<std::size_t>(i))->push(piece(round * 10, 10));
    for (int i = 0; i < kFeeds; ++i) {
      const auto r = clients[static_cast<std::size_t>(i)]->chunked(5s, (round + 1) * 10u);
      ASSERT_EQ(r.bytes, (round + 1) * 10u) << "feed " << i << " round " << round;
      EXPECT_TRUE(r.exact);
    }
  }
  // Wake-ups are served by the I/O thread (the first take follows the header, which the
  // handler thread writes).
  for (int i = 0; i < kFeeds; ++i)
    EXPECT_GE(g_feeds.at(static_cast<std::size_t>(i))->io_takes.load(), 3) << i;
}

// Wake-ups race with writes: a piece pushed while the last one is being written is never
// lost, nor one pushed just as the feed found its queue empty.
TEST_F(FeedTest, NoPieceIsLostWhenPushesRaceWithWrites) {
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send(get("/feed")));
  ASSERT_EQ(status_of(c.head()), 200);
  ASSERT_TRUE(eventually([] { return g_feeds.size() == 1 && g_feeds.at(0)->attached_yet(); }));
  auto f = g_feeds.at(0);
  constexpr int kPushes = 20000;
  std::uint64_t total = 0;
  std::thread pusher([&] {
    std::uint64_t at = 0;
    for (int i = 0; i < kPushes; ++i) {
      const std::size_t n = 1 + static_cast<std::size_t>(i % 97);
      f->push(piece(at, n));
      at += n;
      if (i % 1000 == 0) std::this_thread::sleep_for(1ms);
    }
    total = at;
  });
  pusher.join();
  const auto r = c.chunked(10s, total);
  EXPECT_EQ(r.bytes, total);
  EXPECT_TRUE(r.exact);
  EXPECT_LT(f->takes.load(), kPushes + 10);  // wake-ups coalesce
}

TEST_F(FeedTest, AClientThatClosesReleasesItsWaitingFeedAtOnce) {
  Running s(probe, small_pool());
  {
    Client c(s.port());
    ASSERT_TRUE(c.send(get("/feed")));
    ASSERT_EQ(status_of(c.head()), 200);
    ASSERT_TRUE(eventually([] { return g_feeds.size() == 1 && g_feeds.at(0)->attached_yet(); }));
  }
  // Only the test's reference is left once the server let go.
  EXPECT_TRUE(eventually([] { return g_feeds.at(0).use_count() == 2; }, 2s));
  g_feeds.at(0)->push("late");  // a wake-up after the close does nothing
  g_feeds.clear();
  EXPECT_EQ(QueueFeed::destroyed.load(), 1);
}

TEST_F(FeedTest, HeadGetsTheHeaderWithoutAttachingTheFeed) {
  Running s(probe, small_pool());
  Client c(s.port());
  ASSERT_TRUE(c.send("HEAD /feed HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(status_of(c.head()), 200);
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
  ASSERT_EQ(g_feeds.size(), 1u);
  EXPECT_EQ(g_feeds.at(0)->attached.load(), 0);
}

// Event streams end at once when the server stops (their clients reconnect), not after the
// grace a download gets.
TEST_F(FeedTest, StopEndsWaitingAndWritingFeedsAtOnce) {
  Running s(probe, small_pool());
  Client waiting(s.port());
  Client stalled(s.port(), 16 * 1024);
  ASSERT_TRUE(waiting.send(get("/feed")));
  ASSERT_TRUE(stalled.send(get("/feed")));
  ASSERT_EQ(status_of(waiting.head()), 200);
  ASSERT_EQ(status_of(stalled.head()), 200);
  ASSERT_TRUE(eventually([] { return g_feeds.size() == 2; }));
  ASSERT_TRUE(
      eventually([] { return g_feeds.at(0)->attached_yet() && g_feeds.at(1)->attached_yet(); }));
  // One feed has more than the socket takes: its connection is writing, not waiting.
  for (int i = 0; i < 64; ++i) g_feeds.at(1)->push(piece(0, 256 * 1024));
  std::this_thread::sleep_for(200ms);
  const auto t0 = Clock::now();
  s.stop();
  EXPECT_LT(seconds_since(t0), 1.5);
  EXPECT_TRUE(s.served());
  EXPECT_FALSE(waiting.chunked(2s).terminated);
  EXPECT_TRUE(waiting.closed());
  g_feeds.clear();
  EXPECT_EQ(QueueFeed::destroyed.load(), 2);
}

// --- Bodies taken by a sink (uploads) ---

namespace {
struct SinkTest : ::testing::Test {
  void SetUp() override {
    g_sinks = std::make_shared<SinkProbe>();
    probe = std::make_shared<Probe>();
  }
  std::shared_ptr<Probe> probe;
  SinkProbe& sinks() { return *g_sinks; }
  int count(int SinkProbe::*field) {
    std::lock_guard lock(g_sinks->mu);
    return (*g_sinks).*field;
  }
};

std::string post_head(const std::string& target, const std::string& framing) {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\n" + framing + "\r\n";
}
}  // namespace

TEST_F(SinkTest, ABodyReachesItsSinkWholeInOrderInPiecesOfAtMostTheSinkPiece) {
  Running server(probe, small_pool());
  sinks().io_thread = server.io_thread();
  std::string body;
  append_pattern(body, 0, 3 * kSinkPiece + 1234);
  Client c(server.port());
  ASSERT_TRUE(
      c.send(post_head("/sink", "Content-Length: " + std::to_string(body.size()) + "\r\n")));
  ASSERT_TRUE(c.send(body));
  const auto h = c.head();
  EXPECT_EQ(status_of(h), 201) << h;
  EXPECT_EQ(c.body(std::to_string(body.size()).size() + 1), std::to_string(body.size()) + "\n");
  std::lock_guard lock(sinks().mu);
  EXPECT_EQ(sinks().received, body);
  for (auto n : sinks().pieces) EXPECT_LE(n, kSinkPiece);
  EXPECT_EQ(sinks().finished, 1);
  EXPECT_EQ(sinks().aborted, 0);
  EXPECT_FALSE(sinks().overlapped);
  EXPECT_FALSE(sinks().on_io_thread);
}

TEST_F(SinkTest, AChunkedBodyReachesItsSinkDecodedAndTheConnectionStaysUsable) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Transfer-Encoding: chunked\r\n")));
  std::string all;
  for (int i = 0; i < 5; ++i) {
    std::string part;
    append_pattern(part, all.size(), 70000 + static_cast<std::size_t>(i));
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", part.size());
    ASSERT_TRUE(c.send(size + part + "\r\n"));
    all += part;
  }
  ASSERT_TRUE(c.send("0\r\n\r\n"));
  EXPECT_EQ(status_of(c.head()), 201);
  c.body(std::to_string(all.size()).size() + 1);
  ASSERT_TRUE(c.send(get("/plain")));
  EXPECT_EQ(status_of(c.head()), 200);
  std::lock_guard lock(sinks().mu);
  EXPECT_EQ(sinks().received, all);
}

TEST_F(SinkTest, AnEmptyBodyIsFinishedAtOnce) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Content-Length: 0\r\n")));
  EXPECT_EQ(status_of(c.head()), 201);
  EXPECT_EQ(c.body(2), "0\n");
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::destroyed) == 1; }));
  EXPECT_EQ(count(&SinkProbe::finished), 1);
}

TEST_F(SinkTest, ARefusalByTheFactoryComesBeforeContinueAndBeforeAnyBodyIsRead) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(
      c.send(post_head("/sink?refuse=1", "Content-Length: 1000000\r\nExpect: 100-continue\r\n")));
  const auto h = c.head();
  EXPECT_EQ(status_of(h), 409) << h;  // not "100 Continue"
  EXPECT_TRUE(has_field(h, "Connection: close")) << h;
  EXPECT_EQ(count(&SinkProbe::made), 0);
}

TEST_F(SinkTest, ContinueIsSentOnceTheSinkExists) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Content-Length: 5\r\nExpect: 100-continue\r\n")));
  EXPECT_EQ(status_of(c.head()), 100);
  ASSERT_TRUE(c.send("hello"));
  EXPECT_EQ(status_of(c.head()), 201);
  std::lock_guard lock(sinks().mu);
  EXPECT_EQ(sinks().received, "hello");
}

TEST_F(SinkTest, ASinkThatRefusesMidBodyAnswersAndClosesWithoutFinishOrAbort) {
  Running server(probe, small_pool());
  std::string body;
  append_pattern(body, 0, 4 * kSinkPiece);
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink?refuse_after=1",
                               "Content-Length: " + std::to_string(body.size()) + "\r\n")));
  c.send(body);  // may fail part way: the server stops reading
  const auto h = c.head();
  EXPECT_EQ(status_of(h), 507) << h;
  EXPECT_TRUE(has_field(h, "Connection: close")) << h;
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::destroyed) == 1; }));
  EXPECT_EQ(count(&SinkProbe::finished), 0);
  EXPECT_EQ(count(&SinkProbe::aborted), 0);
}

TEST_F(SinkTest, AClientThatGoesAwayMidBodyAbortsItsSink) {
  Running server(probe, small_pool());
  {
    Client c(server.port());
    ASSERT_TRUE(c.send(post_head("/sink", "Content-Length: 1000000\r\n")));
    std::string part;
    append_pattern(part, 0, 300000);
    ASSERT_TRUE(c.send(part));
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lock(sinks().mu);
      return sinks().received.size() == part.size();
    }));
  }
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::aborted) == 1; }));
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::destroyed) == 1; }));
  EXPECT_EQ(count(&SinkProbe::finished), 0);
}

// A body cut short gives its sink every byte that arrived, the piece being filled and one that
// waited for the sink included, and only then aborts it (a resumable upload goes on from
// there). Before, both pieces were dropped: Beast reports the cut as partial_message, which
// was taken for invalid HTTP.
TEST_F(SinkTest, ABodyCutShortGivesItsSinkEveryByteThatArrivedThenAbortsIt) {
  Running server(probe, small_pool());
  sinks().hold = true;  // the first piece stays in write() while the rest comes in
  std::string part;
  append_pattern(part, 0, 2 * kSinkPiece + kSinkPiece / 2);
  {
    Client c(server.port());
    ASSERT_TRUE(
        c.send(post_head("/sink", "Content-Length: " + std::to_string(4 * kSinkPiece) + "\r\n")));
    ASSERT_TRUE(c.send(part));
    ASSERT_TRUE(eventually([&] { return count(&SinkProbe::made) == 1; }));
    std::this_thread::sleep_for(200ms);  // the server reads what the socket holds
  }                                      // gone, three quarters of the way short
  std::this_thread::sleep_for(100ms);
  sinks().hold = false;
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::aborted) == 1; }));
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::destroyed) == 1; }));
  std::lock_guard lock(sinks().mu);
  EXPECT_EQ(sinks().received.size(), part.size());
  EXPECT_TRUE(sinks().received == part);
  EXPECT_EQ(sinks().finished, 0);
  EXPECT_FALSE(sinks().overlapped);
}

TEST_F(SinkTest, AClientTooSlowForTheBodyLimitsIsClosedAndItsSinkAborted) {
  Options o = small_pool();
  o.limits.body_timeout_s = 0.3;
  o.limits.min_body_rate = 0;
  Running server(probe, o);
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Content-Length: 100\r\n")));
  ASSERT_TRUE(c.send("only a little"));
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::aborted) == 1; }));
  c.rest(2s);
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(count(&SinkProbe::finished), 0);
}

TEST_F(SinkTest, AChunkedBodyBeyondTheRoutesLimitIsAbortedWith413) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Transfer-Encoding: chunked\r\n")));
  std::string part;
  append_pattern(part, 0, 1u << 20);
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", part.size());
  for (int i = 0; i < 9; ++i)
    if (!c.send(size + part + "\r\n")) break;
  const auto h = c.head();
  EXPECT_EQ(status_of(h), 413) << h;
  EXPECT_TRUE(eventually([&] { return count(&SinkProbe::aborted) == 1; }));
  EXPECT_EQ(count(&SinkProbe::finished), 0);
}

TEST_F(SinkTest, AnAnnouncedBodyBeyondTheRoutesLimitIsRefusedBeforeTheSinkIsMade) {
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink", "Content-Length: 9000000\r\n")));
  EXPECT_EQ(status_of(c.head()), 413);
  EXPECT_EQ(count(&SinkProbe::made), 0);
}

TEST_F(SinkTest, ASlowSinkHoldsAHandlerThreadButNeverTheIoThread) {
  Running server(probe, small_pool(2));
  sinks().hold = true;
  Client up(server.port());
  ASSERT_TRUE(up.send(post_head("/sink", "Content-Length: 3\r\n")));
  ASSERT_TRUE(up.send("abc"));
  ASSERT_TRUE(eventually([&] { return count(&SinkProbe::made) == 1; }));
  Client other(server.port());  // served meanwhile
  ASSERT_TRUE(other.send(get("/plain")));
  EXPECT_EQ(status_of(other.head()), 200);
  sinks().hold = false;
  EXPECT_EQ(status_of(up.head()), 201);
}

TEST(Router, AnExplicitHeadRouteComesBeforeTheGetRouteOfTheSamePath) {
  Router r;
  Route get_route;
  get_route.method = "GET";
  get_route.path = "/u/{id}";
  r.add(get_route);
  Route head_route;
  head_route.method = "HEAD";
  head_route.path = "/u/{id}";
  r.add(head_route);
  Route other;
  other.method = "GET";
  other.path = "/v";
  r.add(other);
  auto m = r.match("HEAD", "/u/7");
  ASSERT_TRUE(m.route);
  EXPECT_EQ(m.route->method, "HEAD");
  EXPECT_EQ(m.params, std::vector<std::string>{"7"});
  ASSERT_TRUE(r.match("HEAD", "/v").route);
  EXPECT_EQ(r.match("HEAD", "/v").route->method, "GET");
  EXPECT_EQ(r.match("GET", "/u/7").route->method, "GET");
}

TEST_F(SinkTest, ASinkRefusalIsAnsweredAtOnceWhileTheClientStillOwesBytes) {
  // The sink refuses while the next read waits for bytes the client holds back (it waits for
  // the answer): that read is cancelled, not left to the body timeout.
  Running server(probe, small_pool());
  Client c(server.port());
  ASSERT_TRUE(c.send(post_head("/sink?refuse_after=1", "Content-Length: 1000000\r\n")));
  std::string part;
  append_pattern(part, 0, 300000);
  ASSERT_TRUE(c.send(part));
  const auto t0 = Clock::now();
  const auto h = c.head(3s);
  EXPECT_EQ(status_of(h), 507) << h;
  EXPECT_LT(seconds_since(t0), 2.0);
}

TEST_F(SinkTest, AnEarlyRefusalReachesAClientThatKeepsSendingEveryTime) {
  // The read in flight when the sink refused was taken for a Request::body read once the
  // sink had gone (a size underflow, an exception, a reset instead of the answer: 1 in 10).
  Running server(probe, small_pool());
  std::string part;
  append_pattern(part, 0, 512u << 10);
  for (int i = 0; i < 40; ++i) {
    Client c(server.port());
    ASSERT_TRUE(c.send(post_head("/sink?refuse_after=1", "Content-Length: 8000000\r\n")));
    c.send(part);
    const auto h = c.head(3s);
    ASSERT_EQ(status_of(h), 507) << "attempt " << i << ": " << h;
  }
}

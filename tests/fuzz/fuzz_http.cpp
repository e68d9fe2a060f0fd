// libFuzzer target: the api's HTTP layer (api/src/http.cpp, http_server.cpp, auth.cpp).
//
// Input: the bytes a client sends on one connection (requests, usually HTTP/1.1; the seeds
// are real requests of the api's routes).
//
// Each input is sent to a real http::Server running in this process on a loopback port (the
// server of the api: Beast's parser, then the server's own handling of the header, limits,
// bearer tokens, routing, bodies read whole or into a sink, keep-alive, pipelining), then the
// connection is half-closed and the answer read to its end. The pure parts are also run on the
// request line and the header fields found in the input: parse_target (percent-decoding),
// the router, role_of. POST /api/v1/tasks is a deferred route (answered later from another
// thread, during the call with ?now, or dropped unanswered with ?drop), as in the api.
//
// Properties checked besides "no crash, no sanitizer report":
//  - the server answers or closes within 5 s once the client has stopped sending, and every
//    answer starts with an HTTP/1.x status line of a valid code;
//  - a decoded target's path starts with '/', has no NUL byte and is UTF-8; percent-encoding
//    it again and decoding gives it back;
//  - the route matched for a path has it: its literal segments equal the path's, and each
//    {param} is the path's non-empty segment at that place;
//  - role_of grants exactly the role of the one token whose secret equals the bearer value.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/api/http.hpp"
#include "ipfixweb/shared/json_escape.hpp"

namespace api = ipfixweb::api;
namespace http = ipfixweb::api::http;

namespace {

// Route templates shaped like the api's (api/src/server.cpp).
const std::vector<std::pair<std::string, std::string>> kRoutes = {
    {"GET", "/livez"},
    {"GET", "/api/v1/tasks"},
    {"POST", "/api/v1/tasks"},
    {"GET", "/api/v1/tasks/{id}"},
    {"DELETE", "/api/v1/tasks/{id}"},
    {"GET", "/api/v1/tasks/{id}/flows"},
    {"GET", "/api/v1/tasks/{id}/flows.csv"},
    {"POST", "/api/v1/tasks/{id}/flows/{flow}/pcap"},
    {"GET", "/api/v1/stream"},
    {"GET", "/api/v1/uploads/{id}"},
    {"HEAD", "/api/v1/uploads/{id}"},
    {"PATCH", "/api/v1/uploads/{id}"},
    {"POST", "/api/v1/captures"},
};

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  path.remove_prefix(1);
  for (;;) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

// Echoes what the handler was given (the request's parts as the server decoded them).
void echo(const http::Request& req, http::Response& res) {
  std::string body = req.method + " " + req.path + "\n";
  for (const auto& p : req.path_params) body += "param " + p + "\n";
  for (const auto& [k, v] : req.query) body += "query " + k + "=" + v + "\n";
  for (const auto& [k, v] : req.headers) body += "header " + k + ": " + v + "\n";
  body += "body " + std::to_string(req.body.size()) + "\n";
  res.status = 200;
  res.set_content(std::move(body), "text/plain");
  if (req.has_query("hdr")) res.set_header("X-Echo", req.query_value("hdr"));  // line breaks
}

// Answers deferred requests from a thread of its own, as the api's submitter answers
// submissions (http::Route::deferred): in arrival order, each after the next poll.
class Answerer {
 public:
  Answerer() : thread_([this] { run(); }) {}
  ~Answerer() {  // before the server goes (a Respond refers to its connection)
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void later(http::Respond respond, http::Response res) {
    {
      std::lock_guard lock(mu_);
      queue_.emplace_back(std::move(respond), std::move(res));
    }
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      auto batch = std::exchange(queue_, {});
      lock.unlock();
      for (auto& [respond, res] : batch) respond(std::move(res));
      batch.clear();
      lock.lock();
      if (stop_ && queue_.empty()) return;
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<http::Respond, http::Response>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

Answerer* g_answerer = nullptr;

// POST /api/v1/tasks is deferred, as in the api: answered later from the answerer's thread,
// or during the call (?now), or dropped unanswered (?drop: the server answers 500).
void deferred_echo(const http::Request& req, http::Respond respond) {
  http::Response res;
  echo(req, res);
  if (req.has_query("drop")) return;
  if (req.has_query("now") || !g_answerer) return respond(std::move(res));
  g_answerer->later(std::move(respond), std::move(res));
}

// A body taken piece by piece (an upload's PATCH): counts, refuses past 100 kB.
class CountingSink : public http::BodySink {
 public:
  bool write(std::string_view piece, http::Response& res) override {
    got_ += piece.size();
    if (got_ > 100000) {
      res.status = 413;
      res.set_content("too much", "text/plain");
      return false;
    }
    return true;
  }
  void finish(http::Response& res) override {
    res.status = 204;
    res.set_header("Upload-Offset", std::to_string(got_));
  }
  void abort() override {}

 private:
  std::size_t got_ = 0;
};

// A streamed body of a few pieces.
class Counter : public http::Producer {
 public:
  bool next(std::string& out) override {
    out = std::to_string(n_) + "\n";
    return ++n_ < 3;
  }

 private:
  int n_ = 0;
};

http::Router make_router() {
  http::Router r;
  for (const auto& [method, path] : kRoutes) {
    http::Route route;
    route.method = method;
    route.path = path;
    route.handler = echo;
    if (path == "/livez") {
      route.open = true;
      route.blocking = false;
    }
    if (method == "POST" && path == "/api/v1/tasks") {
      route.role = api::Role::Submit;
      route.max_body = 4096;
      route.deferred = deferred_echo;
    }
    if (method == "DELETE") route.role = api::Role::Admin;
    if (path == "/api/v1/stream")
      route.handler = [](const http::Request&, http::Response& res) {
        res.status = 200;
        res.stream = std::make_shared<Counter>();
      };
    if (method == "PATCH" || path == "/api/v1/captures") {
      route.role = api::Role::Submit;
      route.max_body = 1000000;
      route.sink = [](const http::Request& req,
                      http::Response& res) -> std::unique_ptr<http::BodySink> {
        if (req.has_query("refuse")) {
          res.status = 409;
          return nullptr;
        }
        return std::make_unique<CountingSink>();
      };
    }
    r.add(std::move(route));
  }
  return r;
}

const std::vector<api::Token>& tokens() {
  static const std::vector<api::Token> t = api::parse_tokens("read:r,submit:s,admin:a,dup");
  return t;
}

class LiveServer {
 public:
  LiveServer() {
    http::Options o;
    o.port = 0;
    o.io_threads = 2;
    o.handler_threads = 4;
    o.tokens = tokens();
    o.limits.max_header = 2048;
    o.limits.max_other_body = 256;
    o.limits.header_timeout_s = 2;
    o.limits.body_timeout_s = 2;
    o.limits.idle_timeout_s = 2;
    o.limits.write_timeout_s = 2;
    o.error = [](http::Response& res, int status, const std::string& detail) {
      res.status = status;
      res.set_content(detail, "text/plain");
    };
    server_ = std::make_unique<http::Server>(std::move(o), make_router());
    answerer_ = std::make_unique<Answerer>();
    g_answerer = answerer_.get();
    thread_ = std::thread([this] { server_->serve(); });
  }
  ~LiveServer() {
    server_->stop();
    thread_.join();
    g_answerer = nullptr;
    answerer_.reset();  // answers what it still holds, before the server goes
  }
  int port() const { return server_->port(); }

 private:
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Answerer> answerer_;
  std::thread thread_;
};

// Sends `in` on a fresh connection, half-closes it and reads the answer to its end.
std::string exchange(int port, std::string_view in) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // The connection is reset at close (no TIME_WAIT): at the optimised build's thousands of
  // connections a second the client's TIME_WAIT sockets used up the ephemeral ports within
  // a minute and connect() failed (EADDRNOTAVAIL), a harness failure, not the server's.
  const linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  int rc = -1;
  for (int attempt = 0; attempt < 100; ++attempt) {
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (rc != 0 && errno == EINTR) {  // libFuzzer's timer signal: the connect goes on
      pollfd p{fd, POLLOUT, 0};
      while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc == 0 || (errno != EADDRNOTAVAIL && errno != EAGAIN)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FUZZ_CHECK(rc == 0, std::string("connect: ") + std::strerror(errno));
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::size_t sent = 0;
  bool shut = false;
  char buf[16384];
  for (;;) {
    if (sent == in.size() && !shut) {
      ::shutdown(fd, SHUT_WR);
      shut = true;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (shut ? 0 : POLLOUT)), 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    FUZZ_CHECK(left.count() > 0,
               "no answer and no close within 5 s; got so far: " + answer.substr(0, 200));
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    if (p.revents & POLLOUT) {
      const ssize_t n = ::send(fd, in.data() + sent, in.size() - sent, MSG_NOSIGNAL);
      if (n > 0)
        sent += static_cast<std::size_t>(n);
      else
        sent = in.size();  // the server closed early: fine (it may refuse at once)
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      answer.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return answer;
}

void check_answer(const std::string& answer) {
  if (answer.empty()) return;  // closed without a word (e.g. a header that never ended)
  FUZZ_CHECK(answer.rfind("HTTP/1.", 0) == 0 && answer.size() >= 12,
             "not a status line: " + answer.substr(0, 80));
  const int code = std::atoi(answer.substr(9, 3).c_str());
  FUZZ_CHECK(code >= 100 && code <= 599, answer.substr(0, 80));
}

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    out += '%';
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// The pure parts, on the first request line and the header fields after it.
void check_pure(std::string_view in) {
  static const http::Router router = make_router();
  const auto eol = in.find("\r\n");
  const std::string_view line = in.substr(0, eol);
  const auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return;
  const auto sp2 = line.find(' ', sp1 + 1);
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target =
      line.substr(sp1 + 1, sp2 == std::string_view::npos ? sp2 : sp2 - sp1 - 1);

  if (auto t = http::parse_target(target)) {
    FUZZ_CHECK(!t->path.empty() && t->path.front() == '/', t->path);
    FUZZ_CHECK(t->path.find('\0') == std::string::npos);
    FUZZ_CHECK(ipfixweb::is_valid_utf8(t->path), t->path);
    auto again = http::percent_decode(percent_encode(t->path), false);
    FUZZ_CHECK(again && *again == t->path, t->path);
    for (const auto& [k, v] : t->query)
      FUZZ_CHECK(ipfixweb::is_valid_utf8(k) && ipfixweb::is_valid_utf8(v));

    const auto m = router.match(method, t->path);
    if (m.route) {
      const auto tmpl = segments(m.route->path);
      const auto segs = segments(t->path);
      FUZZ_CHECK(tmpl.size() == segs.size(), m.route->path + " for " + t->path);
      std::size_t param = 0;
      for (std::size_t i = 0; i < tmpl.size(); ++i) {
        if (tmpl[i].size() > 2 && tmpl[i].front() == '{' && tmpl[i].back() == '}') {
          FUZZ_CHECK(param < m.params.size() && !segs[i].empty() && m.params[param] == segs[i]);
          ++param;
        } else {
          FUZZ_CHECK(tmpl[i] == segs[i], m.route->path + " for " + t->path);
        }
      }
      FUZZ_CHECK(param == m.params.size());
      FUZZ_CHECK(m.route->method == method || (method == "HEAD" && m.route->method == "GET"));
    }
  }

  // Authorization fields: the role is that of the token whose secret is the bearer value.
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : in.substr(eol + 2);
  while (!rest.empty()) {
    const auto e = rest.find("\r\n");
    const std::string_view field = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    if (field.empty()) break;
    const auto colon = field.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = field.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    const auto role = api::role_of(tokens(), value);
    std::optional<api::Role> want;
    if (value.substr(0, 7) == "Bearer ")
      for (const auto& t : tokens())
        if (!want && t.secret == value.substr(7)) want = t.role;
    FUZZ_CHECK(role == want, std::string(value));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static LiveServer server;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  check_pure(in);
  check_answer(exchange(server.port(), in));
  return 0;
}

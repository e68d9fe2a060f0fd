// Issue 12 (findings 3, 8 and 10, HTTP parts): the api's HTTP server under abuse, its limits
// and its token roles, against the real stack. Raw sockets where a client library would be
// too polite (slow or oversized headers, bodies announced and never sent).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>

#include "harness.hpp"

using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// How much the api's resident memory may grow while it refuses a huge header or body: far less
// than what it would take to buffer one (hundreds of MB), and measured from its size at start
// rather than as an absolute bound, which a sanitizer build's runtime alone would use up.
constexpr double kMaxGrowthMb = 64;

// The api's resident memory in MB (VmRSS).
double rss_mb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long kb = -1;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> kb;
      break;
    }
    in.ignore(1 << 12, '\n');
  }
  return static_cast<double>(kb) / 1024.0;
}

void raise_fd_limit() {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &r);
}

// A TCP connection to the api, spoken byte by byte.
class Raw {
 public:
  explicit Raw(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Raw() {
    if (fd_ >= 0) ::close(fd_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  bool connected() const { return connected_; }
  // False once the peer refuses more (closed or reset).
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // Whatever arrives until the peer closes or `timeout` passes; *closed tells which.
  std::string receive(std::chrono::milliseconds timeout, bool* closed = nullptr) {
    std::string out;
    auto deadline = Clock::now() + timeout;
    if (closed) *closed = false;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return out;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return out;
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {  // end of stream, or reset: closed either way
        if (closed) *closed = true;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  // One whole answer (header and Content-Length bytes of body), or what came within `timeout`.
  std::string response(std::chrono::milliseconds timeout) {
    std::string out;
    auto deadline = Clock::now() + timeout;
    for (;;) {
      auto end = out.find("\r\n\r\n");
      if (end != std::string::npos) {
        auto at = out.find("Content-Length: ");
        std::size_t length = at < end ? std::stoul(out.substr(at + 16)) : 0;
        if (out.size() >= end + 4 + length) return out;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return out;
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  // Makes a send() blocked in another thread return.
  void shutdown() { ::shutdown(fd_, SHUT_RDWR); }
  // Whether the peer has closed the connection within `timeout` (data before that is read
  // and dropped).
  bool closed_within(std::chrono::milliseconds timeout) {
    bool closed = false;
    receive(timeout, &closed);
    return closed;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string body_of(const std::string& response) {
  auto at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

bool is_problem(const std::string& response) {
  return response.find("Content-Type: application/problem+json") != std::string::npos &&
         !json::parse(body_of(response), nullptr, false).is_discarded();
}

// Sends the header, then (in the background) as much of the announced body as the server
// takes, while this thread waits for the answer. Returns the answer; *sent is how many body
// bytes the server took before it closed.
std::string announce_huge_body(int port, const std::string& head, std::uint64_t length,
                               std::uint64_t* sent, bool* closed) {
  Raw c(port);
  EXPECT_TRUE(c.connected());
  EXPECT_TRUE(c.send(head + "Content-Length: " + std::to_string(length) + "\r\n\r\n"));
  std::atomic<std::uint64_t> pushed{0};
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    const std::string chunk(1 << 20, 'x');
    while (!stop && pushed < length && c.send(chunk)) pushed += chunk.size();
  });
  std::string answer = c.receive(5s, closed);
  stop = true;
  c.shutdown();
  sender.join();
  *sent = pushed;
  return answer;
}

}  // namespace

// Finding 3: 500 idle plus 200 slow-header connections left the api answering none of its
// probes for 10 s (a thread per connection, 64 threads). Now they cost sockets only.
TEST(HttpLimits, IdleAndSlowHeaderConnectionsLeaveProbesFastAndSubmissionsAnswered) {
  raise_fd_limit();
  Stack s;
  auto [st, b] = s.submit(small_task("probe.ipfix"));
  ASSERT_EQ(st, 202);
  const std::string id = b["task_id"];
  s.wait_terminal(id);

  std::vector<std::unique_ptr<Raw>> idle, slow;
  for (int i = 0; i < 1000; ++i) idle.push_back(std::make_unique<Raw>(s.http_port()));
  for (int i = 0; i < 200; ++i) {
    slow.push_back(std::make_unique<Raw>(s.http_port()));
    slow.back()->send("GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  }
  EXPECT_EQ(std::count_if(idle.begin(), idle.end(), [](auto& c) { return c->connected(); }), 1000);
  std::atomic<bool> done{false};
  std::thread dribble([&] {  // one more header byte per connection every second
    while (!done) {
      for (auto& c : slow) c->send("a");
      for (int i = 0; i < 10 && !done; ++i) std::this_thread::sleep_for(100ms);
    }
  });

  std::atomic<int> answered{0}, accepted{0};
  std::thread submitter([&] {
    auto c = s.client();
    c->set_read_timeout(5, 0);
    for (int i = 0; i < 30; ++i) {
      auto r = c->Post("/api/v1/tasks", small_task("abuse/" + std::to_string(i) + ".ipfix").dump(),
                       "application/json");
      if (r) ++answered;
      if (r && r->status == 202) ++accepted;
      std::this_thread::sleep_for(50ms);
    }
  });
  std::vector<double> latencies;
  int failures = 0;
  auto probe = s.client();
  probe->set_connection_timeout(1, 0);
  probe->set_read_timeout(1, 0);
  for (int i = 0; i < 300 && failures < 10; ++i) {
    const std::string path = i % 2 ? "/livez" : "/api/v1/tasks/" + id;
    auto t0 = Clock::now();
    auto r = probe->Get(path);
    latencies.push_back(seconds_since(t0));
    if (!r || r->status != 200) ++failures;
    std::this_thread::sleep_for(10ms);
  }
  submitter.join();
  done = true;
  dribble.join();

  EXPECT_EQ(failures, 0);
  std::sort(latencies.begin(), latencies.end());
  const double p99 = latencies[latencies.size() * 99 / 100];
  EXPECT_LT(p99, 0.1) << "p99 of " << latencies.size() << " probes";
  EXPECT_EQ(answered.load(), 30);
  EXPECT_EQ(accepted.load(), 30);
  EXPECT_TRUE(s.api().running());
}

// Finding 3: header lines were buffered without limit (before the token check, too).
TEST(HttpLimits, AnOversizedHeaderIsAnswered431AndTheConnectionCloses) {
  Stack s;
  const double at_start = rss_mb(s.api().pid());
  {
    Raw c(s.http_port());
    c.send("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(16 * 1024, 'a') + "\r\n\r\n");
    bool closed = false;
    std::string r = c.receive(3s, &closed);
    EXPECT_EQ(status_of(r), 431) << r;
    EXPECT_TRUE(is_problem(r)) << r;
    EXPECT_TRUE(closed);
  }
  // A header that never ends: refused at the limit, not buffered.
  Raw c(s.http_port());
  c.send("GET /livez HTTP/1.1\r\nHost: x\r\n");
  std::uint64_t pushed = 0;
  const std::string line = "X-More: " + std::string(1000, 'b') + "\r\n";
  while (pushed < (256u << 20) && c.send(line)) pushed += line.size();
  EXPECT_LT(pushed, 64u << 20) << "the server kept reading the header";
  EXPECT_LT(rss_mb(s.api().pid()) - at_start, kMaxGrowthMb) << "at start: " << at_start << " MB";
  EXPECT_TRUE(s.client()->Get("/livez"));
}

// Finding 3: a 0.9 GB POST to a route that does not exist drove the api to 1 GB RSS; bodies
// of other methods were read without limit too.
TEST(HttpLimits, AHugeBodyToAnUnknownRouteOrABodylessRouteIsRefusedUnread) {
  Stack s;
  const double at_start = rss_mb(s.api().pid());
  auto [st, b] = s.submit(small_task("big-body.ipfix"));
  ASSERT_EQ(st, 202);
  const std::string id = b["task_id"];
  struct Case {
    std::string head;
    int status;
  };
  for (const Case& c : {Case{"POST /no/such/route HTTP/1.1\r\nHost: x\r\n", 404},
                        Case{"DELETE /api/v1/tasks/" + id + " HTTP/1.1\r\nHost: x\r\n", 413},
                        Case{"PUT /api/v1/tasks HTTP/1.1\r\nHost: x\r\n", 404},
                        Case{"GET /api/v1/tasks/" + id + " HTTP/1.1\r\nHost: x\r\n", 413},
                        Case{"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
                             "Content-Type: application/json\r\n",
                             413}}) {
    auto t0 = Clock::now();
    std::uint64_t sent = 0;
    bool closed = false;
    std::string r = announce_huge_body(s.http_port(), c.head, 900000000, &sent, &closed);
    EXPECT_EQ(status_of(r), c.status) << c.head << r;
    EXPECT_TRUE(is_problem(r)) << r;
    EXPECT_TRUE(closed) << c.head;
    EXPECT_LT(seconds_since(t0), 3.5) << c.head;
    EXPECT_LT(sent, 100u << 20) << c.head << ": the server read the body";
    EXPECT_LT(rss_mb(s.api().pid()) - at_start, kMaxGrowthMb)
        << c.head << "at start: " << at_start << " MB";
  }
  // The task was not cancelled by the refused DELETE.
  EXPECT_EQ(s.wait_terminal(id)["state"], "succeeded");
}

// A client that writes its whole body before it reads (cpp-httplib, curl without
// "Expect: 100-continue") reads the 413, not a connection reset: the graceful close drains a
// few MiB, not 1 MiB (Api.ErrorsAreProblemJsonWithTheRightStatus lost its 413 for a 2 MiB body
// about one run in ten).
TEST(HttpLimits, AClientThatWritesAnOversizedBodyWholeBeforeReadingReadsThe413) {
  Stack s;
  for (int i = 0; i < 5; ++i) {
    Raw c(s.http_port());
    const std::string body(8u << 20, 'a');
    const bool all = c.send(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body);
    EXPECT_TRUE(all) << "round " << i << ": the server reset the connection mid-body";
    const std::string r = c.response(5s);
    EXPECT_EQ(status_of(r), 413) << "round " << i << ": " << r;
    EXPECT_TRUE(c.closed_within(3s));
  }
}

// A body a route does not take, within the small bound, is read and ignored (the connection
// stays usable); the server answers as without it.
TEST(HttpLimits, ASmallBodyOnABodylessRouteIsIgnored) {
  Stack s;
  Raw c(s.http_port());
  c.send("GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  std::string r = c.response(1s);
  EXPECT_EQ(status_of(r), 200) << r;
  c.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  r = c.response(1s);
  EXPECT_EQ(status_of(r), 200) << r;
}

// Finding 3: a 1 MiB deeply nested JSON body cost about 100 MB to parse.
TEST(HttpLimits, ADeeplyNestedJsonBodyIs400BeforeItIsParsed) {
  Stack s;
  const double before = rss_mb(s.api().pid());
  const std::string deep = std::string(512 * 1024, '[') + std::string(512 * 1024, ']');
  ASSERT_EQ(deep.size(), 1u << 20);  // exactly --max-body: valid JSON, within the size limit
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    auto r = s.client()->Post("/api/v1/tasks", deep, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/problem+json");
    EXPECT_NE(r->body.find("deeper than 64"), std::string::npos) << r->body;
    EXPECT_LT(seconds_since(t0), 1.0);
  }
  EXPECT_LT(rss_mb(s.api().pid()) - before, 40) << "before: " << before << " MB";
  // Nesting within the limit is parsed as before.
  auto r = s.client()->Post("/api/v1/tasks", R"({"pcap_files": [[["x"]]], "output_path": "o"})",
                            "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
}

// Finding 3: a path or query that is not UTF-8 made the answer's JSON throw: 500.
TEST(HttpLimits, BadPercentEncodingOrUtf8InPathOrQueryIs400) {
  Stack s;
  for (const char* target :
       {"/api/v1/tasks/%ff", "/api/v1/tasks/%C3%28/events", "/api/v1/tasks/%zz",
        "/api/v1/tasks/abc%", "/api/v1/tasks?state=%ff", "/api/v1/tasks?input=%e2%82",
        "/api/v1/tasks?created_after=%g1", "/api/v1/tasks?%ff=1", "/api/task-status/%00"}) {
    Raw c(s.http_port());
    c.send(std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string r = c.response(2s);
    EXPECT_EQ(status_of(r), 400) << target << "\n" << r;
    EXPECT_TRUE(is_problem(r)) << target << "\n" << r;
  }
  auto r = s.client()->Get("/api/v1/tasks?input=caf%C3%A9");  // UTF-8 is fine
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Finding 8: tokens carry a role; a bare token keeps meaning "everything".
TEST(HttpLimits, TokenRolesReadSubmitAdmin) {
  StackOptions o;
  o.extra_api_args = {"--tokens", "read:r-token,submit:s-token,admin:a-token,bare-token"};
  o.require_ready_token = "r-token";
  Stack s(o);
  auto c = s.client();
  auto as = [](const std::string& token) {
    return httplib::Headers{{"Authorization", "Bearer " + token}};
  };
  const std::string task = small_task("roles.ipfix").dump();

  // No token: 401, also for an unknown route; /livez stays open.
  auto r = c->Get("/api/v1/tasks");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  r = c->Get("/no/such/route");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = c->Get("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  // read: GET routes (and /metrics); no submitting, no cancelling.
  for (const char* path : {"/api/v1/tasks", "/metrics", "/readyz", "/openapi.json"}) {
    r = c->Get(path, as("r-token"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << path;
  }
  r = c->Post("/api/v1/tasks", as("r-token"), task, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/problem+json");
  EXPECT_EQ(json::parse(r->body)["status"], 403);
  r = c->Post("/api/export-task", as("r-token"), task, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);

  // submit: read, plus submitting and cancelling.
  r = c->Post("/api/v1/tasks", as("s-token"), task, "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body)["task_id"];
  r = c->Delete("/api/v1/tasks/" + id, as("r-token"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  r = c->Delete("/api/v1/tasks/" + id, as("s-token"));
  ASSERT_TRUE(r);
  EXPECT_NE(r->status, 403);
  EXPECT_NE(r->status, 401);
  r = c->Get("/api/v1/tasks/" + id, as("s-token"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  // admin and a bare token: everything.
  for (const char* token : {"a-token", "bare-token"}) {
    r = c->Post("/api/v1/tasks", as(token), small_task(std::string(token) + ".ipfix").dump(),
                "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202) << token;
    r = c->Post("/api/v1/test/file_exporter/export_task", as(token), "", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202) << token;
    r = c->Get("/metrics", as(token));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << token;
  }
  // A wrong token is no role at all.
  r = c->Get("/api/v1/tasks", as("read:r-token"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

// Finding 8: the token is checked as soon as the header is in: a body is never read for a
// request that has no right to send it.
TEST(HttpLimits, TheTokenIsCheckedBeforeTheBodyIsRead) {
  StackOptions o;
  o.extra_api_args = {"--tokens", "read:r-token,submit:s-token"};
  o.require_ready_token = "r-token";
  Stack s(o);
  for (auto [auth, status] : {std::pair{"", 401}, {"Authorization: Bearer r-token\r\n", 403}}) {
    std::uint64_t sent = 0;
    bool closed = false;
    std::string r = announce_huge_body(
        s.http_port(),
        std::string(
            "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n") +
            auth,
        50000000, &sent, &closed);
    EXPECT_EQ(status_of(r), status) << r;
    EXPECT_TRUE(closed);
    EXPECT_LT(sent, 20u << 20) << "the server read the body";
  }
}

// Finding 3: an idle keep-alive connection held a thread for as long as it liked.
TEST(HttpLimits, IdleConnectionsAreClosedAfterTheIdleTimeout) {
  StackOptions o;
  o.extra_api_args = {"--idle-timeout", "0.5"};
  Stack s(o);
  Raw never_spoke(s.http_port());
  Raw kept_alive(s.http_port());
  auto t0 = Clock::now();
  kept_alive.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(status_of(kept_alive.response(300ms)), 200);
  EXPECT_TRUE(kept_alive.closed_within(3s));
  EXPECT_GT(seconds_since(t0), 0.4);
  EXPECT_TRUE(never_spoke.closed_within(3s));
  // A connection in use is not closed: requests 0.2 s apart keep it open past the timeout.
  Raw busy(s.http_port());
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(busy.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(status_of(busy.response(300ms)), 200) << i;
    std::this_thread::sleep_for(200ms);
  }
}

// A header or a body that arrives too slowly closes the connection.
TEST(HttpLimits, SlowHeadersAndStalledBodiesAreClosed) {
  StackOptions o;
  o.extra_api_args = {"--header-timeout", "0.5", "--body-timeout", "0.5", "--min-body-rate", "0"};
  Stack s(o);
  Raw header(s.http_port());
  header.send("GET /livez HTTP/1.1\r\nHost: x\r\n");
  Raw body(s.http_port());
  body.send(
      "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 100\r\n\r\n{\"pcap_files\"");
  auto t0 = Clock::now();
  EXPECT_TRUE(header.closed_within(3s));
  EXPECT_TRUE(body.closed_within(3s));
  EXPECT_LT(seconds_since(t0), 2.5);
  EXPECT_TRUE(s.client()->Get("/livez"));
}

// When the connection cap is reached the longest-idle connection makes room; only when none
// is idle does a newcomer get 503 with Retry-After.
TEST(HttpLimits, AtTheConnectionCapTheLongestIdleGoesElseTheNewcomerGets503) {
  StackOptions o;
  o.extra_api_args = {"--max-connections", "20"};
  Stack s(o);
  std::this_thread::sleep_for(200ms);  // the harness's own connections are gone
  std::vector<std::unique_ptr<Raw>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(std::make_unique<Raw>(s.http_port()));
    std::this_thread::sleep_for(5ms);  // in order of age
  }
  std::this_thread::sleep_for(200ms);
  {
    Raw newcomer(s.http_port());
    newcomer.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(status_of(newcomer.response(1s)), 200);
  }
  EXPECT_TRUE(idle.front()->closed_within(1s)) << "the oldest idle connection makes room";
  EXPECT_FALSE(idle.back()->closed_within(100ms));
  // Now every connection is in the middle of a request header (nothing is idle) and one more
  // takes the place the newcomer left.
  for (auto& c : idle) c->send("GET /livez HTTP/1.1\r\n");
  Raw busy(s.http_port());
  busy.send("GET /livez HTTP/1.1\r\n");
  std::this_thread::sleep_for(200ms);
  Raw newcomer(s.http_port());
  newcomer.send("GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
  bool closed = false;
  std::string r = newcomer.receive(2s, &closed);
  EXPECT_EQ(status_of(r), 503) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
  EXPECT_TRUE(is_problem(r)) << r;
  EXPECT_TRUE(closed);
}

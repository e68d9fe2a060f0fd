#include "harness.hpp"

#include <sstream>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

namespace fs = std::filesystem;

namespace ipfixweb::test {

// IPFIXWEB_TEST_BIN_DIR in the environment runs the tests against other executables (e.g.
// an older build, to see a regression test fail before its fix).
std::string bin_dir() {
  const char* env = std::getenv("IPFIXWEB_TEST_BIN_DIR");
  return env && *env ? env : IPFIXWEB_TEST_BIN_DIR;
}

std::string shared_pcaps() {
  const char* env = std::getenv("IPFIXWEB_PCAPS");
  std::string dir = env && *env ? env : IPFIXWEB_TEST_PCAPS_DIR;
  return fs::is_directory(dir) ? fs::canonical(dir).string() : "";
}

std::string test_data() { return IPFIXWEB_TEST_DATA_DIR; }

// A port below the kernel's ephemeral range (outgoing connections, e.g. ZeroMQ's, take ports
// from that range and could grab one between our check and the server's bind), never the
// same twice in one test process (three ports asked in a row could otherwise coincide), and
// bindable right now.
int free_port() {
  static std::mutex mu;
  static std::set<int> given;
  static std::mt19937 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  int lo = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> lo;
  if (lo <= 11000) lo = 32768;
  for (int tries = 0; tries < 10000; ++tries) {
    const int port = 10000 + static_cast<int>(rng() % static_cast<unsigned>(lo - 10000));
    if (given.count(port)) continue;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (!ok) continue;
    given.insert(port);
    return port;
  }
  throw std::runtime_error("no free port found");
}

nlohmann::json small_task(const std::string& output) {
  return {{"pcap_files", {"sample.pcap"}}, {"output_path", output}, {"DPI", true}};
}

nlohmann::json long_task(Stack& s, int refs, const std::string& output) {
  static const std::string made = [] {
    std::string path =
        (fs::temp_directory_path() / ("ipfixweb-test-big-" + std::to_string(::getpid()) + ".pcap"))
            .string();
    make_capture_copies(test_data() + "/sample.pcap", path, 1000);
    static struct Cleanup {
      std::string p;
      ~Cleanup() { fs::remove(p); }
    } cleanup{path};
    return path;
  }();
  nlohmann::json files = nlohmann::json::array();
  for (int i = 0; i < refs; ++i) {
    std::string name = "big-";
    name += std::to_string(i);
    name += ".pcap";
    const std::string big = s.input_dir() + "/" + name;
    // Threads of one test may make the same link at once: whoever is first wins.
    std::error_code ec;
    if (!fs::exists(big)) fs::create_hard_link(made, big, ec);
    if (ec && !fs::exists(big)) fs::copy_file(made, big, fs::copy_options::skip_existing, ec);
    files.push_back(name);
  }
  return {{"pcap_files", files}, {"output_path", output}, {"DPI", true}};
}

std::optional<std::vector<long long>> tshark_packet_counters(const std::string& ipfix_file) {
  int st = 0;
  const std::string out = run_capture("tshark -r '" + ipfix_file +
                                          "' -T fields -E occurrence=a -E aggregator=, "
                                          "-e cflow.packets 2>/dev/null",
                                      &st);
  if (st != 0) return std::nullopt;
  std::vector<long long> counters;
  std::stringstream lines(out);
  std::string line, v;
  while (std::getline(lines, line)) {
    std::stringstream vals(line);
    while (std::getline(vals, v, ','))
      if (!v.empty()) counters.push_back(std::stoll(v));
  }
  return counters;
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    if (status) *status = -1;
    return out;
  }
  std::array<char, 65536> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = ::pclose(p);
  if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

bool have_tool(const std::string& name) {
  int st = 0;
  run_capture("command -v " + name + " >/dev/null 2>&1", &st);
  return st == 0;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(poll);
  }
  return pred();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string sha256sum(const std::string& path) {
  return run_capture("sha256sum '" + path + "'").substr(0, 64);
}

long long make_capture_copies(const std::string& src, const std::string& dst, int copies) {
  char err[PCAP_ERRBUF_SIZE];
  struct Packet {
    pcap_pkthdr hdr;
    std::string data;
  };
  std::vector<Packet> packets;
  pcap_t* in = pcap_open_offline(src.c_str(), err);
  if (!in) throw std::runtime_error(err);
  int link = pcap_datalink(in);
  pcap_pkthdr* h;
  const u_char* d;
  while (pcap_next_ex(in, &h, &d) == 1)
    packets.push_back({*h, std::string(reinterpret_cast<const char*>(d), h->caplen)});
  pcap_close(in);
  pcap_t* dead = pcap_open_dead(link, 65535);
  pcap_dumper_t* out = pcap_dump_open(dead, dst.c_str());
  if (!out) throw std::runtime_error(pcap_geterr(dead));
  long long n = 0;
  for (int c = 0; c < copies; ++c) {
    for (auto& p : packets) {
      pcap_pkthdr hdr = p.hdr;
      hdr.ts.tv_sec += c * 100;  // each copy 100 s later: same flows, new records
      pcap_dump(reinterpret_cast<u_char*>(out), &hdr,
                reinterpret_cast<const u_char*>(p.data.data()));
      ++n;
    }
  }
  pcap_dump_close(out);
  pcap_close(dead);
  return n;
}

Process::Process(std::string name, std::vector<std::string> argv,
                 std::map<std::string, std::string> env, std::string log_path)
    : name_(std::move(name)), log_(std::move(log_path)) {
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Die with the test binary, whatever happens to it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    for (auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::perror("execv");
    ::_exit(127);
  }
}

Process::~Process() { stop(std::chrono::milliseconds(2000)); }

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    return false;
  }
  return true;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

void Process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || !running()) return;
  ::kill(pid_, SIGTERM);
  if (!wait(grace)) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::milliseconds(5000));
  }
}

Stack::Stack(StackOptions opts) : opts_(std::move(opts)) {
  // A server may close a connection while a client still sends (the api answers 413 to an
  // oversized body without reading it): the write then fails with EPIPE, which must not
  // kill the test process (cpp-httplib 0.11's client sends without MSG_NOSIGNAL).
  ::signal(SIGPIPE, SIG_IGN);
  std::string base = fs::temp_directory_path() / "ipfixweb-test-XXXXXX";
  std::vector<char> tmpl(base.begin(), base.end());
  tmpl.push_back('\0');
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl.data();
  fs::create_directories(input_dir());
  fs::create_directories(output_dir());
  fs::copy_file(test_data() + "/sample.pcap", input_dir() + "/sample.pcap");
  http_port_ = free_port();
  front_port_ = free_port();
  back_port_ = free_port();
  start_broker();
  for (int i = 0; i < opts_.workers; ++i) start_worker();
  start_api();
  wait_ready(opts_.workers);
}

Stack::~Stack() {
  api_.reset();
  workers_.clear();
  broker_.reset();
  // In sanitizer builds the processes report to their logs: any report fails
  // the test (a leak only shows at exit, after the test's own checks).
  for (auto& entry : fs::directory_iterator(dir_)) {
    if (entry.path().extension() != ".log") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("ERROR: AddressSanitizer") != std::string::npos ||
          line.find("ERROR: LeakSanitizer") != std::string::npos ||
          line.find("runtime error:") != std::string::npos) {
        ADD_FAILURE() << entry.path().filename().string() << ": " << line;
        break;
      }
    }
  }
  bool failed = ::testing::Test::HasFailure();
  if (failed) {
    dump_logs();
    std::cerr << "kept test data directory " << dir_ << "\n";
  } else {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

void Stack::start_broker() {
  std::vector<std::string> args = {bin_dir() + "/ipfixweb-broker",
                                   "--data-dir",
                                   dir_,
                                   "--frontend",
                                   "tcp://127.0.0.1:" + std::to_string(front_port_),
                                   "--backend",
                                   "tcp://127.0.0.1:" + std::to_string(back_port_),
                                   "--max-queue",
                                   std::to_string(opts_.max_queue),
                                   "--heartbeat",
                                   std::to_string(opts_.heartbeat)};
  args.insert(args.end(), opts_.extra_broker_args.begin(), opts_.extra_broker_args.end());
  broker_ = std::make_unique<Process>("broker", args, std::map<std::string, std::string>{},
                                      dir_ + "/broker.log");
}

Process& Stack::start_worker(const std::string& id) {
  std::string wid = id.empty() ? "w" + std::to_string(++worker_seq_) : id;
  // The same data directory as the api: the worker reads and writes beneath the same roots.
  std::vector<std::string> args = {bin_dir() + "/ipfixweb-worker",
                                   "--data-dir",
                                   dir_,
                                   "--broker",
                                   "tcp://127.0.0.1:" + std::to_string(back_port_),
                                   "--id",
                                   wid,
                                   "--slots",
                                   std::to_string(opts_.slots),
                                   "--heartbeat",
                                   std::to_string(opts_.heartbeat)};
  args.insert(args.end(), opts_.extra_worker_args.begin(), opts_.extra_worker_args.end());
  workers_.push_back(std::make_unique<Process>("worker " + wid, args,
                                               std::map<std::string, std::string>{},
                                               dir_ + "/worker-" + wid + ".log"));
  return *workers_.back();
}

void Stack::start_api() {
  std::vector<std::string> args = {bin_dir() + "/ipfixweb-api",
                                   "--data-dir",
                                   dir_,
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(http_port_),
                                   "--broker",
                                   "tcp://127.0.0.1:" + std::to_string(front_port_)};
  args.insert(args.end(), opts_.extra_api_args.begin(), opts_.extra_api_args.end());
  api_ = std::make_unique<Process>("api", args, std::map<std::string, std::string>{},
                                   dir_ + "/api.log");
}

std::unique_ptr<httplib::Client> Stack::client(bool with_token) const {
  auto c = std::make_unique<httplib::Client>("127.0.0.1", http_port_);
  if (with_token && !opts_.require_ready_token.empty())
    c->set_bearer_token_auth(opts_.require_ready_token.c_str());
  c->set_connection_timeout(2, 0);
  c->set_read_timeout(10, 0);
  return c;
}

void Stack::wait_ready(int workers, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto c = client(true);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto r = c->Get("/readyz")) {
      last = r->body;
      if (r->status == 200) {
        auto j = nlohmann::json::parse(r->body, nullptr, false);
        if (!j.is_discarded() && j["checks"]["broker"].value("workers", -1) >= workers) return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  dump_logs();
  throw std::runtime_error("stack not ready in time; last /readyz: " + last);
}

std::pair<int, nlohmann::json> Stack::submit(const nlohmann::json& body,
                                             const std::string& idempotency_key) {
  httplib::Headers h;
  if (!idempotency_key.empty()) h.emplace("Idempotency-Key", idempotency_key);
  auto r = client()->Post("/api/v1/tasks", h, body.dump(), "application/json");
  if (!r) return {0, nullptr};
  return {r->status, nlohmann::json::parse(r->body, nullptr, false)};
}

nlohmann::json Stack::get_task(const std::string& id) {
  auto r = client()->Get("/api/v1/tasks/" + id);
  if (!r) return nullptr;
  return nlohmann::json::parse(r->body, nullptr, false);
}

nlohmann::json Stack::wait_terminal(const std::string& id, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  nlohmann::json t;
  while (std::chrono::steady_clock::now() < deadline) {
    t = get_task(id);
    if (t.is_object()) {
      std::string st = t.value("state", "");
      if (st == "succeeded" || st == "failed" || st == "cancelled") return t;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "task " << id << " not finished in time; last: " << t.dump();
  return t;
}

std::vector<std::string> Stack::temporaries() const {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(output_dir()))
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      out.push_back(e.path().string());
  return out;
}

void Stack::dump_logs() const {
  for (auto& entry : fs::directory_iterator(dir_)) {
    if (entry.path().extension() != ".log") continue;
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > 20000) text = "...\n" + text.substr(text.size() - 20000);
    std::cerr << "===== " << entry.path().filename().string() << " =====\n" << text << "\n";
  }
}

}  // namespace ipfixweb::test

// Test harness: runs the real executables as child processes on loopback
// ports chosen at run time, with a fresh data directory, and always cleans
// them up (also when a test fails or the test binary dies).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace ipfixweb::test {

// Directory of the built executables (build/bin; $IPFIXWEB_TEST_BIN_DIR when set).
std::string bin_dir();
// The shared capture kit (../shared/pcaps), or "" when absent.
std::string shared_pcaps();
// tests/data in the source tree.
std::string test_data();
// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();
// Runs a shell command, returns its stdout (and exit code through *status).
std::string run_capture(const std::string& cmd, int* status = nullptr);
bool have_tool(const std::string& name);
// Checks `pred` every `poll` until it holds (true) or `timeout` passed (its last answer).
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = std::chrono::milliseconds(10));
// A file's whole content ("" when it cannot be read).
std::string read_file(const std::string& path);
// The SHA-256 of a file as lowercase hex (sha256sum(1), an oracle independent of the api's).
std::string sha256sum(const std::string& path);
// Every packet counter tshark decodes in an IPFIX file, in order (a biflow record has two,
// forward and reverse; a uniflow record one); nullopt when tshark is missing or fails.
std::optional<std::vector<long long>> tshark_packet_counters(const std::string& ipfix_file);
// Writes `copies` time-shifted copies of the capture `src` into `dst` (with
// libpcap), for tasks that take a while. Returns the packet count written.
long long make_capture_copies(const std::string& src, const std::string& dst, int copies);

// A request converting the bundled sample capture (DPI on) into `output`.
nlohmann::json small_task(const std::string& output);

// Built with AddressSanitizer (scripts/sanitize asan): everything runs many times slower, so a
// test that only needs a task to last a while can ask for less work.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

class Stack;
// A request converting a capture that takes a while: 1000 time-shifted copies of the sample
// (347,000 packets, 77 MB; roughly 0.1 s of work on this machine), made once per test run and
// hard-linked into the stack's input root `refs` times (one file twice is refused).
nlohmann::json long_task(Stack& s, int refs, const std::string& output);

class Process {
 public:
  Process(std::string name, std::vector<std::string> argv, std::map<std::string, std::string> env,
          std::string log_path);
  ~Process();  // SIGTERM, then SIGKILL after a while; always reaps
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_; }
  bool running();
  void signal(int sig);
  // Waits for exit; returns the wait status, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

 private:
  std::string name_, log_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct StackOptions {
  int workers = 2;
  int slots = 2;
  int max_queue = 64;
  double heartbeat = 0.2;  // fast fault detection in tests
  std::vector<std::string> extra_broker_args;
  std::vector<std::string> extra_worker_args;
  std::vector<std::string> extra_api_args;
  std::string require_ready_token;  // bearer token for /readyz when auth is on
};

class Stack {
 public:
  explicit Stack(StackOptions opts = {});
  ~Stack();

  const std::string& data_dir() const { return dir_; }
  std::string input_dir() const { return dir_ + "/input"; }
  std::string output_dir() const { return dir_ + "/output"; }
  std::string db_path() const { return dir_ + "/ipfixweb.db"; }
  int http_port() const { return http_port_; }
  std::string broker_frontend() const { return "tcp://127.0.0.1:" + std::to_string(front_port_); }
  std::string broker_backend() const { return "tcp://127.0.0.1:" + std::to_string(back_port_); }
  // A client for the api (with the bearer token of the options, if any, only
  // when `with_token`).
  std::unique_ptr<httplib::Client> client(bool with_token = false) const;

  void start_broker();
  Process& start_worker(const std::string& id = "");
  // Replaces the options' extra worker arguments for workers started from now on.
  void extra_worker_args_for_next(std::vector<std::string> args) {
    opts_.extra_worker_args = std::move(args);
  }
  void start_api();
  Process& broker() { return *broker_; }
  Process& api() { return *api_; }
  std::vector<std::unique_ptr<Process>>& workers() { return workers_; }

  // Waits until /readyz is 200 and `workers` workers are registered.
  void wait_ready(int workers, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // POST /api/v1/tasks; returns (status, body).
  std::pair<int, nlohmann::json> submit(const nlohmann::json& body,
                                        const std::string& idempotency_key = "");
  nlohmann::json get_task(const std::string& id);
  // Polls until the task is in a terminal state; fails the test on timeout.
  nlohmann::json wait_terminal(const std::string& id,
                               std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void dump_logs() const;
  // Lists every file under the output root whose name contains ".tmp.".
  std::vector<std::string> temporaries() const;

 private:
  StackOptions opts_;
  std::string dir_;
  int http_port_ = 0, front_port_ = 0, back_port_ = 0;
  std::unique_ptr<Process> broker_, api_;
  std::vector<std::unique_ptr<Process>> workers_;
  int worker_seq_ = 0;
};

}  // namespace ipfixweb::test

// The worker supervisor: registers with the broker, grants credit (slots),
// runs each task in its own forked child (a crash kills only that child) and
// reports progress and results. See docs/protocol.md.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::worker {

struct Config {
  std::string broker = "tcp://127.0.0.1:5562";
  std::string worker_id;    // stable id; default host-pid
  std::uint32_t slots = 0;  // concurrent tasks; 0 = number of CPUs
  double heartbeat_s = 1.0;
  int liveness = 3;
  double grace_s = 10;                // SIGTERM: let running tasks finish this long
  std::uint64_t memory_limit_mb = 0;  // per task child (RLIMIT_AS); 0 = none
  std::uint64_t cpu_limit_s = 0;      // per task child (RLIMIT_CPU); 0 = none
  std::string curve_server_key;       // CURVE: broker's public key file ("" = plain TCP)
  std::string curve_secret_key;       // CURVE: this worker's secret key file
};

class Worker {
 public:
  Worker(Config cfg, zmq::context_t& ctx);
  ~Worker();
  // Serves until `stop` is set, then drains (grace period) and returns.
  void run(const std::atomic<bool>& stop);

 private:
  struct Child {
    pid_t pid = -1;
    int fd = -1;  // read end of the child's report pipe
    std::string task_id;
    proto::TaskSpec spec;
    std::string buffer;
    std::string result;  // the child's final report line (JSON), if any
    double started = 0;
    double deadline = 0;  // monotonic; 0 = none
    double last_progress_sent = 0;
    std::string kill_reason;  // set when we killed it: "cancelled", "timeout", "shutdown"
  };

  void connect();
  void send(std::string_view type, const std::string& payload);
  void send_ready();
  void handle(const proto::Envelope& env);
  void start_task(const proto::Task& t);
  void read_child(Child& c);
  void reap(pid_t pid);
  void kill_child(Child& c, const std::string& reason);
  void run_child(const proto::Task& t, int fd);  // in the child; never returns

  Config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t& ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::optional<curve::KeyPair> curve_keys_;
  std::string curve_server_;
  engine::Engine engine_;  // nDPI initialised once; children inherit it
  std::map<pid_t, Child> children_;
  double last_heard_ = 0;
  double next_heartbeat_ = 0;
  double reconnect_delay_ = 1.0;
  std::string incarnation_;  // new for every start of this process
  // Results sent recently, sent again after every re-registration: a result
  // queued on a socket that was replaced (or sent to a broker that restarted
  // before reading it) would otherwise be lost and the task stay 'running'.
  // The broker ignores repeats.
  std::deque<std::pair<double, std::string>> recent_done_;
  bool draining_ = false;
  std::uint32_t hb_seq_ = 0;
};

}  // namespace ipfixweb::worker

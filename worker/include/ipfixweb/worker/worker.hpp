// The worker supervisor: registers with the broker, grants credit (slots),
// runs each task in a forked runner process (a crash kills only that runner and
// its task; runners are reused for many tasks and replaced when they die) and
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
#include "ipfixweb/worker/channel.hpp"

namespace ipfixweb::worker {

struct Config {
  std::string broker = "tcp://127.0.0.1:5562";
  std::string worker_id;    // stable id; default host-pid
  std::uint32_t slots = 0;  // concurrent tasks; 0 = number of CPUs
  double heartbeat_s = 1.0;
  int liveness = 3;
  double grace_s = 10;                    // SIGTERM: let running tasks finish this long
  std::uint64_t memory_limit_mb = 0;      // per task child (RLIMIT_AS); 0 = none
  std::uint64_t cpu_limit_s = 0;          // per task (RLIMIT_CPU re-armed per task); 0 = none
  std::uint32_t runner_max_tasks = 1000;  // a runner is replaced after this many tasks (0: never)
  std::string curve_server_key;           // CURVE: broker's public key file ("" = plain TCP)
  std::string curve_secret_key;           // CURVE: this worker's secret key file
};

class Worker {
 public:
  Worker(Config cfg, zmq::context_t& ctx);
  ~Worker();
  // Serves until `stop` is set, then drains (grace period) and returns.
  void run(const std::atomic<bool>& stop);

 private:
  struct Job {
    std::string task_id;
    proto::TaskSpec spec;
    double started = 0;
    double deadline = 0;  // monotonic; 0 = none
    double last_progress_sent = 0;
    std::string kill_reason;  // set when we killed its runner: "cancelled", "timeout", "shutdown"
  };
  struct Runner {
    pid_t pid = -1;
    int fd = -1;  // our end of the runner's socketpair
    channel::FrameReader in;
    std::optional<Job> job;
    bool killed = false;      // SIGKILL sent; never given another task
    std::uint32_t tasks = 0;  // tasks handed to it; at --runner-max-tasks it exits by itself
  };

  void connect();
  void send(std::string_view type, const std::string& payload);
  void send_ready();
  // `bytes`: the message as received (a task goes to its runner unchanged).
  void handle(const proto::Envelope& env, std::string_view bytes);
  void start_task(const proto::Task& t, std::string_view bytes);
  Runner* spawn_runner();
  Runner* idle_runner();
  void read_runner(pid_t pid);
  void finish_job(Runner& r, const std::string& result);  // a 'D' frame (encoded Done) arrived
  void runner_gone(pid_t pid);                            // EOF: reap, report its task
  // Sends a task's result (`payload`: d already encoded, if it was) and keeps it for resending.
  void report(const Job& job, const proto::Done& d, std::string payload = {});
  void kill_runner(Runner& r, const std::string& reason);
  std::size_t busy() const;

  Config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  zmq::context_t& ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::optional<curve::KeyPair> curve_keys_;
  std::string curve_server_;
  engine::Engine engine_;  // nDPI initialised once; runners inherit it
  std::map<pid_t, Runner> runners_;
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

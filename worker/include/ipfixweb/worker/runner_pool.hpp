// The runner pool: forks task runners on demand (each serves many tasks, one at a time),
// hands them tasks, kills them on cancel, time limit and shutdown, reaps them, and turns
// what they send (or how they ended, when they sent no result) into the worker's `progress`
// and `done` messages for the broker. It knows nothing of the broker connection.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/worker/channel.hpp"
#include "ipfixweb/worker/config.hpp"

namespace ipfixweb::worker {

// Why the worker killed a task's runner; the task's result says so.
enum class KillReason : std::uint8_t { Cancelled, Timeout, Shutdown };

}  // namespace ipfixweb::worker

namespace ipfixweb {
template <>
struct Names<worker::KillReason> {  // as logged
  static constexpr std::string_view kWhat = "kill reason";
  static constexpr std::array<std::pair<worker::KillReason, std::string_view>, 3> kTable = {{
      {worker::KillReason::Cancelled, "cancelled"},
      {worker::KillReason::Timeout, "timeout"},
      {worker::KillReason::Shutdown, "shutdown"},
  }};
};
static_assert(names_complete<worker::KillReason>());
}  // namespace ipfixweb

namespace ipfixweb::worker {

// The result of a task whose runner ended without sending one. `killed`: why the worker
// killed the runner (nullopt: it did not); `wait_status`: how the runner ended, as waitpid
// tells; `ran_s`: how long the task had run.
proto::Done result_of_lost_runner(const std::string& task_id, std::optional<KillReason> killed,
                                  int wait_status, double ran_s);

// True when a failed run's error says the output's file system was full: "No space left on
// device" (ENOSPC) or "Disk quota exceeded" (EDQUOT) as strerror words them, which the engine's
// own writes and libfixbuf's quote, or SQLite's "database or disk is full" (the flow store).
bool is_out_of_space(std::string_view error);

// The result of a run whose conversion failed with `error`: Failed, except when the output's
// file system was full, which is not the task's fault: then Aborted, with a reason that says
// so, and the broker runs the task again later (with backoff, without using an attempt; after
// --max-free-runs such runs it fails, quoting this reason).
proto::Done result_of_failed_run(const std::string& task_id, std::string error);

// The result in a runner's 'D' frame: a `done` message for `task_id`. Anything else
// (undecodable, another type, another task) is nullopt, with what was wrong in *error.
std::optional<proto::Done> read_result(std::string_view message, const std::string& task_id,
                                       std::string* error);

// Lets a task's progress through at most once per interval, the first at once.
class ProgressThrottle {
 public:
  explicit ProgressThrottle(double interval_s = channel::kProgressInterval)
      : interval_(interval_s) {}
  // True: send this one (and none before `now` + the interval).
  bool pass(double now);

 private:
  double interval_;
  std::optional<double> last_;
};

class RunnerPool {
 public:
  // Where the pool's messages for the broker go, encoded: a task's `done` (to be sent and
  // kept for resending) and its `progress`.
  struct Reports {
    std::function<void(std::string done)> result;
    std::function<void(const std::string& progress)> progress;
  };

  // `engine` is set up once and `roots` opened once; runners inherit both. Runner limits come
  // from `cfg`.
  RunnerPool(const Config& cfg, engine::Engine& engine, const confine::Roots& roots,
             Reports reports);
  ~RunnerPool();  // kills and reaps every runner left
  RunnerPool(const RunnerPool&) = delete;
  RunnerPool& operator=(const RunnerPool&) = delete;

  // Hands a task to an idle runner, forking one when none is idle; `message` is the task's
  // message as received, which the runner gets unchanged. False when no runner could be
  // started.
  bool start(const proto::Task& task, std::string_view message);
  // The runner that runs a task, if one does.
  std::optional<pid_t> runner_of(std::string_view task_id) const;
  // Kills the runner of a task; a runner is killed once, for its first reason.
  void kill(std::string_view task_id, KillReason why);
  // Kills every runner that has a task.
  void kill_all(KillReason why);
  // Kills the runners of tasks past their time limit.
  void kill_overdue(double now);

  std::size_t busy() const;  // runners with a task
  struct Held {              // a task a runner runs, and the broker's grant for it
    std::string task_id, grant;
  };
  std::vector<Held> running() const;  // their tasks

  // Polling: appends an item per runner channel; after the poll, reads those that have
  // something (their progress and results go to the Reports).
  void add_poll_items(std::vector<zmq::pollitem_t>& items);
  void read_polled(const std::vector<zmq::pollitem_t>& items);

  // Closes every channel (idle runners exit) and waits until every runner has ended.
  void close();

 private:
  struct Job {
    std::string task_id;
    std::string grant;   // echoed in its result (proto::Task::grant)
    std::string output;  // its temporary output is removed when its runner is lost
    double started = 0;
    double deadline = 0;  // monotonic; 0 = none
    ProgressThrottle progress;
    std::optional<KillReason> killed;
  };
  struct Runner {
    pid_t pid = -1;
    int fd = -1;  // our end of the runner's channel
    channel::FrameReader in;
    std::optional<Job> job;
    bool killed = false;      // SIGKILL sent; never given another task
    std::uint32_t tasks = 0;  // tasks handed to it; at --runner-max-tasks it exits by itself
  };

  Runner* idle_runner();
  Runner* spawn_runner();
  void kill_runner(Runner& r, KillReason why);
  void read_channel(pid_t pid);
  bool receive(Runner& r);                              // false: the channel closed
  void on_done(Runner& r, const std::string& message);  // a 'D' frame arrived
  void runner_gone(pid_t pid);                          // reap; report its task
  void report(const Job& job, const proto::Done& d, std::string message = {});

  Config cfg_;
  engine::Engine& engine_;
  const confine::Roots& roots_;
  Reports reports_;
  std::shared_ptr<spdlog::logger> log_;
  std::map<pid_t, Runner> runners_;
  std::size_t first_polled_ = 0;
  std::vector<pid_t> polled_;  // polled_[i] owns item first_polled_ + i
};

}  // namespace ipfixweb::worker

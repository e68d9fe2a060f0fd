// The broker: the only writer of the task database, the admission controller
// and the credit-based dispatcher between api clients and workers.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::broker {

struct Config {
  std::string frontend = "tcp://127.0.0.1:5561";  // api clients (ROUTER bind)
  std::string backend = "tcp://127.0.0.1:5562";   // workers (ROUTER bind)
  std::string db_path = "var/ipfixweb.db";
  std::string synchronous = "FULL";
  std::uint32_t max_queue = 64;  // tasks waiting beyond granted credit
  double heartbeat_s = 1.0;
  int liveness = 3;           // missed heartbeats before a worker is dead
  int max_attempts = 3;       // dispatches per task before it fails
  double task_timeout_s = 0;  // passed to workers; 0 = none
  // How long worker-side changes (dispatches, results) may wait in an open transaction for
  // more to commit with them. Replies to clients never wait: they go out after a commit.
  double commit_interval_s = 0.005;
  double orphan_grace_s = 0;     // after a restart, wait this long for workers to claim
                                 // running tasks (0: heartbeat * liveness * 2)
  std::string task_log_dir;      // successful_tasks.jsonl / failed_tasks.jsonl; "" = none
  std::string curve_secret_key;  // CURVE: the broker's secret key file ("" = plain TCP)
  std::string curve_authorized;  // CURVE: authorised client public keys (file or dir of *.pub)
};

class Broker {
 public:
  Broker(Config cfg, zmq::context_t& ctx);
  ~Broker();
  // Runs until `stop` becomes true. Never throws for peer misbehaviour.
  void run(const std::atomic<bool>& stop);

 private:
  struct Pending {  // a task waiting for credit
    std::string id;
    int priority = 0;
    std::int64_t seq = 0;
    int attempts = 0;  // dispatches so far
    // The worker of the last dispatch counted in `attempts` and recorded in the database
    // ("" when none or unknown): a claim by that worker of its own run counts nothing new.
    std::string counted_worker;
    proto::TaskSpec spec;
  };
  struct Running {
    Pending task;
    std::string worker;  // routing id; empty while orphaned after a restart
    double since = 0;    // monotonic
    double orphan_deadline = 0;
    bool cancel_requested = false;
  };
  struct Worker {
    std::string identity;
    std::uint32_t slots = 0;
    std::set<std::string> running;
    double last_seen = 0;
    std::string host;
    std::int64_t pid = 0;
    std::string incarnation;
    std::uint32_t credit() const {
      return slots > running.size() ? slots - static_cast<std::uint32_t>(running.size()) : 0;
    }
  };
  struct Outgoing {
    zmq::socket_t* sock;
    std::string identity;
    std::string payload;
    std::string task_id;  // for backend task sends: re-queue on failure
  };

  // The submissions read in one iteration, single or in batches, in arrival
  // order; handled together (one transaction) by process_submits.
  struct Submissions {
    static constexpr std::size_t kSingle = static_cast<std::size_t>(-1);
    std::vector<proto::Submit> submits;
    std::vector<std::string> identities;  // per submit: who asked
    std::vector<std::size_t> batch_of;    // per submit: index in batches, or kSingle
    std::vector<proto::SubmitBatchReply> batches;
    std::vector<std::string> batch_identities;
    void clear();
  };

  void recover();
  void iteration(const std::atomic<bool>& stop);
  void handle_frontend(const std::string& identity, const proto::Envelope& env, Submissions& subs);
  void handle_backend(const std::string& identity, const proto::Envelope& env);
  void process_submits(Submissions& subs);
  std::optional<std::int64_t> record_submission(const proto::Submit& s, const std::string& now,
                                                proto::SubmitReply& r);
  void dispatch();
  void check_liveness();
  // Re-queues what it was assigned. `count_attempts` false when the worker left in order
  // (bye): what it still had then never reached it, which is not the task's fault.
  void lose_worker(const std::string& identity, const std::string& why, bool count_attempts = true);
  // Puts a task back in the queue after a failure not its own, or fails it
  // when it has used up its attempts.
  void retry_or_fail(Running r, const std::string& why);
  void finish(const std::string& id, TaskState st, const std::string& summary,
              const std::string& error, const std::string& reason,
              const proto::Done* done = nullptr);
  void enqueue(Pending p);
  std::optional<Pending> take_queued(const std::string& id);
  // A worker's ready claims p's run: recorded (one more attempt) unless it is the dispatch
  // the database counts already.
  void claim(Pending& p, const std::string& identity);  // out of the queue, if there
  void flush(bool force = false);  // sends what is waiting; commits when due (or forced)
  void write_tx();                 // opens the iteration's transaction if not yet open
  std::uint32_t total_slots() const;
  std::uint32_t total_credit() const;
  double retry_after() const;

  Config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  TaskStore store_;
  std::unique_ptr<curve::Authenticator> auth_;
  zmq::socket_t front_, back_;
  std::multimap<std::pair<int, std::int64_t>, Pending> queue_;  // (-priority, seq)
  std::unordered_map<std::string, Running> running_;
  std::unordered_map<std::string, Worker> workers_;
  std::vector<Outgoing> out_;
  Submissions subs_;  // reused every iteration (keeps its capacity)
  // Prepared once: a savepoint per submission costs a parse with exec().
  db::Statement sp_begin_, sp_release_, sp_rollback_;
  std::unique_ptr<db::Transaction> tx_;
  double tx_opened_ = 0;  // when tx_ began (monotonic seconds)
  std::size_t rr_ = 0;    // round-robin offset among equally loaded workers
  double next_heartbeat_ = 0;
  std::uint32_t hb_seq_ = 0;
  bool draining_ = false;
  double avg_task_s_ = 1.0;  // moving average of task durations, for Retry-After
  void log_completion(const std::string& id, TaskState st, const std::string& error,
                      const proto::Done* done, const TaskStore::Finished& row);
  void write_completions();  // after a commit: appends the lines of the tasks it finished
  std::string completed_ok_, completed_failed_;  // JSONL lines waiting for the commit
  // The two completion logs, kept open in append mode and reopened every second (so a
  // log rotated by renaming is followed without a reopen per write).
  struct AppendFile {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp{nullptr, &std::fclose};
    double opened = 0;
  };
  AppendFile completed_ok_file_, completed_failed_file_;
  // Statistics since start, reported in pongs (the api's /metrics).
  std::uint64_t n_succeeded_ = 0, n_failed_ = 0, n_cancelled_ = 0, n_requeued_ = 0;
  std::vector<std::uint64_t> durations_ =
      std::vector<std::uint64_t>(std::size(proto::kDurationBuckets) + 1, 0);
  double duration_sum_ = 0;
};

}  // namespace ipfixweb::broker

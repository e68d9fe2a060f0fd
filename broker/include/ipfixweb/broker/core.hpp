// The broker's decisions, apart from sockets, SQLite and clocks: which submissions are
// admitted, which worker runs which task, and what a result, a cancel, a lost worker or a
// restart does to a task. Events go in with the time they happen (monotonic seconds, passed
// by the caller); effects come out as plain data that the shell (broker.cpp) performs:
// records to write in the iteration's transaction, messages to send after it commits.
// What the core must ask the database while it decides goes through `Records`.
// The rules, one by one: docs/broker.md; their tests: tests/unit/test_broker_core.cpp.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

#include "ipfixweb/broker/settings.hpp"
#include "ipfixweb/broker/statistics.hpp"
#include "ipfixweb/shared/grant.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb::broker {

// ---- What the core asks the database -------------------------------------------------
// The shell implements it on the TaskStore, tests in memory. Called only from recover(),
// admit() and cancel(), after the writes of earlier events were performed.
class Records {
 public:
  struct Keyed {  // the task that holds an idempotency key
    std::string task_id, fingerprint;
    TaskState state = TaskState::Queued;
  };
  struct Inserted {
    std::string task_id;
    std::int64_t seq = 0;  // insertion order (dispatch order within a priority)
    std::string error;     // not empty: nothing was recorded, and this is why
  };
  virtual ~Records() = default;
  virtual std::optional<Keyed> find_by_key(const std::string& key) = 0;
  // The state of a task the core holds no more (nullopt: no such task).
  virtual std::optional<TaskState> state_of(const std::string& task_id) = 0;
  // Records a new queued task in a savepoint of its own: a failure records nothing and
  // leaves the other submissions of the batch alone.
  virtual Inserted insert(const proto::Submit& s) = 0;
  // Records a split task (`s`, split into parts.size() parts) and its parts (their specs), in
  // one savepoint: all of them or, on failure, none. `part_rows` gets each part's row.
  virtual Inserted insert_split(const proto::Submit& s, const std::vector<proto::TaskSpec>& parts,
                                std::vector<Inserted>& part_rows) = 0;
  // The parts of split task `parent` in part order (recover()).
  struct PartRow {
    std::string task_id;
    TaskState state = TaskState::Queued;
    double progress = 0;
    std::string error;
  };
  virtual std::vector<PartRow> parts_of(const std::string& parent) = 0;
  // The newest queued, running or succeeded task writing or having written `output`.
  struct Owner {
    std::string task_id;
    TaskState state = TaskState::Queued;
  };
  virtual std::optional<Owner> output_owner(const std::string& output) = 0;
};

// ---- Effects ---------------------------------------------------------------------------
// Records to write, in order (TaskStore's writes of the same names).
namespace write {
struct SetRunning {
  std::string task_id, worker;
  int attempt = 0;
  std::string reason;  // "": "dispatched (attempt N)"
};
struct SetProgress {
  std::string task_id;
  double progress = 0;
};
// A terminal state; also the task's completion-log entry (the shell writes its line with
// the row the finish returns, after the commit).
struct Finish {
  struct Totals {
    std::uint64_t packets = 0, bytes = 0, flows = 0;
  };
  std::string task_id;
  TaskState state = TaskState::Failed;
  std::string summary, error, reason;
  std::optional<Totals> totals;        // a success reported by a worker: the summary's totals
  std::optional<FileIdentity> output;  // the file a success wrote, when the worker said
  // Not a success, of a task that was dispatched: its output path. A run whose result never
  // arrived (its worker was lost right after it renamed its output into place) may have left
  // a whole file there; the shell removes it if it is newer than the task (docs/broker.md).
  std::string unrecorded_output;
  bool unrecorded_partition = false;  // it is a flow partition's: its summary goes with it
  // A split task's end, whatever its state: the outputs its parts wrote (and their flow stores
  // and summaries), removed once the finish is committed.
  std::vector<std::string> part_outputs;
};
struct Requeue {
  std::string task_id;
  int attempts = 0;  // dispatches that count
  std::string reason;
};
}  // namespace write
using Write = std::variant<write::SetRunning, write::SetProgress, write::Finish, write::Requeue>;

// "The broker does not know you: send ready again" (the wire's `reregister`).
struct Reregister {};
using ToWorker = std::variant<proto::Task, proto::Abort, proto::Heartbeat, Reregister>;
using ToClient =
    std::variant<proto::SubmitReply, proto::SubmitBatchReply, proto::Pong, proto::CancelReply>;

template <class Message>
struct Addressed {
  std::string to;  // routing id of the worker or client
  Message message;
};

// The output of a part of a split task that ended, published late by a run the broker had given
// up (its worker was lost, the part ran again elsewhere, the task merged and ended): the shell
// removes it at once, only while it is that run's file (inode and size as its result says),
// with its flow store and summary (docs/broker.md, Split tasks).
struct LatePartOutput {
  std::string task_id;  // the split task
  std::string path;
  FileIdentity file;
};

// What the core asks the shell to do. The shell performs the writes before it hands the
// core its next event, and sends the messages once the writes are committed (or, for
// worker messages, when it sends without committing; see broker.cpp). Reused (clear() keeps
// the capacity).
struct Effects {
  std::vector<Write> writes;
  std::vector<Addressed<ToWorker>> to_workers;
  std::vector<Addressed<ToClient>> to_clients;
  std::vector<LatePartOutput> late_part_outputs;
  void clear() {
    writes.clear();
    to_workers.clear();
    to_clients.clear();
    late_part_outputs.clear();
  }
};

// The submissions read in one iteration, single or in batches, in arrival order; admitted
// together by Core::admit (in one transaction). Reused every iteration.
struct Submissions {
  static constexpr std::size_t kSingle = static_cast<std::size_t>(-1);
  std::vector<proto::Submit> submits;
  std::vector<std::string> identities;  // per submit: who asked
  std::vector<std::size_t> batch_of;    // per submit: index in batches, or kSingle
  std::vector<proto::SubmitBatchReply> batches;
  std::vector<std::string> batch_identities;

  void add(const std::string& client, proto::Submit s);
  void add_batch(const std::string& client, proto::SubmitBatch b);
  bool empty() const { return submits.empty(); }
  void clear();
};

class Core {
 public:
  // `log` may be null (nothing is logged).
  Core(Settings settings, Records& records, std::shared_ptr<spdlog::logger> log = nullptr);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // At start: the database's queued and running tasks in dispatch order
  // (TaskStore::unfinished). Running ones are orphans until a worker claims them or
  // orphan_grace_s passes.
  void recover(std::vector<TaskRecord> unfinished, double now, Effects& fx);

  // ---- clients ----
  void admit(Submissions& subs, Effects& fx);  // moves the submissions' specs
  void cancel(const std::string& client, const proto::Cancel& c, Effects& fx);
  void ping(const std::string& client, const proto::Ping& p, double now, Effects& fx);

  // ---- workers ----
  // Any message from a worker: false (and a Reregister to it) when the worker is unknown.
  // done(), progress() and bye() do this first themselves.
  bool seen(const std::string& worker, double now, Effects& fx);
  void ready(const std::string& worker, const proto::Ready& r, double now, Effects& fx);
  void progress(const std::string& worker, const proto::ProgressMsg& p, double now, Effects& fx);
  void done(const std::string& worker, proto::Done d, double now, Effects& fx);
  void bye(const std::string& worker, double now, Effects& fx);
  // A send to the worker failed: it is gone.
  void unreachable(const std::string& worker, Effects& fx);

  // ---- time ----
  // Workers silent for heartbeat_s * liveness are lost; orphans past their grace go back to
  // the queue.
  void expire(double now, Effects& fx);
  // Hands queued tasks to workers with credit.
  void dispatch(double now, Effects& fx);
  // A heartbeat to every worker.
  void heartbeat(Effects& fx);

  // While draining, every submission is refused and nothing is dispatched.
  void set_draining(bool on) { draining_ = on; }
  // While storage is short (`why` not empty: the reason given), every submission is refused
  // `storage`; the rest goes on (reads, results, dispatch of what was accepted).
  void set_storage_short(std::string why) { storage_short_ = std::move(why); }

  // ---- observation ----
  std::size_t queued() const { return queue_.size(); }
  std::size_t running() const { return running_.size(); }
  std::size_t workers() const { return workers_.size(); }
  std::size_t splits() const { return splits_.size(); }  // split tasks not finished
  bool knows(const std::string& worker) const { return workers_.count(worker) > 0; }
  std::uint32_t slots() const;
  std::uint32_t credit() const;
  const Statistics& statistics() const { return stats_; }

 private:
  struct Pending {  // a task waiting for credit
    std::string id;
    int priority = 0;
    std::int64_t seq = 0;
    int attempts = 0;            // dispatches so far
    int free_runs = 0;           // runs that ended without a result of their own (uncount_run)
    bool last_run_free = false;  // the last run was one of them (its retry may wait)
    bool ran_before = false;     // dispatched before (its runs may have left temporaries)
    double not_before = 0;       // not dispatched before this (backoff after lost runs)
    // The worker of the last dispatch counted in `attempts` and recorded in the database
    // ("" when none or unknown): a claim by that worker of its own run counts nothing new.
    std::string counted_worker;
    proto::TaskSpec spec;
    // A run on `worker` counts one more attempt.
    void count_run(const std::string& worker) {
      ++attempts;
      counted_worker = worker;
      last_run_free = false;
      ran_before = true;
    }
    // The last run ended for a reason not the task's own: it does not count (up to
    // Settings::max_free_runs times; retry_or_fail checks).
    void uncount_run() {
      --attempts;
      ++free_runs;
      counted_worker.clear();
      last_run_free = true;
    }
  };
  struct Running {
    Pending task;
    std::string worker;  // routing id; empty while orphaned after a restart
    double since = 0;
    double orphan_deadline = 0;
    bool cancel_requested = false;
    std::string cancel_reason;  // with cancel_requested: what the event says
  };
  // A task split into parts ("parallelism", split.hpp): its parts are ordinary tasks in the
  // queue; the task itself waits here until they all succeeded, then runs as their merge.
  struct Split {
    std::string output;  // the task's
    std::uint32_t parts = 0;
    std::vector<std::string> part_ids;  // in part order
    std::vector<double> progress;       // of each part
    std::uint32_t succeeded = 0;
    bool started = false;  // recorded running (its first part was dispatched)
    bool merging = false;  // queued or running as the merge (`merge` moved to the queue)
    Pending merge;         // the task, with merge_spec(); held until merging
  };
  struct PartOf {
    std::string parent;
    std::uint32_t index = 0;
  };
  struct Worker {
    std::string identity;
    std::uint32_t slots = 0;
    std::set<std::string> running;
    double last_seen = 0;
    std::string host;
    std::int64_t pid = 0;
    std::string incarnation;
    std::uint32_t connection = 0;  // of the incarnation's last ready (proto::Ready::connection)
    std::uint32_t credit() const {
      return slots > running.size() ? slots - static_cast<std::uint32_t>(running.size()) : 0;
    }
  };
  using BatchKeys = std::unordered_map<std::string, std::pair<std::string, std::string>>;

  proto::SubmitReply admit_one(proto::Submit& s, std::size_t& in_system, std::size_t capacity);
  // Records an admitted submission and queues it (a split task: its parts), filling `r`.
  void record(proto::Submit& s, proto::SubmitReply& r, std::size_t& in_system);
  // recover(): a task recorded running waits for its worker to claim it (an orphan).
  void hold_orphan(Pending p, double now);
  // recover() for split tasks, after their parts were recovered like any task.
  // `unreadable`: tasks recover() failed for an unreadable spec (their rows still say
  // otherwise until the writes are performed).
  void recover_split(const TaskRecord& rec, Pending task,
                     const std::unordered_set<std::string>& unreadable, double now, Effects& fx);
  // A part of a split task ended (finish()): the task merges, or fails with it.
  void part_ended(const PartOf& part, TaskState st, const std::string& why, Effects& fx);
  // The task's progress from its parts' (until its merge runs).
  void split_progress(const std::string& id, const Split& sp, Effects& fx);
  // A part is dispatched or claimed: its split task is running from then on.
  void part_started(const std::string& part_id, Effects& fx);
  // Ends a queued or orphaned task at once (Ended), or asks its worker to stop it (Stopping: it
  // ends when the worker reports); NotHeld when the broker does not hold it.
  enum class Stopped { NotHeld, Ended, Stopping };
  Stopped stop(const std::string& id, const std::string& reason, Effects& fx);
  // Why a submission from the frontend cannot be accepted ("" when it can).
  std::string invalid(const proto::Submit& s) const;
  // True when `presented` is the grant of task `id` on `worker` (logged when not).
  bool granted(const std::string& id, const std::string& worker, const std::string& presented);
  // The reply for a submission whose idempotency key is taken already, if it is.
  std::optional<proto::SubmitReply> idempotent_reply(const proto::Submit& s);
  void enqueue(Pending p);
  std::optional<Pending> take_queued(const std::string& id);
  Worker* least_loaded();
  // A worker's ready claims p's run: recorded (one more attempt) unless it is the dispatch
  // the database counts already.
  void claim(Pending& p, const std::string& worker, Effects& fx);
  void take_claimed(Worker& w, const std::string& id, const std::string& grant, double now,
                    Effects& fx);
  Worker* known(const std::string& worker, double now, Effects& fx);  // see seen()
  void settle(Running r, proto::Done& d, const std::string& worker, Effects& fx);
  void finish(const std::string& id, TaskState st, std::string summary, std::string error,
              std::string reason, Effects& fx, std::optional<write::Finish::Totals> totals = {},
              std::optional<FileIdentity> output = {}, std::string unrecorded_output = {},
              bool unrecorded_partition = false);
  // Why `s` may not write its output ("" when it may): a live task writes it, or a succeeded
  // one wrote it and the request does not say `overwrite`.
  std::string output_taken(const proto::Submit& s);
  // Puts a task back in the queue after a failure not its own, or fails it when it has used
  // up its attempts.
  void retry_or_fail(Running r, const std::string& why, Effects& fx);
  // finish() for a failure or cancel of `p`, naming its output when it ever ran.
  void end_unsuccessful(const Pending& p, TaskState st, std::string summary, std::string error,
                        std::string reason, Effects& fx);
  void drop_unclaimed(Worker& w, const std::map<std::string, std::string>& claimed,
                      const std::string& why, Effects& fx);
  // Re-queues what it was assigned, using none of its tasks' attempts: a worker that left
  // (bye), went silent or became unreachable is the infrastructure's loss, not the task's
  // (each task runs in a runner of its own: a task that crashes its runner is reported as
  // such and counts). Such runs count against Settings::max_free_runs instead, with backoff.
  void lose_worker(const std::string& identity, const std::string& why, Effects& fx);
  double retry_after() const;
  // Tasks the broker holds at most (running and queued): admission refuses beyond.
  std::size_t capacity() const;
  void expire_overdue(double now, Effects& fx);
  // How long past --task-timeout a run may go unreported before the broker gives up on it.
  double overdue_slack() const;

  Settings settings_;
  Records& records_;
  std::shared_ptr<spdlog::logger> log_;
  grant::Signer signer_;
  std::multimap<std::pair<int, std::int64_t>, Pending> queue_;  // (-priority, seq)
  std::unordered_map<std::string, Running> running_;
  std::unordered_map<std::string, Worker> workers_;
  std::unordered_map<std::string, Split> splits_;    // by task id
  std::unordered_map<std::string, PartOf> part_of_;  // part id -> its split task (until it ends)
  // Part id -> its split task, while the task lives (parts ended included): a cancel of a part
  // is its task's, and a succeeded part's output is not anyone else's until the task ended.
  std::unordered_map<std::string, std::string> split_parts_;
  // The parts of split tasks that ended, the latest kEndedPartsKept: a late success of one
  // (its worker was given up) names a file nobody owns any more (LatePartOutput).
  struct EndedPart {
    std::string task_id;  // the split task
    std::string output;
  };
  static constexpr std::size_t kEndedPartsKept = 1u << 16;
  std::unordered_map<std::string, EndedPart> ended_parts_;
  std::deque<std::string> ended_order_;  // oldest first
  std::vector<Worker*> order_;           // dispatch's scratch: the workers in round-robin order
  BatchKeys batch_keys_;  // admit's scratch: key -> (task id, fingerprint); spares lookups
  std::unordered_map<std::string, std::string> batch_outputs_;  // admit's scratch: output -> task
  std::size_t rr_ = 0;  // round-robin offset among equally loaded workers
  double clock_ = 0;    // the latest `now` the core was given (for backoffs)
  std::uint32_t hb_seq_ = 0;
  bool draining_ = false;
  std::string storage_short_;
  Statistics stats_;
};

}  // namespace ipfixweb::broker

// Durable task state in SQLite. The broker is the only writer (TaskStore opened
// ReadWrite); the api opens the same file ReadOnly, one connection per thread.
// Schema and example queries: docs/schema.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ipfixweb/shared/sqlite.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb {

// Which file a task wrote: recorded at its finish, checked by downloads.
struct FileIdentity {
  std::int64_t inode = 0;
  std::int64_t size = 0;
  bool operator==(const FileIdentity&) const = default;
};

struct TaskRecord {
  std::int64_t seq = 0;
  std::string id;
  TaskState state = TaskState::Queued;
  std::string request;  // the user's request (JSON text)
  std::string spec;     // resolved TaskSpec (JSON text)
  std::string idempotency_key;
  std::string fingerprint;
  int priority = 0;
  std::string created_at, queued_at, started_at, finished_at;
  int attempts = 0;
  std::string worker;
  double progress = 0;
  std::string output_path;
  std::string summary;  // JSON text
  std::string error;
  std::optional<FileIdentity> output_file;  // of a succeeded task (none: unknown)
  std::string parent_id;  // a part of a split task: the task it is part of (version 4)
  int parts = 0;          // a split task: into how many parts (0: not split)
};

struct TaskEvent {
  std::int64_t id = 0;
  std::string task_id;
  std::string at;
  TaskState state = TaskState::Queued;
  std::string reason;
  std::string worker;
};

struct TaskFilter {
  std::optional<TaskState> state;  // exact state, none: any
  std::string created_after;       // ISO time, exclusive
  std::string created_before;      // ISO time, exclusive
  std::string input;               // substring of an input file name
  std::int64_t before_seq = 0;     // cursor: only tasks with seq < this (0: none)
  std::string parent;              // the parts of this split task; empty: no parts at all
  int limit = 50;
};

class TaskStore {
 public:
  static constexpr int kSchemaVersion = 4;
  // The WAL file is cut back to this size whenever it starts over after a complete checkpoint
  // (PRAGMA journal_size_limit). In steady work it stays near SQLite's autocheckpoint point
  // (1000 pages, about 4 MiB); a reader holding one transaction open for minutes lets it
  // grow (checkpoints cannot pass the reader's snapshot) and this is what it shrinks back to
  // once the reader is gone (docs/schema.md, "The WAL and long readers").
  static constexpr long long kWalSizeLimit = 16ll << 20;
  enum class Sync { Off, Normal, Full, Extra };
  static Sync parse_sync(const std::string& s);  // throws std::invalid_argument

  // Writer: creates the file and migrates the schema. Read-only: expects a
  // migrated database (throws db::Error otherwise).
  static TaskStore open_writer(const std::string& path, Sync sync = Sync::Full);
  static TaskStore open_reader(const std::string& path);

  TaskStore(TaskStore&&) = default;

  db::Database& db() { return db_; }

  // ---- writes (broker only); call inside a db::Transaction ----
  struct NewTask {
    std::string id, request, spec, idempotency_key, fingerprint, output_path;
    int priority = 0;
    std::string parent_id;  // a part: its split task
    int parts = 0;          // a split task: its number of parts
  };
  // Returns the task's seq (insertion order).
  std::int64_t insert(const NewTask& t, const std::string& now);
  // The event's reason defaults to "dispatched (attempt N)".
  void set_running(const std::string& id, const std::string& worker, int attempt,
                   const std::string& now, const std::string& reason = "");
  void set_progress(const std::string& id, double progress);
  // What a finished task's completion record needs from its row, read by the same statement
  // that finishes it.
  struct Finished {
    std::string request, created_at, started_at, worker, output_path;
    int attempts = 0;
  };
  // nullopt when no task has that id.
  std::optional<Finished> finish(const std::string& id, TaskState state, const std::string& summary,
                                 const std::string& error, const std::string& reason,
                                 const std::string& now,
                                 std::optional<FileIdentity> output = std::nullopt);
  // Back to the queue; `attempts` is the number of dispatches that count.
  void requeue(const std::string& id, int attempts, const std::string& reason,
               const std::string& now);
  void add_event(const std::string& id, TaskState state, const std::string& reason,
                 const std::string& worker, const std::string& now);
  // Retention: deletes a finished task and its events (nothing when it is not finished).
  void remove(const std::string& id);

  // ---- reads ----
  std::optional<TaskRecord> get(const std::string& id);
  std::optional<TaskRecord> find_by_key(const std::string& idempotency_key);
  std::vector<TaskRecord> list(const TaskFilter& f);
  std::vector<TaskEvent> events(const std::string& id);
  // Every task's events with after < id <= upto, in order, at most `limit` (live streams).
  std::vector<TaskEvent> events_between(std::int64_t after, std::int64_t upto, int limit);
  std::int64_t last_event_id();  // 0 when there is none
  struct Progress {
    std::string id;
    double progress = 0;
  };
  std::vector<Progress> running_progress();  // of the running tasks
  std::vector<TaskRecord> unfinished();      // queued and running, in dispatch order
  std::vector<TaskRecord> parts_of(const std::string& parent_id);  // in part order
  std::map<TaskState, std::int64_t> count_by_state();
  // The newest queued, running or succeeded task whose output is `output_path`.
  struct Owner {
    std::string task_id;
    TaskState state = TaskState::Queued;
  };
  std::optional<Owner> output_owner(const std::string& output_path);
  // Finished tasks that finished before `before` (ISO time), oldest first, at most `limit`.
  std::vector<TaskRecord> finished_before(const std::string& before, int limit);
  // The ids of split tasks (parts > 0) that finished within `window_s` seconds before the
  // latest finished_at of any task, the latest first, at most `limit`.
  std::vector<std::string> splits_ended_last(double window_s, int limit);

 private:
  explicit TaskStore(db::Database db);
  void prepare();
  static TaskRecord read_row(const db::Statement& st);

  db::Database db_;
  db::Statement insert_, insert_event_, set_running_, set_progress_, finish_, requeue_, get_,
      by_key_, events_, unfinished_, counts_, output_owner_, finished_before_, remove_events_,
      remove_, events_between_, last_event_, running_progress_, parts_of_, splits_ended_last_;
};

}  // namespace ipfixweb

#include "ipfixweb/shared/store.hpp"

#include <sqlite3.h>

#include <stdexcept>

namespace ipfixweb {

namespace {

// A state read from the database; the schema's CHECK admits only the vocabulary's names.
TaskState state_column(const db::Statement& st, int col) {
  const std::string text = st.col_text(col);
  if (auto s = parse_name<TaskState>(text)) return *s;
  throw db::Error("unknown task state '" + text + "' in the database", 0);
}

constexpr const char* kColumns =
    "seq, id, state, request, spec, idempotency_key, fingerprint, priority, created_at, "
    "queued_at, started_at, finished_at, attempts, worker, progress, output_path, summary, error, "
    "output_inode, output_size, parent_id, parts";

// Each entry migrates the schema from version i to i+1. Never edit a shipped
// entry: append a new one.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE tasks (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  id              TEXT    NOT NULL UNIQUE,
  state           TEXT    NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
  request         TEXT    NOT NULL,
  spec            TEXT    NOT NULL,
  idempotency_key TEXT    UNIQUE,
  fingerprint     TEXT,
  priority        INTEGER NOT NULL DEFAULT 0,
  created_at      TEXT    NOT NULL,
  queued_at       TEXT,
  started_at      TEXT,
  finished_at     TEXT,
  attempts        INTEGER NOT NULL DEFAULT 0,
  worker          TEXT,
  progress        REAL    NOT NULL DEFAULT 0,
  output_path     TEXT,
  summary         TEXT,
  error           TEXT
);
CREATE INDEX tasks_state ON tasks(state, seq);
CREATE TABLE task_events (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id  TEXT NOT NULL REFERENCES tasks(id),
  at       TEXT NOT NULL,
  state    TEXT NOT NULL,
  reason   TEXT,
  worker   TEXT
);
CREATE INDEX task_events_task ON task_events(task_id, id);
)sql",
    // 1 -> 2: request and summary are spliced into answers as they are; rows written before
    // the broker checked them (issue 12) may hold text that is not a JSON object. Keep such
    // a request as a string inside an object, drop such a summary.
    R"sql(
UPDATE tasks SET request = json_object('unreadable_request', request)
  WHERE NOT json_valid(request) OR json_type(request) <> 'object';
UPDATE tasks SET summary = NULL
  WHERE summary IS NOT NULL AND summary <> ''
    AND (NOT json_valid(summary) OR json_type(summary) <> 'object');
)sql",
    // 2 -> 3: an output belongs to its task. Who owns a path (tasks_output), and which file
    // the task wrote (inode and size at its finish), so a download never serves a file
    // another task put in its place.
    R"sql(
ALTER TABLE tasks ADD COLUMN output_inode INTEGER;
ALTER TABLE tasks ADD COLUMN output_size INTEGER;
CREATE INDEX tasks_output ON tasks(output_path, seq);
CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
)sql",
    // 3 -> 4: split tasks ("parallelism"). A part names the task it is part of; the parent
    // says into how many parts it was split.
    R"sql(
ALTER TABLE tasks ADD COLUMN parent_id TEXT;
ALTER TABLE tasks ADD COLUMN parts INTEGER;
CREATE INDEX tasks_parent ON tasks(parent_id, seq) WHERE parent_id IS NOT NULL;
)sql",
};

}  // namespace

TaskStore::Sync TaskStore::parse_sync(const std::string& s) {
  if (s == "OFF" || s == "off") return Sync::Off;
  if (s == "NORMAL" || s == "normal") return Sync::Normal;
  if (s == "FULL" || s == "full") return Sync::Full;
  if (s == "EXTRA" || s == "extra") return Sync::Extra;
  throw std::invalid_argument("synchronous must be OFF, NORMAL, FULL or EXTRA, not '" + s + "'");
}

TaskStore::TaskStore(db::Database db) : db_(std::move(db)) {}

TaskStore TaskStore::open_writer(const std::string& path, Sync sync) {
  db::Database db(path, db::Database::Mode::ReadWriteCreate);
  db.exec("PRAGMA journal_mode=WAL");
  db.exec("PRAGMA journal_size_limit=" + std::to_string(kWalSizeLimit));
  static const char* const kSyncNames[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
  db.exec(std::string("PRAGMA synchronous=") + kSyncNames[static_cast<int>(sync)]);
  db.exec("PRAGMA foreign_keys=ON");
  auto version = static_cast<int>(db.scalar_int("PRAGMA user_version"));
  constexpr int kKnown = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);
  static_assert(kKnown == kSchemaVersion, "one migration per schema version");
  if (version > kKnown)
    throw db::Error("database schema version " + std::to_string(version) +
                        " is newer than this program's (" + std::to_string(kKnown) + ")",
                    0);
  for (int v = version; v < kKnown; ++v) {
    db::Transaction tx(db);
    db.exec(kMigrations[v]);
    db.exec("PRAGMA user_version=" + std::to_string(v + 1));
    tx.commit();
  }
  TaskStore store(std::move(db));
  store.prepare();
  return store;
}

TaskStore TaskStore::open_reader(const std::string& path) {
  db::Database db(path, db::Database::Mode::ReadOnly);
  auto version = db.scalar_int("PRAGMA user_version");
  if (version != kSchemaVersion)
    throw db::Error("database " + path + " has schema version " + std::to_string(version) +
                        ", expected " + std::to_string(kSchemaVersion),
                    0);
  TaskStore store(std::move(db));
  store.prepare();
  return store;
}

void TaskStore::prepare() {
  const std::string cols = kColumns;
  get_ = db::Statement(db_, "SELECT " + cols + " FROM tasks WHERE id = ?1");
  by_key_ = db::Statement(db_, "SELECT " + cols + " FROM tasks WHERE idempotency_key = ?1");
  events_ = db::Statement(
      db_,
      "SELECT id, task_id, at, state, reason, worker FROM task_events WHERE task_id = ?1 "
      "ORDER BY id");
  events_between_ = db::Statement(
      db_,
      "SELECT id, task_id, at, state, reason, worker FROM task_events WHERE id > ?1 AND id <= ?2 "
      "ORDER BY id LIMIT ?3");
  last_event_ = db::Statement(db_, "SELECT coalesce(max(id), 0) FROM task_events");
  running_progress_ =
      db::Statement(db_, "SELECT id, progress FROM tasks WHERE state = 'running' ORDER BY seq");
  unfinished_ = db::Statement(db_, "SELECT " + cols +
                                       " FROM tasks WHERE state IN ('queued','running') "
                                       "ORDER BY priority DESC, seq");
  counts_ = db::Statement(db_, "SELECT state, count(*) FROM tasks GROUP BY state");
  parts_of_ =
      db::Statement(db_, "SELECT " + cols + " FROM tasks WHERE parent_id = ?1 ORDER BY seq");
  finished_before_ = db::Statement(
      db_, "SELECT " + cols +
               " FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?1 "
               "AND state IN ('succeeded','failed','cancelled') ORDER BY finished_at LIMIT ?2");
  // (The window ends at the latest end of any task: a broker down for days still finds the
  // split tasks that ended last. strftime writes the format of iso_time.)
  splits_ended_last_ = db::Statement(
      db_,
      "SELECT id FROM tasks WHERE parts > 0 AND finished_at >= (SELECT "
      "strftime('%Y-%m-%dT%H:%M:%fZ', max(finished_at), '-' || ?1 || ' seconds') FROM tasks "
      "WHERE finished_at IS NOT NULL) ORDER BY finished_at DESC LIMIT ?2");
  output_owner_ = db::Statement(db_,
                                "SELECT id, state FROM tasks WHERE output_path = ?1 AND state IN "
                                "('queued','running','succeeded') ORDER BY seq DESC LIMIT 1");
  if (sqlite3_db_readonly(db_.handle(), "main") == 1) return;
  insert_ = db::Statement(
      db_,
      "INSERT INTO tasks (id, state, request, spec, idempotency_key, fingerprint, priority, "
      "created_at, queued_at, output_path, parent_id, parts) "
      "VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10)");
  insert_event_ = db::Statement(
      db_, "INSERT INTO task_events (task_id, at, state, reason, worker) VALUES (?1,?2,?3,?4,?5)");
  set_running_ =
      db::Statement(db_,
                    "UPDATE tasks SET state='running', worker=?2, attempts=?3, progress=0, "
                    // A split task starts with its first part, not with its merge.
                    "started_at=CASE WHEN parts IS NULL THEN ?4 ELSE coalesce(started_at, ?4) END "
                    "WHERE id=?1");
  set_progress_ = db::Statement(db_, "UPDATE tasks SET progress=?2 WHERE id=?1");
  finish_ = db::Statement(db_,
                          "UPDATE tasks SET state=?2, summary=?3, error=?4, finished_at=?5, "
                          "progress=CASE WHEN ?2='succeeded' THEN 1 ELSE progress END, "
                          "output_inode=?6, output_size=?7 WHERE id=?1 "
                          "RETURNING request, created_at, started_at, worker, output_path, "
                          "attempts");
  remove_events_ = db::Statement(db_, "DELETE FROM task_events WHERE task_id = ?1");
  remove_ = db::Statement(db_,
                          "DELETE FROM tasks WHERE id = ?1 AND state IN "
                          "('succeeded','failed','cancelled')");
  requeue_ = db::Statement(
      db_,
      "UPDATE tasks SET state='queued', worker=NULL, queued_at=?2, progress=0, attempts=?3 "
      "WHERE id=?1");
}

TaskRecord TaskStore::read_row(const db::Statement& st) {
  TaskRecord r;
  r.seq = st.col_int(0);
  r.id = st.col_text(1);
  r.state = state_column(st, 2);
  r.request = st.col_text(3);
  r.spec = st.col_text(4);
  r.idempotency_key = st.col_text(5);
  r.fingerprint = st.col_text(6);
  r.priority = static_cast<int>(st.col_int(7));
  r.created_at = st.col_text(8);
  r.queued_at = st.col_text(9);
  r.started_at = st.col_text(10);
  r.finished_at = st.col_text(11);
  r.attempts = static_cast<int>(st.col_int(12));
  r.worker = st.col_text(13);
  r.progress = st.col_double(14);
  r.output_path = st.col_text(15);
  r.summary = st.col_text(16);
  r.error = st.col_text(17);
  if (!st.col_null(18)) r.output_file = FileIdentity{st.col_int(18), st.col_int(19)};
  r.parent_id = st.col_text(20);
  r.parts = static_cast<int>(st.col_int(21));
  return r;
}

std::int64_t TaskStore::insert(const NewTask& t, const std::string& now) {
  insert_.bind(1, t.id)
      .bind(2, t.request)
      .bind(3, t.spec)
      .bind_opt(4, t.idempotency_key)
      .bind_opt(5, t.fingerprint)
      .bind(6, t.priority)
      .bind(7, now)
      .bind(8, t.output_path)
      .bind_opt(9, t.parent_id);
  if (t.parts > 1)
    insert_.bind(10, t.parts);
  else
    insert_.bind_null(10);
  insert_.run();
  std::int64_t seq = db_.last_insert_rowid();
  add_event(t.id, TaskState::Queued, "submitted", "", now);
  return seq;
}

void TaskStore::add_event(const std::string& id, TaskState st, const std::string& reason,
                          const std::string& worker, const std::string& now) {
  insert_event_.bind(1, id)
      .bind(2, now)
      .bind(3, name(st))
      .bind_opt(4, reason)
      .bind_opt(5, worker)
      .run();
}

void TaskStore::set_running(const std::string& id, const std::string& worker, int attempt,
                            const std::string& now, const std::string& reason) {
  set_running_.bind(1, id).bind(2, worker).bind(3, attempt).bind(4, now).run();
  add_event(id, TaskState::Running,
            reason.empty() ? "dispatched (attempt " + std::to_string(attempt) + ")" : reason,
            worker, now);
}

void TaskStore::set_progress(const std::string& id, double progress) {
  set_progress_.bind(1, id).bind(2, progress).run();
}

std::optional<TaskStore::Finished> TaskStore::finish(
    const std::string& id, TaskState st, const std::string& summary, const std::string& error,
    const std::string& reason, const std::string& now, std::optional<FileIdentity> output) {
  finish_.bind(1, id).bind(2, name(st)).bind_opt(3, summary).bind_opt(4, error).bind(5, now);
  if (output)
    finish_.bind(6, output->inode).bind(7, output->size);
  else
    finish_.bind_null(6).bind_null(7);
  struct Reset {  // whatever happens below, the statement is ready for the next call
    db::Statement& st;
    ~Reset() { st.reset(); }
  } reset{finish_};
  std::optional<Finished> out;
  if (finish_.step()) {
    out = Finished{finish_.col_text(0), finish_.col_text(1), finish_.col_text(2),
                   finish_.col_text(3), finish_.col_text(4), static_cast<int>(finish_.col_int(5))};
    while (finish_.step()) {  // none left (ids are unique); stepping past a done statement
    }                         // would run it again
  }
  if (out) add_event(id, st, reason, "", now);
  return out;
}

std::vector<TaskRecord> TaskStore::finished_before(const std::string& before, int limit) {
  finished_before_.bind(1, before).bind(2, limit);
  std::vector<TaskRecord> out;
  while (finished_before_.step()) out.push_back(read_row(finished_before_));
  finished_before_.reset();
  return out;
}

std::vector<std::string> TaskStore::splits_ended_last(double window_s, int limit) {
  splits_ended_last_.bind(1, static_cast<std::int64_t>(window_s)).bind(2, limit);
  std::vector<std::string> out;
  while (splits_ended_last_.step()) out.push_back(splits_ended_last_.col_text(0));
  splits_ended_last_.reset();
  return out;
}

void TaskStore::remove(const std::string& id) {
  remove_events_.bind(1, id).run();
  remove_.bind(1, id).run();
}

std::optional<TaskStore::Owner> TaskStore::output_owner(const std::string& output_path) {
  output_owner_.bind(1, output_path);
  std::optional<Owner> out;
  if (output_owner_.step()) out = Owner{output_owner_.col_text(0), state_column(output_owner_, 1)};
  output_owner_.reset();
  return out;
}

void TaskStore::requeue(const std::string& id, int attempts, const std::string& reason,
                        const std::string& now) {
  requeue_.bind(1, id).bind(2, now).bind(3, attempts).run();
  add_event(id, TaskState::Queued, reason, "", now);
}

std::optional<TaskRecord> TaskStore::get(const std::string& id) {
  get_.bind(1, id);
  std::optional<TaskRecord> out;
  if (get_.step()) out = read_row(get_);
  get_.reset();
  return out;
}

std::optional<TaskRecord> TaskStore::find_by_key(const std::string& key) {
  by_key_.bind(1, key);
  std::optional<TaskRecord> out;
  if (by_key_.step()) out = read_row(by_key_);
  by_key_.reset();
  return out;
}

std::vector<TaskRecord> TaskStore::list(const TaskFilter& f) {
  // Built per call: the filter shape varies; values are always bound.
  std::string sql = std::string("SELECT ") + kColumns + " FROM tasks WHERE 1=1";
  if (f.state) sql += " AND state = ?1";
  if (!f.created_after.empty()) sql += " AND created_at > ?2";
  if (!f.created_before.empty()) sql += " AND created_at < ?3";
  // A substring of one of the task's input paths (not of its output or other spec fields).
  if (!f.input.empty())
    sql +=
        " AND EXISTS (SELECT 1 FROM json_each(tasks.spec, '$.inputs') AS i"
        " WHERE instr(i.value, ?4) > 0)";
  if (f.before_seq > 0) sql += " AND seq < ?5";
  sql += f.parent.empty() ? " AND parent_id IS NULL" : " AND parent_id = ?7";
  sql += " ORDER BY seq DESC LIMIT ?6";
  db::Statement st(db_, sql);
  if (f.state) st.bind(1, name(*f.state));
  if (!f.created_after.empty()) st.bind(2, f.created_after);
  if (!f.created_before.empty()) st.bind(3, f.created_before);
  if (!f.input.empty()) st.bind(4, f.input);
  if (f.before_seq > 0) st.bind(5, f.before_seq);
  st.bind(6, f.limit);
  if (!f.parent.empty()) st.bind(7, f.parent);
  std::vector<TaskRecord> out;
  while (st.step()) out.push_back(read_row(st));
  return out;
}

std::vector<TaskEvent> TaskStore::events(const std::string& id) {
  events_.bind(1, id);
  std::vector<TaskEvent> out;
  while (events_.step()) {
    out.push_back({events_.col_int(0), events_.col_text(1), events_.col_text(2),
                   state_column(events_, 3), events_.col_text(4), events_.col_text(5)});
  }
  events_.reset();
  return out;
}

std::vector<TaskEvent> TaskStore::events_between(std::int64_t after, std::int64_t upto, int limit) {
  events_between_.bind(1, after);
  events_between_.bind(2, upto);
  events_between_.bind(3, static_cast<std::int64_t>(limit));
  std::vector<TaskEvent> out;
  while (events_between_.step()) {
    out.push_back({events_between_.col_int(0), events_between_.col_text(1),
                   events_between_.col_text(2), state_column(events_between_, 3),
                   events_between_.col_text(4), events_between_.col_text(5)});
  }
  events_between_.reset();
  return out;
}

std::int64_t TaskStore::last_event_id() {
  std::int64_t id = 0;
  if (last_event_.step()) id = last_event_.col_int(0);
  last_event_.reset();
  return id;
}

std::vector<TaskStore::Progress> TaskStore::running_progress() {
  std::vector<Progress> out;
  while (running_progress_.step())
    out.push_back({running_progress_.col_text(0), running_progress_.col_double(1)});
  running_progress_.reset();
  return out;
}

std::vector<TaskRecord> TaskStore::unfinished() {
  std::vector<TaskRecord> out;
  while (unfinished_.step()) out.push_back(read_row(unfinished_));
  unfinished_.reset();
  return out;
}

std::vector<TaskRecord> TaskStore::parts_of(const std::string& parent_id) {
  parts_of_.bind(1, parent_id);
  std::vector<TaskRecord> out;
  while (parts_of_.step()) out.push_back(read_row(parts_of_));
  parts_of_.reset();
  return out;
}

std::map<TaskState, std::int64_t> TaskStore::count_by_state() {
  std::map<TaskState, std::int64_t> out;
  while (counts_.step()) out[state_column(counts_, 0)] = counts_.col_int(1);
  counts_.reset();
  return out;
}

}  // namespace ipfixweb

#include <gtest/gtest.h>

#include <filesystem>

#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/util.hpp"

using namespace ipfixweb;
namespace fs = std::filesystem;

namespace {
struct TempDb {
  std::string path;
  TempDb() {
    path = (fs::temp_directory_path() / ("ipfixweb-store-" + new_uuid() + ".db")).string();
  }
  ~TempDb() {
    for (auto suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix);
  }
};

TaskStore::NewTask new_task(const std::string& key = "") {
  TaskStore::NewTask t;
  t.id = new_uuid();
  t.request = R"({"pcap_files":["a.pcap"]})";
  t.spec = R"({"inputs":["/in/a.pcap"],"output":"/out/a.ipfix"})";
  t.idempotency_key = key;
  t.fingerprint = "f";
  t.output_path = "/out/a.ipfix";
  return t;
}
}  // namespace

TEST(Store, TaskLifecycleIsRecordedWithEvents) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  auto t = new_task();
  {
    db::Transaction tx(store.db());
    store.insert(t, "2026-01-01T00:00:00.000Z");
    tx.commit();
  }
  {
    db::Transaction tx(store.db());
    store.set_running(t.id, "w1", 1, "2026-01-01T00:00:01.000Z");
    store.set_progress(t.id, 0.5);
    tx.commit();
  }
  auto rec = store.get(t.id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->state, TaskState::Running);
  EXPECT_EQ(rec->worker, "w1");
  EXPECT_EQ(rec->attempts, 1);
  EXPECT_DOUBLE_EQ(rec->progress, 0.5);
  {
    db::Transaction tx(store.db());
    auto row = store.finish(t.id, TaskState::Succeeded, R"({"packets":1})", "", "done",
                            "2026-01-01T00:00:02.000Z");
    // The same statement hands back what the completion log needs.
    ASSERT_TRUE(row);
    EXPECT_EQ(row->request, t.request);
    EXPECT_EQ(row->created_at, "2026-01-01T00:00:00.000Z");
    EXPECT_EQ(row->started_at, "2026-01-01T00:00:01.000Z");
    EXPECT_EQ(row->worker, "w1");
    EXPECT_EQ(row->output_path, t.output_path);
    EXPECT_EQ(row->attempts, 1);
    EXPECT_FALSE(store.finish("no-such-task", TaskState::Failed, "", "x", "x", now_iso()));
    tx.commit();
  }
  rec = store.get(t.id);
  EXPECT_EQ(rec->state, TaskState::Succeeded);
  EXPECT_DOUBLE_EQ(rec->progress, 1.0);
  EXPECT_EQ(rec->summary, R"({"packets":1})");
  auto ev = store.events(t.id);
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].state, TaskState::Queued);
  EXPECT_EQ(ev[1].state, TaskState::Running);
  EXPECT_EQ(ev[1].worker, "w1");
  EXPECT_EQ(ev[2].state, TaskState::Succeeded);
  EXPECT_TRUE(store.unfinished().empty());
}

TEST(Store, RolledBackTransactionsLeaveNoTrace) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  auto t = new_task();
  {
    db::Transaction tx(store.db());
    store.insert(t, now_iso());
    // no commit: the destructor rolls back
  }
  EXPECT_FALSE(store.get(t.id));
  EXPECT_TRUE(store.events(t.id).empty());
}

TEST(Store, ReaderSeesCommittedStateAndCannotWrite) {
  TempDb tmp;
  auto writer = TaskStore::open_writer(tmp.path);
  auto reader = TaskStore::open_reader(tmp.path);
  auto t = new_task("key-1");
  {
    db::Transaction tx(writer.db());
    writer.insert(t, now_iso());
    tx.commit();
  }
  auto rec = reader.find_by_key("key-1");
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->id, t.id);
  EXPECT_THROW(reader.db().exec("DELETE FROM tasks"), db::Error);
  EXPECT_EQ(reader.count_by_state()[TaskState::Queued], 1);
}

TEST(Store, ListFiltersAndPagesNewestFirst) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  std::vector<std::string> ids;
  {
    db::Transaction tx(store.db());
    for (int i = 0; i < 5; ++i) {
      auto t = new_task();
      store.insert(t, "2026-01-01T00:00:0" + std::to_string(i) + ".000Z");
      ids.push_back(t.id);
    }
    store.finish(ids[1], TaskState::Failed, "", "boom", "boom", now_iso());
    tx.commit();
  }
  TaskFilter f;
  f.limit = 2;
  auto page1 = store.list(f);
  ASSERT_EQ(page1.size(), 2u);
  EXPECT_EQ(page1[0].id, ids[4]);
  EXPECT_EQ(page1[1].id, ids[3]);
  f.before_seq = page1[1].seq;
  auto page2 = store.list(f);
  ASSERT_EQ(page2.size(), 2u);
  EXPECT_EQ(page2[0].id, ids[2]);
  TaskFilter failed;
  failed.state = TaskState::Failed;
  auto fl = store.list(failed);
  ASSERT_EQ(fl.size(), 1u);
  EXPECT_EQ(fl[0].error, "boom");
  TaskFilter after;
  after.created_after = "2026-01-01T00:00:02.500Z";
  EXPECT_EQ(store.list(after).size(), 2u);
}

// Review finding (CLI): the input filter matched the whole spec: `input=zebra` listed a task
// whose output was zebra.ipfix, and `input=.ipfix` every task.
TEST(Store, TheInputFilterMatchesInputPathsOnly) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  auto a = new_task(), b = new_task();
  a.spec = R"({"inputs":["/in/zebra.pcap","/in/x.pcap"],"output":"/out/a.ipfix"})";
  b.spec = R"({"inputs":["/in/b.pcap"],"output":"/out/zebra.ipfix"})";
  {
    db::Transaction tx(store.db());
    store.insert(a, "2026-01-01T00:00:00.000Z");
    store.insert(b, "2026-01-01T00:00:01.000Z");
    tx.commit();
  }
  TaskFilter f;
  f.input = "zebra";
  auto got = store.list(f);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].id, a.id);
  f.input = ".ipfix";
  EXPECT_TRUE(store.list(f).empty());
  f.input = "x.pcap";
  EXPECT_EQ(store.list(f).size(), 1u);
}

TEST(Store, IdempotencyKeyIsUnique) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  db::Transaction tx(store.db());
  store.insert(new_task("same"), now_iso());
  EXPECT_THROW(store.insert(new_task("same"), now_iso()), db::Error);
}

TEST(Store, ReopeningKeepsDataAndSchemaVersion) {
  TempDb tmp;
  std::string id;
  {
    auto store = TaskStore::open_writer(tmp.path);
    auto t = new_task();
    id = t.id;
    db::Transaction tx(store.db());
    store.insert(t, now_iso());
    tx.commit();
  }
  auto again = TaskStore::open_writer(tmp.path);
  EXPECT_EQ(again.db().scalar_int("PRAGMA user_version"), TaskStore::kSchemaVersion);
  ASSERT_EQ(again.unfinished().size(), 1u);
  EXPECT_EQ(again.unfinished()[0].id, id);
}

// Rows written before the broker checked what peers send may hold a request or summary that
// is not JSON; both are spliced into answers, so version 2 repairs them.
TEST(Store, UpgradingToVersionTwoRepairsRequestsAndSummariesThatAreNotJsonObjects) {
  TempDb tmp;
  const std::string bad = new_uuid(), good = new_uuid();
  {
    // A version 1 database, as that version made it (its tasks table).
    db::Database raw(tmp.path, db::Database::Mode::ReadWriteCreate);
    raw.exec(R"sql(
CREATE TABLE tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
  request TEXT NOT NULL, spec TEXT NOT NULL, idempotency_key TEXT UNIQUE, fingerprint TEXT,
  priority INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, queued_at TEXT,
  started_at TEXT, finished_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, worker TEXT,
  progress REAL NOT NULL DEFAULT 0, output_path TEXT, summary TEXT, error TEXT);
CREATE INDEX tasks_state ON tasks(state, seq);
CREATE TABLE task_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL REFERENCES tasks(id), at TEXT NOT NULL, state TEXT NOT NULL,
  reason TEXT, worker TEXT);
CREATE INDEX task_events_task ON task_events(task_id, id);
PRAGMA user_version=1;
)sql");
    raw.exec("INSERT INTO tasks (id, state, request, spec, created_at, summary) VALUES ('" + bad +
             "', 'succeeded', 'x\"}]', '{}', 'now', '[1]')");
    raw.exec("INSERT INTO tasks (id, state, request, spec, created_at, summary) VALUES ('" + good +
             "', 'succeeded', '{\"pcap_files\":[\"a.pcap\"]}', '{}', 'now', '{\"packets\":1}')");
  }
  auto store = TaskStore::open_writer(tmp.path);
  EXPECT_EQ(store.db().scalar_int("PRAGMA user_version"), TaskStore::kSchemaVersion);
  auto repaired = store.get(bad);
  ASSERT_TRUE(repaired);
  EXPECT_EQ(repaired->request, "{\"unreadable_request\":\"x\\\"}]\"}");
  EXPECT_EQ(repaired->summary, "");
  auto kept = store.get(good);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->summary, "{\"packets\":1}");
  EXPECT_EQ(kept->request, "{\"pcap_files\":[\"a.pcap\"]}");
  EXPECT_FALSE(kept->output_file) << "version 3 added the output's identity, unknown for old rows";
}

// Version 4: a split task records its parts; lists show tasks, or one task's parts.
TEST(Store, ASplitTasksPartsAreListedUnderItOnlyAndKeepItsStartTime) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  auto whole = new_task(), plain = new_task(), p0 = new_task(), p1 = new_task();
  whole.parts = 2;
  p0.parent_id = p1.parent_id = whole.id;
  {
    db::Transaction tx(store.db());
    for (auto* t : {&whole, &p0, &p1, &plain}) store.insert(*t, "2026-01-01T00:00:00.000Z");
    store.set_running(whole.id, "", 0, "2026-01-01T00:00:01.000Z", "split into 2 parts");
    store.set_running(whole.id, "w", 1, "2026-01-01T00:00:09.000Z", "merging");
    store.set_running(plain.id, "w", 1, "2026-01-01T00:00:02.000Z");
    store.set_running(plain.id, "w", 2, "2026-01-01T00:00:05.000Z");
    tx.commit();
  }
  TaskFilter all;
  std::vector<std::string> listed;
  for (const auto& t : store.list(all)) listed.push_back(t.id);
  EXPECT_EQ(listed, (std::vector<std::string>{plain.id, whole.id}));
  TaskFilter parts;
  parts.parent = whole.id;
  listed.clear();
  for (const auto& t : store.list(parts)) listed.push_back(t.id);
  EXPECT_EQ(listed, (std::vector<std::string>{p1.id, p0.id}));
  const auto of = store.parts_of(whole.id);
  ASSERT_EQ(of.size(), 2u);
  EXPECT_EQ(of[0].id, p0.id);
  EXPECT_EQ(of[0].parent_id, whole.id);
  EXPECT_EQ(store.get(whole.id)->parts, 2);
  EXPECT_EQ(store.get(plain.id)->parts, 0);
  EXPECT_EQ(store.get(whole.id)->started_at, "2026-01-01T00:00:01.000Z")
      << "a split task started with its first part";
  EXPECT_EQ(store.get(plain.id)->started_at, "2026-01-01T00:00:05.000Z")
      << "a task started with its latest attempt";
}

TEST(Store, RetentionFindsTasksFinishedBeforeATimeAndRemovesThemWithTheirEvents) {
  TempDb tmp;
  auto store = TaskStore::open_writer(tmp.path);
  auto old_task = new_task(), new_one = new_task(), running = new_task();
  {
    db::Transaction tx(store.db());
    for (auto* t : {&old_task, &new_one, &running}) store.insert(*t, "2026-01-01T00:00:00.000Z");
    store.set_running(running.id, "w", 1, "2026-01-01T00:00:01.000Z");
    store.finish(old_task.id, TaskState::Succeeded, "{}", "", "done", "2026-01-02T00:00:00.000Z",
                 FileIdentity{7, 8});
    store.finish(new_one.id, TaskState::Failed, "", "x", "x", "2026-03-01T00:00:00.000Z");
    tx.commit();
  }
  auto due = store.finished_before("2026-02-01T00:00:00.000Z", 100);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].id, old_task.id);
  ASSERT_TRUE(due[0].output_file);
  EXPECT_EQ(*due[0].output_file, (FileIdentity{7, 8}));
  {
    db::Transaction tx(store.db());
    store.remove(old_task.id);
    store.remove(running.id);  // not finished: stays
    tx.commit();
  }
  EXPECT_FALSE(store.get(old_task.id));
  EXPECT_TRUE(store.events(old_task.id).empty());
  EXPECT_TRUE(store.get(running.id));
  EXPECT_TRUE(store.get(new_one.id));
  EXPECT_EQ(store.finished_before("2026-12-01T00:00:00.000Z", 100).size(), 1u);
}

TEST(Store, RefusesADatabaseFromTheFuture) {
  TempDb tmp;
  {
    db::Database raw(tmp.path, db::Database::Mode::ReadWriteCreate);
    raw.exec("PRAGMA user_version=999");
  }
  EXPECT_THROW(TaskStore::open_writer(tmp.path), db::Error);
}

TEST(Store, ParsesSynchronousModes) {
  EXPECT_EQ(TaskStore::parse_sync("FULL"), TaskStore::Sync::Full);
  EXPECT_EQ(TaskStore::parse_sync("normal"), TaskStore::Sync::Normal);
  EXPECT_THROW(TaskStore::parse_sync("sometimes"), std::invalid_argument);
}

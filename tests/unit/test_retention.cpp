// The broker's clean-up beneath the output root (broker/src/retention.hpp): what it removes of
// a task that ended without success, and of a split task's part published late.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/util.hpp"
#include "retention.hpp"

namespace fs = std::filesystem;
using namespace ipfixweb;

namespace {

class RetentionFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ipfixweb-retention-" + new_uuid());
    fs::create_directories(dir_ / "out");
    store_.emplace(TaskStore::open_writer((dir_ / "tasks.db").string()));
    retention_.emplace(*store_, (dir_ / "out").string(), 0, spdlog::default_logger());
  }
  void TearDown() override {
    retention_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  // The three files a partition run publishes, written now.
  std::string publish(const std::string& name) {
    const std::string path = (dir_ / "out" / name).string();
    for (const std::string& f : {path, path + ".flows.sqlite", path + ".summary.json"})
      std::ofstream(f) << "x";
    return path;
  }
  static FileIdentity identity(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return {static_cast<std::int64_t>(st.st_ino), static_cast<std::int64_t>(st.st_size)};
  }
  static bool exists(const std::string& path) { return fs::exists(path); }

  fs::path dir_;
  std::optional<TaskStore> store_;
  std::optional<broker::Retention> retention_;
};

}  // namespace

TEST_F(RetentionFiles, ALatePartOutputIsRemovedOnlyWhileItIsTheFileItsRunReported) {
  const std::string task = new_uuid_v7();  // made before the files
  const std::string path = publish("big.ipfix.part-1-of-2");
  const FileIdentity file = identity(path);
  EXPECT_FALSE(retention_->remove_late_part_output(task, path, {file.inode + 1, file.size}))
      << "another file (another task's, say) is left alone";
  EXPECT_TRUE(exists(path));
  EXPECT_TRUE(retention_->remove_late_part_output(task, path, file));
  EXPECT_FALSE(exists(path));
  EXPECT_FALSE(exists(path + ".flows.sqlite"));
  EXPECT_FALSE(exists(path + ".summary.json"));
  EXPECT_FALSE(retention_->remove_late_part_output(task, path, file)) << "gone already";
}

TEST_F(RetentionFiles, AnUnrecordedOutputTakesItsSummaryAlongOnlyForAFlowPartition) {
  const std::string task = new_uuid_v7();
  const std::string plain = publish("plain.ipfix");
  EXPECT_TRUE(retention_->remove_unrecorded_output(task, plain, /*partition=*/false));
  EXPECT_FALSE(exists(plain));
  EXPECT_FALSE(exists(plain + ".flows.sqlite"));
  EXPECT_TRUE(exists(plain + ".summary.json")) << "not a partition's: maybe another file's";
  const std::string part = publish("part.ipfix");
  EXPECT_TRUE(retention_->remove_unrecorded_output(task, part, /*partition=*/true));
  EXPECT_FALSE(exists(part + ".summary.json"));
}

namespace {

// A split task of two parts, recorded as the broker records one (the task, then its parts,
// each writing "<output>.part-I-of-2"), with every part ended as given and the task as given.
struct Split {
  std::string id, parts[2], outputs[2];
};

// A task row as the broker inserts one (call inside a transaction); returns its id.
std::string insert_task(TaskStore& store, const std::string& output, const std::string& parent = "",
                        int parts = 0) {
  TaskStore::NewTask t;
  t.id = new_uuid_v7();
  t.request = "{}";
  t.spec = "{}";
  t.output_path = output;
  t.parent_id = parent;
  t.parts = parts;
  store.insert(t, now_iso());
  return t.id;
}

Split record_split(TaskStore& store, const std::string& dir, TaskState part0, TaskState part1,
                   std::optional<TaskState> task) {
  Split s;
  db::Transaction tx(store.db());
  s.id = insert_task(store, dir + "/big.ipfix", "", 2);
  for (int i = 0; i < 2; ++i) {
    s.outputs[i] = dir + "/big.ipfix.part-" + std::to_string(i) + "-of-2";
    s.parts[i] = insert_task(store, s.outputs[i], s.id);
    store.set_running(s.parts[i], "w1", 1, now_iso());
    store.finish(s.parts[i], i == 0 ? part0 : part1, "{}", "", "", now_iso());
  }
  if (task) store.finish(s.id, *task, "{}", "", "", now_iso());
  tx.commit();
  return s;
}

}  // namespace

// Found in review of the split clean-up: a broker that died between the commit of a split
// task's end and the removal of its parts' outputs left them for good, and so did a part that
// a given-up run published after the task had ended when that run's result never came.
TEST_F(RetentionFiles, ALeftoverPartOfASplitTaskThatEndedGoesUnlessANewerTaskOwnsItsName) {
  const std::string out = (dir_ / "out").string();
  const Split s =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Succeeded, TaskState::Succeeded);
  // A newer task writes the second part's name (an ordinary task, queued).
  {
    db::Transaction tx(store_->db());
    insert_task(*store_, s.outputs[1]);
    tx.commit();
  }
  publish("big.ipfix.part-0-of-2");
  publish("big.ipfix.part-1-of-2");
  EXPECT_EQ(retention_->sweep_split(s.id), 1u);
  for (const std::string& f :
       {s.outputs[0], s.outputs[0] + ".flows.sqlite", s.outputs[0] + ".summary.json"})
    EXPECT_FALSE(exists(f)) << f;
  EXPECT_TRUE(exists(s.outputs[1])) << "the newer task's";
  EXPECT_EQ(retention_->sweep_split(s.id), 0u) << "nothing left to remove";
}

TEST_F(RetentionFiles, ASplitTaskThatHasNotEndedKeepsItsPartsOutputs) {
  const std::string out = (dir_ / "out").string();
  // Both parts succeeded; the task merges them (running): the merge reads these files.
  const Split s =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Succeeded, std::nullopt);
  publish("big.ipfix.part-0-of-2");
  publish("big.ipfix.part-1-of-2");
  EXPECT_EQ(retention_->sweep_split(s.id), 0u);
  EXPECT_TRUE(exists(s.outputs[0]));
  EXPECT_TRUE(exists(s.outputs[1]));
}

TEST_F(RetentionFiles, ASplitTaskIsCheckedAMinuteTenMinutesAnHourAndADayAfterItsEnd) {
  const std::string out = (dir_ / "out").string();
  const Split s =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Failed, TaskState::Failed);
  const double ended = 1000;
  retention_->check_split_later(s.id, ended);
  publish("big.ipfix.part-1-of-2");  // a given-up run of the failed part published it late
  EXPECT_EQ(retention_->run_split_checks(ended + 30), 0u) << "not due yet";
  EXPECT_TRUE(exists(s.outputs[1]));
  EXPECT_EQ(retention_->run_split_checks(ended + 61), 1u);
  EXPECT_FALSE(exists(s.outputs[1]));
  publish("big.ipfix.part-0-of-2");
  EXPECT_EQ(retention_->run_split_checks(ended + 400), 0u);
  EXPECT_EQ(retention_->run_split_checks(ended + 601), 1u) << "the second check";
  EXPECT_FALSE(exists(s.outputs[0]));
  publish("big.ipfix.part-1-of-2");
  EXPECT_EQ(retention_->run_split_checks(ended + 3000), 0u);
  EXPECT_EQ(retention_->run_split_checks(ended + 3601), 1u) << "the third check";
  publish("big.ipfix.part-0-of-2");
  EXPECT_EQ(retention_->run_split_checks(ended + 80000), 0u);
  EXPECT_EQ(retention_->run_split_checks(ended + 86401), 1u) << "the fourth check";
  EXPECT_FALSE(exists(s.outputs[0]));
  EXPECT_EQ(retention_->split_checks_pending(), 0u) << "no fifth check";
}

// The gap the checks leave (a part published more than a day after its task ended, by a run
// whose result never came) closes when retention removes the part's task: its file goes along,
// while a part name a newer task owns stays. Failed before: retention removed recorded outputs
// only.
TEST_F(RetentionFiles, APartPublishedAfterTheLastCheckGoesWhenRetentionRemovesItsTask) {
  const std::string out = (dir_ / "out").string();
  broker::Retention retention(*store_, out, 1.0, spdlog::default_logger());
  const Split s =
      record_split(*store_, out, TaskState::Failed, TaskState::Succeeded, TaskState::Failed);
  publish("big.ipfix.part-0-of-2");  // late, by a given-up run of the failed part
  publish("big.ipfix.part-1-of-2");  // the same for the part that succeeded elsewhere
  std::string newer;
  {
    db::Transaction tx(store_->db());
    const auto pass = retention.run(static_cast<double>(std::time(nullptr)) + 3 * 86400.0);
    EXPECT_EQ(pass.tasks, 3u);
    EXPECT_EQ(pass.files, 2u);
    tx.commit();
  }
  for (const auto& o : s.outputs)
    for (const std::string& f : {o, o + ".flows.sqlite", o + ".summary.json"})
      EXPECT_FALSE(exists(f)) << f;
  // A newer task owns the name: its file stays when the older split's part expires.
  const Split again =
      record_split(*store_, out, TaskState::Failed, TaskState::Failed, TaskState::Failed);
  {
    db::Transaction tx(store_->db());
    store_->db().exec("UPDATE tasks SET finished_at = '2020-01-01T10:00:00.000Z'");
    newer = insert_task(*store_, again.outputs[0]);
    tx.commit();
  }
  publish("big.ipfix.part-0-of-2");
  {
    db::Transaction tx(store_->db());
    retention.run(static_cast<double>(std::time(nullptr)));
    tx.commit();
  }
  EXPECT_TRUE(exists(again.outputs[0])) << "task " << newer << " owns the name";
}

TEST_F(RetentionFiles, AtStartEverySplitTaskThatEndedInTheLastDayIsCheckedAtOnce) {
  const std::string out = (dir_ / "out").string();
  const Split ended =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Succeeded, TaskState::Succeeded);
  publish("big.ipfix.part-0-of-2");
  publish("big.ipfix.part-1-of-2");
  retention_->check_recent_splits(50);
  EXPECT_EQ(retention_->split_checks_pending(), 1u);
  EXPECT_EQ(retention_->run_split_checks(50), 2u);
  EXPECT_FALSE(exists(ended.outputs[0]));
  EXPECT_FALSE(exists(ended.outputs[1]));
  EXPECT_EQ(retention_->split_checks_pending(), 1u) << "and once more later";
}

// The window ends at the last task's end, not at the broker's start: a broker that was down
// for long still finds the split tasks that ended last; older ones are not checked again.
TEST_F(RetentionFiles,
       AtStartTheSplitTasksThatEndedInTheLastQuarterHourBeforeTheLastEndAreChecked) {
  const std::string out = (dir_ / "out").string();
  const Split old_split =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Succeeded, TaskState::Succeeded);
  const Split last_split =
      record_split(*store_, out, TaskState::Succeeded, TaskState::Succeeded, TaskState::Failed);
  {  // the first ended an hour before the second, both long ago
    db::Transaction tx(store_->db());
    store_->db().exec("UPDATE tasks SET finished_at = '2020-01-01T10:00:00.000Z' WHERE id = '" +
                      old_split.id + "' OR parent_id = '" + old_split.id + "'");
    store_->db().exec("UPDATE tasks SET finished_at = '2020-01-01T11:00:00.000Z' WHERE id = '" +
                      last_split.id + "' OR parent_id = '" + last_split.id + "'");
    tx.commit();
  }
  EXPECT_EQ(store_->splits_ended_last(900, 10), std::vector<std::string>{last_split.id});
  retention_->check_recent_splits(50);
  EXPECT_EQ(retention_->split_checks_pending(), 1u);
}

// The broker runs the checks between messages: a few at a time.
TEST_F(RetentionFiles, AtMostABatchOfChecksRunsAtOnce) {
  for (int i = 0; i < 30; ++i) retention_->check_split_later(new_uuid_v7(), 0);
  EXPECT_EQ(retention_->split_checks_due(100), 30u);
  retention_->run_split_checks(100, 20, 10.0);
  EXPECT_EQ(retention_->split_checks_due(100), 10u);
  EXPECT_EQ(retention_->split_checks_pending(), 30u) << "20 wait for their second check";
  retention_->run_split_checks(100, 20, 0.0);
  EXPECT_EQ(retention_->split_checks_due(100), 9u) << "at least one runs, whatever the budget";
}

// Found in review: retention removed a succeeded part's recorded output and flow store but not
// the summary published beside it (a broker that died before removing its split task's parts,
// and no check after its restart).
TEST_F(RetentionFiles, ASucceededPartsOutputGoesWithItsSummaryWhenRetentionRemovesItsTask) {
  const std::string out = (dir_ / "out").string();
  broker::Retention retention(*store_, out, 1.0, spdlog::default_logger());
  std::string split, part;
  const std::string path = publish("big.ipfix.part-0-of-1");
  {
    db::Transaction tx(store_->db());
    split = insert_task(*store_, out + "/big.ipfix", "", 1);
    part = insert_task(*store_, path, split);
    tx.commit();
  }
  publish("big.ipfix.part-0-of-1");  // written after both tasks were made
  {
    db::Transaction tx(store_->db());
    store_->set_running(part, "w1", 1, now_iso());
    store_->finish(part, TaskState::Succeeded, "{}", "", "", now_iso(), identity(path));
    store_->finish(split, TaskState::Succeeded, "{}", "", "", now_iso());
    const auto pass = retention.run(static_cast<double>(std::time(nullptr)) + 3 * 86400.0);
    EXPECT_EQ(pass.tasks, 2u);
    tx.commit();
  }
  for (const std::string& f : {path, path + ".flows.sqlite", path + ".summary.json"})
    EXPECT_FALSE(exists(f)) << f;
}

// Found in review: with day-long checks the list can fill up (more than one split task a
// second for a day); a new task's first check must not be the one dropped.
TEST_F(RetentionFiles, WhenTheChecksAreFullANewTasksFirstCheckReplacesTheOneDueLast) {
  const std::size_t full = broker::Retention::kMaxSplitChecks;
  for (std::size_t i = 0; i < full; ++i) retention_->check_split_later(new_uuid_v7(), 0);
  EXPECT_EQ(retention_->split_checks_pending(), full);
  retention_->check_split_later(new_uuid_v7(), 100);  // due at 160: after all the others
  EXPECT_EQ(retention_->split_checks_due(160), full) << "due later than every other: dropped";
  // The first checks of the tasks above ran: their later checks wait, an hour and more away.
  retention_->run_split_checks(61, full, 1e9);
  EXPECT_EQ(retention_->split_checks_pending(), full);
  retention_->check_split_later(new_uuid_v7(), 100);
  EXPECT_EQ(retention_->split_checks_pending(), full);
  EXPECT_EQ(retention_->split_checks_due(160), 1u) << "it took the place of a later check";
}

// The broker's clean-up beneath the output root (broker/src/retention.hpp): what it removes of
// a task that ended without success, and of a split task's part published late.
#include <gtest/gtest.h>
#include <sys/stat.h>

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

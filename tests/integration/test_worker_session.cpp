// The worker's session with the broker, seen from a broker the test plays (fake_peers.hpp):
// a real worker process, its connections and what it does with tasks sent to each.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "fake_peers.hpp"
#include "harness.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace fs = std::filesystem;
using namespace ipfixweb;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

class WorkerSession : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ipfixweb-session-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = fs::canonical(tmpl);
    fs::create_directories(base_ / "input");
    fs::create_directories(base_ / "output");
    fs::copy_file(test_data() + "/sample.pcap", base_ / "input" / "sample.pcap");
    worker_ = std::make_unique<Process>(
        "worker",
        std::vector<std::string>{bin_dir() + "/ipfixweb-worker", "--broker", broker_.endpoint(),
                                 "--id", "ws", "--slots", "1", "--heartbeat", "0.2"},
        std::map<std::string, std::string>{{"IPFIXWEB_DATA_DIR", base_.string()}},
        (base_ / "worker.log").string());
  }
  void TearDown() override {
    worker_.reset();
    if (HasFailure()) {
      std::cerr << "===== worker.log =====\n" << read_file(base_ / "worker.log") << "\n";
    } else {
      std::error_code ec;
      fs::remove_all(base_, ec);
    }
  }
  proto::Task task(const std::string& id, std::uint32_t connection) const {
    proto::Task t;
    t.task_id = id;
    t.spec.inputs = {(base_ / "input" / "sample.pcap").string()};
    t.spec.output = (base_ / "output" / (id + ".ipfix")).string();
    t.connection = connection;
    return t;
  }

  FakeBroker broker_;
  fs::path base_;
  std::unique_ptr<Process> worker_;
};

TEST_F(WorkerSession, EachFreshSocketIsANewConnectionOfTheSameIncarnation) {
  auto first = broker_.wait_ready(20s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->connection, 1u);
  broker_.heartbeats(false);  // silent: the worker gives the socket up after 3 × 0.2 s
  auto second = broker_.wait_ready(10s);
  ASSERT_TRUE(second) << "the worker did not reconnect";
  EXPECT_EQ(second->connection, 2u);
  EXPECT_EQ(second->incarnation, first->incarnation) << "same process";
}

// A task the broker addressed to the worker's earlier socket may have arrived on the fresh one
// after the worker registered it: the broker re-queues such a task when it hears the fresh
// ready, so the worker must not run it too (before, it did, and the broker, seeing no claim,
// kept it assigned to a socket that had dropped it until its time limit).
TEST_F(WorkerSession, ATaskAddressedToAnEarlierConnectionIsNotRun) {
  ASSERT_TRUE(broker_.wait_ready(20s));
  broker_.heartbeats(false);
  auto second = broker_.wait_ready(10s);
  ASSERT_TRUE(second);
  ASSERT_EQ(second->connection, 2u);
  broker_.heartbeats(true);

  broker_.send_task(task("old", 1));
  EXPECT_FALSE(broker_.wait_done("old", 2s)) << "the task for the old connection ran";
  EXPECT_FALSE(fs::exists(base_ / "output" / "old.ipfix"));
  EXPECT_NE(read_file(base_ / "worker.log").find("earlier connection"), std::string::npos);

  broker_.send_task(task("new", 2));
  auto d = broker_.wait_done("new", 30s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, Outcome::Succeeded) << d->error;
}

// A broker that does not number connections (0) is always obeyed.
TEST_F(WorkerSession, ATaskWithoutAConnectionNumberIsRun) {
  ASSERT_TRUE(broker_.wait_ready(20s));
  broker_.send_task(task("any", 0));
  auto d = broker_.wait_done("any", 30s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, Outcome::Succeeded) << d->error;
}

}  // namespace

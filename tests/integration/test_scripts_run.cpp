// scripts/run, the one-command stack, keeps serving when one of its processes dies: it is run
// as a user runs it (with IPFIXWEB_BIN_DIR pointing at this build) and its processes are killed
// from outside, as the OOM killer would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "harness.hpp"

using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

class ScriptsRun : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ipfixweb-run-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    port_ = free_port();
  }
  void TearDown() override {
    run_.reset();
    if (HasFailure())
      std::cerr << "===== scripts/run =====\n" << read_file(log()) << "\n";
    else
      fs::remove_all(dir_);
  }
  std::string log() const { return dir_ + "/run.log"; }
  void start(std::map<std::string, std::string> env = {}) {
    env.emplace("IPFIXWEB_BIN_DIR", bin_dir());
    env.emplace("IPFIXWEB_DATA_DIR", dir_ + "/var");
    env.emplace("IPFIXWEB_HTTP_PORT", std::to_string(port_));
    env.emplace("IPFIXWEB_BROKER_FRONTEND", "tcp://127.0.0.1:" + std::to_string(free_port()));
    env.emplace("IPFIXWEB_BROKER_BACKEND", "tcp://127.0.0.1:" + std::to_string(free_port()));
    run_ = std::make_unique<Process>(
        "run",
        std::vector<std::string>{std::string(IPFIXWEB_SOURCE_DIR) + "/scripts/run", "--workers",
                                 "2"},
        env, log());
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(2);
    c.set_read_timeout(5);
    return c;
  }
  // worker id prefix ("worker-1") -> pid, as the api's status reports them.
  std::map<std::string, pid_t> workers() const {
    std::map<std::string, pid_t> out;
    auto c = client();
    auto r = c.Get("/api/v1/status");
    if (!r || r->status != 200) return out;
    const json status = json::parse(r->body);  // (a range-for over a temporary's member dangles)
    for (auto& w : status.at("workers")) {
      const std::string id = w.at("id");
      out[id.substr(0, id.rfind('-'))] = w.at("pid").get<pid_t>();
    }
    return out;
  }
  // Waits until `pred` holds (checked every 100 ms: each check asks the api).
  static bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    return wait_until(pred, timeout, 100ms);
  }

  std::string dir_;
  int port_ = 0;
  std::unique_ptr<Process> run_;
};

TEST_F(ScriptsRun, AKilledWorkerIsStartedAgainAndTheStackKeepsServing) {
  start();
  ASSERT_TRUE(eventually([&] { return workers().size() == 2; }, 30s)) << "stack did not come up";
  const auto before = workers();
  const pid_t victim = before.at("worker-1");
  ASSERT_EQ(::kill(victim, SIGKILL), 0);

  ASSERT_TRUE(eventually(
      [&] {
        auto now = workers();
        return now.count("worker-1") && now["worker-1"] != victim && alive(now["worker-1"]);
      },
      20s))
      << "worker-1 was not started again";
  EXPECT_EQ(workers().at("worker-2"), before.at("worker-2")) << "the other worker was touched";
  EXPECT_TRUE(run_->running()) << "scripts/run stopped";
  EXPECT_NE(read_file(log()).find("worker-1 (pid " + std::to_string(victim) +
                                  ") was killed by signal 9 (KILL)"),
            std::string::npos);

  // The stack still converts.
  auto c = client();
  json req = {{"pcap_files", {dir_ + "/var/input/sample.pcap"}},
              {"output_path", dir_ + "/var/output/after-kill.ipfix"}};
  auto r = c.Post("/api/v1/tasks", req.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = json::parse(r->body).at("task_id");
  std::string state;
  eventually(
      [&] {
        auto t = c.Get("/api/v1/tasks/" + id);
        if (t && t->status == 200) state = json::parse(t->body).at("state");
        return state == "succeeded" || state == "failed";
      },
      30s);
  EXPECT_EQ(state, "succeeded");

  // SIGTERM stops everything it started.
  const auto last = workers();
  run_->signal(SIGTERM);
  auto status = run_->wait(20s);
  ASSERT_TRUE(status) << "scripts/run did not stop";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  for (auto& [name, pid] : last) EXPECT_FALSE(alive(pid)) << name << " outlived scripts/run";
}

TEST_F(ScriptsRun, AKilledApiAndBrokerAreStartedAgain) {
  start();
  ASSERT_TRUE(eventually([&] { return workers().size() == 2; }, 30s));
  for (const char* process : {"ipfixweb-api", "ipfixweb-broker"}) {
    SCOPED_TRACE(process);
    int st = 0;
    // Only this stack's process: it runs with this test's data directory in its environment.
    const std::string pids =
        run_capture("for p in $(pgrep -x " + std::string(process).substr(0, 15) +
                        "); do grep -qz 'IPFIXWEB_DATA_DIR=" + dir_ +
                        "/var' /proc/$p/environ 2>/dev/null "
                        "&& echo $p; done",
                    &st);
    ASSERT_FALSE(pids.empty());
    const pid_t pid = std::stoi(pids);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    EXPECT_TRUE(eventually(
        [&] {
          return read_file(log()).find(std::string(process).substr(9) + " started again") !=
                 std::string::npos;
        },
        15s));
    EXPECT_TRUE(eventually([&] { return workers().size() == 2; }, 30s))
        << "the stack did not come back";
  }
  EXPECT_TRUE(run_->running());
}

// A broker that cannot start at all (its endpoint cannot be bound) is given up after five
// restarts, and the stack stops with a failure rather than serving without it.
TEST_F(ScriptsRun, ABrokerThatKeepsFailingStopsTheStackAfterFiveRestarts) {
  start({{"IPFIXWEB_BROKER_FRONTEND", "tcp://192.0.2.1:1"}, {"IPFIXWEB_RESTART_MAX_DELAY", "1"}});
  auto status = run_->wait(60s);
  ASSERT_TRUE(status) << "scripts/run kept going";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  const std::string text = read_file(log());
  EXPECT_NE(text.find("the 5th restart in a row to fail; stopping the stack"), std::string::npos);
  EXPECT_FALSE(eventually([&] { return !workers().empty(); }, 1s)) << "the api still answers";
}

}  // namespace

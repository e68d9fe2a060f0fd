// Issue 4: the worker's task runners. A runner is a process forked from the worker that
// serves many tasks one after the other (no fork and no nDPI set-up per task), is replaced
// after --runner-max-tasks or when it dies, and holds nothing of the worker's but its own
// channel.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "harness.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runner pids named by the worker's "task ... started in runner N" log lines.
std::set<long> runner_pids(const std::string& log) {
  // (No std::regex: GCC 12 warns about its internals under the sanitizer build.)
  std::set<long> pids;
  const std::string marker = "started in runner ";
  for (auto pos = log.find(marker); pos != std::string::npos; pos = log.find(marker, pos + 1))
    pids.insert(std::strtol(log.c_str() + pos + marker.size(), nullptr, 10));
  return pids;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  long c;
  while (in >> c) out.push_back(static_cast<pid_t>(c));
  return out;
}

}  // namespace

TEST(Runners, OneRunnerServesManyTasksAndIsReplacedAfterItsQuota) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  o.extra_worker_args = {"--runner-max-tasks", "4"};
  Stack s(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    auto [st, body] = s.submit(small_task("r/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202) << body.dump();
    ids.push_back(body["task_id"]);
  }
  for (auto& id : ids) {
    auto t = s.wait_terminal(id, 30s);
    EXPECT_EQ(t["state"], "succeeded") << t.dump();
    // A runner at its quota is never handed another task (which it would not run).
    EXPECT_EQ(t["attempts"], 1) << t.dump();
  }
  // 10 tasks, 4 per runner: three runners, none of them the worker itself.
  const auto pids = runner_pids(slurp(s.workers()[0]->log_path()));
  EXPECT_EQ(pids.size(), 3u);
  EXPECT_EQ(pids.count(s.workers()[0]->pid()), 0u);
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(fs::exists(s.output_dir() + "/r/" + std::to_string(i) + ".ipfix"));
  EXPECT_TRUE(s.temporaries().empty());
}

TEST(Runners, CpuLimitIsPerTaskNotPerRunnerLife) {
  // 16 tasks of ~0.15 s CPU each on one runner: together more than twice the 1 s limit, which
  // must apply to each task (the limit is re-armed per task), not to the runner's whole life.
  const std::string made =
      (fs::temp_directory_path() / ("ipfixweb-test-runner-" + std::to_string(::getpid()) + ".pcap"))
          .string();
  make_capture_copies(test_data() + "/sample.pcap", made, 3000);
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  o.extra_worker_args = {"--cpu-limit", "1"};
  Stack s(o);
  fs::copy_file(made, s.input_dir() + "/big.pcap");
  fs::remove(made);
  std::vector<std::string> ids;
  for (int i = 0; i < 16; ++i) {
    auto [st, body] = s.submit({{"pcap_files", {"big.pcap"}},
                                {"output_path", "c/" + std::to_string(i) + ".ipfix"},
                                {"DPI", true}});
    ASSERT_EQ(st, 202) << body.dump();
    ids.push_back(body["task_id"]);
  }
  for (auto& id : ids) {
    auto t = s.wait_terminal(id, 60s);
    EXPECT_EQ(t["state"], "succeeded") << t.dump();
    EXPECT_EQ(t["attempts"], 1) << t.dump();
  }
  EXPECT_EQ(runner_pids(slurp(s.workers()[0]->log_path())).size(), 1u);
}

TEST(Runners, RunnersHoldNoSocketOfTheWorkerButTheirOwnChannel) {
  StackOptions o;
  o.workers = 1;
  o.slots = 2;
  Stack s(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto [st, body] = s.submit(small_task("f/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202);
    ids.push_back(body["task_id"]);
  }
  for (auto& id : ids) EXPECT_EQ(s.wait_terminal(id, 30s)["state"], "succeeded");
  const auto runners = children_of(s.workers()[0]->pid());
  ASSERT_FALSE(runners.empty());
  for (pid_t r : runners) {
    // Told apart from the worker by name (ps, top, scripts that kill "the worker").
    std::string comm;
    std::getline(std::ifstream("/proc/" + std::to_string(r) + "/comm"), comm);
    EXPECT_EQ(comm, "ipfixweb-runner");
    const std::string dir = "/proc/" + std::to_string(r) + "/fd";
    int sockets = 0;
    std::vector<std::string> anon;
    for (const auto& e : fs::directory_iterator(dir)) {
      struct stat st {};
      if (::stat(e.path().c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ++sockets;
      std::error_code ec;
      const std::string target = fs::read_symlink(e.path(), ec).string();
      if (target.rfind("anon_inode:", 0) == 0) anon.push_back(target);
    }
    // Its own channel to the worker; not the worker's ZeroMQ connections, poller or event fds.
    EXPECT_EQ(sockets, 1) << "runner " << r;
    EXPECT_TRUE(anon.empty()) << "runner " << r << ": " << anon.front();
  }
}

// Issue 12, finding 7: a task runner's address space is limited by default (4 GiB: a full
// default flow table with DPI needs about 1.2 GiB), so a hostile capture cannot make one
// exhaust the host's memory. Not in AddressSanitizer builds, whose shadow memory needs far
// more address space than any limit (the worker warns at start).
TEST(Runners, RunnersHaveAnAddressSpaceLimitByDefault) {
  // As worker/src/runner.cpp tells an AddressSanitizer build: GCC defines
  // __SANITIZE_ADDRESS__, clang (before 17) only answers __has_feature.
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer build: the worker applies no memory limit";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer build: the worker applies no memory limit";
#endif
#endif
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  Stack s(o);
  auto [st, body] = s.submit(small_task("m.ipfix"));
  ASSERT_EQ(st, 202) << body.dump();
  EXPECT_EQ(s.wait_terminal(body["task_id"], 30s)["state"], "succeeded");
  const auto runners = children_of(s.workers()[0]->pid());
  ASSERT_EQ(runners.size(), 1u);
  std::ifstream limits("/proc/" + std::to_string(runners[0]) + "/limits");
  std::string line, found;
  while (std::getline(limits, line))
    if (line.rfind("Max address space", 0) == 0) found = line;
  std::stringstream fields(found.substr(std::string("Max address space").size()));
  std::string soft, hard;
  fields >> soft >> hard;
  EXPECT_EQ(soft, std::to_string(4096ull << 20)) << found;
  EXPECT_EQ(hard, std::to_string(4096ull << 20)) << found;
}

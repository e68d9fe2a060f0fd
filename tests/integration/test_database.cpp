// The task database as its users meet it: the `sqlite3` shell next to a running stack.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "ipfixweb/shared/store.hpp"

using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

long long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : 0;
}

// A `sqlite3` shell that has begun a transaction and read from it: its snapshot stays until
// it commits, as when a person leaves a shell open in the middle of an investigation.
class ShellReader {
 public:
  explicit ShellReader(const std::string& db) {
    pipe_ = ::popen(("sqlite3 '" + db + "' >/dev/null 2>&1").c_str(), "w");
    if (!pipe_) return;
    std::fputs("BEGIN;\nSELECT count(*) FROM tasks;\n", pipe_);
    std::fflush(pipe_);
  }
  ~ShellReader() { end(); }
  bool ok() const { return pipe_ != nullptr; }
  void end() {
    if (!pipe_) return;
    std::fputs("COMMIT;\n.quit\n", pipe_);
    ::pclose(pipe_);
    pipe_ = nullptr;
  }

 private:
  FILE* pipe_ = nullptr;
};

std::vector<std::string> submit_many(Stack& stack, int n, const std::string& tag) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    json req = small_task(stack.output_dir() + "/" + tag + std::to_string(i) + ".ipfix");
    req["pcap_files"] = {stack.input_dir() + "/tiny.pcap"};
    req["dpi"] = false;
    auto [status, body] = stack.submit(req);
    if (status == 429 || status == 503) {  // full: wait a moment, as a client would
      std::this_thread::sleep_for(50ms);
      --i;
      continue;
    }
    EXPECT_EQ(status, 202) << body.dump();
    if (status == 202) ids.push_back(body.at("task_id"));
  }
  return ids;
}

TEST(Database, AShellHoldingAReadTransactionStopsNothingAndTheWalShrinksWhenItEnds) {
  if (!have_tool("sqlite3")) GTEST_SKIP() << "sqlite3 shell not installed";
  Stack stack;
  std::filesystem::copy_file(test_data() + "/tiny.pcap", stack.input_dir() + "/tiny.pcap");
  stack.wait_ready(2);
  const std::string wal = stack.db_path() + "-wal";

  ShellReader reader(stack.db_path());
  ASSERT_TRUE(reader.ok());
  std::this_thread::sleep_for(300ms);  // the shell has read: its snapshot is taken
  const auto started = Clock::now();
  // Work until the WAL is past the size the broker warns at (about 54 KB a task here).
  int tasks = 0;
  while (file_size(wal) < 4 * ipfixweb::TaskStore::kWalSizeLimit + (1 << 20) && tasks < 4000) {
    auto ids = submit_many(stack, 200, "held" + std::to_string(tasks) + "-");
    for (auto& id : ids) {
      auto t = stack.wait_terminal(id, 60s);
      ASSERT_EQ(t.value("state", ""), "succeeded") << t.dump();
    }
    tasks += 200;
  }
  const double took = std::chrono::duration<double>(Clock::now() - started).count();
  const long long held = file_size(wal);
  std::cerr << tasks << " tasks in " << took << " s with the shell's transaction open; WAL " << held
            << " bytes\n";
  // The broker said why the WAL grows (one second between its checks).
  std::this_thread::sleep_for(1500ms);
  EXPECT_NE(read_file(stack.broker().log_path()).find("a reader holds a transaction open"),
            std::string::npos);

  reader.end();
  // More work after the reader left: a checkpoint completes, the WAL starts over and is cut
  // back to the limit.
  auto more = submit_many(stack, 100, "after");
  for (auto& id : more) ASSERT_EQ(stack.wait_terminal(id, 60s).value("state", ""), "succeeded");
  const auto deadline = Clock::now() + 20s;
  long long after = file_size(wal);
  for (int round = 0; after > ipfixweb::TaskStore::kWalSizeLimit && Clock::now() < deadline;
       ++round) {
    submit_many(stack, 5, "nudge" + std::to_string(round) + "-");
    std::this_thread::sleep_for(200ms);
    after = file_size(wal);
  }
  std::cerr << "WAL after the shell ended: " << after << " bytes\n";
  std::this_thread::sleep_for(1500ms);
  EXPECT_NE(read_file(stack.broker().log_path()).find("WAL is back to"), std::string::npos);
  ASSERT_GT(held, ipfixweb::TaskStore::kWalSizeLimit) << "the test did not make the WAL grow";
  EXPECT_LE(after, ipfixweb::TaskStore::kWalSizeLimit)
      << "the WAL stayed at " << after << " bytes (held: " << held << ")";
}

}  // namespace

namespace {

// The api's open descriptors: all of them, and those on the task database's files.
struct Descriptors {
  int all = 0;
  int database = 0;
};
Descriptors descriptors_of(pid_t pid, const std::string& db) {
  Descriptors d;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++d.all;
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind(db, 0) == 0) ++d.database;
  }
  return d;
}

}  // namespace

// The api lends its read-only database connections and broker sockets to one request at a
// time; it used to keep one of each per handler thread (64), opened on each thread's first
// request, so that a steady load slowly opened them all (the soak in docs/reliability.md).
TEST(Database, TheApiHoldsAsManyConnectionsAsRequestsRanAtOnceNotOnePerHandlerThread) {
  Stack stack;
  std::filesystem::copy_file(test_data() + "/tiny.pcap", stack.input_dir() + "/tiny.pcap");
  stack.wait_ready(2);
  auto ids = submit_many(stack, 3, "conn");
  for (const auto& id : ids) stack.wait_terminal(id);
  const std::string db = std::filesystem::canonical(stack.db_path()).string();

  // Warm-up: four clients at once.
  auto run_clients = [&](int clients, int each) {
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c)
      threads.emplace_back([&, c] {
        auto client = stack.client();
        for (int i = 0; i < each; ++i) {
          const std::string& id = ids[static_cast<std::size_t>(i + c) % ids.size()];
          auto r = i % 3 == 0   ? client->Get("/api/v1/tasks/" + id)
                   : i % 3 == 1 ? client->Get("/api/v1/tasks?limit=5")
                                : client->Get("/readyz");  // a broker ping
          ASSERT_TRUE(r);
          EXPECT_EQ(r->status, 200) << r->body;
        }
      });
    for (auto& t : threads) t.join();
  };
  run_clients(4, 60);
  const Descriptors warm = descriptors_of(stack.api().pid(), db);

  // Then one client at a time, many requests: hardly anything more is opened.
  for (int round = 0; round < 5; ++round) run_clients(1, 120);
  const Descriptors after = descriptors_of(stack.api().pid(), db);
  // A connection holds the database and its WAL open (and the process one shared-memory file):
  // one per client that ran at once, the event hub's, and one more, as a handler may still be
  // returning its lease when the answer has reached the client and its next request arrives.
  // (One per handler thread ended near 64.)
  const int most = 2 * (4 + 1 + 1) + 1;
  EXPECT_LE(warm.database, most);
  EXPECT_LE(after.database, most) << "database descriptors " << warm.database << " -> "
                                  << after.database;
  EXPECT_LE(after.all, warm.all + 2 * 2) << "descriptors " << warm.all << " -> " << after.all;
}

// Issue 2's path, end to end with real processes: api -> broker -> worker ->
// SQLite, and the IPFIX file checked by decoders we did not write.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb::test;

namespace {

// Sum of every packet counter (forward and reverse) tshark decodes in an
// IPFIX file; -1 if tshark is missing or fails.
long long tshark_packet_total(const std::string& file) {
  auto counters = tshark_packet_counters(file);
  if (!counters) return -1;
  long long total = 0;
  for (long long c : *counters) total += c;
  return total;
}

long long capinfos_packets(const std::string& file) {
  int st = 0;
  std::string out = run_capture("capinfos -c -M '" + file + "' 2>/dev/null", &st);
  auto pos = out.find("Number of packets:");
  if (st != 0 || pos == std::string::npos) return -1;
  return std::stoll(out.substr(pos + 18));
}

}  // namespace

TEST(EndToEnd, SampleCaptureBecomesIpfixAndStateIsDurable) {
  Stack stack;
  auto c = stack.client();
  json body = {{"pcap_files", {"sample.pcap"}},
               {"output_path", "sample.ipfix"},
               {"DPI", true},
               {"analysis_list", {"tcp", "udp"}}};
  auto r = c->Post("/api/v1/tasks", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  auto accepted = json::parse(r->body);
  std::string id = accepted.at("task_id");
  EXPECT_EQ(r->get_header_value("Location"), "/api/v1/tasks/" + id);
  EXPECT_EQ(accepted.at("state"), "queued");

  json task = stack.wait_terminal(id);
  ASSERT_EQ(task.value("state", ""), "succeeded") << task.dump(2);
  EXPECT_EQ(task["output_path"], "sample.ipfix");
  EXPECT_DOUBLE_EQ(task["progress"].get<double>(), 1.0);
  EXPECT_EQ(task["attempts"], 1);
  EXPECT_FALSE(task["worker"].is_null());
  EXPECT_FALSE(task["started_at"].is_null());
  EXPECT_FALSE(task["finished_at"].is_null());
  const json& summary = task["summary"];
  ASSERT_TRUE(summary.is_object()) << task.dump(2);
  EXPECT_EQ(summary["packets"], 347);
  EXPECT_GT(summary["flows"].get<long long>(), 0);

  // The history shows every state change in order.
  auto ev = c->Get("/api/v1/tasks/" + id + "/events");
  ASSERT_TRUE(ev);
  ASSERT_EQ(ev->status, 200);
  std::vector<std::string> states;
  json history = json::parse(ev->body);
  for (auto& e : history["events"]) states.push_back(e["state"]);
  EXPECT_EQ(states, (std::vector<std::string>{"queued", "running", "succeeded"}));

  // The file and its flow store are in place under their final names, with no temporary
  // left over.
  std::string out = stack.output_dir() + "/sample.ipfix";
  ASSERT_TRUE(fs::exists(out));
  EXPECT_GT(fs::file_size(out), 0u);
  EXPECT_GT(fs::file_size(out + ".flows.sqlite"), 0u);
  for (auto& entry : fs::directory_iterator(stack.output_dir())) {
    const auto name = entry.path().filename().string();
    EXPECT_TRUE(name == "sample.ipfix" || name == "sample.ipfix.flows.sqlite")
        << "unexpected file in output dir: " << name;
  }

  // A completion line for the task, as the original service kept them.
  {
    std::ifstream log(stack.data_dir() + "/logs/successful_tasks.jsonl");
    std::string line;
    ASSERT_TRUE(std::getline(log, line));
    auto j = json::parse(line);
    EXPECT_EQ(j["task_id"], id);
    EXPECT_EQ(j["state"], "succeeded");
    EXPECT_EQ(j["summary"]["packets"], 347);
    EXPECT_GT(j["summary"]["flows"].get<long>(), 0);
    EXPECT_GT(j["summary"]["bytes"].get<long>(), 0);
    EXPECT_EQ(j["request"]["pcap_files"], json::array({"sample.pcap"})) << line;
    auto t = stack.get_task(id);
    for (const char* field : {"created_at", "started_at", "worker", "attempts"})
      EXPECT_EQ(j[field], t[field]) << field << " in " << line;
    // The log has the full path; the api shows it relative to the output root.
    EXPECT_EQ(j["output_path"], stack.output_dir() + "/" + t["output_path"].get<std::string>());
    EXPECT_FALSE(std::getline(log, line));
  }

  // Independent decoder: every packet of the capture is counted exactly once.
  if (!have_tool("tshark") || !have_tool("capinfos")) GTEST_SKIP() << "tshark/capinfos missing";
  long long expected = capinfos_packets(stack.input_dir() + "/sample.pcap");
  ASSERT_EQ(expected, 347);
  EXPECT_EQ(tshark_packet_total(out), expected);
}

TEST(EndToEnd, ListShowsNewestFirstAndStateSurvivesInSqlite) {
  Stack stack;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto [status, body] = stack.submit({{"pcap_files", {"sample.pcap"}},
                                        {"output_path", "out/" + std::to_string(i) + ".ipfix"},
                                        {"DPI", false}});
    ASSERT_EQ(status, 202) << body.dump();
    ids.push_back(body["task_id"]);
  }
  for (auto& id : ids) EXPECT_EQ(stack.wait_terminal(id)["state"], "succeeded");
  auto r = stack.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto list = json::parse(r->body)["tasks"];
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0]["task_id"], ids[2]);
  EXPECT_EQ(list[2]["task_id"], ids[0]);

  // The same history is there for the sqlite3 shell.
  if (!have_tool("sqlite3")) GTEST_SKIP() << "sqlite3 missing";
  int st = 0;
  std::string rows = run_capture(
      "sqlite3 '" + stack.db_path() + "' \"SELECT count(*) FROM tasks WHERE state='succeeded'\"",
      &st);
  EXPECT_EQ(st, 0);
  EXPECT_EQ(rows, "3\n");
}

TEST(EndToEnd, BadInputFailsTheTaskWithAReadableError) {
  Stack stack;
  // Not a capture at all: accepted (it exists and is readable), then failed.
  {
    std::ofstream f(stack.input_dir() + "/notes.pcap");
    f << "this is not a capture\n";
  }
  auto [status, body] =
      stack.submit({{"pcap_files", {"notes.pcap"}}, {"output_path", "notes.ipfix"}});
  ASSERT_EQ(status, 202) << body.dump();
  json task = stack.wait_terminal(body["task_id"]);
  EXPECT_EQ(task["state"], "failed");
  EXPECT_TRUE(task["error"].is_string() && !task["error"].get<std::string>().empty());
  EXPECT_FALSE(fs::exists(stack.output_dir() + "/notes.ipfix"));
  for (auto& entry : fs::directory_iterator(stack.output_dir()))
    ADD_FAILURE() << "left behind: " << entry.path();
  std::ifstream log(stack.data_dir() + "/logs/failed_tasks.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  auto j = json::parse(line);
  EXPECT_EQ(j["task_id"], body["task_id"]);
  EXPECT_EQ(j["error"], task["error"]);
  EXPECT_FALSE(fs::exists(stack.data_dir() + "/logs/successful_tasks.jsonl"));
}

TEST(EndToEnd, RequestsOutsideTheRootsAreRefused) {
  Stack stack;
  auto [s1, b1] = stack.submit({{"pcap_files", {"../ipfixweb.db"}}, {"output_path", "x.ipfix"}});
  EXPECT_EQ(s1, 422) << b1.dump();
  auto [s2, b2] = stack.submit({{"pcap_files", {"sample.pcap"}}, {"output_path", "/tmp/x.ipfix"}});
  EXPECT_EQ(s2, 422) << b2.dump();
  fs::create_symlink("/etc", stack.input_dir() + "/etc");
  auto [s3, b3] = stack.submit({{"pcap_files", {"etc/passwd"}}, {"output_path", "x.ipfix"}});
  EXPECT_EQ(s3, 422) << b3.dump();
  auto [s4, b4] = stack.submit({{"pcap_files", {"missing.pcap"}}, {"output_path", "x.ipfix"}});
  EXPECT_EQ(s4, 422) << b4.dump();
  EXPECT_EQ(b4["errors"][0]["field"], "pcap_files[0]");
  auto r = stack.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 0u);
}

TEST(EndToEnd, ASecondApiOnTheSamePortFailsInsteadOfSharingIt) {
  Stack stack;
  Process second("api2",
                 {bin_dir() + "/ipfixweb-api", "--data-dir", stack.data_dir(), "--listen",
                  "127.0.0.1:" + std::to_string(stack.http_port())},
                 {}, stack.data_dir() + "/api2.log");
  auto status = second.wait(std::chrono::seconds(5));
  ASSERT_TRUE(status) << "second api kept running on a port already in use";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_NE(WEXITSTATUS(*status), 0);
}

TEST(Operations, JsonLogsAndLogDirectory) {
  StackOptions o;
  o.workers = 1;
  std::string logdir =
      (fs::temp_directory_path() / ("ipfixweb-logs-" + std::to_string(::getpid()))).string();
  for (auto* args : {&o.extra_broker_args, &o.extra_worker_args, &o.extra_api_args})
    *args = {"--log-json", "--log-dir", logdir};
  fs::create_directories(logdir);
  {
    Stack stack(o);
    auto [status, body] =
        stack.submit({{"pcap_files", {"sample.pcap"}}, {"output_path", "j.ipfix"}});
    ASSERT_EQ(status, 202);
    stack.wait_terminal(body["task_id"]);
    stack.broker().signal(SIGTERM);
    stack.broker().wait(std::chrono::seconds(5));
    // Every line each process wrote to stderr is one JSON object.
    int lines = 0;
    for (const char* name : {"broker.log", "worker-w1.log", "api.log"}) {
      std::ifstream in(stack.data_dir() + "/" + name);
      std::string line;
      while (std::getline(in, line)) {
        auto j = json::parse(line, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << name << ": " << line;
        EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
        ++lines;
      }
    }
    EXPECT_GT(lines, 5);
  }
  // The same lines also went to per-component files in --log-dir.
  for (const char* name : {"broker.log", "worker.log", "api.log"})
    EXPECT_TRUE(fs::exists(logdir + "/" + name) && fs::file_size(logdir + "/" + name) > 0) << name;
  std::ifstream in(logdir + "/broker.log");
  std::string first;
  ASSERT_TRUE(std::getline(in, first));
  EXPECT_EQ(json::parse(first, nullptr, false)["logger"], "broker");
  fs::remove_all(logdir);
}

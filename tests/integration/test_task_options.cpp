// Issue 11: a request option defined once (shared/include/ipfixweb/shared/task_spec.hpp)
// reaches the engine end to end, and a field the api does not know is refused, not ignored.
#include <gtest/gtest.h>

#include "harness.hpp"

using nlohmann::json;
using namespace ipfixweb::test;

namespace {

long long tshark_packet_counters_in(const std::string& file) {
  auto counters = tshark_packet_counters(file);
  return counters ? static_cast<long long>(counters->size()) : -1;
}

json sample_with(const std::string& output, json extra) {
  json body = {{"pcap_files", {"sample.pcap"}}, {"output_path", output}, {"DPI", false}};
  body.update(extra);
  return body;
}

}  // namespace

TEST(TaskOptions, UniflowAndMaxFlowsReachTheEngine) {
  if (!have_tool("tshark")) GTEST_SKIP() << "tshark not installed";
  Stack s;
  auto [st1, plain] = s.submit(sample_with("plain.ipfix", json::object()));
  auto [st2, uni] = s.submit(sample_with("uni.ipfix", {{"uniflow", true}}));
  auto [st3, tiny] = s.submit(sample_with("tiny.ipfix", {{"max_flows", 1}}));
  ASSERT_EQ(st1, 202) << plain.dump();
  ASSERT_EQ(st2, 202) << uni.dump();
  ASSERT_EQ(st3, 202) << tiny.dump();
  json p = s.wait_terminal(plain["task_id"]);
  json u = s.wait_terminal(uni["task_id"]);
  json t = s.wait_terminal(tiny["task_id"]);
  ASSERT_EQ(p["state"], "succeeded") << p.dump();
  ASSERT_EQ(u["state"], "succeeded") << u.dump();
  ASSERT_EQ(t["state"], "succeeded") << t.dump();
  const long long flows = p["summary"]["flows"], uni_flows = u["summary"]["flows"],
                  tiny_flows = t["summary"]["flows"];
  // Biflows: two packet counters per record; uniflow: one per record, and more records (each
  // direction on its own); a one-flow table exports a record whenever another flow arrives.
  EXPECT_EQ(tshark_packet_counters_in(s.output_dir() + "/plain.ipfix"), 2 * flows);
  EXPECT_EQ(tshark_packet_counters_in(s.output_dir() + "/uni.ipfix"), uni_flows);
  EXPECT_GT(uni_flows, flows);
  EXPECT_EQ(tshark_packet_counters_in(s.output_dir() + "/tiny.ipfix"), 2 * tiny_flows);
  EXPECT_GT(tiny_flows, flows);
  EXPECT_EQ(p["summary"]["packets"], t["summary"]["packets"]);
  // The stored request shows an option once it is used; a request that does not use it keeps
  // the text (and the Idempotency-Key fingerprint) it had before the option existed.
  EXPECT_EQ(u["request"]["uniflow"], true);
  EXPECT_EQ(t["request"]["max_flows"], 1);
  EXPECT_FALSE(p["request"].contains("uniflow")) << p["request"].dump();
  EXPECT_FALSE(p["request"].contains("max_flows")) << p["request"].dump();
}

// "threads" (issue 16) reaches the engine, capped by the worker's --max-task-threads, and the
// records are the same as with one thread.
TEST(TaskOptions, ThreadsReachTheEngineUpToTheWorkersCap) {
  StackOptions o;
  o.workers = 1;
  o.extra_worker_args = {"--max-task-threads", "2"};
  Stack s(o);
  json results[3];
  const int asked[3] = {1, 2, 8};
  for (int i = 0; i < 3; ++i) {
    json body = sample_with("t" + std::to_string(asked[i]) + ".ipfix", {{"DPI", true}});
    if (asked[i] != 1) body["threads"] = asked[i];
    auto [status, reply] = s.submit(body);
    ASSERT_EQ(status, 202) << reply.dump();
    results[i] = s.wait_terminal(reply["task_id"]);
    ASSERT_EQ(results[i]["state"], "succeeded") << results[i].dump();
  }
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(results[i]["summary"]["flows"], results[0]["summary"]["flows"]);
    EXPECT_EQ(results[i]["summary"]["packets"], results[0]["summary"]["packets"]);
    EXPECT_EQ(results[i]["summary"]["bytes"], results[0]["summary"]["bytes"]);
  }
  EXPECT_EQ(results[2]["request"]["threads"], 8);
  EXPECT_FALSE(results[0]["request"].contains("threads")) << results[0]["request"].dump();
  // The runner's engine logs the threads it used: 2 for the task that asked for 2 and for the
  // one that asked for 8 (the cap), none for the default.
  const std::string log = read_file(s.data_dir() + "/worker-w1.log");
  std::size_t with_two = 0;
  for (auto at = log.find("with 2 metering threads"); at != std::string::npos;
       at = log.find("with 2 metering threads", at + 1))
    ++with_two;
  EXPECT_EQ(with_two, 2u) << log;
  EXPECT_EQ(log.find("with 8 metering threads"), std::string::npos) << log;
}

TEST(TaskOptions, OutOfRangeOptionsAreRefusedWithTheFieldNamed) {
  Stack s;
  for (const json& bad :
       {json{{"max_flows", 0}}, json{{"max_flows", 16777217}}, json{{"max_flows", 2.5}},
        json{{"uniflow", "yes"}}, json{{"threads", 0}}, json{{"threads", 65}}}) {
    auto [status, body] = s.submit(sample_with("x.ipfix", bad));
    ASSERT_EQ(status, 422) << bad.dump() << " " << body.dump();
    ASSERT_EQ(body["errors"].size(), 1u) << body.dump();
    EXPECT_EQ(body["errors"][0]["field"], bad.begin().key()) << body.dump();
  }
}

TEST(TaskOptions, AnUnknownFieldIsRefusedNamingItButTheOriginalRouteIgnoresIt) {
  Stack s;
  json body = sample_with("typo.ipfix", {{"idle_timout", 30}});
  auto [status, answer] = s.submit(body);
  ASSERT_EQ(status, 422) << answer.dump();
  ASSERT_EQ(answer["errors"].size(), 1u) << answer.dump();
  EXPECT_EQ(answer["errors"][0]["field"], "idle_timout");
  EXPECT_EQ(answer["errors"][0]["message"], "is not a known field");
  // The original service's route accepted (and ignored) whatever it did not know.
  auto r = s.client()->Post("/api/export-task", body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  EXPECT_EQ(s.wait_terminal(json::parse(r->body)["task_id"])["state"], "succeeded");
}

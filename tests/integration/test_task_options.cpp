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

TEST(TaskOptions, OutOfRangeOptionsAreRefusedWithTheFieldNamed) {
  Stack s;
  for (const json& bad : {json{{"max_flows", 0}}, json{{"max_flows", 16777217}},
                          json{{"max_flows", 2.5}}, json{{"uniflow", "yes"}}}) {
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

// One capture converted in flow partitions by ordinary tasks on two workers, and a merge task
// that makes their outputs into the whole conversion's: the same records (tshark), flow store
// rows (the api's NDJSON export) and summary as a task converting it whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace ipfixweb::test {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string submit_ok(Stack& s, const json& body) {
  auto [st, reply] = s.submit(body);
  EXPECT_EQ(st, 202) << reply.dump();
  return reply.value("task_id", "");
}

// The task's flow store as the api exports it, one sorted line per record, without row ids.
std::vector<std::string> exported_rows(Stack& s, const std::string& id) {
  auto r = s.client()->Get("/api/v1/tasks/" + id + "/flows.ndjson");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  std::vector<std::string> rows;
  if (!r) return rows;
  std::istringstream in(r->body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json row = json::parse(line);
    row.erase("id");
    rows.push_back(row.dump());
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

// The summary without what differs between a run and a merge of its parts.
json comparable(json s) {
  for (const char* k : {"output", "elapsed_s", "packets_per_s", "peak_flows", "parts"}) s.erase(k);
  return s;
}

TEST(SplitTask, PartitionsOnTwoWorkersAndTheirMergeAreTheWholeConversion) {
  StackOptions o;
  o.workers = 2;
  Stack s(o);
  s.wait_ready(2);
  json whole_req = small_task("split/whole.ipfix");
  const std::string whole = submit_ok(s, whole_req);
  std::vector<std::string> parts;
  for (int i = 0; i < 2; ++i) {
    json part = small_task("split/part" + std::to_string(i) + ".ipfix");
    part["partition"] = i;
    part["partitions"] = 2;
    parts.push_back(submit_ok(s, part));
  }
  const json w = s.wait_terminal(whole);
  ASSERT_EQ(w["state"], "succeeded") << w.dump();
  std::uint64_t part_flows = 0;
  for (const auto& id : parts) {
    const json p = s.wait_terminal(id);
    ASSERT_EQ(p["state"], "succeeded") << p.dump();
    EXPECT_EQ(p["summary"]["packets_read"], w["summary"]["packets_read"]);
    part_flows += p["summary"]["flows"].get<std::uint64_t>();
  }
  EXPECT_EQ(part_flows, w["summary"]["flows"].get<std::uint64_t>());
  for (int i = 0; i < 2; ++i)
    EXPECT_TRUE(
        fs::exists(s.output_dir() + "/split/part" + std::to_string(i) + ".ipfix.summary.json"));

  // The parts in reverse order: a merge takes them in any order.
  const std::string merge =
      submit_ok(s, json{{"kind", "merge"},
                        {"pcap_files", {"split/part1.ipfix", "split/part0.ipfix"}},
                        {"output_path", "split/merged.ipfix"}});
  const json m = s.wait_terminal(merge);
  ASSERT_EQ(m["state"], "succeeded") << m.dump();
  EXPECT_EQ(m["summary"]["parts"], 2);
  EXPECT_EQ(comparable(m["summary"]), comparable(w["summary"]));
  EXPECT_EQ(exported_rows(s, merge), exported_rows(s, whole));
  auto whole_counters = tshark_packet_counters(s.output_dir() + "/split/whole.ipfix");
  auto merged_counters = tshark_packet_counters(s.output_dir() + "/split/merged.ipfix");
  if (whole_counters && merged_counters) {  // tshark, an independent decoder
    std::sort(whole_counters->begin(), whole_counters->end());
    std::sort(merged_counters->begin(), merged_counters->end());
    EXPECT_EQ(*merged_counters, *whole_counters);
    EXPECT_FALSE(merged_counters->empty());
  }
  EXPECT_TRUE(s.temporaries().empty());
}

// A merge given one part of two fails with the reason and leaves no output; one whose parts are
// not beneath the output root is refused by the api.
TEST(SplitTask, AMergeMissingAPartFailsWithTheReasonAndWritesNothing) {
  Stack s;
  s.wait_ready(2);
  json part = small_task("lone/part0.ipfix");
  part["partition"] = 0;
  part["partitions"] = 2;
  ASSERT_EQ(s.wait_terminal(submit_ok(s, part))["state"], "succeeded");
  const std::string merge = submit_ok(s, json{{"kind", "merge"},
                                              {"pcap_files", {"lone/part0.ipfix"}},
                                              {"output_path", "lone/merged.ipfix"}});
  const json m = s.wait_terminal(merge);
  EXPECT_EQ(m["state"], "failed");
  EXPECT_NE(m.value("error", "").find("1 parts were given"), std::string::npos) << m.dump();
  EXPECT_EQ(m["attempts"], 1) << "a merge that cannot succeed is not retried";
  EXPECT_FALSE(fs::exists(s.output_dir() + "/lone/merged.ipfix"));
  EXPECT_FALSE(fs::exists(s.output_dir() + "/lone/merged.ipfix.flows.sqlite"));
  EXPECT_TRUE(s.temporaries().empty());

  auto [st, reply] = s.submit(json{
      {"kind", "merge"}, {"pcap_files", {"sample.pcap"}}, {"output_path", "lone/other.ipfix"}});
  EXPECT_EQ(st, 422) << reply.dump();
}

}  // namespace
}  // namespace ipfixweb::test

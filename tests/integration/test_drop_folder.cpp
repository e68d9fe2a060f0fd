// Issue 14 (drop folder): files written into a watched folder inside the input root become
// tasks of the real stack once they stopped growing, each exactly once, also across a restart
// of the api; what is not a capture is recorded and never submitted (docs/drop-folder.md).
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "harness.hpp"

using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// A quick drop folder: settled after 0.3 s, listed every second.
StackOptions drop_stack() {
  StackOptions o;
  o.workers = 1;
  o.extra_api_args = {"--drop-folder", "drop", "--drop-settle", "0.3", "--drop-rescan", "1"};
  return o;
}

std::string drop_dir(const Stack& s) { return s.input_dir() + "/drop"; }

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

json drop_listing(Stack& s) {
  auto r = s.client()->Get("/api/v1/drop");
  if (!r || r->status != 200) return nullptr;
  return json::parse(r->body, nullptr, false);
}

// The journal entries of one file, newest first.
json entries_of(Stack& s, const std::string& file) {
  json out = json::array();
  json l = drop_listing(s);
  if (!l.is_object()) return out;
  for (const auto& e : l["entries"])
    if (e["file"] == file) out.push_back(e);
  return out;
}

// Waits for the first journal entry of `file`; null on timeout (the test fails).
json wait_entry(Stack& s, const std::string& file, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    json e = entries_of(s, file);
    if (!e.empty()) return e[0];
    std::this_thread::sleep_for(50ms);
  }
  ADD_FAILURE() << "no journal entry for " << file << "; /api/v1/drop: " << drop_listing(s).dump();
  return nullptr;
}

std::size_t task_count(Stack& s) {
  auto r = s.client()->Get("/api/v1/tasks");
  if (!r || r->status != 200) return 0;
  return json::parse(r->body)["tasks"].size();
}

}  // namespace

TEST(DropFolder, ACaptureWrittenSlowlyBecomesExactlyOneTaskThatSucceeds) {
  Stack s(drop_stack());
  ASSERT_TRUE(fs::is_directory(drop_dir(s))) << "the api makes the folder";
  const std::string pcap = read_file(test_data() + "/sample.pcap");
  {
    std::ofstream out(drop_dir(s) + "/slow.pcap", std::ios::binary);
    out << pcap.substr(0, pcap.size() / 2);
    out.flush();
    // Four settle times without a write, the file still open: not taken.
    std::this_thread::sleep_for(1200ms);
    EXPECT_EQ(task_count(s), 0u) << "half a capture was submitted";
    EXPECT_TRUE(entries_of(s, "slow.pcap").empty());
    out << pcap.substr(pcap.size() / 2);
  }
  json e = wait_entry(s, "slow.pcap");
  ASSERT_EQ(e["outcome"], "submitted") << e.dump();
  json t = s.wait_terminal(e["task_id"]);
  ASSERT_EQ(t["state"], "succeeded") << t.dump();
  EXPECT_EQ(t["summary"]["packets"], 347) << "not the whole capture";
  EXPECT_EQ(t["output_path"], e["output_path"]);
  EXPECT_TRUE(fs::exists(s.output_dir() + "/" + e["output_path"].get<std::string>()));
  EXPECT_EQ(t["request"]["pcap_files"][0], drop_dir(s) + "/slow.pcap");
  EXPECT_EQ(t["request"]["DPI"], true);
  // Rescans and settle times later, still one task and one entry.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(task_count(s), 1u);
  EXPECT_EQ(entries_of(s, "slow.pcap").size(), 1u);
}

TEST(DropFolder, ANonCaptureIsRecordedAsSkippedAndNeverSubmitted) {
  Stack s(drop_stack());
  write_file(drop_dir(s) + "/notes.txt", "these are notes, not packets\n");
  write_file(drop_dir(s) + "/.hidden.pcap", read_file(test_data() + "/sample.pcap"));
  write_file(drop_dir(s) + "/upload.pcap.part", read_file(test_data() + "/sample.pcap"));
  json e = wait_entry(s, "notes.txt");
  ASSERT_EQ(e["outcome"], "skipped") << e.dump();
  EXPECT_NE(e["reason"].get<std::string>().find("not a capture"), std::string::npos);
  EXPECT_TRUE(e["task_id"].is_null());
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(task_count(s), 0u);
  EXPECT_EQ(drop_listing(s)["entries"].size(), 1u) << drop_listing(s).dump();
}

TEST(DropFolder, AfterARestartNothingIsSubmittedTwiceAndFilesDroppedMeanwhileAreTaken) {
  Stack s(drop_stack());
  write_file(drop_dir(s) + "/a.pcap", read_file(test_data() + "/sample.pcap"));
  json a = wait_entry(s, "a.pcap");
  ASSERT_EQ(a["outcome"], "submitted") << a.dump();
  ASSERT_EQ(s.wait_terminal(a["task_id"])["state"], "succeeded");

  s.api().stop();
  // Already there when the api starts again.
  write_file(drop_dir(s) + "/b.pcap", read_file(test_data() + "/tiny.pcap"));
  s.start_api();
  s.wait_ready(1);
  json b = wait_entry(s, "b.pcap");
  ASSERT_EQ(b["outcome"], "submitted") << b.dump();
  EXPECT_NE(b["task_id"], a["task_id"]);
  EXPECT_EQ(s.wait_terminal(b["task_id"])["state"], "succeeded");
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(task_count(s), 2u);
  auto again = entries_of(s, "a.pcap");
  ASSERT_EQ(again.size(), 1u) << again.dump();
  EXPECT_EQ(again[0]["task_id"], a["task_id"]);
  EXPECT_EQ(entries_of(s, "b.pcap").size(), 1u);
}

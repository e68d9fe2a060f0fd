#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/render.hpp"
#include "ipfixweb/shared/json_escape.hpp"

using namespace ipfixweb;
using nlohmann::json;

TEST(Render, TaskIsValidJsonWithStoredDocumentsSplicedIn) {
  TaskRecord t;
  t.id = "6ab62899-d093-4627-9c28-8931b8215f5e";
  t.state = "failed";
  t.progress = 0.25;
  t.created_at = "2026-11-27T12:22:34.143Z";
  t.attempts = 2;
  t.request = R"({"pcap_files":["a.pcap"],"output_path":"x/y.ipfix"})";
  t.summary = R"({"packets":347,"flows":38})";
  t.error = "bad \"capture\"\n\tline2 \x01";
  t.output_path = "/data/output/x/y.ipfix";
  std::string out;
  api::append_task_json(out, t, "/data/output");
  json j = json::parse(out);
  EXPECT_EQ(j["task_id"], t.id);
  EXPECT_EQ(j["state"], "failed");
  EXPECT_DOUBLE_EQ(j["progress"].get<double>(), 0.25);
  EXPECT_TRUE(j["started_at"].is_null());
  EXPECT_TRUE(j["worker"].is_null());
  EXPECT_EQ(j["attempts"], 2);
  EXPECT_EQ(j["output_path"], "x/y.ipfix");
  EXPECT_EQ(j["request"]["pcap_files"][0], "a.pcap");
  EXPECT_EQ(j["summary"]["packets"], 347);
  EXPECT_EQ(j["error"], t.error);
  EXPECT_EQ(j["links"]["events"], "/api/v1/tasks/" + t.id + "/events");
}

TEST(Render, EmptyDocumentsBecomeNullAndForeignPathsStayWhole) {
  TaskRecord t;
  t.id = "x";
  t.state = "queued";
  t.output_path = "/elsewhere/out.ipfix";
  std::string out;
  api::append_task_json(out, t, "/data/output");
  json j = json::parse(out);
  EXPECT_TRUE(j["summary"].is_null());
  EXPECT_TRUE(j["request"].is_null());
  EXPECT_TRUE(j["error"].is_null());
  EXPECT_EQ(j["output_path"], "/elsewhere/out.ipfix");
  EXPECT_EQ(j["progress"], 0);
}

TEST(Render, StringsAreEscapedLikeJson) {
  for (std::string s : {std::string("plain"), std::string("q\"b\\s"), std::string("\x1f\x7f"),
                        std::string("ünïcødé")}) {
    std::string out;
    append_json_string(out, s);  // shared/json_escape.hpp
    EXPECT_EQ(json::parse(out).get<std::string>(), s);
  }
}

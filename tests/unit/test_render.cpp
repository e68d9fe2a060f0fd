#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/render.hpp"
#include "ipfixweb/shared/json_escape.hpp"

using namespace ipfixweb;
using nlohmann::json;

TEST(Render, TaskIsValidJsonWithStoredDocumentsSplicedIn) {
  TaskRecord t;
  t.id = "6ab62899-d093-4627-9c28-8931b8215f5e";
  t.state = TaskState::Failed;
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
  t.state = TaskState::Queued;
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

// is_valid_utf8 against an independent judge: nlohmann's strict dump() throws on exactly the
// byte sequences that are not UTF-8. All 1- and 2-byte strings, and 3- and 4-byte ones for
// every lead and second byte with boundary values after them.
// Runs of plain characters are appended whole: every ASCII character alone, at the start, the
// middle and the end of a run, and random ASCII strings, come out as nlohmann writes them.
TEST(JsonEscape, EscapedTextIsWhatNlohmannWrites) {
  auto same = [](const std::string& s) {
    std::string mine;
    append_json_string(mine, s);
    EXPECT_EQ(mine, nlohmann::json(s).dump()) << "for a string of " << s.size() << " bytes";
  };
  same("");
  for (int c = 0; c < 128; ++c) {
    const std::string ch(1, static_cast<char>(c));
    same(ch);
    same(ch + "abc");
    same("abc" + ch + "def");
    same("abc" + ch);
    same(ch + ch);
  }
  std::uint32_t x = 12345;
  for (int n = 0; n < 2000; ++n) {
    std::string s;
    for (int i = n % 40; i > 0; --i) {
      x = x * 1103515245u + 12345u;
      s.push_back(static_cast<char>((x >> 16) % 128));
    }
    same(s);
  }
}

TEST(JsonEscape, Utf8ValidationAgreesWithNlohmann) {
  auto nlohmann_accepts = [](const std::string& s) {
    try {
      (void)nlohmann::json(s).dump();
      return true;
    } catch (const nlohmann::json::type_error&) {
      return false;
    }
  };
  std::size_t checked = 0;
  auto check = [&](const std::string& s) {
    ++checked;
    std::string bytes;
    for (unsigned char c : s) {
      static constexpr char kHex[] = "0123456789abcdef";
      bytes += {kHex[c >> 4], kHex[c & 0xF], ' '};
    }
    ASSERT_EQ(ipfixweb::is_valid_utf8(s), nlohmann_accepts(s)) << "bytes " << bytes;
  };
  for (int a = 0; a < 256; ++a) {
    check(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) {
      const std::string ab{static_cast<char>(a), static_cast<char>(b)};
      check(ab);
      if (a < 0xE0) continue;
      for (int c : {0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xFF}) {
        check(ab + static_cast<char>(c));
        if (a < 0xF0) continue;
        for (int d : {0x41, 0x80, 0xBF, 0xC0})
          check(ab + static_cast<char>(c) + static_cast<char>(d));
      }
    }
  }
  EXPECT_GT(checked, 65536u);
}

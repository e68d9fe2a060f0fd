// The pure parts of the api's HTTP layer: decoding request targets, query strings, routing.
#include <gtest/gtest.h>

#include "ipfixweb/api/flow_routes.hpp"
#include "ipfixweb/api/http.hpp"

using namespace ipfixweb::api;
using namespace ipfixweb::api::http;

TEST(PercentDecode, DecodesEscapesAndKeepsEverythingElse) {
  EXPECT_EQ(percent_decode("/a%20b/%41%62%2Fc", false), "/a b/Ab/c");
  EXPECT_EQ(percent_decode("caf%C3%A9", false), "caf\xC3\xA9");
  EXPECT_EQ(percent_decode("a+b", false), "a+b");  // '+' is a space only in queries
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  EXPECT_EQ(percent_decode("%2B", true), "+");
  EXPECT_EQ(percent_decode("", false), "");
}

TEST(PercentDecode, RefusesBadEscapesInvalidUtf8AndNul) {
  for (const char* bad : {"%", "%4", "%zz", "%g0", "a%2", "%%41"})
    EXPECT_FALSE(percent_decode(bad, false)) << bad;
  EXPECT_FALSE(percent_decode("%ff", false));        // not UTF-8
  EXPECT_FALSE(percent_decode("%C3", false));        // truncated sequence
  EXPECT_FALSE(percent_decode("%C0%AF", false));     // overlong '/'
  EXPECT_FALSE(percent_decode("%ED%A0%80", false));  // surrogate
  EXPECT_FALSE(percent_decode("\xff", false));       // raw bytes are checked too
  EXPECT_FALSE(percent_decode("id%00.txt", false));  // NUL
  EXPECT_FALSE(percent_decode(std::string("a\0b", 3), false));
}

TEST(ParseTarget, SplitsPathAndDecodesTheQueryInOrder) {
  auto t = parse_target("/api/v1/tasks?state=queued&input=a+b%2Fc&flag&=x&&limit=5&state=2");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->path, "/api/v1/tasks");
  const Fields expected = {{"state", "queued"}, {"input", "a b/c"}, {"flag", ""},
                           {"", "x"},           {"limit", "5"},     {"state", "2"}};
  EXPECT_EQ(t->query, expected);
  Request r;
  r.query = t->query;
  EXPECT_EQ(r.query_value("state"), "queued");  // the first value
  EXPECT_TRUE(r.has_query("flag"));
  EXPECT_FALSE(r.has_query("next"));
  EXPECT_EQ(r.query_value("next"), "");
}

TEST(ParseTarget, RefusesWhatDoesNotDecodeAnywhere) {
  EXPECT_FALSE(parse_target("/api/v1/tasks/%ff"));
  EXPECT_FALSE(parse_target("/api/v1/tasks?state=%ff"));
  EXPECT_FALSE(parse_target("/api/v1/tasks?st%zzate=1"));
  EXPECT_FALSE(parse_target("/api/v1/tasks?input=%"));
  EXPECT_FALSE(parse_target("http://host/api/v1/tasks"));  // not origin-form
  EXPECT_FALSE(parse_target("*"));
  EXPECT_FALSE(parse_target(""));
  EXPECT_TRUE(parse_target("/"));
  EXPECT_TRUE(parse_target("/x?"));
}

TEST(Fields, NamesAreCaseInsensitiveAndTheFirstWins) {
  Request r;
  r.headers = {{"Content-Type", "application/json"}, {"content-type", "text/plain"}};
  EXPECT_EQ(r.header("CONTENT-TYPE"), "application/json");
  EXPECT_TRUE(r.has_header("content-type"));
  EXPECT_FALSE(r.has_header("Content-Typ"));
  Response res;
  res.set_header("Retry-After", "1");
  res.set_header("retry-after", "2");  // replaces
  ASSERT_EQ(res.headers.size(), 1u);
  EXPECT_EQ(res.headers[0].second, "2");
  res.set_content("{}", "application/json");
  EXPECT_EQ(*find_field(res.headers, "content-type"), "application/json");
}

namespace {
Router test_router() {
  Router r;
  for (auto [method, path] : {std::pair{"GET", "/livez"},
                              {"GET", "/api/v1/tasks"},
                              {"POST", "/api/v1/tasks"},
                              {"GET", "/api/v1/tasks/{id}"},
                              {"DELETE", "/api/v1/tasks/{id}"},
                              {"GET", "/api/v1/tasks/{id}/output"}}) {
    Route route;
    route.method = method;
    route.path = path;
    r.add(std::move(route));
  }
  return r;
}
std::string matched(const Router& r, std::string_view method, std::string_view path) {
  auto m = r.match(method, path);
  if (!m.route) return "none";
  std::string out = m.route->method + " " + m.route->path;
  for (auto& p : m.params) out += " [" + p + "]";
  return out;
}
}  // namespace

TEST(Router, MatchesMethodAndTemplateAndCapturesTheSegments) {
  auto r = test_router();
  EXPECT_EQ(matched(r, "GET", "/livez"), "GET /livez");
  EXPECT_EQ(matched(r, "GET", "/api/v1/tasks"), "GET /api/v1/tasks");
  EXPECT_EQ(matched(r, "POST", "/api/v1/tasks"), "POST /api/v1/tasks");
  EXPECT_EQ(matched(r, "GET", "/api/v1/tasks/abc"), "GET /api/v1/tasks/{id} [abc]");
  EXPECT_EQ(matched(r, "DELETE", "/api/v1/tasks/abc"), "DELETE /api/v1/tasks/{id} [abc]");
  EXPECT_EQ(matched(r, "GET", "/api/v1/tasks/a b/output"), "GET /api/v1/tasks/{id}/output [a b]");
}

TEST(Router, HeadAnswersGetRoutesOnly) {
  auto r = test_router();
  EXPECT_EQ(matched(r, "HEAD", "/api/v1/tasks/x"), "GET /api/v1/tasks/{id} [x]");
  EXPECT_EQ(matched(r, "HEAD", "/nope"), "none");
}

TEST(Router, NothingElseMatches) {
  auto r = test_router();
  for (auto [method, path] : {std::pair{"PUT", "/api/v1/tasks"},
                              {"PATCH", "/api/v1/tasks/x"},
                              {"POST", "/livez"},
                              {"GET", "/api/v1/tasks/"},         // a parameter is never empty
                              {"GET", "/api/v1/tasks//output"},  // …
                              {"GET", "/api/v1/tasks/x/y"},      // one segment only
                              {"GET", "/api/v1/tasks/../../etc/passwd"},
                              {"GET", "/livez/"},
                              {"GET", "/LIVEZ"},
                              {"GET", "livez"},
                              {"GET", ""},
                              {"GET", "/"}})
    EXPECT_EQ(matched(r, method, path), "none") << method << " " << path;
}

// Review finding: download names went into Content-Disposition unescaped: an output named
// `we"ird; x=1.ipfix` was saved by `curl -OJ` as `we`, and non-ASCII names were sent raw.
TEST(Attachment, TheNameIsQuotedForOldClientsAndPercentEncodedInFilenameStar) {
  EXPECT_EQ(
      http::attachment("run-1.ipfix.flows.csv"),
      "attachment; filename=\"run-1.ipfix.flows.csv\"; filename*=UTF-8''run-1.ipfix.flows.csv");
  EXPECT_EQ(http::attachment("we\"ird; x=1\\.ipfix"),
            "attachment; filename=\"we\\\"ird; x=1\\\\.ipfix\"; "
            "filename*=UTF-8''we%22ird%3B%20x%3D1%5C.ipfix");
  EXPECT_EQ(http::attachment("caf\xc3\xa9\n.ipfix"),
            "attachment; filename=\"caf___.ipfix\"; filename*=UTF-8''caf%C3%A9%0A.ipfix");
}

// Review finding: /flows took any Accept value holding "text/csv" or "application/x-ndjson"
// for an export, q=0 ("not acceptable") included.
TEST(FlowsFormat, AcceptIsReadWithItsQValues) {
  using F = FlowsFormat;
  EXPECT_EQ(flows_format(""), F::Page);
  EXPECT_EQ(flows_format("application/json"), F::Page);
  EXPECT_EQ(flows_format("text/csv"), F::Csv);
  EXPECT_EQ(flows_format("application/x-ndjson"), F::Ndjson);
  EXPECT_EQ(flows_format("application/ndjson; charset=utf-8"), F::Ndjson);
  EXPECT_EQ(flows_format("text/csv;q=0, application/json"), F::Page);
  EXPECT_EQ(flows_format("application/json, text/csv;q=0.1"), F::Page);
  EXPECT_EQ(flows_format("application/json, application/x-ndjson;q=0"), F::Page);
  EXPECT_EQ(flows_format("application/json;q=0.5, text/csv"), F::Csv);
  EXPECT_EQ(flows_format("TEXT/CSV ; Q=0.9, application/json;q=0.2"), F::Csv);
  EXPECT_EQ(flows_format("text/*, application/json;q=0.5"), F::Csv);
  EXPECT_EQ(flows_format("text/*;q=0.3, text/csv;q=0, */*;q=0.1"), F::Page);
  // A browser's default: everything at equal q: the page.
  EXPECT_EQ(flows_format("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            F::Page);
  EXPECT_EQ(flows_format("image/png"), F::Page);
  EXPECT_EQ(flows_format("text/csv;q=bogus"), F::Page);
}

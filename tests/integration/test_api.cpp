// Issue 5: every route and every error of the HTTP api against the real stack.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "harness.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

json sample(const std::string& out) {
  return {{"pcap_files", {"sample.pcap"}}, {"output_path", out}, {"DPI", true}};
}

std::string problem_type(const httplib::Result& r) {
  return r ? r->get_header_value("Content-Type") : "";
}

// Every file under dir (recursively), with its size and modification time.
std::map<std::string, std::pair<std::uintmax_t, fs::file_time_type>> snapshot(
    const std::string& dir) {
  std::map<std::string, std::pair<std::uintmax_t, fs::file_time_type>> out;
  std::error_code ec;
  for (auto it =
           fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec))
      out[it->path().string()] = {it->file_size(ec), it->last_write_time(ec)};
  }
  return out;
}

}  // namespace

TEST(Api, ErrorsAreProblemJsonWithTheRightStatus) {
  Stack s;
  auto c = s.client();
  // 400 malformed JSON
  auto r = c->Post("/api/v1/tasks", "{\"pcap_files\": [", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(problem_type(r), "application/problem+json");
  EXPECT_EQ(json::parse(r->body)["status"], 400);
  // 400 a NUL byte after a valid request (fuzz_task_request's finding,
  // tests/fuzz/regressions/task_request/): nlohmann's parser stopped at it, so the api took
  // the part before it for the whole body and accepted a task (202) from a body that is not
  // JSON, whatever followed.
  r = c->Post("/api/v1/tasks", sample("nul.ipfix").dump() + std::string("\0, \"filter\": 1}", 15),
              "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("not valid JSON"), std::string::npos) << r->body;
  // 415 wrong content type
  r = c->Post("/api/v1/tasks", sample("a.ipfix").dump(), "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_EQ(problem_type(r), "application/problem+json");
  // application/json with parameters is fine
  r = c->Post("/api/v1/tasks", sample("a.ipfix").dump(), "application/json; charset=utf-8");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  // 422 wrong types with field detail
  r = c->Post("/api/v1/tasks", R"({"pcap_files": "x", "output_path": 3, "DPI": "yes"})",
              "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  auto body = json::parse(r->body);
  std::set<std::string> fields;
  for (auto& e : body["errors"]) fields.insert(e["field"]);
  EXPECT_EQ(fields, (std::set<std::string>{"pcap_files", "output_path", "DPI"}));
  // 422 bad filter, unknown analysis
  r = c->Post(
      "/api/v1/tasks",
      json{{"pcap_files", {"sample.pcap"}}, {"output_path", "f.ipfix"}, {"filter", "port"}}.dump(),
      "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  // 413 body over the limit
  std::string big = "{\"pcap_files\": [\"" + std::string(2 << 20, 'a') + "\"]}";
  r = c->Post("/api/v1/tasks", big, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  // 404 unknown task, bad id, unknown route
  r = c->Get("/api/v1/tasks/00000000-0000-4000-8000-000000000000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(problem_type(r), "application/problem+json");
  r = c->Get("/api/v1/tasks/not-an-id");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = c->Get("/no/such/route");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(problem_type(r), "application/problem+json");
  // 422 bad query parameters
  r = c->Get("/api/v1/tasks?limit=0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  r = c->Get("/api/v1/tasks?state=sleeping");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
}

TEST(Api, ListFiltersAndCursorPagination) {
  Stack s;
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto [st, b] = s.submit(sample("page/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202);
    ids.push_back(b["task_id"]);
  }
  {
    std::ofstream(s.input_dir() + "/other.pcap") << "not a capture";
    auto [st, b] = s.submit({{"pcap_files", {"other.pcap"}}, {"output_path", "other.ipfix"}});
    ASSERT_EQ(st, 202);
    ids.push_back(b["task_id"]);
  }
  for (auto& id : ids) s.wait_terminal(id);
  auto c = s.client();
  std::vector<std::string> seen;
  std::string next;
  for (int page = 0; page < 10; ++page) {
    auto r = c->Get("/api/v1/tasks?limit=3" + (next.empty() ? "" : "&next=" + next));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    auto j = json::parse(r->body);
    for (auto& t : j["tasks"]) seen.push_back(t["task_id"]);
    if (j["next"].is_null()) break;
    next = j["next"];
    EXPECT_EQ(j["tasks"].size(), 3u);
  }
  std::vector<std::string> expected(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, expected);
  auto r = c->Get("/api/v1/tasks?state=failed");
  ASSERT_TRUE(r);
  auto failed = json::parse(r->body)["tasks"];
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]["task_id"], ids.back());
  r = c->Get("/api/v1/tasks?input=other.pcap");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 1u);
  r = c->Get("/api/v1/tasks?created_after=2999-01-01T00:00:00Z");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 0u);
  r = c->Get("/api/v1/tasks?created_before=2999-01-01T00:00:00Z&limit=1000");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), ids.size());
}

TEST(Api, DownloadsTheOutputFile) {
  Stack s;
  auto [st, b] = s.submit(sample("dl/sample.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = b["task_id"];
  ASSERT_EQ(s.wait_terminal(id)["state"], "succeeded");
  auto r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/ipfix");
  std::ifstream f(s.output_dir() + "/dl/sample.ipfix", std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(r->body, file);
  ASSERT_GE(r->body.size(), 2u);
  EXPECT_EQ(r->body[0], 0);
  EXPECT_EQ(r->body[1], 10);  // IPFIX version 10
  // A task that did not succeed has nothing to download.
  std::ofstream(s.input_dir() + "/junk.pcap") << "junk";
  auto [st2, b2] = s.submit({{"pcap_files", {"junk.pcap"}}, {"output_path", "junk.ipfix"}});
  ASSERT_EQ(st2, 202);
  s.wait_terminal(b2["task_id"]);
  r = s.client()->Get("/api/v1/tasks/" + b2["task_id"].get<std::string>() + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409);
  // A file removed after the fact is a clean 404.
  fs::remove(s.output_dir() + "/dl/sample.ipfix");
  r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

TEST(Api, CompatibilityRoutesOfTheOriginalService) {
  Stack s;
  auto c = s.client();
  auto r = c->Get("/api/v1/test/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");
  r = c->Post("/api/export-task", sample("compat.ipfix").dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  std::string id = json::parse(r->body)["task_id"];
  r = c->Post("/api/v1/test/file_exporter/export_task", "", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  std::string id2 = json::parse(r->body)["task_id"];
  EXPECT_EQ(s.wait_terminal(id)["state"], "succeeded");
  EXPECT_EQ(s.wait_terminal(id2)["state"], "succeeded");
  r = c->Get("/api/task-status/" + id);
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["state"], "succeeded");
  r = c->Get("/api/tasks");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 2u);
  // The test route wrote under output/test/.
  auto t2 = s.get_task(id2);
  EXPECT_TRUE(fs::exists(s.output_dir() + "/" + t2["output_path"].get<std::string>()));
}

TEST(Api, OpenApiDescribesExactlyTheRoutesTheServerAnswers) {
  Stack s;
  auto c = s.client();
  auto r = c->Get("/openapi.json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  auto doc = json::parse(r->body);
  EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
  const std::string uuid = "00000000-0000-4000-8000-000000000000";
  // Issue 18: every operation has a unique operationId and a tag; the bearer token is
  // required by default and cleared where no token is needed.
  EXPECT_EQ(doc["security"], json::parse(R"([{"bearer": []}])"));
  EXPECT_EQ(doc["servers"][0]["url"], "/");
  std::set<std::string> operation_ids, tag_names;
  for (auto& t : doc["tags"]) tag_names.insert(t["name"].get<std::string>());
  for (auto& [path, ops] : doc["paths"].items())
    for (auto& [method, op] : ops.items()) {
      ASSERT_TRUE(op.contains("operationId")) << method << " " << path;
      EXPECT_TRUE(operation_ids.insert(op["operationId"].get<std::string>()).second)
          << op["operationId"] << " twice";
      ASSERT_EQ(op["tags"].size(), 1u) << method << " " << path;
      EXPECT_TRUE(tag_names.count(op["tags"][0].get<std::string>())) << op["tags"];
      const bool open = path == "/livez" || path == "/" || path.rfind("/ui", 0) == 0;
      EXPECT_EQ(op.contains("security") && op["security"].empty(), open) << method << " " << path;
    }
  EXPECT_EQ(doc["paths"]["/api/v1/tasks/{id}/flows.ndjson"]["get"]["operationId"],
            "getTasksIdFlowsNdjson");
  std::set<std::string> documented;
  for (auto& [path, ops] : doc["paths"].items()) {
    for (auto& [method, op] : ops.items()) {
      documented.insert(method + " " + path);
      std::string concrete = path;
      for (auto at = concrete.find("{id}"); at != std::string::npos; at = concrete.find("{id}"))
        concrete.replace(at, 4, uuid);
      // An event stream never ends: its status is read from the head, then it is dropped.
      if (op["responses"]["200"].contains("content") &&
          op["responses"]["200"]["content"].contains("text/event-stream")) {
        int status = 0;
        c->Get(
            concrete,
            [&](const httplib::Response& head) {
              status = head.status;
              return false;
            },
            [](const char*, std::size_t) { return false; });
        // (404 here: no task has the made-up id; the router's 404 has no content receiver)
        EXPECT_TRUE(status == 200 || (status == 404 && path.find("{id}") != std::string::npos))
            << method << " " << path << ": " << status;
        continue;
      }
      auto res = method == "get"       ? c->Get(concrete)
                 : method == "delete"  ? c->Delete(concrete)
                 : method == "head"    ? c->Head(concrete)
                 : method == "options" ? c->Options(concrete)
                 : method == "patch"   ? c->Patch(concrete, "{}", "application/json")
                                       : c->Post(concrete, "{}", "application/json");
      ASSERT_TRUE(res) << method << " " << path;
      // A real route answers anything but the router's "no such route".
      bool no_route = res->status == 404 &&
                      json::parse(res->body, nullptr, false).value("detail", "") == "no such route";
      EXPECT_FALSE(no_route) << method << " " << path << " is documented but not served";
      EXPECT_TRUE(op.contains("responses")) << method << " " << path;
    }
  }
  // And every served route is documented.
  for (const char* route : {"post /api/v1/tasks",
                            "get /api/v1/tasks",
                            "get /api/v1/tasks/{id}",
                            "delete /api/v1/tasks/{id}",
                            "get /api/v1/tasks/{id}/events",
                            "get /api/v1/tasks/{id}/output",
                            "get /livez",
                            "get /readyz",
                            "get /metrics",
                            "get /openapi.json",
                            "post /api/export-task",
                            "get /api/task-status/{id}",
                            "get /api/tasks",
                            "get /api/v1/test/health",
                            "post /api/v1/test/file_exporter/export_task",
                            "get /api/v1/tasks/{id}/flows",
                            "get /api/v1/tasks/{id}/flows.ndjson",
                            "get /api/v1/tasks/{id}/flows.csv",
                            "get /api/v1/tasks/{id}/flows.sqlite",
                            "get /api/v1/tasks/{id}/top",
                            "get /api/v1/tasks/{id}/timeseries",
                            "post /api/v1/tasks/{id}/flows/{flow}/pcap",
                            "get /api/v1/drop",
                            "post /api/v1/captures",
                            "get /api/v1/captures",
                            "get /api/v1/captures/{sha256}",
                            "delete /api/v1/captures/{sha256}",
                            "options /api/v1/uploads",
                            "post /api/v1/uploads",
                            "head /api/v1/uploads/{id}",
                            "get /api/v1/uploads/{id}",
                            "patch /api/v1/uploads/{id}",
                            "delete /api/v1/uploads/{id}",
                            "get /api/v1/events",
                            "get /api/v1/status",
                            "get /",
                            "get /ui",
                            "get /ui/{file}",
                            "get /ui/vendor/{file}"})
    EXPECT_TRUE(documented.count(route)) << route << " is served but not documented";
  // (GET /ui/ is served too, as /ui; not described: OpenAPI linters refuse a trailing slash)
  EXPECT_EQ(documented.size(), 39u);
  auto slash = c->Get("/ui/");
  ASSERT_TRUE(slash);
  EXPECT_EQ(slash->status, 200);
}

TEST(Api, MetricsAreRouteLabelledWithoutTaskIds) {
  Stack s;
  auto [st, b] = s.submit(sample("m.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = b["task_id"];
  s.wait_terminal(id);
  s.submit({{"pcap_files", {"../x"}}, {"output_path", "x"}});
  auto r = s.client()->Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const std::string& m = r->body;
  EXPECT_EQ(m.find(id), std::string::npos) << "task id leaked into metrics";
  EXPECT_NE(
      m.find(
          "ipfixweb_http_requests_total{method=\"GET\",route=\"/api/v1/tasks/{id}\",code=\"200\"}"),
      std::string::npos)
      << m;
  EXPECT_NE(
      m.find(
          "ipfixweb_http_requests_total{method=\"POST\",route=\"/api/v1/tasks\",code=\"422\"} 1"),
      std::string::npos)
      << m;
  EXPECT_NE(m.find("ipfixweb_api_submission_results_total{result=\"accepted\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("ipfixweb_broker_workers 2"), std::string::npos) << m;
  EXPECT_NE(m.find("ipfixweb_broker_queue_depth 0"), std::string::npos);
  EXPECT_NE(m.find("ipfixweb_tasks{state=\"succeeded\"} 1"), std::string::npos);
  EXPECT_NE(m.find("ipfixweb_http_request_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(m.find("ipfixweb_broker_tasks_finished_total{state=\"succeeded\"} 1"),
            std::string::npos);
  EXPECT_NE(m.find("ipfixweb_task_duration_seconds_count 1"), std::string::npos) << m;
  EXPECT_NE(m.find("ipfixweb_task_duration_seconds_bucket{le=\"+Inf\"} 1"), std::string::npos);
}

TEST(Api, BearerTokensProtectEverythingButLivez) {
  StackOptions o;
  o.extra_api_args = {"--tokens", "s3cret,other-token"};
  o.require_ready_token = "s3cret";
  Stack s(o);
  auto c = s.client();
  auto r = c->Get("/livez");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  for (const char* path :
       {"/readyz", "/api/v1/tasks", "/metrics", "/openapi.json", "/api/v1/test/health"}) {
    r = c->Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
  }
  r = c->Post("/api/v1/tasks", sample("auth.ipfix").dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  httplib::Headers wrong = {{"Authorization", "Bearer s3cre"}};
  r = c->Get("/api/v1/tasks", wrong);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  for (const char* token : {"s3cret", "other-token"}) {
    httplib::Headers ok = {{"Authorization", std::string("Bearer ") + token}};
    r = c->Get("/api/v1/tasks", ok);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << token;
  }
  httplib::Headers ok = {{"Authorization", "Bearer s3cret"}};
  r = c->Post("/api/v1/tasks", ok, sample("auth.ipfix").dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
}

// A few hundred hostile requests, then the service is healthy and nothing was
// written outside the roots.
TEST(Api, BadInputStormLeavesTheServiceHealthyAndTheDiskUntouched) {
  Stack s;
  fs::path outside = fs::path(s.data_dir()) / "outside";
  fs::create_directories(outside);
  std::ofstream(outside / "secret.pcap") << "secret";
  fs::create_symlink(outside, fs::path(s.input_dir()) / "link-out");
  fs::create_symlink(outside, fs::path(s.output_dir()) / "link-out");
  auto before_outside = snapshot(outside.string());
  auto before_tmp = snapshot(fs::temp_directory_path().string() + "/ipfixweb-storm-none");
  std::vector<std::pair<std::string, std::string>> bodies;  // (content type, body)
  const std::vector<std::string> evil_paths = {"../outside/secret.pcap",
                                               "/etc/passwd",
                                               "link-out/secret.pcap",
                                               "input/../../x",
                                               std::string("sample.pcap\0.txt", 16),
                                               "",
                                               "....//....//etc/passwd",
                                               "%2e%2e/x",
                                               outside.string() + "/secret.pcap",
                                               std::string(5000, 'a')};
  for (auto& p : evil_paths) {
    bodies.push_back(
        {"application/json", json{{"pcap_files", {p}}, {"output_path", "ok.ipfix"}}.dump()});
    bodies.push_back(
        {"application/json", json{{"pcap_files", {"sample.pcap"}}, {"output_path", p}}.dump()});
  }
  for (const char* out : {"../escape.ipfix", "/tmp/escape.ipfix", "link-out/escape.ipfix",
                          "a/../../escape.ipfix", "/", ".", "sample.pcap"})
    bodies.push_back(
        {"application/json", json{{"pcap_files", {"sample.pcap"}}, {"output_path", out}}.dump()});
  for (const char* raw :
       {"", "{", "[]", "null", "42", "\"str\"", "{\"pcap_files\":}", "\x00\x01\x02",
        "{\"pcap_files\":[1,2,3],\"output_path\":{}}",
        "{\"pcap_files\":[[\"a\"]],\"output_path\":\"x\"}",
        "{\"pcap_files\":[\"sample.pcap\"],\"output_path\":\"x\",\"DPI\":1}",
        "{\"pcap_files\":[\"sample.pcap\"],\"output_path\":\"x\",\"priority\":1e309}",
        "{\"pcap_files\":[\"sample.pcap\"],\"output_path\":\"x\",\"idle_timeout\":-5}",
        "{\"pcap_files\":[\"sample.pcap\"],\"output_path\":\"x\",\"analysis_list\":\"tcp\"}"})
    bodies.push_back({"application/json", raw});
  std::string deep(10000, '[');
  bodies.push_back({"application/json", deep});
  bodies.push_back({"application/xml", "<task/>"});
  bodies.push_back({"", "{}"});
  bodies.push_back({"application/json", std::string(3 << 20, ' ')});
  std::atomic<int> served{0}, server_errors{0};
  std::mutex mu;
  std::vector<std::string> accepted;  // odd but legal names ("....//x", "%2e%2e/x") are fine
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto c = s.client();
      for (int round = 0; round < 5; ++round) {
        for (std::size_t i = t; i < bodies.size(); i += 4) {
          auto r = c->Post("/api/v1/tasks", bodies[i].second, bodies[i].first);
          if (!r) continue;  // the server may close on a 413
          ++served;
          if (r->status >= 500) ++server_errors;
          if (r->status == 202) {
            std::lock_guard<std::mutex> lock(mu);
            accepted.push_back(json::parse(r->body)["task_id"]);
          }
        }
        for (const char* path :
             {"/api/v1/tasks/../../etc/passwd", "/api/v1/tasks/%00",
              "/api/v1/tasks?limit=-1&next=abc", "/api/v1/tasks?limit=999999999999",
              "/api/v1/tasks/x/output", "/api/v1/tasks/x/events"}) {
          auto r = c->Get(path);
          if (r) {
            ++served;
            if (r->status >= 500) ++server_errors;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GT(served.load(), 300);
  EXPECT_EQ(server_errors.load(), 0);
  // Whatever was accepted writes inside the output root, and only there.
  const std::string out_root = fs::canonical(s.output_dir()).string() + "/";
  for (auto& id : accepted) {
    auto t = s.wait_terminal(id);
    auto r2 = s.client()->Get("/api/v1/tasks/" + id);
    ASSERT_TRUE(r2);
    std::string rel = json::parse(r2->body)["output_path"];
    EXPECT_NE(rel.front(), '/') << rel;
    auto real = fs::weakly_canonical(fs::path(out_root) / rel).string();
    EXPECT_EQ(real.compare(0, out_root.size(), out_root), 0) << real;
  }
  // Healthy: ready, and a good request still works.
  auto r = s.client()->Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto [st, b] = s.submit(sample("after-storm.ipfix"));
  ASSERT_EQ(st, 202);
  EXPECT_EQ(s.wait_terminal(b["task_id"])["state"], "succeeded");
  // Nothing written outside the roots.
  EXPECT_EQ(snapshot(outside.string()), before_outside);
  EXPECT_FALSE(fs::exists("/tmp/escape.ipfix"));
  EXPECT_FALSE(fs::exists(fs::path(s.data_dir()) / "escape.ipfix"));
  EXPECT_TRUE(s.api().running());
  EXPECT_TRUE(s.broker().running());
}

// `curl -X POST URL` sends neither Content-Length nor a body. RFC 9112 says
// the body is then empty; the server used to wait 5 s for one and answer 400.
TEST(Api, PostWithoutContentLengthIsAnEmptyBodyNotAWait) {
  Stack s;
  auto raw_post = [&](const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(s.http_port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string req = "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
    EXPECT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ::close(fd);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  };
  auto t0 = std::chrono::steady_clock::now();
  std::string r = raw_post("/api/v1/test/file_exporter/export_task");
  EXPECT_EQ(r.rfind("HTTP/1.1 202", 0), 0u) << r;
  r = raw_post("/api/v1/tasks");
  EXPECT_EQ(r.rfind("HTTP/1.1 415", 0), 0u) << r;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.5);
}

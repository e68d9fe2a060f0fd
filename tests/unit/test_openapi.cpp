// Issue 18: the OpenAPI document is a contract. It describes exactly the routes the server
// registers, with the answers its router gives them, every error as a problem document, and
// its vocabularies are the ones the code itself checks against.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "ipfixweb/api/drop_folder.hpp"
#include "ipfixweb/api/openapi.hpp"
#include "ipfixweb/api/server.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A real api server on a free port (not serving: the constructor registers its routes and
// makes its document), with roots in a fresh directory and no broker.
struct ApiUnderTest {
  fs::path dir = fs::temp_directory_path() / ("ipfixweb-openapi-" + std::to_string(::getpid()));
  zmq::context_t ctx;
  std::unique_ptr<api::Server> server;
  ApiUnderTest() {
    fs::remove_all(dir);
    fs::create_directories(dir / "input");
    fs::create_directories(dir / "output");
    api::Config c;
    c.port = 0;
    c.threads = 1;
    c.io_threads = 1;
    c.broker = "tcp://127.0.0.1:9";
    c.db_path = (dir / "ipfixweb.db").string();
    c.input_roots = {(dir / "input").string()};
    c.output_root = (dir / "output").string();
    server = std::make_unique<api::Server>(c, ctx);
  }
  ~ApiUnderTest() {
    server.reset();
    fs::remove_all(dir);
  }
};

const json& resolve(const json& doc, const json& node) {
  if (!node.contains("$ref")) return node;
  return doc.at(json::json_pointer(node["$ref"].get<std::string>().substr(1)));
}

template <class Names>
json names(const Names& list) {
  json out = json::array();
  for (const auto& n : list) out.push_back(std::string(n));
  return out;
}

const json& param(const json& op, const std::string& name) {
  for (const auto& p : op["parameters"])
    if (p["name"] == name) return p;
  static const json none;
  ADD_FAILURE() << "no parameter " << name;
  return none;
}

}  // namespace

TEST(OpenApi, TheServedDocumentDescribesEveryRouteTheServerRegistersAndNoOther) {
  ApiUnderTest a;
  const json doc = json::parse(a.server->openapi());
  std::set<std::pair<std::string, std::string>> registered, described;
  for (const auto& r : a.server->routes())
    if (!api::undescribed_alias(r.method, r.path)) registered.insert({lower(r.method), r.path});
  for (auto& [path, ops] : doc["paths"].items())
    for (auto& [method, op] : ops.items()) described.insert({method, path});
  EXPECT_GT(registered.size(), 30u);
  EXPECT_EQ(registered, described);
}

TEST(OpenApi, ARouteThatIsNotDescribedStopsTheDocumentAndSoDoesADescriptionOfNoRoute) {
  api::http::Route extra;
  extra.method = "GET";
  extra.path = "/api/v1/not-described";
  try {
    api::openapi_document(std::vector<const api::http::Route*>{&extra});
    FAIL() << "a route that is not described was accepted";
  } catch (const std::logic_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("GET /api/v1/not-described is served but not described"), std::string::npos)
        << what;
    EXPECT_NE(what.find("post /api/v1/tasks is described but not served"), std::string::npos)
        << what;
  }
}

TEST(OpenApi, TokensAndRolesOfTheRoutesGiveSecurity401And403) {
  ApiUnderTest a;
  const json doc = json::parse(a.server->openapi());
  int forbidden = 0;
  for (const auto& r : a.server->routes()) {
    if (api::undescribed_alias(r.method, r.path)) continue;
    const json& op = doc["paths"][r.path][lower(r.method)];
    const json& responses = op["responses"];
    const std::string what = r.method + " " + r.path;
    EXPECT_EQ(op.contains("security") && op["security"].empty(), r.open) << what;
    EXPECT_EQ(responses.contains("401"), !r.open) << what;
    EXPECT_EQ(responses.contains("403"), !r.open && r.role > api::Role::Read) << what;
    forbidden += responses.contains("403");
    for (const char* status : {"400", "413", "431", "503"})
      EXPECT_TRUE(responses.contains(status)) << what << " lacks the HTTP server's " << status;
  }
  EXPECT_GT(forbidden, 5);
}

TEST(OpenApi, EveryErrorIsAProblemDocumentA422NamesItsFieldsAnd503SaysWhenToRetry) {
  ApiUnderTest a;
  const json doc = json::parse(a.server->openapi());
  for (auto& [path, ops] : doc["paths"].items())
    for (auto& [method, op] : ops.items())
      for (auto& [status, node] : op["responses"].items()) {
        const std::string what = method + " " + path + " " + status;
        const json& r = resolve(doc, node);
        EXPECT_TRUE(r.contains("description")) << what;
        if (std::stoi(status) < 400) continue;
        if (method == "head") continue;  // answered without a body
        ASSERT_TRUE(r.contains("content")) << what;
        ASSERT_TRUE(r["content"].contains("application/problem+json")) << what;
        const json& schema = r["content"]["application/problem+json"]["schema"];
        EXPECT_EQ(schema["$ref"], status == "422" ? "#/components/schemas/ValidationProblem"
                                                  : "#/components/schemas/Problem")
            << what;
        if (status == "503") {
          EXPECT_TRUE(r["headers"].contains("Retry-After")) << what;
        }
        if (status == "401") {
          EXPECT_TRUE(r["headers"].contains("WWW-Authenticate")) << what;
        }
      }
  const json& validation = doc["components"]["schemas"]["ValidationProblem"];
  EXPECT_NE(std::find(validation["required"].begin(), validation["required"].end(), "errors"),
            validation["required"].end());
}

TEST(OpenApi, TheFlowRoutesVocabularyIsTheFlowStoresOwnAndTheQueriesTakeEveryWordOfIt) {
  const json doc = api::openapi_description();
  const json& paths = doc["paths"];
  const json& top = paths["/api/v1/tasks/{id}/top"]["get"];
  const json& series = paths["/api/v1/tasks/{id}/timeseries"]["get"];
  EXPECT_EQ(param(top, "by")["schema"]["enum"], names(flows::kTopDims));
  EXPECT_EQ(param(top, "metric")["schema"]["enum"], names(flows::kMetrics));
  EXPECT_EQ(param(series, "by")["schema"]["enum"], names(flows::kSeriesDims));
  EXPECT_EQ(param(series, "metric")["schema"]["enum"], names(flows::kMetrics));
  const json& schemas = doc["components"]["schemas"];
  EXPECT_EQ(schemas["FlowField"]["enum"], names(flows::field_names()));
  EXPECT_EQ(schemas["Top"]["properties"]["by"]["enum"], names(flows::kTopDims));
  std::set<std::string> exported, record;
  for (const auto& c : flows::kFlowColumns)
    if (c.exported) exported.insert(std::string(c.name));
  for (auto& [k, v] : schemas["Flow"]["properties"].items()) record.insert(k);
  EXPECT_EQ(record, exported);

  // Every word the document offers is one the queries take, and they refuse others.
  for (const auto& by : param(top, "by")["schema"]["enum"])
    for (const auto& metric : param(top, "metric")["schema"]["enum"]) {
      const std::string b = by, m = metric;
      auto q = flows::build_top({.by = b, .metric = m});
      ASSERT_TRUE(std::holds_alternative<flows::TopQuery>(q)) << b << " " << m;
      const auto& t = std::get<flows::TopQuery>(q);
      EXPECT_EQ(t.by, b);
      EXPECT_EQ(t.metric, m);
      for (const auto& column : t.columns)  // the answer's keys are the TopGroup's properties
        EXPECT_TRUE(schemas["TopGroup"]["properties"].contains(column)) << column;
    }
  EXPECT_TRUE(std::holds_alternative<flows::ParamError>(flows::build_top({.by = "nope"})));
  EXPECT_TRUE(
      std::holds_alternative<flows::ParamError>(flows::build_top({.by = "app", .metric = "x"})));
  for (const auto& by : param(series, "by")["schema"]["enum"]) {
    const std::string b = by;
    auto q =
        flows::build_timeseries({.by = b, .store_bucket_ms = 1000, .first_ms = 0, .last_ms = 5000});
    EXPECT_TRUE(std::holds_alternative<flows::TimeseriesQuery>(q)) << b;
  }
  EXPECT_TRUE(std::holds_alternative<flows::ParamError>(flows::build_timeseries(
      {.by = "src", .store_bucket_ms = 1000, .first_ms = 0, .last_ms = 5000})));
  std::string all_fields, all_sorts;
  for (const auto& f : schemas["FlowField"]["enum"]) {
    all_fields += (all_fields.empty() ? "" : ",") + f.get<std::string>();
    auto q = flows::build_list({.sort = "-" + f.get<std::string>()});
    EXPECT_TRUE(std::holds_alternative<flows::ListQuery>(q)) << f;
  }
  EXPECT_TRUE(std::holds_alternative<flows::ListQuery>(flows::build_list({.fields = all_fields})));
  EXPECT_TRUE(std::holds_alternative<flows::ParamError>(flows::build_list({.fields = "nope"})));
}

TEST(OpenApi, StatesCancelResultsDropOutcomesAndCaptureFormatsAreTheCodesNames) {
  const json doc = api::openapi_description();
  const json& schemas = doc["components"]["schemas"];
  const json states = names(all_names<TaskState>());
  for (const char* s : {"Task", "Accepted", "Event", "CancelResult"})
    EXPECT_EQ(schemas[s]["properties"]["state"]["enum"], states) << s;
  EXPECT_EQ(schemas["Status"]["properties"]["tasks"]["required"].get<std::set<std::string>>(),
            states.get<std::set<std::string>>());
  EXPECT_EQ(param(doc["paths"]["/api/v1/tasks"]["get"], "state")["schema"]["enum"], states);
  EXPECT_EQ(schemas["CancelResult"]["properties"]["result"]["enum"],
            json::array({name(CancelResult::Cancelled), name(CancelResult::Cancelling)}));
  EXPECT_EQ(schemas["DropEntry"]["properties"]["outcome"]["enum"], names(api::drop::kOutcomes));
  const json& formats = schemas["Capture"]["properties"]["format"]["enum"];
  for (const char* f : {"pcap", "pcapng", "ipfix", "pcap+gzip", "pcapng+zstd", "ipfix+bzip2"})
    EXPECT_NE(std::find(formats.begin(), formats.end(), f), formats.end()) << f;
  EXPECT_EQ(std::find(formats.begin(), formats.end(), "unknown"), formats.end());
}

TEST(OpenApi, EveryOperationHasAnIdATagAnd4xxAnswersAndItsParametersExamples) {
  ApiUnderTest a;
  const json doc = json::parse(a.server->openapi());
  std::set<std::string> ids;
  for (auto& [path, ops] : doc["paths"].items())
    for (auto& [method, op] : ops.items()) {
      const std::string what = method + " " + path;
      EXPECT_TRUE(ids.insert(op["operationId"].get<std::string>()).second) << what;
      EXPECT_EQ(op["tags"].size(), 1u) << what;
      bool client_error = false;
      for (auto& [status, r] : op["responses"].items()) client_error |= status[0] == '4';
      EXPECT_TRUE(client_error) << what;
      // Path parameters have examples (the contract test builds its requests from them).
      for (const auto& p : op.value("parameters", json::array()))
        if (p["in"] == "path") {
          EXPECT_TRUE(p.contains("example")) << what << " " << p["name"];
        }
      if (op.contains("requestBody") && op["requestBody"]["content"].contains("application/json")) {
        EXPECT_TRUE(op["requestBody"]["content"]["application/json"].contains("example")) << what;
      }
    }
}

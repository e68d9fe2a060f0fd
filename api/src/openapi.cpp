#include "ipfixweb/api/openapi.hpp"

#include <algorithm>
#include <cctype>
#include <set>
#include <stdexcept>
#include <type_traits>

#include "ipfixweb/api/auth.hpp"
#include "ipfixweb/api/drop_folder.hpp"
#include "ipfixweb/api/ui_routes.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/shared/task_spec.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb::api {

namespace {

using nlohmann::json;

// --- Building blocks ---------------------------------------------------------------------------

json ref(const std::string& name) { return {{"$ref", "#/components/schemas/" + name}}; }
json response_ref(const std::string& name) { return {{"$ref", "#/components/responses/" + name}}; }

json string_schema() { return {{"type", "string"}}; }
json integer_schema(std::int64_t min) { return {{"type", "integer"}, {"minimum", min}}; }
json integer_schema(std::int64_t min, std::int64_t max) {
  return {{"type", "integer"}, {"minimum", min}, {"maximum", max}};
}
json nullable(json s) {
  s["nullable"] = true;
  return s;
}
template <class Names>
json names(const Names& list) {
  json out = json::array();
  for (const auto& n : list) out.push_back(std::string(n));
  return out;
}
json enum_schema(const json& values) { return {{"type", "string"}, {"enum", values}}; }
// An object whose every property is always there, and nothing else.
json closed_object(const json& properties) {
  json required = json::array();
  for (auto& [k, v] : properties.items()) required.push_back(k);
  return {{"type", "object"},
          {"required", required},
          {"properties", properties},
          {"additionalProperties", false}};
}

const json kRetryAfter = {{"description", "Whole seconds to wait before trying again"},
                          {"required", true},
                          {"schema", {{"type", "integer"}, {"minimum", 1}}},
                          {"example", 1}};

json problem_example(int status, const std::string& title, const std::string& detail) {
  return {{"type", "about:blank"}, {"title", title}, {"status", status}, {"detail", detail}};
}

// An error answer: a problem document (RFC 9457).
json problem_response(const std::string& description, const json& example = nullptr) {
  json media = {{"schema", ref("Problem")}};
  if (!example.is_null()) media["example"] = example;
  return {{"description", description}, {"content", {{"application/problem+json", media}}}};
}
// 422: a problem document whose `errors` name the fields (or parameters, or headers) at fault.
json validation_response(const std::string& description, const json& example) {
  return {{"description", description},
          {"content",
           {{"application/problem+json",
             {{"schema", ref("ValidationProblem")}, {"example", example}}}}}};
}
// 503 and 507: a problem document and Retry-After.
json retry_response(const std::string& description, const json& example = nullptr) {
  json r = problem_response(description, example);
  r["headers"]["Retry-After"] = kRetryAfter;
  return r;
}

json json_response(const std::string& description, const json& schema, const json& example) {
  return {{"description", description},
          {"content", {{"application/json", {{"schema", schema}, {"example", example}}}}}};
}

// --- Examples (valid against their schemas: Redocly's lint and the contract test check) -------

const std::string kTaskId = "0192f3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
const std::string kSha256 = "9f2c1e0b8a7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b";
const std::string kUploadId = "0192f3c5-0a1b-7c2d-8e3f-4a5b6c7d8e9f";

json task_request_example() {
  return {{"pcap_files", {"sample.pcap"}},
          {"output_path", "sample.ipfix"},
          {"DPI", true},
          {"analysis_list", {"tcp", "udp"}}};
}

json accepted_example() {
  return {{"task_id", kTaskId},
          {"state", name(TaskState::Queued)},
          {"links", {{"self", "/api/v1/tasks/" + kTaskId}}}};
}

json task_example() {
  const std::string self = "/api/v1/tasks/" + kTaskId;
  return {{"task_id", kTaskId},
          {"state", name(TaskState::Succeeded)},
          {"progress", 1},
          {"created_at", "2026-11-27T11:59:08.187Z"},
          {"queued_at", "2026-11-27T11:59:08.187Z"},
          {"started_at", "2026-11-27T11:59:08.201Z"},
          {"finished_at", "2026-11-27T11:59:08.412Z"},
          {"attempts", 1},
          {"worker", "worker-1-4242"},
          {"priority", 0},
          {"output_path", "sample.ipfix"},
          {"parts", nullptr},
          {"parent_id", nullptr},
          {"request",
           {{"pcap_files", {"/srv/ipfixweb/input/sample.pcap"}},
            {"output_path", "sample.ipfix"},
            {"DPI", true},
            {"analysis_list", {"tcp", "udp"}},
            {"idle_timeout", 300},
            {"active_timeout", 1800},
            {"priority", 0}}},
          {"summary", {{"packets", 347}, {"bytes", 66384}, {"flows", 38}}},
          {"error", nullptr},
          {"links", {{"self", self}, {"events", self + "/events"}, {"output", self + "/output"}}}};
}

json not_found_example(const std::string& what) {
  return problem_example(404, "Not Found", "no " + what);
}

json unavailable_example() {
  return problem_example(503, "Service Unavailable", "the broker did not answer; try again");
}

json invalid_query_example(const std::string& field, const std::string& message) {
  json e = problem_example(422, "Unprocessable Content", "invalid query parameters");
  e["errors"] = json::array({{{"field", field}, {"message", message}}});
  return e;
}

// --- Schemas -----------------------------------------------------------------------------------

// The JSON Schema of one request field, from its definition (task_spec.hpp).
template <class Owner, class T>
json field_schema(const proto::Field<Owner, T>& f) {
  const proto::FieldInfo& i = f.info;
  json s;
  if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    s = {{"type", "array"}, {"items", {{"type", "string"}}}};
    if (i.min >= 1) s["minItems"] = static_cast<int>(i.min);
    if (i.max > 0) s["maxItems"] = static_cast<int>(i.max);
    if (!i.allowed.empty()) s["items"]["enum"] = names(i.allowed);
  } else if constexpr (std::is_same_v<T, std::string>) {
    s = {{"type", "string"}};
    if (!i.allowed.empty()) s["enum"] = names(i.allowed);
    if (i.required) s["minLength"] = 1;
    if (i.max > 0) s["maxLength"] = static_cast<int>(i.max);
  } else if constexpr (std::is_same_v<T, bool>) {
    s = {{"type", "boolean"}};
  } else if constexpr (std::is_floating_point_v<T>) {
    s = {{"type", "number"}, {"minimum", i.min}, {"maximum", i.max}};
    if (i.min_exclusive) s["exclusiveMinimum"] = true;  // OpenAPI 3.0: a flag beside minimum
  } else {
    static_assert(std::is_integral_v<T>, "a field type the schema does not describe yet");
    s = {{"type", "integer"},
         {"minimum", static_cast<std::int64_t>(i.min)},
         {"maximum", static_cast<std::int64_t>(i.max)}};
  }
  if (!i.required) s["default"] = Owner{}.*f.member;
  s["description"] = std::string(i.meaning);
  return s;
}

json task_request_schema() {
  json properties = json::object(), required = json::array();
  auto add = [&](const auto& f) {
    properties[std::string(f.info.request_key)] = field_schema(f);
    if (!f.info.alias.empty())
      properties[std::string(f.info.alias)] = {
          {"type", properties[std::string(f.info.request_key)]["type"]},
          {"description", "Alias of " + std::string(f.info.request_key)}};
    if (f.info.required) required.push_back(f.info.request_key);
  };
  proto::for_each_field(proto::kTaskSpecFields, add);
  proto::for_each_field(proto::kRequestExtraFields, add);
  return {{"type", "object"},
          {"required", required},
          {"properties", properties},
          {"additionalProperties", false},
          {"example", task_request_example()}};
}

json states() { return names(all_names<TaskState>()); }

json flow_column_schema(const flows::Column& c) {
  json s = c.type == flows::ColumnType::Integer ? json{{"type", "integer"}} : string_schema();
  if (flows::nullable(c)) s["nullable"] = true;
  s["description"] = std::string(c.meaning);
  return s;
}

const flows::Column& flow_column(std::string_view name) {
  return flows::kFlowColumns.at(static_cast<std::size_t>(flows::column_index(name)));
}

// A flow record as /flows, .ndjson and /top give it: the exported columns of the flow store
// (every one unless `fields` chose some).
json flow_schema() {
  json properties = json::object();
  for (const auto& c : flows::kFlowColumns)
    if (c.exported) properties[std::string(c.name)] = flow_column_schema(c);
  return {{"type", "object"},
          {"description",
           "One flow record (IPFIX record) of the task's flow store (docs/flow-store.md); "
           "`fields` chooses the columns"},
          {"properties", properties},
          {"additionalProperties", false},
          {"example",
           {{"id", 1},
            {"start_ms", 1700000000123},
            {"end_ms", 1700000004567},
            {"src", "10.0.0.1"},
            {"dst", "93.184.216.34"},
            {"sport", 51234},
            {"dport", 443},
            {"proto_name", "tcp"},
            {"packets", 12},
            {"bytes", 4321},
            {"app", "TLS"}}}};
}

// One group of /top: the columns that key the dimensions (each of kTopDimensions), then the
// metrics.
json top_group_schema() {
  json properties = json::object();
  for (const auto& d : flows::kTopDimensions)
    for (auto key : {d.key, d.key2})
      if (!key.empty())
        properties[std::string(key)] = nullable(flow_column_schema(flow_column(key)));
  json required = json::array();
  for (auto m : flows::kMetrics) {
    properties[std::string(m)] = integer_schema(0);
    required.push_back(std::string(m));
  }
  return {{"type", "object"},
          {"description", "The group's key (the columns of its dimension: " +
                              [] {
                                std::string text;
                                for (const auto& d : flows::kTopDimensions) {
                                  if (!text.empty()) text += ", ";
                                  text.append(d.name).append(": ").append(d.key);
                                  if (!d.key2.empty()) text += " and " + std::string(d.key2);
                                }
                                return text;
                              }() +
                              ") and its totals"},
          {"required", required},
          {"properties", properties},
          {"additionalProperties", false}};
}

json capture_formats() {
  using capture::Compression;
  using capture::Format;
  json out = json::array();
  for (auto f : {Format::Pcap, Format::PcapNg, Format::Ipfix})
    for (auto c : {Compression::None, Compression::Gzip, Compression::Zstd, Compression::Xz,
                   Compression::Bzip2})
      out.push_back(capture::describe({c, f, false}));
  return out;
}

json capture_schema() {
  json p = {
      {"sha256", {{"type", "string"}, {"pattern", "^[0-9a-f]{64}$"}}},
      {"name", string_schema()},
      {"size", integer_schema(1)},
      {"format",
       {{"type", "string"},
        {"enum", capture_formats()},
        {"description", "the content and its compression, found from the bytes"}}},
      {"uploaded_at", {{"type", "string"}, {"format", "date-time"}}},
      {"path", {{"type", "string"}, {"description", "what pcap_files takes"}}},
      {"ref", {{"type", "string"}, {"description", "sha256:<hex>, also taken by pcap_files"}}},
      {"links", closed_object({{"self", string_schema()}})}};
  json s = closed_object(p);
  s["properties"]["existing"] = {{"type", "boolean"},
                                 {"description", "true when the same content was stored before"}};
  s["example"] = {{"sha256", kSha256},
                  {"name", "trace.pcap"},
                  {"size", 66968},
                  {"format", "pcap"},
                  {"uploaded_at", "2026-11-27T11:58:01.004Z"},
                  {"path", "/srv/ipfixweb/input/uploads/" + kSha256 + ".pcap"},
                  {"ref", "sha256:" + kSha256},
                  {"links", {{"self", "/api/v1/captures/" + kSha256}}}};
  return s;
}

json schemas() {
  const json count = integer_schema(0);
  json problem = {
      {"type", "object"},
      {"description", "An error (RFC 9457 problem details)"},
      {"required", {"type", "title", "status", "detail"}},
      {"properties",
       {{"type", {{"type", "string"}, {"description", "always about:blank"}}},
        {"title", {{"type", "string"}, {"description", "the status's reason phrase"}}},
        {"status", integer_schema(400, 599)},
        {"detail", {{"type", "string"}, {"description", "what went wrong, for a person"}}},
        {"errors", {{"type", "array"}, {"items", ref("FieldError")}}}}},
      {"additionalProperties", false},
      {"example", not_found_example("task with id " + kTaskId)}};
  json validation = problem;
  validation["description"] =
      "A request refused for what it says (422): `errors` names each field, parameter or "
      "header at fault";
  validation["required"].push_back("errors");
  validation["properties"]["errors"]["minItems"] = 1;
  validation["example"] =
      problem_example(422, "Unprocessable Content", "the task request is not valid");
  validation["example"]["errors"] = json::array(
      {{{"field", "pcap_files[0]"}, {"message", "../x.pcap: path must not contain '..'"}}});
  json field_error = {
      {"type", "object"},
      {"required", {"field", "message"}},
      {"properties",
       {{"field",
         {{"type", "string"},
          {"description",
           "a request field (pcap_files[0]), a query parameter (limit) or a header "
           "(Idempotency-Key)"}}},
        {"message", string_schema()},
        {"position",
         {{"type", "integer"},
          {"minimum", 0},
          {"description", "a filter's syntax error: its 0-based byte position"}}},
        {"expected", {{"type", "string"}, {"description", "a filter's syntax error"}}}}},
      {"additionalProperties", false}};

  json accepted = closed_object({{"task_id", {{"type", "string"}, {"format", "uuid"}}},
                                 {"state", enum_schema(states())},
                                 {"links", closed_object({{"self", string_schema()}})}});
  accepted["properties"]["existing"] = {
      {"type", "boolean"},
      {"description", "true when the Idempotency-Key named a task submitted before"}};
  accepted["example"] = accepted_example();

  const json timestamp = nullable({{"type", "string"}, {"format", "date-time"}});
  json task = closed_object({
      {"task_id", {{"type", "string"}, {"format", "uuid"}}},
      {"state", enum_schema(states())},
      {"progress", {{"type", "number"}, {"minimum", 0}, {"maximum", 1}}},
      {"created_at", timestamp},
      {"queued_at", timestamp},
      {"started_at", timestamp},
      {"finished_at", timestamp},
      {"attempts", count},
      {"worker", nullable(string_schema())},
      {"priority", {{"type", "integer"}}},
      {"output_path", string_schema()},
      {"parts", nullable({{"type", "integer"},
                          {"minimum", 2},
                          {"description", "a split task (`parallelism`): its number of parts"}})},
      {"parent_id", nullable({{"type", "string"},
                              {"format", "uuid"},
                              {"description", "a part of a split task: that task"}})},
      {"request",
       {{"type", "object"},
        {"allOf", json::array({ref("TaskRequest")})},
        {"nullable", true},
        {"description",
         "the request as stored: defaults filled in, captures named by their paths"}}},
      {"summary", nullable({{"type", "object"},
                            {"description", "packets, bytes, flows and the engine's statistics"}})},
      {"error", nullable(string_schema())},
      {"links",
       closed_object(
           {{"self", string_schema()}, {"events", string_schema()}, {"output", string_schema()}})},
  });
  task["properties"]["links"]["properties"]["parts"] = {
      {"type", "string"}, {"description", "a split task: the list of its parts"}};
  task["example"] = task_example();

  json task_list = closed_object({{"tasks", {{"type", "array"}, {"items", ref("Task")}}},
                                  {"next", nullable(string_schema())}});
  task_list["example"] = {{"tasks", json::array({task_example()})}, {"next", nullptr}};

  json cancelled =
      closed_object({{"task_id", {{"type", "string"}, {"format", "uuid"}}},
                     {"state", enum_schema(states())},
                     {"result", enum_schema(json::array({name(CancelResult::Cancelled),
                                                         name(CancelResult::Cancelling)}))}});
  cancelled["example"] = {{"task_id", kTaskId},
                          {"state", name(TaskState::Cancelled)},
                          {"result", name(CancelResult::Cancelled)}};

  json event = closed_object({{"at", {{"type", "string"}, {"format", "date-time"}}},
                              {"state", enum_schema(states())},
                              {"reason", nullable(string_schema())},
                              {"worker", nullable(string_schema())}});
  json task_events = closed_object({{"task_id", {{"type", "string"}, {"format", "uuid"}}},
                                    {"events", {{"type", "array"}, {"items", ref("Event")}}}});
  task_events["example"] = {{"task_id", kTaskId},
                            {"events",
                             {{{"at", "2026-11-27T11:59:08.187Z"},
                               {"state", name(TaskState::Queued)},
                               {"reason", "submitted"},
                               {"worker", nullptr}},
                              {{"at", "2026-11-27T11:59:08.201Z"},
                               {"state", name(TaskState::Running)},
                               {"reason", "dispatched (attempt 1)"},
                               {"worker", "w1"}}}}};

  json broker = {
      {"type", "object"},
      {"required", {"up"}},
      {"description", "Only `up` (false) when the broker did not answer"},
      {"properties",
       {{"up", {{"type", "boolean"}}},
        {"workers", count},
        {"slots", count},
        {"credit", count},
        {"running", count},
        {"queued", count},
        {"max_queue", count},
        {"draining", {{"type", "boolean"}}},
        {"accepting",
         {{"type", "boolean"},
          {"description", "whether the broker takes new tasks now (its own admission rule)"}}},
        {"succeeded", count},
        {"failed", count},
        {"cancelled", count},
        {"requeued", count}}},
      {"additionalProperties", false}};
  json tasks_by_state = json::object();
  for (auto n : all_names<TaskState>()) tasks_by_state[std::string(n)] = count;
  json status = closed_object(
      {{"broker", broker},
       {"workers",
        {{"type", "array"},
         {"items", closed_object({{"id", string_schema()},
                                  {"host", string_schema()},
                                  {"pid", {{"type", "integer"}}},
                                  {"slots", count},
                                  {"running", count},
                                  {"last_seen_s", {{"type", "number"}, {"minimum", 0}}}})}}},
       {"tasks", closed_object(tasks_by_state)},
       {"api", closed_object({{"event_streams", count},
                              {"max_event_streams", count},
                              {"draining", {{"type", "boolean"}}},
                              {"auth", {{"type", "boolean"}}}})}});
  json tasks_example = json::object();
  for (auto n : all_names<TaskState>()) tasks_example[std::string(n)] = 0;
  tasks_example[std::string(name(TaskState::Succeeded))] = 12;
  status["example"] = {
      {"broker",
       {{"up", true},
        {"workers", 1},
        {"slots", 2},
        {"credit", 2},
        {"running", 0},
        {"queued", 0},
        {"max_queue", 64},
        {"draining", false},
        {"accepting", true},
        {"succeeded", 12},
        {"failed", 0},
        {"cancelled", 0},
        {"requeued", 0}}},
      {"workers",
       {{{"id", "worker-1-4242"},
         {"host", "worker-1"},
         {"pid", 4242},
         {"slots", 2},
         {"running", 0},
         {"last_seen_s", 0.2}}}},
      {"tasks", tasks_example},
      {"api",
       {{"event_streams", 0}, {"max_event_streams", 1000}, {"draining", false}, {"auth", false}}}};

  json readiness = closed_object(
      {{"status", enum_schema({"ready", "not ready"})},
       {"checks",
        {{"type", "object"},
         {"description",
          "database: ok or why not; broker: its counts, or unreachable; draining: true while "
          "the api stops"},
         {"properties",
          {{"database", string_schema()},
           {"broker",
            {{"oneOf",
              json::array({enum_schema({"unreachable"}), closed_object({{"workers", count},
                                                                        {"slots", count},
                                                                        {"credit", count},
                                                                        {"running", count},
                                                                        {"queued", count},
                                                                        {"max_queue", count}})})}}},
           {"draining", {{"type", "boolean"}}}}},
         {"additionalProperties", false}}}});
  readiness["example"] = {{"status", "ready"},
                          {"checks",
                           {{"database", "ok"},
                            {"broker",
                             {{"workers", 1},
                              {"slots", 2},
                              {"credit", 2},
                              {"running", 0},
                              {"queued", 0},
                              {"max_queue", 64}}}}}};

  json flow_page = closed_object({{"flows", {{"type", "array"}, {"items", ref("Flow")}}},
                                  {"next", nullable(string_schema())}});
  flow_page["example"] = {{"flows", json::array({flow_schema()["example"]})}, {"next", nullptr}};

  json top = closed_object({{"by", enum_schema(names(flows::kTopDims))},
                            {"metric", enum_schema(names(flows::kMetrics))},
                            {"groups", {{"type", "array"}, {"items", ref("TopGroup")}}}});
  top["example"] = {{"by", "app"},
                    {"metric", "bytes"},
                    {"groups",
                     {{{"app", "TLS"}, {"bytes", 52110}, {"packets", 120}, {"flows", 7}},
                      {{"app", "DNS"}, {"bytes", 2310}, {"packets", 24}, {"flows", 12}}}}};

  json timeseries = closed_object(
      {{"bucket_ms", integer_schema(1)},
       {"time",
        {{"type", "array"},
         {"items", {{"type", "integer"}}},
         {"description", "each bucket's start, milliseconds since 1970"}}},
       {"series",
        {{"type", "array"},
         {"items",
          closed_object({{"key", nullable({{"type", "string"},
                                           {"description",
                                            "the application or protocol (other: the rest summed; "
                                            "null: no label)"}})},
                         {"values",
                          {{"type", "array"},
                           {"items", integer_schema(0)},
                           {"description", "one per bucket of time"}}}})}}}});
  timeseries["example"] = {
      {"bucket_ms", 1000},
      {"time", {1700000000000, 1700000001000}},
      {"series",
       {{{"key", "TLS"}, {"values", {5210, 190}}}, {{"key", "DNS"}, {"values", {310, 0}}}}}};

  json capture_list = closed_object({{"captures", {{"type", "array"}, {"items", ref("Capture")}}},
                                     {"next", nullable(string_schema())},
                                     {"used_bytes", count},
                                     {"quota_bytes", nullable(integer_schema(1))}});
  capture_list["example"] = {{"captures", json::array({capture_schema()["example"]})},
                             {"next", nullptr},
                             {"used_bytes", 66968},
                             {"quota_bytes", nullptr}};

  json upload = closed_object({{"id", {{"type", "string"}, {"format", "uuid"}}},
                               {"offset", count},
                               {"length", nullable(integer_schema(1))},
                               {"name", string_schema()},
                               {"created_at", {{"type", "string"}, {"format", "date-time"}}},
                               {"expires", {{"type", "string"}, {"description", "HTTP date"}}},
                               {"complete", {{"type", "boolean"}}}});
  upload["properties"]["capture"] = ref("Capture");
  upload["example"] = {{"id", kUploadId},
                       {"offset", 32768},
                       {"length", 66968},
                       {"name", "trace.pcap"},
                       {"created_at", "2026-11-27T11:58:01.004Z"},
                       {"expires", "Sat, 28 Nov 2026 11:58:01 GMT"},
                       {"complete", false}};

  // The drop folder's journal (docs/drop-folder.md).
  json entry = closed_object({
      {"at", {{"type", "string"}, {"format", "date-time"}}},
      {"folder", string_schema()},
      {"file", string_schema()},
      {"outcome", enum_schema(names(drop::kOutcomes))},
      {"reason", nullable(string_schema())},
      {"task_id", nullable(string_schema())},
      {"key", nullable(string_schema())},
      {"sha256", nullable(string_schema())},
      {"format", nullable(string_schema())},
      {"kind", nullable(enum_schema(names(proto::kKindNames)))},
      {"output_path", nullable(string_schema())},
      {"size", count},
      {"mtime_ns", {{"type", "integer"}}},
      {"ctime_ns", nullable({{"type", "integer"}})},
      {"dev", count},
      {"ino", count},
  });
  entry["description"] = "What became of one version of one dropped file";
  entry["properties"]["existing"] = {
      {"type", "boolean"},
      {"description", "outcome submitted: the broker already had a task with this key"}};
  json waiting = closed_object({{"folder", string_schema()},
                                {"file", string_schema()},
                                {"size", count},
                                {"state", enum_schema(names(drop::kWaitingStates))}});
  waiting["properties"]["attempts"] = count;
  waiting["properties"]["reason"] = string_schema();
  json drop = closed_object(
      {{"enabled", {{"type", "boolean"}}},
       {"folders", {{"type", "array"}, {"items", closed_object({{"path", string_schema()}})}}},
       {"waiting", {{"type", "array"}, {"items", waiting}, {"maxItems", drop::kMaxDropEntries}}},
       {"waiting_total", count},
       {"waiting_truncated", {{"type", "boolean"}}},
       {"entries", {{"type", "array"}, {"items", ref("DropEntry")}}}});
  drop["required"] = {"enabled",       "folders",           "waiting",
                      "waiting_total", "waiting_truncated", "entries"};
  drop["properties"]["waiting"]["description"] =
      "the files not yet decided, at most " + std::to_string(drop::kMaxDropEntries) +
      " (waiting_total counts them all; waiting_truncated is true when some are not listed)";
  drop["properties"]["settle_seconds"] = {{"type", "number"}, {"minimum", 0}};
  drop["example"] = {{"enabled", false},           {"folders", json::array()},
                     {"waiting", json::array()},   {"waiting_total", 0},
                     {"waiting_truncated", false}, {"entries", json::array()}};

  return {{"Problem", problem},
          {"ValidationProblem", validation},
          {"FieldError", field_error},
          {"TaskRequest", task_request_schema()},
          {"Accepted", accepted},
          {"Task", task},
          {"TaskList", task_list},
          {"CancelResult", cancelled},
          {"Event", event},
          {"TaskEvents", task_events},
          {"Status", status},
          {"Readiness", readiness},
          {"Flow", flow_schema()},
          {"FlowPage", flow_page},
          {"TopGroup", top_group_schema()},
          {"Top", top},
          {"Timeseries", timeseries},
          {"Capture", capture_schema()},
          {"CaptureList", capture_list},
          {"Upload", upload},
          {"DropEntry", entry},
          {"Drop", drop},
          {"FlowField",
           {{"type", "string"},
            {"enum", names(flows::field_names())},
            {"description", "a column of the flow store, or another name of one"}}}};
}

// The answers the HTTP server gives on any route, before or around its handler.
json common_responses() {
  json unauthorized =
      problem_response("No valid bearer token (when the api is started with --tokens)",
                       problem_example(401, "Unauthorized", "a valid bearer token is required"));
  unauthorized["headers"]["WWW-Authenticate"] = {
      {"required", true}, {"schema", {{"type", "string"}, {"enum", {"Bearer"}}}}};
  return {
      {"BadRequest",
       problem_response("The request target has a bad percent-encoding or is not UTF-8, or the "
                        "request is not HTTP/1.1",
                        problem_example(400, "Bad Request",
                                        "the request target is not valid: bad percent-encoding "
                                        "or not UTF-8"))},
      {"Unauthorized", unauthorized},
      {"Forbidden", problem_response("The token's role may not use this route",
                                     problem_example(403, "Forbidden",
                                                     "a read token may not POST /api/v1/tasks "
                                                     "(needs submit)"))},
      {"ContentTooLarge",
       problem_response(
           "The body is larger than the route takes (--max-body for a POST, "
           "--max-other-body for a route that takes none); the connection closes",
           problem_example(413, "Content Too Large", "the request body is too large"))},
      {"HeaderTooLarge",
       problem_response("The request line and header fields are larger than --max-header; the "
                        "connection closes",
                        problem_example(431, "Request Header Fields Too Large",
                                        "the request header is larger than 8192 bytes"))},
      {"InternalError", problem_response("The handler failed (the api's log says why)",
                                         problem_example(500, "Internal Server Error",
                                                         "the request failed; see the api log"))},
      {"Overloaded",
       retry_response("The api holds --max-connections connections and none is idle; the "
                      "connection closes",
                      problem_example(503, "Service Unavailable",
                                      "the server has too many connections; try again"))}};
}

// --- Parameters --------------------------------------------------------------------------------

json path_param(const std::string& name, const json& schema, const json& example,
                const std::string& description = "") {
  json p = {
      {"name", name}, {"in", "path"}, {"required", true}, {"schema", schema}, {"example", example}};
  if (!description.empty()) p["description"] = description;
  return p;
}

json query_param(const std::string& name, const json& schema, const std::string& description,
                 const json& example = nullptr) {
  json p = {{"name", name}, {"in", "query"}, {"description", description}, {"schema", schema}};
  if (!example.is_null()) p["example"] = example;
  return p;
}

json task_id_param() {
  return path_param("id", {{"type", "string"}, {"format", "uuid"}}, kTaskId, "the task's id");
}

// --- Operations --------------------------------------------------------------------------------

json submit_responses() {
  json conflict = problem_example(409, "Conflict",
                                  "the output_path sample.ipfix is written by task " + kTaskId);
  return {
      {"202", json_response("Accepted and committed; Location names the task", ref("Accepted"),
                            accepted_example())},
      {"200", json_response("The Idempotency-Key named a task submitted before: that task",
                            ref("Accepted"),
                            [] {
                              json e = accepted_example();
                              e["existing"] = true;
                              return e;
                            }())},
      {"409", problem_response("The output_path is written by a queued or running task, or was "
                               "written by a succeeded one (see overwrite)",
                               conflict)},
      {"422", validation_response("Invalid fields or paths, unknown fields, unreadable inputs, an "
                                  "Idempotency-Key too long or reused with another body",
                                  schemas()["ValidationProblem"]["example"])},
      {"503", retry_response("The queue is full, the broker is shutting down or did not answer",
                             unavailable_example())},
      {"507", retry_response("The database's or the output root's disk is (nearly) full",
                             problem_example(507, "Insufficient Storage",
                                             "the output root has less than 64 MiB free"))}};
}

json submit_operation(const std::string& summary, bool lenient) {
  json responses = submit_responses();
  responses["400"] =
      problem_response("The body is not JSON, or nests deeper than --max-json-depth",
                       problem_example(400, "Bad Request", "the request body is not valid JSON"));
  responses["415"] = problem_response(
      "The body is not application/json",
      problem_example(415, "Unsupported Media Type",
                      "send the task as JSON with Content-Type: application/json"));
  json body_schema = ref("TaskRequest");
  if (lenient)
    body_schema = {{"allOf", json::array({ref("TaskRequest")})},
                   {"description", "The same request; fields it does not know are ignored"}};
  return {
      {"summary", summary},
      {"parameters",
       json::array(
           {{{"name", "Idempotency-Key"},
             {"in", "header"},
             {"required", false},
             {"description", "the same key with the same body answers the task it made (200)"},
             {"schema", {{"type", "string"}, {"maxLength", 255}}},
             {"example", "day1-import"}}})},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/json", {{"schema", body_schema}, {"example", task_request_example()}}}}}}},
      {"responses", responses}};
}

json list_operation(const std::string& summary) {
  json params = json::array({
      query_param("state", enum_schema(states()), "only tasks in this state",
                  name(TaskState::Succeeded)),
      query_param("created_after", {{"type", "string"}}, "ISO 8601, compared as text",
                  "2026-01-01T00:00:00Z"),
      query_param("created_before", {{"type", "string"}}, "ISO 8601, compared as text"),
      query_param("input", {{"type", "string"}}, "a substring of an input path", "sample"),
      query_param("parent", {{"type", "string"}},
                  "the parts of this split task (without it, parts are not listed)"),
      query_param("limit", integer_schema(1, kMaxPageLimit),
                  "tasks per page (default 50; a page also stops at --max-page-bytes)", 10),
      query_param("next", {{"type", "string"}}, "the previous page's cursor"),
  });
  return {{"summary", summary},
          {"parameters", params},
          {"responses",
           {{"200", json_response("Tasks, newest first", ref("TaskList"),
                                  schemas()["TaskList"]["example"])},
            {"422", validation_response("A query parameter is invalid",
                                        invalid_query_example("limit", "must be from 1 to 1000"))},
            {"503", retry_response("The task database is not available yet",
                                   problem_example(503, "Service Unavailable",
                                                   "the task database is not available"))}}}};
}

// The answers of every route that reads a task by its id.
json task_lookup_responses() {
  return {{"404", problem_response("No such task", not_found_example("task with id " + kTaskId))},
          {"503", retry_response("The task database is not available yet",
                                 problem_example(503, "Service Unavailable",
                                                 "the task database is not available"))}};
}

json get_task_operation(const std::string& summary) {
  json responses = task_lookup_responses();
  responses["200"] = json_response("The task", ref("Task"), task_example());
  return {{"summary", summary},
          {"parameters", json::array({task_id_param()})},
          {"responses", responses}};
}

json task_paths() {
  json paths;
  paths["/api/v1/tasks"]["post"] = submit_operation("Submit a task", false);
  paths["/api/v1/tasks"]["get"] = list_operation("List tasks");
  paths["/api/v1/tasks/{id}"]["get"] = get_task_operation("Task status");
  json cancel = task_lookup_responses();
  cancel["503"] = retry_response("The broker did not answer", unavailable_example());
  cancel["200"] = json_response("Cancelled (it was queued)", ref("CancelResult"),
                                schemas()["CancelResult"]["example"]);
  cancel["202"] =
      json_response("Cancelling: it runs on a worker, which was told to stop", ref("CancelResult"),
                    {{"task_id", kTaskId},
                     {"state", name(TaskState::Running)},
                     {"result", name(CancelResult::Cancelling)}});
  cancel["409"] = problem_response(
      "It already finished",
      problem_example(409, "Conflict", "task " + kTaskId + " already finished: succeeded"));
  paths["/api/v1/tasks/{id}"]["delete"] = {{"summary", "Cancel a queued or running task"},
                                           {"parameters", json::array({task_id_param()})},
                                           {"responses", cancel}};
  // Server-sent events (docs/events.md).
  const std::string frames =
      "id: 41\nevent: state\ndata: {\"at\":\"2026-11-27T11:59:08.201Z\",\"id\":41,\"reason\":"
      "\"dispatched (attempt 1)\",\"state\":\"running\",\"task_id\":\"" +
      kTaskId + "\",\"worker\":\"w1\"}\n\nevent: progress\ndata: {\"progress\":0.5,\"task_id\":\"" +
      kTaskId + "\"}\n\n";
  const json sse = {
      {"schema",
       {{"type", "string"},
        {"description",
         "event: state (id: the event's id; data: {id, task_id, at, state, reason, worker}), "
         "event: progress (data: {task_id, progress}), event: end (data: {task_id, state}; "
         "one task's stream only); ': keep-alive' comments every 15 s"}}},
      {"example", frames}};
  const json since = query_param(
      "since", integer_schema(0),
      "replay the state events after this event id first (as the Last-Event-ID header does)", 0);
  const json last_event_id = {
      {"name", "Last-Event-ID"},     {"in", "header"},
      {"required", false},           {"description", "the last event id a reconnecting client saw"},
      {"schema", integer_schema(0)}, {"example", 41}};
  const json bad_cursor =
      problem_response("Last-Event-ID or since is not an event id",
                       problem_example(400, "Bad Request",
                                       "Last-Event-ID (or since) must be a non-negative "
                                       "event id"));
  const json too_many = retry_response(
      "Too many event streams are open (--max-event-streams), or the task database is not "
      "available yet",
      problem_example(503, "Service Unavailable",
                      "too many event streams are open (1000); try again later"));
  json history = json_response("The history, in order (JSON); or the live events (stream)",
                               ref("TaskEvents"), schemas()["TaskEvents"]["example"]);
  history["content"]["text/event-stream"] = sse;
  json task_events = task_lookup_responses();
  task_events["200"] = history;
  task_events["400"] = bad_cursor;
  task_events["503"] = too_many;
  paths["/api/v1/tasks/{id}/events"]["get"] = {
      {"summary", "The task's history, or (stream=1) its live events"},
      {"parameters",
       json::array({task_id_param(),
                    query_param("stream", enum_schema({"0", "1"}),
                                "1: a live event stream (also chosen by Accept: "
                                "text/event-stream): the history, then live events, ending "
                                "after the terminal state",
                                "0"),
                    since, last_event_id})},
      {"responses", task_events}};
  paths["/api/v1/events"]["get"] = {
      {"summary", "Live state changes and progress of every task (server-sent events)"},
      {"parameters", json::array({since, last_event_id})},
      {"responses",
       {{"200",
         {{"description", "An endless event stream"}, {"content", {{"text/event-stream", sse}}}}},
        {"400", bad_cursor},
        {"503", too_many}}}};
  paths["/api/v1/status"]["get"] = {
      {"summary", "The service at a glance: broker admission, workers, tasks by state"},
      {"responses",
       {{"200", json_response("Status (broker.up is false when the broker did not answer)",
                              ref("Status"), schemas()["Status"]["example"])}}}};
  json download = task_lookup_responses();
  download["200"] = {
      {"description", "The file (Content-Disposition: attachment)"},
      {"content",
       {{"application/ipfix", {{"schema", {{"type", "string"}, {"format", "binary"}}}}},
        {"application/vnd.tcpdump.pcap",
         {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
  download["404"] = problem_response("No such task, or its file is gone",
                                     not_found_example("task with id " + kTaskId));
  download["409"] = problem_response(
      "The task has not succeeded",
      problem_example(409, "Conflict", "task " + kTaskId + " is running, not succeeded"));
  download["410"] = problem_response("The file was replaced since the task finished",
                                     problem_example(410, "Gone",
                                                     "the output file of task " + kTaskId +
                                                         " was replaced since the task finished"));
  paths["/api/v1/tasks/{id}/output"]["get"] = {
      {"summary", "Download the output: the IPFIX file (RFC 5655), or an extract's pcap"},
      {"parameters", json::array({task_id_param()})},
      {"responses", download}};
  return paths;
}

// The flow store's routes (docs/api.md "Flow records", docs/flow-filter.md).
json flow_paths() {
  json paths;
  const json filter =
      query_param("filter", {{"type", "string"}, {"maxLength", flows::kMaxFilterBytes}},
                  "flow filter (docs/flow-filter.md)", "bytes > 100 and not port 22");
  const json fields = [] {
    json p = query_param("fields", {{"type", "array"}, {"items", ref("FlowField")}},
                         "the columns, comma-separated (default all)",
                         json::array({"src", "dst", "proto_name", "bytes"}));
    p["style"] = "form";
    p["explode"] = false;
    return p;
  }();
  std::string sort_pattern = "^[-+]?(";
  bool first = true;
  for (auto n : flows::field_names()) {
    if (!first) sort_pattern += '|';
    sort_pattern += n;
    first = false;
  }
  sort_pattern += ")$";
  const json sort = [&] {
    json p = query_param(
        "sort", {{"type", "array"}, {"items", {{"type", "string"}, {"pattern", sort_pattern}}}},
        "columns (FlowField), '-' for descending, comma-separated (default id; id is always "
        "the last tiebreaker)",
        json::array({"-bytes", "start_ms"}));
    p["style"] = "form";
    p["explode"] = false;
    return p;
  }();
  json list_params = json::array({task_id_param(), filter, fields, sort});
  const json flow_errors = [] {
    json r = task_lookup_responses();
    r["404"] = problem_response(
        "No such task, or it has no flow store",
        problem_example(404, "Not Found",
                        "task " + kTaskId +
                            " has no flow store: it was converted with \"flow_store\": false, "
                            "or before flow stores existed (docs/flow-store.md)"));
    r["409"] = problem_response(
        "The task has not succeeded",
        problem_example(409, "Conflict", "task " + kTaskId + " is running, not succeeded"));
    r["410"] =
        problem_response("The output and its flow store were replaced since the task finished",
                         problem_example(410, "Gone",
                                         "the output of task " + kTaskId +
                                             " (and its flow store) was replaced since the task "
                                             "finished"));
    r["500"] = problem_response("The flow store cannot be read (damaged)",
                                problem_example(500, "Internal Server Error",
                                                "the flow store of task " + kTaskId +
                                                    " cannot be read: file is not a "
                                                    "database"));
    return r;
  }();
  json filter_error =
      problem_example(422, "Unprocessable Content", "invalid query parameter filter");
  filter_error["errors"] = json::array({{{"field", "filter"},
                                         {"message",
                                          "at byte 6: a value is missing (expected "
                                          "a number)"},
                                         {"position", 6},
                                         {"expected", "a number"}}});
  const json param_error = validation_response(
      "A parameter is invalid (errors names it; a filter's syntax error gives its position and "
      "what was expected), or the query ran longer than --flow-query-ms",
      filter_error);
  const auto flow_op = [&](const std::string& summary, const json& params, const json& ok,
                           bool takes_params = true) {
    json responses = flow_errors;
    responses["200"] = ok;
    if (takes_params) responses["422"] = param_error;
    return json{{"summary", summary}, {"parameters", params}, {"responses", responses}};
  };
  json page_params = list_params;
  page_params.push_back(query_param(
      "limit", integer_schema(1, flows::kMaxListLimit),
      "records per page (default " + std::to_string(flows::kDefaultListLimit) + ")", 10));
  page_params.push_back(query_param("next", {{"type", "string"}},
                                    "the previous page's cursor (same filter and sort)"));
  json page_ok =
      json_response("A page of records", ref("FlowPage"), schemas()["FlowPage"]["example"]);
  page_ok["content"]["application/x-ndjson"]["schema"] = {
      {"type", "string"}, {"description", "every match, one JSON object (Flow) a line"}};
  page_ok["content"]["text/csv"]["schema"] = {{"type", "string"},
                                              {"description", "every match, a header row first"}};
  paths["/api/v1/tasks/{id}/flows"]["get"] = flow_op(
      "Flow records: a page (JSON), or every match streamed with Accept: application/x-ndjson "
      "or text/csv",
      page_params, page_ok);
  json export_params = list_params;
  export_params.push_back(
      query_param("limit", integer_schema(1), "at most this many records (default all)", 10));
  paths["/api/v1/tasks/{id}/flows.ndjson"]["get"] =
      flow_op("Every matching flow record as NDJSON, streamed", export_params,
              {{"description", "One JSON object (Flow) a line"},
               {"content",
                {{"application/x-ndjson",
                  {{"schema", {{"type", "string"}}},
                   {"example", flow_schema()["example"].dump() + "\n"}}}}}});
  paths["/api/v1/tasks/{id}/flows.csv"]["get"] =
      flow_op("Every matching flow record as CSV (header row), streamed", export_params,
              {{"description", "CSV with a header row"},
               {"content",
                {{"text/csv",
                  {{"schema", {{"type", "string"}}},
                   {"example", "src,dst,proto_name,bytes\n10.0.0.1,93.184.216.34,tcp,4321\n"}}}}}});
  paths["/api/v1/tasks/{id}/flows.sqlite"]["get"] = flow_op(
      "The flow store file (SQLite 3)", json::array({task_id_param()}),
      {{"description", "The file (Content-Disposition: attachment)"},
       {"content",
        {{"application/vnd.sqlite3", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}},
      false);
  json top_params = json::array(
      {task_id_param(), filter,
       query_param("by", enum_schema(names(flows::kTopDims)), "what groups the records", "app"),
       query_param("metric", enum_schema(names(flows::kMetrics)),
                   "what ranks the groups (default " + std::string(flows::kMetrics[0]) + ")",
                   std::string(flows::kMetrics[0])),
       query_param("n", integer_schema(1, flows::kMaxTopN),
                   "groups (default " + std::to_string(flows::kDefaultTopN) + ")", 5)});
  top_params[2]["required"] = true;
  paths["/api/v1/tasks/{id}/top"]["get"] =
      flow_op("The largest groups of flow records", top_params,
              json_response("Groups, largest first", ref("Top"), schemas()["Top"]["example"]));
  json ts_params = json::array(
      {task_id_param(), filter,
       query_param("by", enum_schema(names(flows::kSeriesDims)), "what makes a series", "app"),
       query_param("metric", enum_schema(names(flows::kMetrics)),
                   "what is summed (default " + std::string(flows::kMetrics[0]) + ")",
                   std::string(flows::kMetrics[1])),
       query_param("bucket_ms", integer_schema(1),
                   "bucket size, a multiple of the store's (default: about " +
                       std::to_string(flows::kTimeseriesTargetBuckets) + " buckets over the span)"),
       query_param("top", integer_schema(1, flows::kMaxTimeseriesTop),
                   "series kept, the rest summed as other (default " +
                       std::to_string(flows::kDefaultTimeseriesTop) + ")",
                   3)});
  ts_params[2]["required"] = true;
  paths["/api/v1/tasks/{id}/timeseries"]["get"] = flow_op(
      "Packets, bytes or flows per time bucket by application or protocol, columnar", ts_params,
      json_response("{bucket_ms, time: [...], series: [{key, values: [...]}]}", ref("Timeseries"),
                    schemas()["Timeseries"]["example"]));
  json pcap_responses = submit_responses();
  for (auto& [status, r] : flow_errors.items())
    if (status != "409" && status != "404") pcap_responses[status] = r;
  pcap_responses["200"]["description"] = "The same request was made before: that task";
  pcap_responses["202"]["description"] =
      "An extract task was queued; its output (GET .../output) is the pcap";
  pcap_responses["404"] =
      problem_response("No such task or record, or no flow store",
                       problem_example(404, "Not Found", "task " + kTaskId + " has no flow 99"));
  pcap_responses["409"] = problem_response(
      "The task has not succeeded, is not a conversion of captures, or the pcap's path is "
      "another task's",
      problem_example(409, "Conflict",
                      "task " + kTaskId +
                          " is of kind ingest: only a conversion of captures has packets to "
                          "cut out"));
  pcap_responses["422"] = validation_response(
      "The task's captures are no longer readable (errors names them), or reading the record "
      "took longer than --flow-query-ms",
      [] {
        json e = problem_example(422, "Unprocessable Content", "the task request is not valid");
        e["errors"] = json::array({{{"field", "pcap_files[0]"},
                                    {"message", "/srv/ipfixweb/input/a.pcap: no such file"}}});
        return e;
      }());
  paths["/api/v1/tasks/{id}/flows/{flow}/pcap"]["post"] = {
      {"summary", "Queue an extract task writing the packets of one flow record to a pcap file"},
      {"parameters",
       json::array({task_id_param(), path_param("flow", integer_schema(1), 1,
                                                "the record's id (the `id` column of /flows)")})},
      {"responses", pcap_responses}};
  return paths;
}

// Operations, probes and the original service's routes.
json service_paths() {
  json paths;
  paths["/livez"]["get"] = {
      {"summary", "The process serves HTTP"},
      {"responses",
       {{"200", json_response("Alive", closed_object({{"status", enum_schema({"alive"})}}),
                              {{"status", "alive"}})}}}};
  json not_ready = json_response(
      "Not ready (why: checks)", ref("Readiness"),
      {{"status", "not ready"}, {"checks", {{"database", "ok"}, {"broker", "unreachable"}}}});
  // The HTTP server's own 503 (no connection left) is a problem document here too.
  not_ready["content"]["application/problem+json"] =
      common_responses()["Overloaded"]["content"]["application/problem+json"];
  not_ready["headers"]["Retry-After"] = kRetryAfter;
  not_ready["headers"]["Retry-After"]["required"] = false;
  not_ready["headers"]["Retry-After"]["description"] = "Only with the problem document";
  paths["/readyz"]["get"] = {
      {"summary", "Broker reachable, database readable, not draining"},
      {"responses",
       {{"200", json_response("Ready", ref("Readiness"), schemas()["Readiness"]["example"])},
        {"503", not_ready}}}};
  paths["/metrics"]["get"] = {
      {"summary", "Prometheus metrics"},
      {"responses",
       {{"200",
         {{"description", "Text exposition format 0.0.4"},
          {"content",
           {{"text/plain",
             {{"schema", {{"type", "string"}}},
              {"example",
               "# HELP ipfixweb_broker_up 1 when the broker answered the api's ping.\n"
               "# TYPE ipfixweb_broker_up gauge\nipfixweb_broker_up 1\n"}}}}}}}}}};
  paths["/openapi.json"]["get"] = {
      {"summary", "This document"},
      {"responses",
       {{"200", json_response("OpenAPI 3.0",
                              {{"type", "object"},
                               {"required", {"openapi", "info", "paths"}},
                               {"properties",
                                {{"openapi", string_schema()},
                                 {"info", {{"type", "object"}}},
                                 {"paths", {{"type", "object"}}}}}},
                              {{"openapi", "3.0.3"},
                               {"info", {{"title", "ipfixweb"}, {"version", "1.0.0"}}},
                               {"paths", json::object()}})}}}};
  paths["/api/export-task"]["post"] =
      submit_operation("Compatibility: POST /api/v1/tasks (unknown fields ignored)", true);
  paths["/api/task-status/{id}"]["get"] =
      get_task_operation("Compatibility: GET /api/v1/tasks/{id}");
  paths["/api/tasks"]["get"] = list_operation("Compatibility: GET /api/v1/tasks");
  paths["/api/v1/test/health"]["get"] = {
      {"summary", "Compatibility: health"},
      {"responses",
       {{"200", json_response("OK", closed_object({{"status", enum_schema({"ok"})}}),
                              {{"status", "ok"}})}}}};
  json sample = submit_responses();
  sample.erase("200");  // a new output name every time: never an existing task
  sample["422"]["description"] = "The bundled sample capture (--sample-pcap) is not readable";
  paths["/api/v1/test/file_exporter/export_task"]["post"] = {
      {"summary",
       "Compatibility: submit the bundled sample capture (--sample-pcap) to test/<uuid>.ipfix"},
      {"responses", sample}};
  return paths;
}

json drop_paths() {
  json paths;
  paths["/api/v1/drop"]["get"] = {
      {"summary", "The drop folders: files waiting, and what became of the files dropped"},
      {"parameters",
       json::array({query_param("limit", integer_schema(1, drop::kMaxDropEntries),
                                "journal entries shown, newest first (default 100)", 10)})},
      {"responses",
       {{"200", json_response("The folders (enabled false when none is configured)", ref("Drop"),
                              schemas()["Drop"]["example"])},
        {"422", validation_response(
                    "limit out of range",
                    invalid_query_example(
                        "limit", "must be from 1 to " + std::to_string(drop::kMaxDropEntries)))}}}};
  return paths;
}

// Captures in (docs/uploads.md): one-shot uploads and tus 1.0.0 resumable ones.
json capture_paths() {
  json paths;
  const json capture_example = capture_schema()["example"];
  const json sha = path_param("sha256", {{"type", "string"}, {"pattern", "^[0-9a-fA-F]{64}$"}},
                              kSha256, "the capture's SHA-256");
  const json upload_id = path_param("id", {{"type", "string"}, {"format", "uuid"}}, kUploadId,
                                    "the upload's id (its Location)");
  const json tus_version = {{"name", "Tus-Resumable"},
                            {"in", "header"},
                            {"required", true},
                            {"schema", enum_schema({"1.0.0"})},
                            {"example", "1.0.0"}};
  const json tus_header = {{"required", true}, {"schema", enum_schema({"1.0.0"})}};
  const auto tus = [&](json r) {
    r["headers"]["Tus-Resumable"] = tus_header;
    return r;
  };
  const json precondition = problem_response(
      "Tus-Resumable is missing or names another version (Tus-Version: 1.0.0)",
      problem_example(412, "Error", "send Tus-Resumable: 1.0.0 (this server speaks tus 1.0.0)"));
  const json too_large = problem_response(
      "Larger than --max-capture-size, or over a quota (the detail names the limit)",
      problem_example(413, "Content Too Large",
                      "the capture is larger than the limit of 107374182400 bytes"));
  const json not_capture =
      problem_response("Not a capture: pcap, pcapng or IPFIX, plain or compressed",
                       problem_example(415, "Unsupported Media Type",
                                       "this is not a capture: neither pcap, pcapng nor IPFIX"));
  const json disk_full =
      problem_response("The capture disk is full: nothing was kept",
                       problem_example(507, "Insufficient Storage", "the capture disk is full"));
  const json not_stored = problem_response(
      "The capture could not be stored (the detail says why)",
      problem_example(500, "Internal Server Error", "cannot store the capture: Permission denied"));
  json digest = problem_example(422, "Unprocessable Content",
                                "the upload's SHA-256 is " + kSha256 + ", not " +
                                    std::string(64, '0') + " as the client said: nothing was kept");
  digest["errors"] = json::array({{{"field", "sha256"}, {"message", "does not match the upload"}}});
  paths["/api/v1/captures"]["post"] = {
      {"summary",
       "Upload a capture in one request (raw body, or multipart/form-data with a "
       "\"file\" part), streamed to disk"},
      {"parameters",
       json::array({query_param("name", {{"type", "string"}},
                                "the capture's name (or Content-Disposition)", "trace.pcap"),
                    query_param("sha256", {{"type", "string"}, {"pattern", "^[0-9a-fA-F]{64}$"}},
                                "the expected digest (or Repr-Digest: sha-256=:<base64>:)")})},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/octet-stream", {{"schema", {{"type", "string"}, {"format", "binary"}}}}},
          {"multipart/form-data",
           {{"schema",
             {{"type", "object"},
              {"properties",
               {{"file", {{"type", "string"}, {"format", "binary"}}},
                {"sha256", {{"type", "string"}}},
                {"name", {{"type", "string"}}}}}}}}}}}}},
      {"responses",
       {{"201", json_response("Stored; Location names it", ref("Capture"), capture_example)},
        {"200", json_response("The same content was stored already", ref("Capture"),
                              [&] {
                                json e = capture_example;
                                e["existing"] = true;
                                return e;
                              }())},
        {"400", problem_response(
                    "A malformed multipart form",
                    problem_example(400, "Bad Request", "multipart/form-data without a boundary"))},
        {"413", too_large},
        {"415", not_capture},
        {"422",
         validation_response("Digest mismatch, a bad name, an empty upload, no file part", digest)},
        {"500", not_stored},
        {"507", disk_full}}}};
  paths["/api/v1/captures"]["get"] = {
      {"summary", "The uploaded captures, newest first"},
      {"parameters",
       json::array({query_param("limit", integer_schema(1, kMaxPageLimit),
                                "captures per page (default 100)", 10),
                    query_param("next", {{"type", "string"}}, "the previous page's cursor")})},
      {"responses",
       {{"200", json_response("A page of captures", ref("CaptureList"),
                              schemas()["CaptureList"]["example"])},
        {"422", validation_response("A bad limit or cursor",
                                    invalid_query_example("limit", "must be from 1 to 1000"))}}}};
  const json no_capture =
      problem_response("No such capture", not_found_example("capture " + kSha256));
  paths["/api/v1/captures/{sha256}"]["get"] = {
      {"summary", "One capture"},
      {"parameters", json::array({sha})},
      {"responses",
       {{"200", json_response("The capture", ref("Capture"), capture_example)},
        {"404", no_capture}}}};
  paths["/api/v1/captures/{sha256}"]["delete"] = {
      {"summary", "Remove a capture no queued or running task reads"},
      {"parameters", json::array({sha})},
      {"responses",
       {{"204", {{"description", "Removed"}}},
        {"404", no_capture},
        {"409", problem_response("A queued or running task reads it",
                                 problem_example(409, "Conflict",
                                                 "capture " + kSha256 +
                                                     " is read by a queued or running task"))}}}};
  json options_headers = {
      {"Tus-Resumable", tus_header},
      {"Tus-Version", tus_header},
      {"Tus-Max-Size", {{"required", true}, {"schema", integer_schema(1)}}},
      {"Tus-Extension", {{"required", true}, {"schema", string_schema()}}},
      {"Tus-Checksum-Algorithm", {{"required", true}, {"schema", string_schema()}}}};
  paths["/api/v1/uploads"]["options"] = {
      {"summary", "tus 1.0.0 discovery: version, extensions, maximum size"},
      {"responses",
       {{"204",
         {{"description", "The server's tus capabilities"}, {"headers", options_headers}}}}}};
  const json offset_headers = {
      {"Tus-Resumable", tus_header},
      {"Upload-Offset", {{"required", true}, {"schema", integer_schema(0)}}},
      {"Upload-Length", {{"required", false}, {"schema", integer_schema(1)}}},
      {"Upload-Defer-Length", {{"required", false}, {"schema", enum_schema({"1"})}}},
      {"Upload-Expires", {{"required", true}, {"schema", string_schema()}}}};
  json created_headers = offset_headers;
  created_headers["Location"] = {{"required", true}, {"schema", string_schema()}};
  paths["/api/v1/uploads"]["post"] = {
      {"summary", "tus creation (and creation-with-upload): a resumable upload"},
      {"parameters",
       json::array(
           {tus_version,
            {{"name", "Upload-Length"},
             {"in", "header"},
             {"description", "the whole capture's size (or Upload-Defer-Length: 1)"},
             {"schema", integer_schema(1)},
             {"example", 66968}},
            {{"name", "Upload-Defer-Length"}, {"in", "header"}, {"schema", enum_schema({"1"})}},
            {{"name", "Upload-Metadata"},
             {"in", "header"},
             {"description", "filename and sha256, base64-encoded"},
             {"schema", {{"type", "string"}}},
             {"example", "filename dHJhY2UucGNhcA=="}}})},
      {"requestBody",
       {{"required", false},
        {"description", "creation-with-upload: the first bytes"},
        {"content",
         {{"application/offset+octet-stream",
           {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}}},
      {"responses",
       {{"201",
         {{"description", "Created; Location names the upload"}, {"headers", created_headers}}},
        {"400",
         tus(problem_response("No Upload-Length, bad metadata",
                              problem_example(400, "Bad Request",
                                              "send Upload-Length (or Upload-Defer-Length: 1)")))},
        {"412", precondition},
        {"413", tus(too_large)},
        {"415",
         tus(problem_response("Data not sent as application/offset+octet-stream, or not a capture",
                              problem_example(415, "Unsupported Media Type",
                                              "an upload's data is sent as "
                                              "application/offset+octet-stream")))},
        {"422", validation_response(
                    "A bad name or digest, an empty upload",
                    [] {
                      json e = problem_example(422, "Unprocessable Content",
                                               "the sha256 metadata is not 64 hex digits");
                      e["errors"] = json::array({{{"field", "sha256"}, {"message", "malformed"}}});
                      return e;
                    }())},
        {"500", not_stored},
        {"507", disk_full}}}};
  paths["/api/v1/uploads/{id}"]["head"] = {
      {"summary", "tus: the offset to resume from"},
      {"parameters", json::array({upload_id, tus_version})},
      {"responses",
       {{"200", {{"description", "Where the upload stands"}, {"headers", offset_headers}}},
        {"404", {{"description", "No such upload (it may have expired); no body"}}},
        {"412", {{"description", "Tus-Resumable missing or another version; no body"}}}}}};
  paths["/api/v1/uploads/{id}"]["patch"] = {
      {"summary", "tus: bytes at the upload's offset; the last ones make it a capture"},
      {"parameters",
       json::array({upload_id,
                    tus_version,
                    {{"name", "Upload-Offset"},
                     {"in", "header"},
                     {"required", true},
                     {"schema", integer_schema(0)},
                     {"example", 0}},
                    {{"name", "Upload-Checksum"},
                     {"in", "header"},
                     {"description", "<sha1|sha256|md5> <base64 of the body's digest>"},
                     {"schema", {{"type", "string"}}}}})},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/offset+octet-stream",
           {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}}},
      {"responses",
       {{"204",
         {{"description", "Taken (Content-Location names the capture once complete)"},
          {"headers", offset_headers}}},
        {"400",
         tus(problem_response("Upload-Offset missing, a bad Upload-Checksum or Upload-Length",
                              problem_example(400, "Bad Request",
                                              "Upload-Offset is missing or not a "
                                              "number")))},
        {"404",
         tus(problem_response("No such upload", not_found_example("upload " + kUploadId +
                                                                  " (it may have expired)")))},
        {"409", tus(problem_response(
                    "Upload-Offset is not the upload's (Upload-Offset tells it), it is complete, "
                    "or another request writes it",
                    problem_example(409, "Conflict",
                                    "Upload-Offset is 0 but the upload is at 32768: resume "
                                    "from there")))},
        {"412", precondition},
        {"413", tus(too_large)},
        {"415", tus(problem_response("Not application/offset+octet-stream, or not a capture",
                                     problem_example(415, "Unsupported Media Type",
                                                     "PATCH an upload's data as "
                                                     "application/offset+octet-stream")))},
        {"422", tus(validation_response("The whole upload's digest does not match", digest))},
        {"460", tus(problem_response(
                    "Upload-Checksum does not match: the bytes were not kept",
                    problem_example(460, "Checksum Mismatch",
                                    "the body's checksum does not match Upload-Checksum: the "
                                    "bytes were not kept")))},
        {"500", not_stored},
        {"507", disk_full}}}};
  paths["/api/v1/uploads/{id}"]["delete"] = {
      {"summary", "tus termination"},
      {"parameters", json::array({upload_id, tus_version})},
      {"responses",
       {{"204", {{"description", "Removed"}, {"headers", {{"Tus-Resumable", tus_header}}}}},
        {"404", problem_response("No such upload", not_found_example("upload " + kUploadId))},
        {"409", problem_response(
                    "Another request writes it now",
                    problem_example(409, "Conflict",
                                    "another request is writing upload " + kUploadId + " now"))},
        {"412", precondition}}}};
  paths["/api/v1/uploads/{id}"]["get"] = {
      {"summary", "The upload's state, and its capture once complete"},
      {"parameters", json::array({upload_id})},
      {"responses",
       {{"200", json_response("The upload", ref("Upload"), schemas()["Upload"]["example"])},
        {"404", problem_response("No such upload", not_found_example("upload " + kUploadId))}}}};
  return paths;
}

// The web page (docs/ui.md): open routes, no token (the page asks for one itself).
json ui_paths() {
  json paths;
  const json none_match = {{"name", "If-None-Match"},
                           {"in", "header"},
                           {"required", false},
                           {"description", "an ETag this route gave: 304 when it is current"},
                           {"schema", {{"type", "string"}}}};
  const json page_headers = {
      {"ETag", {{"required", true}, {"schema", string_schema()}}},
      {"Content-Security-Policy",
       {{"required", true}, {"schema", enum_schema({std::string(ui::kContentSecurityPolicy)})}}}};
  // The files of one route (names below `prefix`), from the files embedded in the binary.
  const auto page = [&](const std::string& summary, const std::string& prefix, bool one) {
    std::set<std::string> types;
    json files = json::array();
    for (const ui::Asset* a : ui::assets()) {
      const std::string n(a->name);
      if (n.rfind(prefix, 0) != 0 || n.find('/', prefix.size()) != std::string::npos) continue;
      if (one && n != "index.html") continue;
      files.push_back(n.substr(prefix.size()));
      const std::string type(a->content_type);
      types.insert(type.substr(0, type.find(';')));
    }
    json content = json::object();
    for (const auto& t : types) content[t] = {{"schema", string_schema()}};
    json op = {{"summary", summary},
               {"parameters", json::array({none_match})},
               {"responses",
                {{"200",
                  {{"description", "The file, with Cache-Control: no-cache and nosniff"},
                   {"headers", page_headers},
                   {"content", content}}},
                 {"304", {{"description", "If-None-Match named the current ETag"}}}}}};
    if (!one) {
      op["parameters"].push_back(path_param(
          "file", {{"type", "string"}}, files.empty() ? json("app.js") : files[0],
          "a file of the page: " + [&] {
            std::string list;
            for (auto& f : files) {
              if (!list.empty()) list += ", ";
              list += f.get<std::string>();
            }
            return list;
          }()));
      op["responses"]["404"] = problem_response(
          "No such file in the page",
          problem_example(404, "Not Found", "the web page has no file nothing.js"));
    }
    return op;
  };
  paths["/"]["get"] = {
      {"summary", "Redirects to the web page"},
      {"responses",
       {{"308",
         {{"description", "Location: /ui"},
          {"headers", {{"Location", {{"required", true}, {"schema", enum_schema({"/ui"})}}}}},
          {"content",
           {{"text/plain", {{"schema", string_schema()}, {"example", "see /ui\n"}}}}}}}}}};
  paths["/ui"]["get"] = page("The web page (index.html)", "", true);
  paths["/ui/{file}"]["get"] =
      page("A file of the web page (script, style sheet, image)", "", false);
  paths["/ui/vendor/{file}"]["get"] =
      page("A third-party file of the web page (uPlot)", "vendor/", false);
  return paths;
}

// The tag of a route, by its path.
std::string tag_of(const std::string& path) {
  auto starts = [&](const char* prefix) { return path.rfind(prefix, 0) == 0; };
  if (starts("/api/v1/tasks/{id}/flows") || starts("/api/v1/tasks/{id}/top") ||
      starts("/api/v1/tasks/{id}/timeseries"))
    return "flows";
  if (starts("/api/v1/tasks")) return "tasks";
  if (starts("/api/v1/captures") || starts("/api/v1/uploads")) return "captures";
  if (starts("/api/v1/drop")) return "drop folder";
  if (starts("/api/v1/events") || starts("/api/v1/status")) return "events and status";
  if (starts("/ui") || path == "/") return "web page";
  if (starts("/api/v1/test") || starts("/api/export-task") || starts("/api/task-status") ||
      path == "/api/tasks")
    return "compatibility";
  return "service";
}

// An operation id from the method and the path: "get /api/v1/tasks/{id}/flows.ndjson" gives
// "getTasksIdFlowsNdjson" (the /api/v1 prefix dropped; unique as routes are).
std::string operation_id(const std::string& method, const std::string& path) {
  std::string id = method;
  std::string p = path;
  if (p.rfind("/api/v1", 0) == 0) p = p.substr(7);
  bool upper = true;
  for (char c : p) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      id += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
      upper = false;
    } else {
      upper = true;
    }
  }
  if (p == "/" || p.empty())
    id += "Root";
  else if (p.back() == '/')
    id += "Index";
  return id;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

bool undescribed_alias(const std::string& method, const std::string& path) {
  return lower(method) == "get" && path == "/ui/";
}

json openapi_description() {
  json paths = task_paths();
  paths.update(flow_paths());
  paths.update(capture_paths());
  paths.update(service_paths());
  paths.update(drop_paths());
  paths.update(ui_paths());
  for (auto& [path, ops] : paths.items())
    for (auto& [method, op] : ops.items()) {
      op["operationId"] = operation_id(method, path);
      op["tags"] = json::array({tag_of(path)});
    }
  const json tags = json::array(
      {{{"name", "tasks"}, {"description", "Conversion tasks: submit, follow, cancel, download"}},
       {{"name", "flows"}, {"description", "A task's flow records: query, export, top-N, series"}},
       {{"name", "captures"}, {"description", "Uploads: one-shot and resumable (tus 1.0.0)"}},
       {{"name", "events and status"}, {"description", "Live events (SSE) and the service status"}},
       {{"name", "drop folder"}, {"description", "Files dropped into watched folders"}},
       {{"name", "service"}, {"description", "Health, metrics, this description"}},
       {{"name", "web page"}, {"description", "The page at /ui (no token needed)"}},
       {{"name", "compatibility"}, {"description", "Routes of the original IPyFIXweb service"}}});
  return {{"openapi", "3.0.3"},
          {"servers", json::array({{{"url", "/"}, {"description", "this api"}}})},
          {"security", json::array({{{"bearer", json::array()}}})},
          {"tags", tags},
          {"info",
           {{"title", "ipfixweb"},
            {"version", "1.0.0"},
            {"description",
             "PCAP/PCAPNG to IPFIX conversion jobs with nDPI labels. Errors are "
             "application/problem+json (RFC 9457). Every GET route also answers HEAD. "
             "docs/api.md is the reference."}}},
          {"components",
           {{"schemas", schemas()},
            {"responses", common_responses()},
            {"securitySchemes",
             {{"bearer",
               {{"type", "http"},
                {"scheme", "bearer"},
                {"description",
                 "--tokens: read, submit or admin tokens; without --tokens no token is "
                 "needed"}}}}}}},
          {"paths", paths}};
}

std::string openapi_document(const std::vector<const http::Route*>& routes) {
  json doc = openapi_description();
  json& paths = doc["paths"];
  std::set<std::pair<std::string, std::string>> registered;
  std::string missing;
  for (const http::Route* r : routes) {
    const std::string method = lower(r->method);
    if (undescribed_alias(method, r->path)) continue;
    registered.insert({method, r->path});
    if (!paths.contains(r->path) || !paths[r->path].contains(method)) {
      missing += "\n  " + r->method + " " + r->path + " is served but not described";
      continue;
    }
    json& op = paths[r->path][method];
    json& responses = op["responses"];
    // What the HTTP server answers on any route (a route's own description comes first).
    const auto add = [&](const char* status, const char* component) {
      if (!responses.contains(status)) responses[status] = response_ref(component);
    };
    add("400", "BadRequest");
    add("413", "ContentTooLarge");
    add("431", "HeaderTooLarge");
    add("503", "Overloaded");
    if (r->blocking) add("500", "InternalError");
    if (r->open) {
      op["security"] = json::array();
    } else {
      add("401", "Unauthorized");
      if (r->role > Role::Read) add("403", "Forbidden");
    }
  }
  for (auto& [path, ops] : paths.items())
    for (auto& [method, op] : ops.items())
      if (!registered.count({method, path}))
        missing += "\n  " + method + " " + path + " is described but not served";
  if (!missing.empty())
    throw std::logic_error("the OpenAPI description differs from the routes:" + missing);
  return doc.dump();
}

}  // namespace ipfixweb::api

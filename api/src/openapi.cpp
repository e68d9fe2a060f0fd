#include "ipfixweb/api/openapi.hpp"

#include <cctype>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb::api {

namespace {

using nlohmann::json;

json ref(const std::string& name) { return {{"$ref", "#/components/schemas/" + name}}; }

json problem_response(const std::string& description) {
  return {{"description", description},
          {"content", {{"application/problem+json", {{"schema", ref("Problem")}}}}}};
}

json json_response(const std::string& description, const json& schema) {
  return {{"description", description}, {"content", {{"application/json", {{"schema", schema}}}}}};
}

json id_param() {
  return json::array({{{"name", "id"},
                       {"in", "path"},
                       {"required", true},
                       {"schema", {{"type", "string"}, {"format", "uuid"}}}}});
}

json submit_operation(const std::string& summary) {
  return {
      {"summary", summary},
      {"parameters", json::array({{{"name", "Idempotency-Key"},
                                   {"in", "header"},
                                   {"required", false},
                                   {"schema", {{"type", "string"}, {"maxLength", 255}}}}})},
      {"requestBody",
       {{"required", true}, {"content", {{"application/json", {{"schema", ref("TaskRequest")}}}}}}},
      {"responses",
       {{"202",
         json_response("Accepted and committed; Location points at the task", ref("Accepted"))},
        {"200", json_response("Idempotency-Key matched an existing task", ref("Accepted"))},
        {"400", problem_response("Body is not JSON")},
        {"413", problem_response("Body too large")},
        {"415", problem_response("Not application/json")},
        {"409", problem_response("The output_path belongs to another task (see overwrite)")},
        {"422", problem_response("Invalid fields or paths")},
        {"507", problem_response("The database's or the output root's disk is (nearly) full")},
        {"503", problem_response("Queue full, draining or broker unavailable; see "
                                 "Retry-After")}}}};
}

json list_operation(const std::string& summary) {
  json params = json::array();
  for (const char* p : {"state", "created_after", "created_before", "input", "next"})
    params.push_back({{"name", p}, {"in", "query"}, {"schema", {{"type", "string"}}}});
  params.push_back({{"name", "limit"},
                    {"in", "query"},
                    {"schema", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}}});
  return {{"summary", summary},
          {"parameters", params},
          {"responses",
           {{"200", json_response("Tasks, newest first", ref("TaskList"))},
            {"422", problem_response("Invalid query parameters")}}}};
}

json get_task_operation(const std::string& summary) {
  return {{"summary", summary},
          {"parameters", id_param()},
          {"responses",
           {{"200", json_response("The task", ref("Task"))},
            {"404", problem_response("No such task")}}}};
}

// The JSON Schema of one request field, from its definition (task_spec.hpp).
template <class Owner, class T>
json field_schema(const proto::Field<Owner, T>& f) {
  const proto::FieldInfo& i = f.info;
  json s;
  if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    s = {{"type", "array"}, {"items", {{"type", "string"}}}};
    if (i.min >= 1) s["minItems"] = static_cast<int>(i.min);
    if (i.max > 0) s["maxItems"] = static_cast<int>(i.max);
    if (!i.allowed.empty())
      s["items"]["enum"] = json(std::vector<std::string>(i.allowed.begin(), i.allowed.end()));
  } else if constexpr (std::is_same_v<T, std::string>) {
    s = {{"type", "string"}};
    if (!i.allowed.empty())
      s["enum"] = json(std::vector<std::string>(i.allowed.begin(), i.allowed.end()));
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
          {"additionalProperties", false}};
}

json schemas() {
  json states = json::array();
  for (auto n : all_names<TaskState>()) states.push_back(n);
  json schemas = {
      {"TaskRequest", task_request_schema()},
      {"Accepted",
       {{"type", "object"},
        {"properties",
         {{"task_id", {{"type", "string"}}},
          {"state", {{"type", "string"}}},
          {"existing", {{"type", "boolean"}}},
          {"links", {{"type", "object"}}}}}}},
      {"Task",
       {{"type", "object"},
        {"properties",
         {{"task_id", {{"type", "string"}}},
          {"state", {{"type", "string"}, {"enum", states}}},
          {"progress", {{"type", "number"}, {"minimum", 0}, {"maximum", 1}}},
          {"created_at", {{"type", "string"}, {"format", "date-time"}}},
          {"queued_at", {{"type", "string"}, {"format", "date-time"}, {"nullable", true}}},
          {"started_at", {{"type", "string"}, {"format", "date-time"}, {"nullable", true}}},
          {"finished_at", {{"type", "string"}, {"format", "date-time"}, {"nullable", true}}},
          {"attempts", {{"type", "integer"}}},
          {"worker", {{"type", "string"}, {"nullable", true}}},
          {"priority", {{"type", "integer"}}},
          {"output_path", {{"type", "string"}}},
          {"request", ref("TaskRequest")},
          {"summary", {{"type", "object"}, {"nullable", true}}},
          {"error", {{"type", "string"}, {"nullable", true}}},
          {"links", {{"type", "object"}}}}}}},
      {"TaskList",
       {{"type", "object"},
        {"properties",
         {{"tasks", {{"type", "array"}, {"items", ref("Task")}}},
          {"next", {{"type", "string"}, {"nullable", true}}}}}}},
      {"Event",
       {{"type", "object"},
        {"properties",
         {{"at", {{"type", "string"}}},
          {"state", {{"type", "string"}}},
          {"reason", {{"type", "string"}, {"nullable", true}}},
          {"worker", {{"type", "string"}, {"nullable", true}}}}}}},
      {"Problem",
       {{"type", "object"},
        {"properties",
         {{"type", {{"type", "string"}}},
          {"title", {{"type", "string"}}},
          {"status", {{"type", "integer"}}},
          {"detail", {{"type", "string"}}},
          {"errors",
           {{"type", "array"},
            {"items",
             {{"type", "object"},
              {"properties",
               {{"field", {{"type", "string"}}}, {"message", {{"type", "string"}}}}}}}}}}}}}};

  return schemas;
}

json task_paths() {
  json paths;
  paths["/api/v1/tasks"]["post"] = submit_operation("Submit a conversion task");
  paths["/api/v1/tasks"]["get"] = list_operation("List tasks");
  paths["/api/v1/tasks/{id}"]["get"] = get_task_operation("Task status");
  paths["/api/v1/tasks/{id}"]["delete"] = {
      {"summary", "Cancel a queued or running task"},
      {"parameters", id_param()},
      {"responses",
       {{"200", {{"description", "Cancelled"}}},
        {"202", {{"description", "Cancelling (running on a worker)"}}},
        {"404", problem_response("No such task")},
        {"409", problem_response("Already finished")}}}};
  // Server-sent events (docs/events.md).
  const json sse_content = {
      {"text/event-stream",
       {{"schema",
         {{"type", "string"},
          {"description",
           "event: state (id: the event's id; data: {id, task_id, at, state, reason, worker}), "
           "event: progress (data: {task_id, progress}), event: end (data: {task_id, state}; "
           "one task's stream only); ': keep-alive' comments every 15 s"}}}}}};
  const json since_param = {{"name", "since"},
                            {"in", "query"},
                            {"required", false},
                            {"description",
                             "replay the state events after this event id first (as the "
                             "Last-Event-ID header does)"},
                            {"schema", {{"type", "integer"}, {"minimum", 0}}}};
  const json last_event_id = {{"name", "Last-Event-ID"},
                              {"in", "header"},
                              {"required", false},
                              {"description", "the last event id a reconnecting client saw"},
                              {"schema", {{"type", "integer"}, {"minimum", 0}}}};
  json task_events_params = id_param();
  task_events_params.push_back({{"name", "stream"},
                                {"in", "query"},
                                {"required", false},
                                {"description",
                                 "1: a live event stream (also chosen by Accept: "
                                 "text/event-stream): the history, then live events, ending "
                                 "after the terminal state"},
                                {"schema", {{"type", "string"}, {"enum", {"0", "1"}}}}});
  task_events_params.push_back(since_param);
  task_events_params.push_back(last_event_id);
  json history = json_response("Events in order",
                               {{"type", "object"},
                                {"properties",
                                 {{"task_id", {{"type", "string"}}},
                                  {"events", {{"type", "array"}, {"items", ref("Event")}}}}}});
  history["content"].update(sse_content);
  paths["/api/v1/tasks/{id}/events"]["get"] = {
      {"summary", "The task's history, or (stream=1) its live events"},
      {"parameters", task_events_params},
      {"responses",
       {{"200", history},
        {"400", problem_response("Last-Event-ID or since is not an event id")},
        {"404", problem_response("No such task")},
        {"503", problem_response("Too many event streams are open (Retry-After)")}}}};
  paths["/api/v1/events"]["get"] = {
      {"summary", "Live state changes and progress of every task (server-sent events)"},
      {"parameters", json::array({since_param, last_event_id})},
      {"responses",
       {{"200", {{"description", "An endless event stream"}, {"content", sse_content}}},
        {"400", problem_response("Last-Event-ID or since is not an event id")},
        {"503", problem_response("Too many event streams are open (Retry-After)")}}}};
  const json count = {{"type", "integer"}, {"minimum", 0}};
  paths["/api/v1/status"]["get"] = {
      {"summary", "The service at a glance: broker admission, workers, tasks by state"},
      {"responses",
       {{"200", json_response("Status (broker.up is false when the broker did not answer)",
                              {{"type", "object"},
                               {"properties",
                                {{"broker",
                                  {{"type", "object"},
                                   {"properties",
                                    {{"up", {{"type", "boolean"}}},
                                     {"workers", count},
                                     {"slots", count},
                                     {"credit", count},
                                     {"running", count},
                                     {"queued", count},
                                     {"max_queue", count},
                                     {"draining", {{"type", "boolean"}}},
                                     {"accepting", {{"type", "boolean"}}},
                                     {"succeeded", count},
                                     {"failed", count},
                                     {"cancelled", count},
                                     {"requeued", count}}}}},
                                 {"workers",
                                  {{"type", "array"},
                                   {"items",
                                    {{"type", "object"},
                                     {"properties",
                                      {{"id", {{"type", "string"}}},
                                       {"host", {{"type", "string"}}},
                                       {"pid", {{"type", "integer"}}},
                                       {"slots", count},
                                       {"running", count},
                                       {"last_seen_s", {{"type", "number"}}}}}}}}},
                                 {"tasks", {{"type", "object"}, {"additionalProperties", count}}},
                                 {"api", {{"type", "object"}}}}}})}}}};
  paths["/api/v1/tasks/{id}/output"]["get"] = {
      {"summary", "Download the output: the IPFIX file (RFC 5655), or an extract's pcap"},
      {"parameters", id_param()},
      {"responses",
       {{"200",
         {{"description", "The file"},
          {"content",
           {{"application/ipfix", {{"schema", {{"type", "string"}, {"format", "binary"}}}}},
            {"application/vnd.tcpdump.pcap",
             {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}}},
        {"404", problem_response("No such task, or its file is gone")},
        {"409", problem_response("The task has not succeeded")},
        {"410", problem_response("The file was replaced since the task finished")}}}};
  // The flow store's routes (docs/api.md "Flow records", docs/flow-filter.md).
  const json filter_param = {{"name", "filter"},
                             {"in", "query"},
                             {"description", "flow filter (docs/flow-filter.md)"},
                             {"schema", {{"type", "string"}, {"maxLength", 4096}}}};
  const auto query_param = [](const char* name, const char* what) {
    return json{
        {"name", name}, {"in", "query"}, {"description", what}, {"schema", {{"type", "string"}}}};
  };
  json list_params = id_param();
  list_params.push_back(filter_param);
  list_params.push_back(query_param("fields", "comma-separated columns (docs/flow-store.md)"));
  list_params.push_back(query_param("sort", "columns, '-' for descending (default id)"));
  list_params.push_back(query_param("limit", "records per page 1..10000 (exports: all)"));
  const json flow_errors = {
      {"404", problem_response("No such task, or it has no flow store")},
      {"409", problem_response("The task has not succeeded")},
      {"410", problem_response("The output and its flow store were replaced")},
      {"422", problem_response("A parameter is invalid (errors names it; a filter's syntax "
                               "error gives its position and what was expected)")},
      {"500", problem_response("The flow store cannot be read")}};
  const auto flow_op = [&](const char* summary, json params, json ok) {
    json responses = flow_errors;
    responses["200"] = std::move(ok);
    return json{{"summary", summary}, {"parameters", std::move(params)}, {"responses", responses}};
  };
  json page_params = list_params;
  page_params.push_back(query_param("next", "the previous page's cursor"));
  json page_schema = {{"type", "object"}};
  page_schema["properties"]["flows"] = {{"type", "array"}, {"items", {{"type", "object"}}}};
  page_schema["properties"]["next"] = {{"type", "string"}, {"nullable", true}};
  json page_ok = {{"description", "A page of records"}};
  page_ok["content"]["application/json"]["schema"] = page_schema;
  page_ok["content"]["application/x-ndjson"]["schema"] = {{"type", "string"}};
  page_ok["content"]["text/csv"]["schema"] = {{"type", "string"}};
  paths["/api/v1/tasks/{id}/flows"]["get"] = flow_op(
      "Flow records: a page (JSON), or every match streamed with Accept: application/x-ndjson "
      "or text/csv",
      page_params, page_ok);
  paths["/api/v1/tasks/{id}/flows.ndjson"]["get"] =
      flow_op("Every matching flow record as NDJSON, streamed", list_params,
              {{"description", "NDJSON"},
               {"content", {{"application/x-ndjson", {{"schema", {{"type", "string"}}}}}}}});
  paths["/api/v1/tasks/{id}/flows.csv"]["get"] = flow_op(
      "Every matching flow record as CSV (header row), streamed", list_params,
      {{"description", "CSV"}, {"content", {{"text/csv", {{"schema", {{"type", "string"}}}}}}}});
  paths["/api/v1/tasks/{id}/flows.sqlite"]["get"] = flow_op(
      "The flow store file (SQLite 3)", id_param(),
      {{"description", "The file"},
       {"content",
        {{"application/vnd.sqlite3", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}});
  json top_params = id_param();
  top_params.push_back(filter_param);
  top_params.push_back(query_param("by", "app|src|dst|pair|server_name|ja3|port|proto"));
  top_params.push_back(query_param("metric", "bytes|packets|flows (default bytes)"));
  top_params.push_back(query_param("n", "groups 1..1000 (default 20)"));
  paths["/api/v1/tasks/{id}/top"]["get"] =
      flow_op("The largest groups of flow records", top_params,
              {{"description", "Groups, largest first"},
               {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}});
  json ts_params = id_param();
  ts_params.push_back(filter_param);
  ts_params.push_back(query_param("by", "app|proto"));
  ts_params.push_back(query_param("metric", "bytes|packets|flows (default bytes)"));
  ts_params.push_back(query_param("bucket_ms", "bucket size, a multiple of the store's"));
  ts_params.push_back(query_param("top", "series kept, the rest summed as other (default 10)"));
  paths["/api/v1/tasks/{id}/timeseries"]["get"] = flow_op(
      "Packets, bytes or flows per time bucket by application or protocol, columnar", ts_params,
      {{"description", "{bucket_ms, time: [...], series: [{key, values: [...]}]}"},
       {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}});
  json pcap_params = id_param();
  pcap_params.push_back({{"name", "flow"},
                         {"in", "path"},
                         {"required", true},
                         {"description", "the record's id (the `id` column of /flows)"},
                         {"schema", {{"type", "integer"}, {"minimum", 1}}}});
  json pcap_responses = flow_errors;
  pcap_responses.erase("422");
  pcap_responses["200"] =
      json_response("The same request was made before: that task", ref("Accepted"));
  pcap_responses["202"] = json_response(
      "An extract task was queued; its output (GET .../output) is the pcap", ref("Accepted"));
  pcap_responses["404"] = problem_response("No such task or record, or no flow store");
  pcap_responses["409"] =
      problem_response("The task has not succeeded, or is not a conversion of captures");
  pcap_responses["422"] =
      problem_response("The task's captures are no longer readable (errors names them)");
  pcap_responses["503"] = problem_response("No capacity now (Retry-After)");
  paths["/api/v1/tasks/{id}/flows/{flow}/pcap"]["post"] = {
      {"summary", "Queue an extract task writing the packets of one flow record to a pcap file"},
      {"parameters", pcap_params},
      {"responses", pcap_responses}};
  return paths;
}

// Operations, probes and the original service's routes.
json service_paths() {
  json paths;
  json plain = {{"responses", {{"200", {{"description", "OK"}}}}}};
  paths["/livez"]["get"] = plain;
  paths["/livez"]["get"]["summary"] = "The process serves HTTP";
  paths["/readyz"]["get"] = {
      {"summary", "Broker reachable, database readable, not draining"},
      {"responses",
       {{"200", {{"description", "Ready"}}}, {"503", {{"description", "Not ready"}}}}}};
  paths["/metrics"]["get"] = {
      {"summary", "Prometheus metrics"},
      {"responses",
       {{"200",
         {{"description", "Text exposition format"},
          {"content", {{"text/plain", {{"schema", {{"type", "string"}}}}}}}}}}}};
  paths["/openapi.json"]["get"] = plain;
  paths["/openapi.json"]["get"]["summary"] = "This document";
  paths["/api/export-task"]["post"] = submit_operation("Compatibility: POST /api/v1/tasks");
  paths["/api/task-status/{id}"]["get"] =
      get_task_operation("Compatibility: GET /api/v1/tasks/{id}");
  paths["/api/tasks"]["get"] = list_operation("Compatibility: GET /api/v1/tasks");
  paths["/api/v1/test/health"]["get"] = plain;
  paths["/api/v1/test/health"]["get"]["summary"] = "Compatibility: health";
  paths["/api/v1/test/file_exporter/export_task"]["post"] = {
      {"summary", "Compatibility: submit the bundled sample capture"},
      {"responses",
       {{"202", json_response("Accepted", ref("Accepted"))},
        {"503", problem_response("Queue full or broker unavailable")}}}};

  return paths;
}

// The drop folder's journal (docs/drop-folder.md).
json drop_paths() {
  json paths;
  json entry = {
      {"type", "object"},
      {"description",
       "One journal line: what became of one version of one dropped file (outcome submitted, "
       "duplicate, skipped or refused)"},
      {"properties",
       {{"at", {{"type", "string"}, {"format", "date-time"}}},
        {"folder", {{"type", "string"}}},
        {"file", {{"type", "string"}}},
        {"outcome",
         {{"type", "string"}, {"enum", {"submitted", "duplicate", "skipped", "refused"}}}},
        {"reason", {{"type", "string"}, {"nullable", true}}},
        {"task_id", {{"type", "string"}, {"nullable", true}}},
        {"existing", {{"type", "boolean"}}},
        {"key", {{"type", "string"}, {"nullable", true}}},
        {"sha256", {{"type", "string"}, {"nullable", true}}},
        {"format", {{"type", "string"}, {"nullable", true}}},
        {"kind", {{"type", "string"}, {"nullable", true}}},
        {"output_path", {{"type", "string"}, {"nullable", true}}},
        {"size", {{"type", "integer"}}},
        {"mtime_ns", {{"type", "integer"}}},
        {"dev", {{"type", "integer"}}},
        {"ino", {{"type", "integer"}}}}}};
  paths["/api/v1/drop"]["get"] = {
      {"summary", "The drop folders: files waiting, and what became of the files dropped"},
      {"parameters",
       json::array({{{"name", "limit"},
                     {"in", "query"},
                     {"description", "journal entries shown, newest first (default 100)"},
                     {"schema", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}}}})},
      {"responses",
       {{"200", json_response("The folders (enabled false when none is configured)",
                              {{"type", "object"},
                               {"properties",
                                {{"enabled", {{"type", "boolean"}}},
                                 {"folders", {{"type", "array"}, {"items", {{"type", "object"}}}}},
                                 {"settle_seconds", {{"type", "number"}}},
                                 {"waiting", {{"type", "array"}, {"items", {{"type", "object"}}}}},
                                 {"entries", {{"type", "array"}, {"items", entry}}}}}})},
        {"422", problem_response("limit out of range")}}}};
  return paths;
}

// Captures in (docs/uploads.md): one-shot uploads and tus 1.0.0 resumable ones.
json capture_paths() {
  json paths;
  json capture = {
      {"type", "object"},
      {"properties",
       {{"sha256", {{"type", "string"}, {"pattern", "^[0-9a-f]{64}$"}}},
        {"name", {{"type", "string"}}},
        {"size", {{"type", "integer"}}},
        {"format",
         {{"type", "string"},
          {"description",
           "pcap, pcapng or ipfix, with +gzip, +zstd, +xz or +bzip2 when "
           "compressed"}}},
        {"uploaded_at", {{"type", "string"}, {"format", "date-time"}}},
        {"path", {{"type", "string"}, {"description", "what pcap_files takes"}}},
        {"ref", {{"type", "string"}, {"description", "sha256:<hex>, also taken by pcap_files"}}},
        {"existing", {{"type", "boolean"}}},
        {"links", {{"type", "object"}}}}}};
  json sha_param =
      json::array({{{"name", "sha256"},
                    {"in", "path"},
                    {"required", true},
                    {"schema", {{"type", "string"}, {"pattern", "^[0-9a-fA-F]{64}$"}}}}});
  json upload_param = json::array({{{"name", "id"},
                                    {"in", "path"},
                                    {"required", true},
                                    {"schema", {{"type", "string"}, {"format", "uuid"}}}}});
  json tus_version = {{"name", "Tus-Resumable"},
                      {"in", "header"},
                      {"required", true},
                      {"schema", {{"type", "string"}, {"enum", {"1.0.0"}}}}};
  paths["/api/v1/captures"]["post"] = {
      {"summary",
       "Upload a capture in one request (raw body, or multipart/form-data with a "
       "\"file\" part), streamed to disk"},
      {"parameters",
       json::array({{{"name", "name"}, {"in", "query"}, {"schema", {{"type", "string"}}}},
                    {{"name", "sha256"},
                     {"in", "query"},
                     {"description", "expected digest (or the Repr-Digest header)"},
                     {"schema", {{"type", "string"}}}}})},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/octet-stream", {{"schema", {{"type", "string"}, {"format", "binary"}}}}},
          {"multipart/form-data",
           {{"schema",
             {{"type", "object"},
              {"properties",
               {{"file", {{"type", "string"}, {"format", "binary"}}},
                {"sha256", {{"type", "string"}}}}}}}}}}}}},
      {"responses",
       {{"201", json_response("Stored; Location names it", capture)},
        {"200", json_response("The same content was stored already", capture)},
        {"400", problem_response("Malformed multipart form")},
        {"413", problem_response("Larger than the capture limit, or over a quota")},
        {"415", problem_response("Not a capture (pcap, pcapng, IPFIX; plain or compressed)")},
        {"422", problem_response("Digest mismatch, bad name, empty upload")},
        {"507", problem_response("The capture disk is full")}}}};
  paths["/api/v1/captures"]["get"] = {
      {"summary", "The uploaded captures, newest first"},
      {"parameters",
       json::array({{{"name", "limit"}, {"in", "query"}, {"schema", {{"type", "integer"}}}},
                    {{"name", "next"}, {"in", "query"}, {"schema", {{"type", "string"}}}}})},
      {"responses",
       {{"200", json_response("A page of captures",
                              {{"type", "object"},
                               {"properties",
                                {{"captures", {{"type", "array"}, {"items", capture}}},
                                 {"next", {{"type", "string"}, {"nullable", true}}},
                                 {"used_bytes", {{"type", "integer"}}},
                                 {"quota_bytes", {{"type", "integer"}, {"nullable", true}}}}}})},
        {"422", problem_response("Bad limit or cursor")}}}};
  paths["/api/v1/captures/{sha256}"]["get"] = {{"summary", "One capture"},
                                               {"parameters", sha_param},
                                               {"responses",
                                                {{"200", json_response("The capture", capture)},
                                                 {"404", problem_response("No such capture")}}}};
  paths["/api/v1/captures/{sha256}"]["delete"] = {
      {"summary", "Remove a capture no queued or running task reads"},
      {"parameters", sha_param},
      {"responses",
       {{"204", {{"description", "Removed"}}},
        {"404", problem_response("No such capture")},
        {"409", problem_response("A queued or running task reads it")}}}};
  paths["/api/v1/uploads"]["options"] = {
      {"summary", "tus 1.0.0 discovery: version, extensions, maximum size"},
      {"responses", {{"204", {{"description", "Tus-Version, Tus-Extension, Tus-Max-Size"}}}}}};
  paths["/api/v1/uploads"]["post"] = {
      {"summary", "tus creation (and creation-with-upload): a resumable upload"},
      {"parameters",
       json::array(
           {tus_version,
            {{"name", "Upload-Length"}, {"in", "header"}, {"schema", {{"type", "integer"}}}},
            {{"name", "Upload-Metadata"},
             {"in", "header"},
             {"description", "filename and sha256, base64-encoded"},
             {"schema", {{"type", "string"}}}}})},
      {"responses",
       {{"201", {{"description", "Created; Location names the upload"}}},
        {"400", problem_response("No Upload-Length, bad metadata")},
        {"412", problem_response("Tus-Resumable missing or another version")},
        {"413", problem_response("Larger than the capture limit, or over a quota")},
        {"422", problem_response("Bad name or digest")}}}};
  paths["/api/v1/uploads/{id}"]["head"] = {
      {"summary", "tus: the offset to resume from"},
      {"parameters", upload_param},
      {"responses",
       {{"200", {{"description", "Upload-Offset, Upload-Length, Upload-Expires"}}},
        {"404", {{"description", "No such upload (it may have expired)"}}}}}};
  paths["/api/v1/uploads/{id}"]["patch"] = {
      {"summary", "tus: bytes at the upload's offset; the last ones make it a capture"},
      {"parameters", upload_param},
      {"requestBody",
       {{"required", true},
        {"content",
         {{"application/offset+octet-stream",
           {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}}},
      {"responses",
       {{"204", {{"description", "Taken; Upload-Offset (Content-Location once complete)"}}},
        {"404", problem_response("No such upload")},
        {"409", problem_response("Wrong Upload-Offset, complete, or being written")},
        {"413", problem_response("Beyond the upload's length or the limit")},
        {"415", problem_response("Not application/offset+octet-stream, or not a capture")},
        {"422", problem_response("The whole upload's digest does not match")},
        {"460", problem_response("Upload-Checksum mismatch: the chunk was dropped")},
        {"507", problem_response("The capture disk is full: the upload was removed")}}}};
  paths["/api/v1/uploads/{id}"]["delete"] = {
      {"summary", "tus termination"},
      {"parameters", upload_param},
      {"responses",
       {{"204", {{"description", "Removed"}}}, {"404", problem_response("No such upload")}}}};
  paths["/api/v1/uploads/{id}"]["get"] = {
      {"summary", "The upload's state, and its capture once complete"},
      {"parameters", upload_param},
      {"responses",
       {{"200", json_response("The upload", {{"type", "object"}})},
        {"404", problem_response("No such upload")}}}};
  return paths;
}

// The web page (docs/ui.md): open routes, no token (the page asks for one itself).
json ui_paths() {
  json paths;
  json file_param = json::array(
      {{{"name", "file"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}}});
  auto page = [](const std::string& summary, const std::string& type) {
    return json{{"summary", summary},
                {"security", json::array()},
                {"parameters", json::array({{{"name", "If-None-Match"},
                                             {"in", "header"},
                                             {"required", false},
                                             {"schema", {{"type", "string"}}}}})},
                {"responses",
                 {{"200",
                   {{"description",
                     "The file, with ETag, Cache-Control: no-cache and a strict "
                     "Content-Security-Policy"},
                    {"content", {{type, {{"schema", {{"type", "string"}}}}}}}}},
                  {"304", {{"description", "If-None-Match named the current ETag"}}}}}};
  };
  paths["/"]["get"] = {{"summary", "Redirects to the web page"},
                       {"security", json::array()},
                       {"responses", {{"308", {{"description", "Location: /ui"}}}}}};
  paths["/ui"]["get"] = page("The web page (index.html)", "text/html");
  // (GET /ui/ answers the same; not described: a trailing slash is refused by linters)
  for (const char* p : {"/ui/{file}", "/ui/vendor/{file}"}) {
    json op = page("A file of the web page (script, style sheet, image)", "text/javascript");
    op["parameters"].push_back(file_param[0]);
    op["responses"]["404"] = problem_response("No such file in the page");
    paths[p]["get"] = op;
  }
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
    id += "Index";  // "/ui/" beside "/ui"
  return id;
}

json build() {
  json paths = task_paths();
  paths.update(capture_paths());
  paths.update(service_paths());
  paths.update(drop_paths());
  paths.update(ui_paths());
  // Every operation: an id, a tag; routes that need no token say so (the default is the
  // bearer token, required when the api is started with --tokens).
  for (auto& [path, ops] : paths.items())
    for (auto& [method, op] : ops.items()) {
      if (!op.contains("operationId")) op["operationId"] = operation_id(method, path);
      if (!op.contains("tags")) op["tags"] = json::array({tag_of(path)});
      if (path == "/livez") op["security"] = json::array();
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
            {"description", "PCAP/PCAPNG to IPFIX conversion jobs with nDPI labels"}}},
          {"components",
           {{"schemas", schemas()},
            {"securitySchemes", {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}}}}}},
          {"paths", paths}};
}

}  // namespace

const std::string& openapi_document() {
  static const std::string doc = build().dump();
  return doc;
}

}  // namespace ipfixweb::api

#include "ipfixweb/api/render.hpp"

#include "ipfixweb/shared/json_escape.hpp"

#include <cstdio>

namespace ipfixweb::api {

namespace {

void field(std::string& out, std::string_view name) {
  if (out.back() != '{') out.push_back(',');
  append_json_string(out, name);
  out.push_back(':');
}

void string_or_null(std::string& out, std::string_view name, const std::string& v) {
  field(out, name);
  if (v.empty())
    out += "null";
  else
    append_json_string(out, v);
}

// Stored JSON is spliced in; an empty column becomes null.
void raw_or_null(std::string& out, std::string_view name, const std::string& v) {
  field(out, name);
  out += v.empty() ? std::string_view("null") : std::string_view(v);
}

}  // namespace

void append_task_json(std::string& out, const TaskRecord& t, std::string_view output_root) {
  out.push_back('{');
  field(out, "task_id");
  append_json_string(out, t.id);
  field(out, "state");
  append_json_string(out, name(t.state));
  field(out, "progress");
  char num[32];
  std::snprintf(num, sizeof num, "%.4g", t.progress);
  out += num;
  string_or_null(out, "created_at", t.created_at);
  string_or_null(out, "queued_at", t.queued_at);
  string_or_null(out, "started_at", t.started_at);
  string_or_null(out, "finished_at", t.finished_at);
  field(out, "attempts");
  out += std::to_string(t.attempts);
  string_or_null(out, "worker", t.worker);
  field(out, "priority");
  out += std::to_string(t.priority);
  std::string_view shown = t.output_path;
  if (!output_root.empty() && shown.size() > output_root.size() + 1 &&
      shown.substr(0, output_root.size()) == output_root && shown[output_root.size()] == '/')
    shown.remove_prefix(output_root.size() + 1);
  field(out, "output_path");
  append_json_string(out, shown);
  raw_or_null(out, "request", t.request);
  raw_or_null(out, "summary", t.summary);
  string_or_null(out, "error", t.error);
  field(out, "links");
  out += "{\"self\":\"/api/v1/tasks/";
  out += t.id;
  out += "\",\"events\":\"/api/v1/tasks/";
  out += t.id;
  out += "/events\",\"output\":\"/api/v1/tasks/";
  out += t.id;
  out += "/output\"}}";
}

}  // namespace ipfixweb::api

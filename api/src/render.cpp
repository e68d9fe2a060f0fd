#include "ipfixweb/api/render.hpp"

#include "ipfixweb/shared/json_writer.hpp"

#include <cstdio>

namespace ipfixweb::api {

void append_task_json(std::string& out, const TaskRecord& t, std::string_view output_root) {
  JsonWriter w(out);
  write_task_json(w, t, output_root);
}

void write_task_json(JsonWriter& w, const TaskRecord& t, std::string_view output_root) {
  std::string_view shown = t.output_path;
  if (!output_root.empty() && shown.size() > output_root.size() + 1 &&
      shown.substr(0, output_root.size()) == output_root && shown[output_root.size()] == '/')
    shown.remove_prefix(output_root.size() + 1);
  char progress[32];
  std::snprintf(progress, sizeof progress, "%.4g", t.progress);
  std::string link = "/api/v1/tasks/" + t.id;
  const std::size_t self = link.size();
  w.begin_object();
  w.key("task_id").value(t.id);
  w.key("state").value(name(t.state));
  w.key("progress").raw(progress);
  w.key("created_at").string_or_null(t.created_at);
  w.key("queued_at").string_or_null(t.queued_at);
  w.key("started_at").string_or_null(t.started_at);
  w.key("finished_at").string_or_null(t.finished_at);
  w.key("attempts").value(t.attempts);
  w.key("worker").string_or_null(t.worker);
  w.key("priority").value(t.priority);
  w.key("output_path").value(shown);
  // A split task and its parts (docs/api.md, Split tasks).
  w.key("parts");
  if (t.parts > 1)
    w.value(static_cast<std::uint64_t>(t.parts));
  else
    w.raw("null");
  w.key("parent_id").string_or_null(t.parent_id);
  // The stored request and summary are JSON already: spliced in as they are (empty: null).
  w.key("request").raw(t.request);
  w.key("summary").raw(t.summary);
  w.key("error").string_or_null(t.error);
  w.key("links").begin_object();
  w.key("self").value(link);
  w.key("events").value(link.append("/events"));
  link.resize(self);
  w.key("output").value(link.append("/output"));
  if (t.parts > 1) w.key("parts").value("/api/v1/tasks?parent=" + t.id);
  w.end_object();
  w.end_object();
}

}  // namespace ipfixweb::api

#include "ipfixweb/cli/follow.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "ipfixweb/cli/sse.hpp"

namespace ipfixweb::cli {

using nlohmann::json;

namespace {

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

bool is_event_stream(const Reply& r) {
  std::string ct = r.header("Content-Type");
  std::transform(ct.begin(), ct.end(), ct.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return r.status == 200 && ct.rfind("text/event-stream", 0) == 0;
}

json event_of(const SseEvent& e) {
  json data = json::parse(e.data, nullptr, false);
  json out = {{"event", e.type}};
  if (data.is_object()) {
    for (auto& [k, v] : data.items()) out[k] = v;
  } else {
    out["data"] = e.data;
  }
  return out;
}

double backoff(int n) { return std::min(5.0, 0.25 * static_cast<double>(1u << std::min(n, 5))); }

std::string state_time(const json& t, const std::string& state) {
  auto str = [&](const char* k) -> std::string {
    return t.contains(k) && t[k].is_string() ? t[k].get<std::string>() : std::string();
  };
  std::string at;
  if (state == "queued") at = str("queued_at");
  if (state == "running") at = str("started_at");
  if (is_terminal(state)) at = str("finished_at");
  return at.empty() ? str("created_at") : at;
}

// Emits the entries of task `id`'s history (GET /api/v1/tasks/{id}/events) after the first
// `emitted` (unknown: after the last entry in `old_state`), and when the history does not show
// `state` yet, that state from the task `t`. Returns the number of history entries now emitted.
std::size_t emit_history(Api& api, const std::string& id, const json& t, const std::string& state,
                         std::optional<std::size_t> known, const std::string& old_state,
                         const EventHandler& on_event) {
  auto h = api.get("/api/v1/tasks/" + percent_encode(id) + "/events");
  json events = h.ok() ? h.json().value("events", json::array()) : json::array();
  if (!events.is_array()) events = json::array();
  std::size_t emitted = known.value_or(0);
  if (!known) {
    for (std::size_t i = events.size(); i-- > 0;)
      if (events[i].value("state", "") == old_state) {
        emitted = i + 1;
        break;
      }
  }
  for (std::size_t i = emitted; i < events.size(); ++i) {
    const json& e = events[i];
    on_event({{"event", "state"},
              {"task_id", id},
              {"at", e.value("at", json(nullptr))},
              {"state", e.value("state", json(nullptr))},
              {"reason", e.value("reason", json(nullptr))},
              {"worker", e.value("worker", json(nullptr))}});
  }
  if (events.size() <= emitted || events.back().value("state", "") != state) {
    on_event({{"event", "state"},
              {"task_id", id},
              {"at", state_time(t, state)},
              {"state", state},
              {"reason", nullptr},
              {"worker", t.value("worker", json(nullptr))}});
  }
  return std::max(emitted, events.size());
}

json poll_task(Api& api, const std::string& id, const EventHandler& on_event,
               const FollowOptions& o) {
  const std::string self = "/api/v1/tasks/" + percent_encode(id);
  std::size_t emitted = 0;
  std::string last_state;
  double last_progress = -1;
  for (;;) {
    auto r = api.get(self);
    expect_ok(r, "reading task " + id);
    json t = r.json();
    const std::string state = t.value("state", "");
    if (state != last_state) {
      emitted = emit_history(api, id, t, state, emitted, last_state, on_event);
      last_state = state;
    }
    if (t.contains("progress") && t["progress"].is_number()) {
      const double p = t["progress"].get<double>();
      if (p != last_progress && state == "running")
        on_event({{"event", "progress"}, {"task_id", id}, {"progress", p}});
      last_progress = p;
    }
    if (is_terminal(state)) {
      on_event({{"event", "end"}, {"task_id", id}, {"state", state}});
      return t;
    }
    sleep_s(o.poll_interval_s);
  }
}

// The newest 200 tasks, listed every poll interval: a task that is new or changed state since
// the last poll has its history emitted from where it was left.
void poll_all(Api& api, const EventHandler& on_event, const FollowOptions& o) {
  struct Known {
    std::string state;
    double progress = -1;
    std::optional<std::size_t> emitted;  // history entries emitted (unknown for the first list)
  };
  std::map<std::string, Known> known;
  bool first = true;
  while (!(o.stop && o.stop())) {
    auto r = api.get("/api/v1/tasks?limit=200");
    expect_ok(r, "listing tasks");
    json tasks = r.json().value("tasks", json::array());
    // Oldest first, so that events come in the order things happened.
    for (auto it = tasks.rbegin(); it != tasks.rend(); ++it) {
      const json& t = *it;
      const std::string id = t.value("task_id", "");
      const std::string state = t.value("state", "");
      const bool is_new = !known.count(id);
      auto& k = known[id];
      if (first) {
        k.state = state;  // what was there before: not news
      } else if (is_new || k.state != state) {
        k.emitted = emit_history(api, id, t, state, is_new ? 0 : k.emitted, k.state, on_event);
        k.state = state;
      }
      if (t.contains("progress") && t["progress"].is_number()) {
        const double p = t["progress"].get<double>();
        if (p != k.progress && state == "running" && !first)
          on_event({{"event", "progress"}, {"task_id", id}, {"progress", p}});
        k.progress = p;
      }
    }
    first = false;
    sleep_s(o.poll_interval_s);
  }
}

}  // namespace

bool is_terminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

namespace {

// Reads the event stream at `path` until `handle` returns false (the stream's end), `stop()`
// says so, or it breaks more than `o.reconnects` times in a row (throws, naming `what`). After a
// break it reconnects with Last-Event-ID, so no state event is missed or repeated. Returns the
// answer when the route did not answer with a stream (the caller polls or says why).
std::optional<Reply> resume_stream(Api& api, const std::string& path, const std::string& what,
                                   const std::function<bool(const SseEvent&)>& handle,
                                   const std::function<bool()>& stop, const FollowOptions& o) {
  std::string last_id;
  bool any_stream = false, done = false;
  int broken = 0;
  while (!done && !stop()) {
    Headers h{{"Accept", "text/event-stream"}};
    if (!last_id.empty()) h.emplace_back("Last-Event-ID", last_id);
    bool got_event = false;
    SseParser parser([&](const SseEvent& e) {
      got_event = true;
      if (!handle(e)) {
        done = true;
        return false;
      }
      return !stop();
    });
    Api::Streamed s;
    try {
      s = api.stream(
          path, h, [](const Reply& r) { return is_event_stream(r); },
          [&](const char* d, std::size_t n) {
            return parser.feed({d, n}) && !stop();
          },
          o.stream_timeout_s, true);
    } catch (const Failure&) {
      if (!any_stream || ++broken > o.reconnects) throw;
      sleep_s(backoff(broken));
      continue;
    }
    if (!s.streamed) {
      if (any_stream && ++broken <= o.reconnects && s.reply.status >= 500) {
        sleep_s(backoff(broken));
        continue;
      }
      return s.reply;
    }
    any_stream = true;
    if (!parser.last_id().empty()) last_id = parser.last_id();
    if (done || s.end == Api::End::Stopped) break;
    if (got_event) broken = 0;
    if (++broken > o.reconnects)
      throw Failure(kExitUnreachable, what + " broke " + std::to_string(broken) + " times" +
                                          (s.error.empty() ? "" : ": " + s.error));
    sleep_s(parser.retry_ms() ? std::min(30.0, static_cast<double>(*parser.retry_ms()) / 1000)
                              : backoff(broken));
  }
  return std::nullopt;
}

}  // namespace

json follow_task(Api& api, const std::string& id, const EventHandler& on_event,
                 const FollowOptions& o) {
  const std::string self = "/api/v1/tasks/" + percent_encode(id);
  auto refused = resume_stream(
      api, self + "/events?stream=1", "the event stream of task " + id,
      [&](const SseEvent& e) {
        if (e.type == "end") {
          on_event(event_of(e));
          return false;
        }
        if (e.type == "state" || e.type == "progress") on_event(event_of(e));
        return true;
      },
      [] { return false; }, o);
  if (refused) {
    if (refused->status == 401 || refused->status == 403)
      expect_ok(*refused, "following task " + id);
    // No event stream here (an api without the route): poll instead.
    return poll_task(api, id, on_event, o);
  }
  auto r = api.get(self);
  expect_ok(r, "reading task " + id);
  return r.json();
}

void watch_tasks(Api& api, const EventHandler& on_event, const FollowOptions& o) {
  auto refused = resume_stream(
      api, "/api/v1/events", "the event stream",
      [&](const SseEvent& e) {
        if (e.type == "state" || e.type == "progress") on_event(event_of(e));
        return true;
      },
      [&] { return o.stop && o.stop(); }, o);
  if (!refused) return;
  // The route exists but refuses (401, 403, ...): say why. Else (404: an api without the
  // route) poll instead.
  if (refused->status != 404 && refused->status != 405) expect_ok(*refused, "watching events");
  poll_all(api, on_event, o);
}

}  // namespace ipfixweb::cli

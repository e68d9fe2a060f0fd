// Following tasks live: the api's server-sent events (GET /api/v1/tasks/{id}/events?stream=1,
// GET /api/v1/events) with reconnection from the last event id, or, when the api has no such
// route, polling (GET /api/v1/tasks/{id} and its history every poll interval).
//
// Every event is a JSON object with "event" ("state", "progress" or "end") and the fields of the
// server's data: state {"id"?, "task_id", "at", "state", "reason", "worker"}, progress
// {"task_id", "progress"}, end {"task_id", "state"}. State events carry the server's "id" only
// when they came from the event stream.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "ipfixweb/cli/client.hpp"

namespace ipfixweb::cli {

using EventHandler = std::function<void(const nlohmann::json& event)>;

struct FollowOptions {
  double poll_interval_s = 0.5;  // the polling fallback's period
  int reconnects = 8;            // broken streams in a row before giving up
  double stream_timeout_s = 45;  // longest silence on a stream (keep-alives come every 15 s)
  std::function<bool()> stop;    // true ends watch_tasks() (checked between events and polls)
};

bool is_terminal(const std::string& state);

// Follows task `id` until it is succeeded, failed or cancelled; returns its final document
// (GET /api/v1/tasks/{id}). The last event is always "end".
nlohmann::json follow_task(Api& api, const std::string& id, const EventHandler& on_event,
                           const FollowOptions& options = {});

// Every task's state changes (and progress) as they happen, until options.stop() says so or
// the process is interrupted.
void watch_tasks(Api& api, const EventHandler& on_event, const FollowOptions& options = {});

}  // namespace ipfixweb::cli

// Live task events as server-sent events (GET /api/v1/events for every task, GET
// /api/v1/tasks/{id}/events?stream=1 for one; docs/events.md).
//
// The broker is the only writer of the task database; what it records is what the streams
// say. One thread (the hub's) reads the new rows of task_events every poll interval and the
// progress of the running tasks, formats each event once, and hands the frames to every open
// stream whose filter wants them. A stream is an http::Feed: a queue of frames the HTTP layer
// sends when the client can take them, holding no thread in between. However many streams
// are open, the database sees one reader at the poll rate.
//
// Frames (text/event-stream):
//   id: <task_events.id>  event: state     data: {"id","task_id","at","state","reason","worker"}
//                         event: progress  data: {"task_id","progress"}   (no id)
//                         event: end       data: {"task_id","state"}      (one task's stream)
//   ": keep-alive" comments every keepalive interval, "retry:" first.
// A client that reconnects with Last-Event-ID (or ?since=) gets the state events it missed
// first. A stream that falls more than max_queued bytes behind (its client stopped reading)
// is ended; its client reconnects and catches up from the database.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "ipfixweb/api/http.hpp"

namespace ipfixweb {
class TaskStore;
}

namespace ipfixweb::api {

struct EventHubOptions {
  double poll_s = 0.25;     // how often new events are looked for
  double progress_s = 0.5;  // how often the running tasks' progress is read (when streams are open)
  double keepalive_s = 15;  // a comment on every stream this often
  std::size_t max_queued = 1u << 20;  // bytes a stream may fall behind before it is ended
  std::size_t max_streams = 1000;     // open streams; beyond: subscribe() refuses
  int replay_limit = 1000;            // state events replayed to a stream that reconnects
  double retry_s = 2;                 // what "retry:" tells clients
};

class EventHub {
 public:
  EventHub(std::string db_path, EventHubOptions opts = {});
  ~EventHub();  // stops the thread (streams still open end when their connections do)
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  void start();
  void stop();

  // A new stream, or nullptr when max_streams are open. `store` is the caller's reader (for
  // the replay). `task` empty: every task, from now on, or from after `after` (state events
  // with a greater id, at most replay_limit of them) when given. `task` set: that task's
  // whole history after `after` (0 when not given), then its live events; the stream ends
  // after the task's terminal state.
  std::shared_ptr<http::Feed> subscribe(TaskStore& store, const std::string& task,
                                        std::optional<std::int64_t> after);
  std::size_t streams() const;  // open now

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::api

// The event hub: see events.hpp.
#include "ipfixweb/api/events.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::api {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string state_frame(const TaskEvent& e) {
  const json data = {{"id", e.id},         {"task_id", e.task_id},
                     {"at", e.at},         {"state", name(e.state)},
                     {"reason", e.reason}, {"worker", e.worker}};
  return "id: " + std::to_string(e.id) + "\nevent: state\ndata: " + data.dump() + "\n\n";
}

std::string progress_frame(const std::string& task, double progress) {
  const json data = {{"task_id", task}, {"progress", std::round(progress * 1e4) / 1e4}};
  return "event: progress\ndata: " + data.dump() + "\n\n";
}

std::string end_frame(const std::string& task, TaskState state) {
  const json data = {{"task_id", task}, {"state", name(state)}};
  return "event: end\ndata: " + data.dump() + "\n\n";
}

// One open stream: the frames its connection has not taken yet.
class Stream : public http::Feed {
 public:
  Stream(std::string task, std::size_t max_queued) : task_(std::move(task)), max_(max_queued) {}

  const std::string& task() const { return task_; }

  void attach(std::function<void()> wake) override {
    std::lock_guard lock(mu_);
    wake_ = std::move(wake);
  }

  bool take(std::string& out) override {
    std::lock_guard lock(mu_);
    out.swap(queue_);
    queue_.clear();
    return !ended_;
  }

  // Adds frames (and ends the stream when `end`); a stream too far behind is ended instead.
  void deliver(std::string_view frames, bool end = false) {
    std::function<void()> wake;
    {
      std::lock_guard lock(mu_);
      if (ended_) return;
      if (queue_.size() + frames.size() > max_) {
        queue_ = ": too far behind; reconnect with Last-Event-ID\n\n";
        ended_ = true;
      } else {
        queue_ += frames;
        ended_ = end;
      }
      wake = wake_;
    }
    if (wake) wake();
  }

  bool ended() {
    std::lock_guard lock(mu_);
    return ended_;
  }

 private:
  const std::string task_;  // empty: every task
  const std::size_t max_;
  std::mutex mu_;
  std::string queue_;
  bool ended_ = false;
  std::function<void()> wake_;
};

}  // namespace

struct EventHub::Impl {
  std::string db_path;
  EventHubOptions opts;
  std::shared_ptr<spdlog::logger> log = logger("api");

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread thread;
  std::vector<std::weak_ptr<Stream>> streams;
  std::int64_t cursor = 0;  // the last event every stream has been given (or needs no more)
  bool cursor_known = false;
  std::unordered_map<std::string, double> progress;  // last sent, per running task
  std::unordered_set<std::string> settled;           // stopped running in this poll's events

  std::optional<TaskStore> store;  // the hub thread's own reader

  // Drops the streams whose connections let go of them; the live ones, under mu.
  std::vector<std::shared_ptr<Stream>> live() {
    std::vector<std::shared_ptr<Stream>> out;
    std::erase_if(streams, [&](const std::weak_ptr<Stream>& w) {
      auto s = w.lock();
      if (!s || s->ended()) return true;
      out.push_back(std::move(s));
      return false;
    });
    return out;
  }

  void run() {
    auto next_progress = Clock::now();
    auto next_keepalive = Clock::now() + dur(opts.keepalive_s);
    std::unique_lock lock(mu);
    while (!stopping) {
      cv.wait_for(lock, dur(opts.poll_s), [&] { return stopping; });
      if (stopping) break;
      lock.unlock();
      try {
        poll(next_progress, next_keepalive);
      } catch (const std::exception& e) {
        log->warn("event streams: reading the database failed: {}", e.what());
        store.reset();  // opened again next time
      }
      lock.lock();
    }
  }

  static Clock::duration dur(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  TaskStore* reader() {
    if (!store) {
      try {
        store.emplace(TaskStore::open_reader(db_path));
      } catch (const std::exception&) {
        return nullptr;  // the broker has not created it yet
      }
    }
    return &*store;
  }

  void poll(Clock::time_point& next_progress, Clock::time_point& next_keepalive) {
    auto* st = reader();
    if (!st) return;
    {
      std::lock_guard lock(mu);
      if (!cursor_known) {
        cursor = st->last_event_id();
        cursor_known = true;
        return;
      }
    }
    // The running tasks' progress is read before the new events, and sent after them: a task
    // found running has its "running" event among the events read after, so no stream sees
    // a task's progress before it sees it running.
    const auto now = Clock::now();
    bool any;
    {
      std::lock_guard lock(mu);
      any = !streams.empty();
      if (!any) progress.clear();
    }
    std::optional<std::vector<TaskStore::Progress>> running;
    {
      std::lock_guard lock(mu);
      settled.clear();
    }
    if (any && now >= next_progress) {
      next_progress = now + dur(opts.progress_s);
      running = st->running_progress();
    }
    // New state events, in batches; the cursor moves under the lock with the deliveries, so
    // that a stream subscribing meanwhile is given each event exactly once.
    for (;;) {
      std::int64_t from;
      {
        std::lock_guard lock(mu);
        from = cursor;
      }
      auto events = st->events_between(from, std::numeric_limits<std::int64_t>::max(), 1000);
      if (events.empty()) break;
      std::lock_guard lock(mu);
      dispatch(events);
      cursor = events.back().id;
      if (events.size() < 1000) break;
    }
    if (running) {
      std::lock_guard lock(mu);
      send_progress(*running);
    }
    if (now >= next_keepalive) {
      next_keepalive = now + dur(opts.keepalive_s);
      std::lock_guard lock(mu);
      for (auto& s : live()) s->deliver(": keep-alive\n\n");
    }
  }

  // Under mu.
  void dispatch(const std::vector<TaskEvent>& events) {
    auto subs = live();
    if (subs.empty()) return;
    std::string all;
    std::vector<std::string> frames;
    frames.reserve(events.size());
    for (auto& e : events) {
      frames.push_back(state_frame(e));
      all += frames.back();
    }
    for (auto& s : subs) {
      if (s->task().empty()) {
        s->deliver(all);
        continue;
      }
      std::string mine;
      std::optional<TaskState> end;
      for (std::size_t i = 0; i < events.size(); ++i)
        if (events[i].task_id == s->task()) {
          mine += frames[i];
          if (is_terminal(events[i].state)) end = events[i].state;
        }
      if (end) mine += end_frame(s->task(), *end);
      if (!mine.empty()) s->deliver(mine, end.has_value());
    }
    for (auto& e : events) {
      if (e.state == TaskState::Running) {
        settled.erase(e.task_id);
      } else {
        progress.erase(e.task_id);
        settled.insert(e.task_id);
      }
    }
  }

  // Under mu.
  void send_progress(const std::vector<TaskStore::Progress>& running) {
    auto subs = live();
    std::unordered_map<std::string, double> seen;
    std::string all;
    std::unordered_map<std::string, std::string> per_task;
    for (auto& r : running) {
      if (settled.count(r.id)) continue;  // it stopped running since it was read
      seen[r.id] = r.progress;
      auto it = progress.find(r.id);
      if (it != progress.end() && std::abs(it->second - r.progress) < 1e-4) continue;
      auto f = progress_frame(r.id, r.progress);
      all += f;
      per_task[r.id] = std::move(f);
    }
    progress.swap(seen);
    if (all.empty()) return;
    for (auto& s : subs) {
      if (s->task().empty()) {
        s->deliver(all);
      } else if (auto it = per_task.find(s->task()); it != per_task.end()) {
        s->deliver(it->second);
      }
    }
  }
};

EventHub::EventHub(std::string db_path, EventHubOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->db_path = std::move(db_path);
  impl_->opts = opts;
}

EventHub::~EventHub() { stop(); }

void EventHub::start() {
  auto& im = *impl_;
  std::lock_guard lock(im.mu);
  if (im.thread.joinable() || im.stopping) return;
  im.thread = std::thread([&im] { im.run(); });
}

void EventHub::stop() {
  auto& im = *impl_;
  {
    std::lock_guard lock(im.mu);
    im.stopping = true;
  }
  im.cv.notify_all();
  if (im.thread.joinable()) im.thread.join();
}

std::size_t EventHub::streams() const {
  std::lock_guard lock(impl_->mu);
  return impl_->live().size();
}

std::shared_ptr<http::Feed> EventHub::subscribe(TaskStore& store, const std::string& task,
                                                std::optional<std::int64_t> after) {
  auto& im = *impl_;
  std::lock_guard lock(im.mu);
  if (im.live().size() >= im.opts.max_streams) return nullptr;
  if (!im.cursor_known) {
    im.cursor = store.last_event_id();
    im.cursor_known = true;
  }
  auto s = std::make_shared<Stream>(task, im.opts.max_queued);
  std::string first =
      "retry: " + std::to_string(static_cast<long long>(im.opts.retry_s * 1000)) + "\n\n";
  // What the stream missed (or, for one task, its history) up to the hub's cursor: every
  // event after the cursor reaches it live, none twice.
  std::optional<TaskState> end;
  if (!task.empty()) {
    std::optional<TaskState> last;
    for (auto& e : store.events(task)) {
      if (e.id > im.cursor) break;
      last = e.state;
      if (e.id <= after.value_or(0)) continue;
      first += state_frame(e);
      if (is_terminal(e.state)) end = e.state;
    }
    if (end) {
      first += end_frame(task, *end);
    } else if (last == TaskState::Running) {  // (its running event is in the stream already)
      if (auto t = store.get(task); t && t->state == TaskState::Running)
        first += progress_frame(task, t->progress);
    }  // (a task that finished after the hub's cursor: its terminal event comes live)
  } else if (after && *after < im.cursor) {
    auto missed = store.events_between(*after, im.cursor, im.opts.replay_limit + 1);
    if (missed.size() > static_cast<std::size_t>(im.opts.replay_limit)) {
      missed.resize(static_cast<std::size_t>(im.opts.replay_limit));
      first += ": more events were missed than are replayed; read the task list\n\n";
    }
    for (auto& e : missed) first += state_frame(e);
  }
  s->deliver(first, end.has_value());
  if (!end) im.streams.push_back(s);
  return s;
}

}  // namespace ipfixweb::api

// The threads that run the api's request handlers.
//
// A plain pool of 64 threads wakes a sleeping thread for every request: at tens of thousands
// of requests a second that is two context switches each, and it made status reads slower
// than cpp-httplib's thread per connection. This pool runs at most `running_max` handlers
// at once (the CPU count: handlers use the CPU, more at once only take turns), so a thread
// that finishes one takes the next without sleeping, and a sleeping thread is woken only
// when fewer than that many run. A handler that waits without using the CPU (for the
// broker) says so with a WaitScope: it then does not count, and another thread may run
// meanwhile. All in all up to `threads` handlers are under way.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ipfixweb::api::http {

class HandlerPool {
 public:
  HandlerPool(int threads, int running_max);
  ~HandlerPool();  // lets running jobs finish; drops queued ones
  HandlerPool(const HandlerPool&) = delete;
  HandlerPool& operator=(const HandlerPool&) = delete;

  void post(std::function<void()> job);

 private:
  friend class WaitScope;
  void work();
  void wake_if_needed(std::unique_lock<std::mutex>& lock);

  const int running_max_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  int running_ = 0;   // handlers running and not inside a WaitScope
  int sleeping_ = 0;  // threads waiting for a job
  int waking_ = 0;    // threads notified that have not woken yet
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Marks a wait that does not use the CPU (e.g. for the broker's answer) in a handler. On a
// thread that is not a handler thread it does nothing.
class WaitScope {
 public:
  WaitScope();
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;

 private:
  HandlerPool* pool_;
};

}  // namespace ipfixweb::api::http

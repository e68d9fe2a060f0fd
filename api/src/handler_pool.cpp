#include "ipfixweb/api/handler_pool.hpp"

#include <algorithm>

namespace ipfixweb::api::http {

namespace {
thread_local HandlerPool* current_pool = nullptr;  // the pool this thread works for
}  // namespace

HandlerPool::HandlerPool(int threads, int running_max) : running_max_(std::max(1, running_max)) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { work(); });
}

HandlerPool::~HandlerPool() {
  std::deque<std::function<void()>> dropped;  // destroyed last, outside the lock
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void HandlerPool::post(std::function<void()> job) {
  std::unique_lock lock(mu_);
  queue_.push_back(std::move(job));
  wake_if_needed(lock);
}

// Wakes a sleeping thread when a job waits and fewer than running_max_ handlers run (or are
// about to: the threads already woken).
void HandlerPool::wake_if_needed(std::unique_lock<std::mutex>& lock) {
  if (queue_.empty() || sleeping_ <= waking_ || running_ + waking_ >= running_max_) return;
  ++waking_;
  lock.unlock();
  cv_.notify_one();
  lock.lock();
}

void HandlerPool::work() {
  current_pool = this;
  std::unique_lock lock(mu_);
  for (;;) {
    while (!stop_ && (queue_.empty() || running_ >= running_max_)) {
      ++sleeping_;
      cv_.wait(lock);
      --sleeping_;
      if (waking_ > 0) --waking_;
    }
    if (stop_) return;
    auto job = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    wake_if_needed(lock);  // more jobs and room for another running handler
    lock.unlock();
    job();
    job = nullptr;  // what it holds goes now, not when the next job is taken
    lock.lock();
    --running_;
  }
}

WaitScope::WaitScope() : pool_(current_pool) {
  if (!pool_) return;
  std::unique_lock lock(pool_->mu_);
  --pool_->running_;
  pool_->wake_if_needed(lock);
}

WaitScope::~WaitScope() {
  if (!pool_) return;
  std::lock_guard lock(pool_->mu_);
  ++pool_->running_;  // may pass running_max_ for a moment: this handler is under way already
}

}  // namespace ipfixweb::api::http

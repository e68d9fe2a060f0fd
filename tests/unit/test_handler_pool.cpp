// The api's handler pool: how many handlers run at once, and waits that free a place.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "ipfixweb/api/handler_pool.hpp"

using namespace ipfixweb::api::http;
using namespace std::chrono_literals;

namespace {
// Counts down to zero; wait() gives up after a while instead of hanging a failing test.
class Latch {
 public:
  explicit Latch(int n) : n_(n) {}
  void count_down() {
    std::lock_guard lock(mu_);
    if (--n_ <= 0) cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return n_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};
}  // namespace

TEST(HandlerPool, RunsEveryJobWithAtMostRunningMaxAtOnce) {
  std::atomic<int> now{0}, most{0};
  Latch done(200);
  {
    HandlerPool pool(16, 2);
    for (int i = 0; i < 200; ++i)
      pool.post([&] {
        int n = ++now;
        for (int seen = most; n > seen && !most.compare_exchange_weak(seen, n);) {
        }
        std::this_thread::sleep_for(100us);
        --now;
        done.count_down();
      });
    EXPECT_TRUE(done.wait());
  }
  EXPECT_LE(most.load(), 2);
  EXPECT_GE(most.load(), 1);
}

TEST(HandlerPool, AHandlerWaitingInAWaitScopeLetsAnotherRun) {
  HandlerPool pool(4, 1);  // one running handler at a time
  Latch second_ran(1), first_done(1);
  pool.post([&] {
    WaitScope waiting;  // e.g. for the broker, whose answer the second job brings
    EXPECT_TRUE(second_ran.wait());
    first_done.count_down();
  });
  pool.post([&] { second_ran.count_down(); });
  EXPECT_TRUE(first_done.wait());
}

TEST(HandlerPool, AsManyHandlersAsThreadsMayWaitAtOnce) {
  HandlerPool pool(8, 1);
  Latch all_waiting(8), release(1), done(8);
  for (int i = 0; i < 8; ++i)
    pool.post([&] {
      WaitScope waiting;
      all_waiting.count_down();
      release.wait();
      done.count_down();
    });
  EXPECT_TRUE(all_waiting.wait());
  release.count_down();
  EXPECT_TRUE(done.wait());
}

TEST(HandlerPool, AWaitScopeOutsideAHandlerThreadDoesNothing) {
  WaitScope waiting;  // no pool on this thread: nothing to release, nothing to crash
  SUCCEED();
}

TEST(HandlerPool, QueuedJobsAreDroppedWhenThePoolGoes) {
  std::atomic<int> ran{0};
  auto kept = std::make_shared<int>(1);
  Latch started(1), release(1);
  std::thread releaser;
  {
    HandlerPool pool(1, 1);
    pool.post([&] {
      started.count_down();
      release.wait();
      ++ran;
    });
    EXPECT_TRUE(started.wait());
    for (int i = 0; i < 5; ++i) pool.post([&ran, kept] { ++ran; });
    // The pool goes while its one job still runs: that job finishes, the queued ones do not.
    releaser = std::thread([&] {
      std::this_thread::sleep_for(50ms);
      release.count_down();
    });
  }
  releaser.join();
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(kept.use_count(), 1);  // the dropped jobs were destroyed
}

// SpinMutex (the threaded engine's output lock): mutual exclusion while it spins and when its
// waiters sleep, and the wake-up of a sleeping waiter.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "spin_mutex.hpp"

namespace ipfixweb::engine {
namespace {

// More threads than cores, short sections: waiters spin, and some sleep when the holder is
// descheduled. A plain counter stays exact only under mutual exclusion.
TEST(SpinMutex, ManyThreadsIncrementingUnderItLoseNoIncrement) {
  SpinMutex m;
  long counter = 0;
  std::atomic<int> inside{0};
  std::atomic<bool> overlap{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100'000; ++i) {
        const std::lock_guard<SpinMutex> g(m);
        if (inside.fetch_add(1) != 0) overlap = true;
        ++counter;
        inside.fetch_sub(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 600'000);
  EXPECT_FALSE(overlap);
}

// A holder that keeps it far longer than the spin: the waiter goes to sleep, and unlock()
// wakes it (it does not wait for a timeout or spin forever).
TEST(SpinMutex, AWaiterThatSleptIsWokenByUnlock) {
  SpinMutex m;
  m.lock();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    m.lock();
    got = true;
    m.unlock();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(got);
  EXPECT_FALSE(m.try_lock());
  const auto t0 = std::chrono::steady_clock::now();
  m.unlock();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

}  // namespace
}  // namespace ipfixweb::engine

// A mutex for short critical sections between a few busy threads (the threaded engine's
// outputs: one finished flow written at a time, a few microseconds). It spins a while before
// it sleeps: with std::mutex, two shards that finish flows at the same moment put one of them
// to sleep in the kernel and wake it again (a context switch each way per collision, about
// 1,400 per second-long conversion on two cores), which costs more than the wait itself.
#pragma once

#include <atomic>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ipfixweb::engine {

class SpinMutex {
 public:
  void lock() noexcept {
    for (int i = 0; i < kSpins; ++i) {
      int expected = kFree;
      if (state_.load(std::memory_order_relaxed) == kFree &&
          state_.compare_exchange_weak(expected, kLocked, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return;
      relax();
    }
    // Sleeps (Drepper's "futexes are tricky", mutex 2): kContended tells unlock() to wake.
    int c = state_.exchange(kContended, std::memory_order_acquire);
    while (c != kFree) {
      state_.wait(kContended, std::memory_order_relaxed);
      c = state_.exchange(kContended, std::memory_order_acquire);
    }
  }
  bool try_lock() noexcept {
    int expected = kFree;
    return state_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  void unlock() noexcept {
    if (state_.exchange(kFree, std::memory_order_release) == kContended) state_.notify_one();
  }

  // About 20-40 microseconds of pause instructions: longer than a flow's write.
  static constexpr int kSpins = 4000;

 private:
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  static constexpr int kFree = 0, kLocked = 1, kContended = 2;
  std::atomic<int> state_{kFree};
};

}  // namespace ipfixweb::engine

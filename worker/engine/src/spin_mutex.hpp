// A mutex for short critical sections between a few busy threads (the threaded engine's
// outputs: one finished flow written at a time, a few microseconds). It spins a while before
// it sleeps: with std::mutex, two shards that finish flows at the same moment put one of them
// to sleep in the kernel and wake it again (a context switch each way per collision, about
// 2,400 per second-long conversion on two cores), which costs more than the wait itself.
#pragma once

#include <atomic>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ipfixweb::engine {

class SpinMutex {
 public:
  void lock() noexcept {
    if (try_lock()) return;
    // Spins for up to kSpin (the clock read every 32 pauses: a pause takes 10 ns on some CPUs
    // and 40 on others), then sleeps.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (unsigned i = 1;; ++i) {
      int expected = kFree;
      if (state_.load(std::memory_order_relaxed) == kFree &&
          state_.compare_exchange_weak(expected, kLocked, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return;
      relax();
      if (i % 32 == 0 && std::chrono::steady_clock::now() >= until) break;
    }
    // Sleeps (the futex mutex of Drepper's "Futexes Are Tricky"): kContended tells unlock() to
    // wake.
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

  // Longer than a flow's write (a few microseconds); short enough that a waiter whose holder
  // was descheduled (more threads than cores) soon gives its core back.
  static constexpr std::chrono::microseconds kSpin{30};

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

// A pool of reusable resources (the api's read-only database connections and broker sockets)
// lent to one handler at a time.
//
// The api used to keep one of each per handler thread. Its handler pool wakes whichever of its
// 64 threads sleeps, so under a steady load the threads took turns and each opened its own
// connection and socket on its first request: in a 30-minute soak the api's descriptors grew
// from 152 to 239 and its RSS from 40 to 71 MiB before every thread had had one (and the
// broker's descriptors grew with them). A lease pool holds only as many as were in use at once:
// the most recently returned item is lent first (a stack), and one left unused for `idle_ttl`
// is closed, so that a burst's extra items do not stay open for good.
//
// The items are not used by two threads at once; a lease moves an item from one thread to
// another under the pool's mutex (a full barrier: what ZeroMQ asks for a socket that changes
// threads).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace ipfixweb::api {

template <class T>
class LeasePool {
 public:
  using Clock = std::chrono::steady_clock;

  // The item lent; returned to the pool when the lease ends (unless discarded).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), item_(std::move(o.item_)) {}
    Lease& operator=(Lease&& o) noexcept {
      if (this != &o) {
        give_back();
        pool_ = std::exchange(o.pool_, nullptr);
        item_ = std::move(o.item_);
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { give_back(); }

    explicit operator bool() const { return item_ != nullptr; }
    T& operator*() const { return *item_; }
    T* operator->() const { return item_.get(); }
    // Closes the item instead of returning it (e.g. it is broken).
    void discard() {
      if (!item_) return;
      item_.reset();
      if (pool_) pool_->closed(1);
    }

   private:
    friend class LeasePool;
    Lease(LeasePool* pool, std::unique_ptr<T> item) : pool_(pool), item_(std::move(item)) {}
    void give_back() {
      if (pool_ && item_) pool_->put(std::move(item_));
      pool_ = nullptr;
    }
    LeasePool* pool_ = nullptr;
    std::unique_ptr<T> item_;
  };

  explicit LeasePool(std::chrono::milliseconds idle_ttl = std::chrono::seconds(60))
      : idle_ttl_(idle_ttl) {}
  LeasePool(const LeasePool&) = delete;
  LeasePool& operator=(const LeasePool&) = delete;

  // Lends the most recently returned item, or one from make() (a std::unique_ptr<T>) when none
  // is idle. make() runs outside the pool's lock; what it throws reaches the caller, and an
  // empty pointer from it gives an empty lease.
  template <class Make>
  Lease acquire(Make&& make) {
    {
      std::vector<std::unique_ptr<T>> closing;  // declared first: closed after the unlock
      std::lock_guard lock(mu_);
      closing = expire(Clock::now());
      if (!idle_.empty()) {
        auto item = std::move(idle_.back().item);
        idle_.pop_back();
        return Lease(this, std::move(item));
      }
    }
    std::unique_ptr<T> made = make();
    if (!made) return {};
    {
      std::lock_guard lock(mu_);
      ++made_;
    }
    return Lease(this, std::move(made));
  }

  std::size_t idle() const {
    std::lock_guard lock(mu_);
    return idle_.size();
  }
  // Items made over the pool's life (a pool that keeps reopening shows here).
  std::size_t made() const {
    std::lock_guard lock(mu_);
    return made_;
  }
  // Items open now: lent or idle.
  std::size_t open() const {
    std::lock_guard lock(mu_);
    return made_ - closed_;
  }

 private:
  struct Idle {
    std::unique_ptr<T> item;
    Clock::time_point since;
  };

  void put(std::unique_ptr<T> item) {
    std::vector<std::unique_ptr<T>> closing;  // closed outside the lock
    {
      std::lock_guard lock(mu_);
      const auto now = Clock::now();
      idle_.push_back({std::move(item), now});
      closing = expire(now);
    }
  }
  // Takes the items idle for longer than the TTL out of the pool (the oldest are at the
  // bottom of the stack) and returns them to be closed.
  std::vector<std::unique_ptr<T>> expire(Clock::time_point now) {
    std::size_t n = 0;
    while (n < idle_.size() && now - idle_[n].since > idle_ttl_) ++n;
    std::vector<std::unique_ptr<T>> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(std::move(idle_[i].item));
    idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(n));
    closed_ += n;
    return out;
  }
  void closed(std::size_t n) {
    std::lock_guard lock(mu_);
    closed_ += n;
  }

  const std::chrono::milliseconds idle_ttl_;
  mutable std::mutex mu_;
  std::vector<Idle> idle_;
  std::size_t made_ = 0;
  std::size_t closed_ = 0;
};

}  // namespace ipfixweb::api

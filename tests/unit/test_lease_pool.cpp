// The api's pool of database connections and broker sockets (lease_pool.hpp).
#include "ipfixweb/api/lease_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

using ipfixweb::api::LeasePool;
using namespace std::chrono_literals;

namespace {

// Counts the items alive, to see which the pool closes.
struct Item {
  explicit Item(int n, std::atomic<int>& alive) : id(n), alive_(alive) { ++alive_; }
  ~Item() { --alive_; }
  Item(const Item&) = delete;
  Item& operator=(const Item&) = delete;
  int id;
  std::atomic<int>& alive_;
};

struct Maker {
  std::atomic<int>& alive;
  int next = 0;
  std::unique_ptr<Item> operator()() { return std::make_unique<Item>(next++, alive); }
};

}  // namespace

TEST(LeasePool, OneUserAtATimeReusesOneItem) {
  std::atomic<int> alive{0};
  LeasePool<Item> pool;
  Maker make{alive};
  for (int i = 0; i < 100; ++i) {
    auto lease = pool.acquire(make);
    ASSERT_TRUE(lease);
    EXPECT_EQ(lease->id, 0);
  }
  EXPECT_EQ(pool.made(), 1u);
  EXPECT_EQ(pool.idle(), 1u);
  EXPECT_EQ(alive, 1);
}

TEST(LeasePool, ItemsInUseAtOnceAreDistinctAndTheLastReturnedIsLentFirst) {
  std::atomic<int> alive{0};
  LeasePool<Item> pool;
  Maker make{alive};
  {
    auto a = pool.acquire(make);
    auto b = pool.acquire(make);
    auto c = pool.acquire(make);
    EXPECT_NE(a->id, b->id);
    EXPECT_NE(b->id, c->id);
    b = {};  // returns item 1
  }          // c (2) then a (0) are returned
  EXPECT_EQ(pool.made(), 3u);
  EXPECT_EQ(pool.idle(), 3u);
  EXPECT_EQ(pool.acquire(make)->id, 0);  // the last returned
}

TEST(LeasePool, AnItemIdleLongerThanTheTtlIsClosed) {
  std::atomic<int> alive{0};
  LeasePool<Item> pool(50ms);
  Maker make{alive};
  {
    auto a = pool.acquire(make);
    auto b = pool.acquire(make);
  }
  EXPECT_EQ(alive, 2);
  std::this_thread::sleep_for(120ms);
  auto c = pool.acquire(make);  // the idle ones expire first: a new item is made
  EXPECT_EQ(c->id, 2);
  EXPECT_EQ(alive, 1);
  EXPECT_EQ(pool.open(), 1u);
  EXPECT_EQ(pool.idle(), 0u);
}

TEST(LeasePool, ADiscardedItemIsClosedNotReturned) {
  std::atomic<int> alive{0};
  LeasePool<Item> pool;
  Maker make{alive};
  {
    auto a = pool.acquire(make);
    a.discard();
    EXPECT_FALSE(a);
  }
  EXPECT_EQ(alive, 0);
  EXPECT_EQ(pool.idle(), 0u);
  EXPECT_EQ(pool.open(), 0u);
  EXPECT_EQ(pool.acquire(make)->id, 1);
}

TEST(LeasePool, AMakerThatFailsGivesAnEmptyLeaseOrItsException) {
  LeasePool<Item> pool;
  auto none = pool.acquire([] { return std::unique_ptr<Item>(); });
  EXPECT_FALSE(none);
  EXPECT_THROW(pool.acquire([]() -> std::unique_ptr<Item> { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_EQ(pool.made(), 0u);
  EXPECT_EQ(pool.idle(), 0u);
}

TEST(LeasePool, ManyThreadsNeverShareAnItemAndMakeNoMoreThanTheyUseAtOnce) {
  std::atomic<int> alive{0};
  LeasePool<Item> pool;
  std::atomic<int> next{0};
  std::vector<std::atomic<int>> users(64);
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::atomic<int> shared_use{0};
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto lease = pool.acquire([&] { return std::make_unique<Item>(next++, alive); });
        ASSERT_LT(lease->id, 64);
        if (users[static_cast<std::size_t>(lease->id)].fetch_add(1) != 0) ++shared_use;
        users[static_cast<std::size_t>(lease->id)].fetch_sub(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(shared_use, 0);
  EXPECT_LE(pool.made(), static_cast<std::size_t>(kThreads));
  EXPECT_EQ(pool.idle(), pool.made());
}

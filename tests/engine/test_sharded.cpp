// ShardedMeter (the threaded engine's core): both directions of a flow in one shard, packet time
// reaching idle shards, a failing shard reaching the caller, the reading thread's share.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <new>
#include <set>
#include <vector>

#include "ipfixweb/engine/engine.hpp"
#include "sharded.hpp"

namespace ipfixweb::engine {
namespace {

DecodedPacket udp_packet(std::uint8_t a, std::uint8_t b, std::uint16_t sport, std::uint16_t dport) {
  DecodedPacket p;
  p.key.ip_version = 4;
  p.key.proto = 17;
  p.key.src[0] = 10;
  p.key.src[3] = a;
  p.key.dst[0] = 10;
  p.key.dst[3] = b;
  p.key.sport = sport;
  p.key.dport = dport;
  p.ip_octets = 100;
  return p;
}

// Records every finished flow (under a lock shared by the shards); can be told to fail.
struct Recorder {
  std::mutex lock;
  std::vector<std::pair<FlowKey, EndReason>> ended;
  std::atomic<int> fail_after{-1};  // packets metered before on_packet throws
  std::atomic<int> packets{0};
  int failing_shard = -1;  // only this shard fails (-1: any)
};

class RecordingWork final : public ShardWork, public FlowSink {
 public:
  RecordingWork(Recorder& r, unsigned shard) : r_(r), shard_(shard) {}
  FlowSink& sink() override { return *this; }
  void set_now(std::uint64_t) override {}
  void on_packet(Flow&, const DecodedPacket&, std::uint64_t) override {
    const int n = r_.packets.fetch_add(1);
    if (r_.fail_after >= 0 && n >= r_.fail_after &&
        (r_.failing_shard < 0 || static_cast<unsigned>(r_.failing_shard) == shard_))
      throw std::bad_alloc();
  }
  void on_flow_end(Flow& f, EndReason reason) override {
    const std::lock_guard<std::mutex> g(r_.lock);
    r_.ended.emplace_back(f.key, reason);
  }

 private:
  Recorder& r_;
  unsigned shard_;
};

ShardWorkFactory recording(Recorder& r) {
  return [&r](unsigned shard) { return std::make_unique<RecordingWork>(r, shard); };
}

TEST(ShardedMeter, BothDirectionsOfAFlowMeetInOneShard) {
  Recorder r;
  ShardedMeter m(4, FlowTableConfig{}, recording(r), false);
  std::set<unsigned> used;
  for (std::uint8_t a = 1; a < 100; ++a) {
    const auto fwd = udp_packet(a, 200, static_cast<std::uint16_t>(1000 + a), 53);
    const auto rev = udp_packet(200, a, 53, static_cast<std::uint16_t>(1000 + a));
    EXPECT_EQ(m.shard_of(fwd.key), m.shard_of(rev.key));
    used.insert(m.shard_of(fwd.key));
    m.add(fwd, 1000 + a, true);
    m.add(rev, 1000 + a, true);
  }
  m.finish();
  // Every shard with a share of the hash space got flows (the reading thread's shard 0 has
  // none with 4 shards: it only reads).
  for (unsigned s = 0; s < 4; ++s)
    EXPECT_EQ(used.count(s), ShardedMeter::inline_share(4) > 0 || s > 0 ? 1u : 0u) << s;
  EXPECT_EQ(r.ended.size(), 99u);  // one biflow each
}

// One flow in one shard goes quiet; packets of flows in other shards move the clock past its
// idle timeout: it ends as an idle timeout before the end of input (not as forced end).
TEST(ShardedMeter, PacketTimeReachesShardsWithoutPackets) {
  Recorder r;
  FlowTableConfig cfg;
  cfg.idle_timeout_ms = 1000;
  ShardedMeter m(2, cfg, recording(r), false);
  const auto quiet = udp_packet(1, 2, 1111, 53);
  m.add(quiet, 0, true);
  // Packets of flows in the other shard only, 100 ms apart, for 10 s.
  std::uint16_t port = 2000;
  int sent = 0;
  for (std::uint64_t t = 100; t <= 10'000; t += 100) {
    DecodedPacket p;
    do p = udp_packet(3, 4, port++, 80);
    while (m.shard_of(p.key) == m.shard_of(quiet.key));
    m.add(p, t, true);
    ++sent;
  }
  m.finish();
  bool found = false;
  for (const auto& [k, reason] : r.ended) {
    if (k == quiet.key) {
      found = true;
      EXPECT_EQ(reason, EndReason::kIdleTimeout);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(r.ended.size(), static_cast<std::size_t>(sent) + 1);
}

// A shard that throws (here std::bad_alloc, as an nDPI allocation could): the reader's next
// hand-over or finish() throws EngineError, every thread is joined, nothing escapes a thread.
TEST(ShardedMeter, ShardFailureReachesTheCallerAsEngineError) {
  Recorder r;
  r.fail_after = 5000;
  r.failing_shard = 2;  // one on a thread of its own
  auto meter = std::make_unique<ShardedMeter>(3, FlowTableConfig{}, recording(r), false);
  bool thrown = false;
  try {
    for (int i = 0; i < 200'000; ++i)
      meter->add(udp_packet(static_cast<std::uint8_t>(i), 9, static_cast<std::uint16_t>(i), 53),
                 static_cast<std::uint64_t>(i), true);
    meter->finish();
  } catch (const EngineError& e) {
    thrown = true;
    EXPECT_NE(std::string(e.what()).find("thread"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(thrown);
  meter.reset();  // joins (already joined): must not hang or throw
}

// Shard 0 is metered by the reading thread: what its work throws reaches the caller as it is
// (as in the single-threaded engine), and destroying the meter then joins the other threads.
TEST(ShardedMeter, AFailureOfTheReadingThreadsOwnShardReachesTheCallerAsItIs) {
  Recorder r;
  r.fail_after = 5000;
  r.failing_shard = 0;
  auto meter = std::make_unique<ShardedMeter>(2, FlowTableConfig{}, recording(r), false);
  EXPECT_THROW(
      {
        for (int i = 0; i < 200'000; ++i)
          meter->add(udp_packet(static_cast<std::uint8_t>(i), 9, static_cast<std::uint16_t>(i), 53),
                     static_cast<std::uint64_t>(i), true);
        meter->finish();
      },
      std::bad_alloc);
  meter.reset();  // stops and joins shard 1: must not hang or throw
}

// The reading thread meters shard 0 itself beside its reading, so it takes a smaller share of
// the flows: (1 - r) / 2 with one other shard, less with more, never more than an even share.
TEST(ShardedMeter, TheReadingThreadsShardTakesASmallerShareOfTheFlows) {
  EXPECT_NEAR(ShardedMeter::inline_share(2), (1 - ShardedMeter::kReaderCost) / 2, 1e-9);
  EXPECT_DOUBLE_EQ(ShardedMeter::inline_share(1), 1.0);
  for (unsigned n = 2; n <= 8; ++n) {
    EXPECT_LE(ShardedMeter::inline_share(n), 1.0 / n) << n;
    EXPECT_LE(ShardedMeter::inline_share(n + 1), ShardedMeter::inline_share(n)) << n;
  }
  for (unsigned n : {2u, 3u, 5u}) {
    Recorder r;
    ShardedMeter m(n, FlowTableConfig{}, recording(r), false);
    std::vector<int> per(n);
    const int flows = 60'000;
    for (int i = 0; i < flows; ++i) {
      const auto p = udp_packet(static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i >> 8),
                                static_cast<std::uint16_t>(i * 7), 443);
      ++per[m.shard_of(p.key)];
    }
    const double rest = (1 - ShardedMeter::inline_share(n)) / (n - 1);
    EXPECT_NEAR(per[0] / double(flows), ShardedMeter::inline_share(n), 0.01) << n;
    for (unsigned s = 1; s < n; ++s) EXPECT_NEAR(per[s] / double(flows), rest, 0.01) << n;
    m.finish();
  }
}

// max_flows is shared out by the shards' shares of the hash space, so they fill up together: 700
// flows in a meter of max_flows 1000 on 2 shards (a quarter and three quarters of the flows)
// evict none, as one table of 1000 would not (with halves, the second shard's 500 overflowed).
TEST(ShardedMeter, MaxFlowsIsSharedOutByTheShardsSharesOfTheFlows) {
  FlowTableConfig whole;
  whole.max_flows = 1000;
  std::size_t sum = 0;
  for (unsigned i = 0; i < 2; ++i) sum += ShardedMeter::table_config(whole, 2, i).max_flows;
  EXPECT_EQ(ShardedMeter::table_config(whole, 2, 0).max_flows, 250u);
  EXPECT_EQ(sum, 1000u);
  EXPECT_EQ(ShardedMeter::table_config(whole, 4, 0).max_flows, 1u);  // reads only
  EXPECT_EQ(ShardedMeter::table_config(whole, 1, 0).max_flows, 1000u);
  Recorder r;
  {
    ShardedMeter m(2, whole, recording(r), false);
    for (int i = 0; i < 700; ++i)
      m.add(udp_packet(static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i >> 8),
                       static_cast<std::uint16_t>(1000 + i), 53),
            1000, true);
    m.finish();
  }
  ASSERT_EQ(r.ended.size(), 700u);
  for (const auto& [k, reason] : r.ended) EXPECT_EQ(reason, EndReason::kForcedEnd);
}

// The caller abandons the run (cancel, a reader error): destroying
// the meter stops and joins the shards without metering the rest or flushing their tables.
TEST(ShardedMeter, DestroyedMidRunStopsItsThreads) {
  Recorder r;
  {
    ShardedMeter m(2, FlowTableConfig{}, recording(r), false);
    for (int i = 0; i < 10'000; ++i)
      m.add(udp_packet(1, 2, static_cast<std::uint16_t>(i), 53), 1, true);
  }
  EXPECT_TRUE(r.ended.empty());  // nothing flushed
}

}  // namespace
}  // namespace ipfixweb::engine

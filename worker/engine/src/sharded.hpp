// Threaded metering of one conversion (Options::threads > 1; docs/engine.md, Threads).
//
// The calling thread reads and decodes; each decoded packet goes to one of N shards chosen by
// the symmetric flow hash (both directions of a flow, VLAN included, meet in one shard). Each
// shard has its own flow table and its own per-shard work (DPI, the flow's time buckets, the
// sink of finished flows). Shard 0 is metered by the calling thread itself, between reads, and
// gets a smaller share of the hash space (inline_share) since that thread also reads; shards
// 1..N-1 run on threads of their own, fed in batches through one bounded
// single-producer/single-consumer ring each: no allocation and no lock per packet.
//
// Packet time: every packet carries the reader's clock (the latest packet time metered so far,
// what FlowTable::now_ms() is in a single-threaded run), and every batch ends with it: all
// shards' batches are handed over together, so a shard without packets of its own still
// advances its table's clock and its idle timeouts, close grace periods and active timeouts
// fire at the packet time they fire at in one table.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "decoder.hpp"
#include "flow_table.hpp"

namespace ipfixweb::engine {

// What one shard does besides keeping its flow table. Made and used on the shard's thread.
class ShardWork {
 public:
  virtual ~ShardWork() = default;
  // The sink of the shard's finished flows.
  virtual FlowSink& sink() = 0;
  // The reader's clock (packet time) before the table moves: the export time of what ends.
  virtual void set_now(std::uint64_t now_ms) = 0;
  // One packet, after the table accounted it in `f`.
  virtual void on_packet(Flow& f, const DecodedPacket& p, std::uint64_t ts_ms) = 0;
};
using ShardWorkFactory = std::function<std::unique_ptr<ShardWork>(unsigned shard)>;

class ShardedMeter {
 public:
  // `shards` >= 1: shard 0's work is made here, on the calling thread; shards - 1 threads
  // start at once and `make_work` runs on each of them first. `cfg` is the configuration of
  // the whole conversion's table: each shard's gets its share of max_flows (table_config).
  // `payload`: the shards read the packets' IP bytes (DPI); they are then copied into the batch
  // unless `payload_stable` says the caller's bytes stay valid and unchanged until finish() (a
  // memory-mapped capture).
  ShardedMeter(unsigned shards, const FlowTableConfig& cfg, ShardWorkFactory make_work,
               bool payload);
  // Stops and joins the threads (what they did not finish is dropped).
  ~ShardedMeter();
  ShardedMeter(const ShardedMeter&) = delete;
  ShardedMeter& operator=(const ShardedMeter&) = delete;

  // One decoded packet of capture time ts_ms (reader thread). Throws EngineError when a shard
  // thread failed; what shard 0's work throws (on this thread) comes through as it is, as in
  // the single-threaded engine. `payload_stable`: p.l3 stays valid until finish() (no copy).
  void add(const DecodedPacket& p, std::uint64_t ts_ms, bool payload_stable) {
    now_ms_ = std::max(now_ms_, ts_ms);
    min_ms_ = std::min(min_ms_, ts_ms);
    const std::uint64_t h = FlowTable::hash_key(p.key);
    const unsigned s = shard_of_hash(h);
    if (round_packets_ == 0) begin_round();
    if (s == 0)
      meter_here(p, ts_ms, h);
    else
      push(s, p, ts_ms, h, payload_stable);
    if (++round_packets_ >= round_limit_) end_round();
  }
  // A packet of capture time ts_ms that is not metered here (a flow of another partition): the
  // reader's clock moves, and reaches the shards with the next packet or round.
  void tick(std::uint64_t ts_ms) {
    now_ms_ = std::max(now_ms_, ts_ms);
    min_ms_ = std::min(min_ms_, ts_ms);
  }
  // End of input: every shard meters what it was given, flushes its table (kForcedEnd) and
  // stops. Throws EngineError (or rethrows the shard's EngineError) when a shard failed.
  void finish();

  unsigned shards() const { return static_cast<unsigned>(shards_.size()); }
  // After finish(): the shard's work and table statistics.
  ShardWork& work(unsigned shard) { return *shards_[shard]->work; }
  std::size_t peak_flows() const;  // sum of the shards' peaks
  std::uint64_t now_ms() const { return now_ms_; }
  std::uint64_t min_ms() const { return min_ms_; }

  unsigned shard_of(const FlowKey& k) const { return shard_of_hash(FlowTable::hash_key(k)); }
  unsigned shard_of_hash(std::uint64_t hash) const {
    // High bits of the hash (the tables index their slots by its low bits): [0, cut_) is
    // shard 0's, the rest is shared out evenly among the threads.
    const std::uint64_t x = hash >> 32;
    if (x < cut_) return 0;
    return 1 + static_cast<unsigned>(((x - cut_) * threads_) / ((std::uint64_t{1} << 32) - cut_));
  }
  // The share of the flows (of the 32-bit hash space) that shard 0, on the reading thread,
  // meters for `shards` shards: the reader's own work (read, decode, hash, hand-over) costs
  // about kReaderCost of the metering of all flows (DPI on), so with one thread beside it the
  // two are even at (1 - r) / 2 of the flows; with more threads the share shrinks to 0 (the
  // reading thread only reads). Measured on the 2 M-packet benchmark capture, 2 threads:
  // shares of 0.20 / 0.25 / 0.30 / 0.35 / 0.50 took 0.51 / 0.49 / 0.51 / 0.59 / 0.69 s.
  static double inline_share(unsigned shards);
  // Shard `shard`'s table of `shards`: max_flows shared out in proportion to the shard's share
  // of the hash space (rounded up, at least 1), so that the shards fill up together.
  static FlowTableConfig table_config(const FlowTableConfig& whole, unsigned shards,
                                      unsigned shard);
  static constexpr double kReaderCost = 0.5;

  static constexpr std::uint32_t kRingSlots = 32;
  static constexpr std::uint32_t kWakeBatches = 4;  // an empty shard waits for this many
  static constexpr std::uint32_t kBatchPackets = 1024;
  static constexpr std::uint32_t kRoundPacketsPerShard = 384;
  static constexpr std::size_t kArenaBytes = 256u << 10;

 private:
  struct Item {
    DecodedPacket pkt;
    std::uint64_t ts_ms;
    std::uint64_t now_ms;
    std::uint64_t hash;  // FlowTable::hash_key(pkt.key)
  };
  struct Batch {
    std::unique_ptr<Item[]> items{new Item[kBatchPackets]};
    std::uint32_t count = 0;
    std::uint64_t end_now_ms = 0;
    bool last = false;
    std::unique_ptr<std::uint8_t[]> arena;  // copied payloads
    std::size_t arena_size = 0;
    std::size_t arena_used = 0;
  };
  struct Shard {
    std::unique_ptr<Batch[]> ring;                   // shards on threads of their own
    alignas(64) std::atomic<std::uint32_t> head{0};  // batches consumed (shard writes)
    alignas(64) std::atomic<std::uint32_t> tail{0};  // batches published (reader writes)
    Batch* filling = nullptr;                        // reader's current batch
    std::unique_ptr<ShardWork> work;
    std::unique_ptr<FlowTable> table;
    std::exception_ptr error;
    std::thread thread;
  };

  // A shard's table moves to the reader's clock: its work first learns the time that what ends
  // is exported at.
  static void move_clock(Shard& sh, std::uint64_t now_ms) {
    sh.work->set_now(now_ms);
    sh.table->advance(now_ms);
  }
  void meter_here(const DecodedPacket& p, std::uint64_t ts_ms, std::uint64_t hash) {
    Shard& sh = *shards_[0];
    move_clock(sh, now_ms_);
    const FlowTable::Hit hit = sh.table->update(p, ts_ms, hash);
    sh.work->on_packet(*hit.flow, p, ts_ms);
  }
  void begin_round();
  void end_round();
  void push(unsigned s, const DecodedPacket& p, std::uint64_t ts_ms, std::uint64_t hash,
            bool payload_stable);
  void copy_payload(unsigned s, Item& it);
  void acquire(Shard& sh);
  void publish(Shard& sh, bool last);
  void run(Shard& sh, unsigned index, const ShardWorkFactory& make_work);
  void meter(Shard& sh, Batch& b);
  void fail(Shard& sh, std::exception_ptr e);
  void stop() noexcept;
  [[noreturn]] void rethrow_failure();

  FlowTableConfig cfg_;
  bool payload_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::uint32_t round_packets_ = 0;
  std::uint32_t round_limit_;
  std::uint64_t threads_;  // shards - 1
  std::uint64_t cut_;      // shard 0 meters the hashes whose high 32 bits are below this
  std::uint64_t now_ms_ = 0;
  std::uint64_t min_ms_ = UINT64_MAX;
  std::atomic<bool> failed_{false};
  std::atomic<bool> stopping_{false};
};

}  // namespace ipfixweb::engine

#include "sharded.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

double ShardedMeter::inline_share(unsigned shards) {
  if (shards <= 1) return 1.0;
  const double others = shards - 1;
  // Even: r + s = (1 - s) / others, with the metering of all flows as 1.
  return std::clamp((1.0 / others - kReaderCost) / (1.0 + 1.0 / others), 0.0, 1.0);
}

FlowTableConfig ShardedMeter::table_config(const FlowTableConfig& whole, unsigned shards,
                                           unsigned shard) {
  FlowTableConfig c = whole;
  const double s0 = inline_share(shards);
  const double share = shard == 0 ? s0 : (1.0 - s0) / (shards - 1);
  c.max_flows = std::max<std::size_t>(
      1, static_cast<std::size_t>(std::ceil(static_cast<double>(whole.max_flows) * share)));
  return c;
}

ShardedMeter::ShardedMeter(unsigned shards, const FlowTableConfig& cfg, ShardWorkFactory make_work,
                           bool payload)
    : cfg_(cfg),
      payload_(payload),
      round_limit_(kRoundPacketsPerShard * shards),
      threads_(shards - 1),
      cut_(static_cast<std::uint64_t>(inline_share(shards) * 4294967296.0)) {  // 1: all
  shards_.reserve(shards);
  for (unsigned i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
  // Shard 0, on this thread.
  shards_[0]->work = make_work(0);
  shards_[0]->table =
      std::make_unique<FlowTable>(table_config(cfg_, shards, 0), shards_[0]->work->sink());
  auto factory = std::make_shared<ShardWorkFactory>(std::move(make_work));
  try {
    for (unsigned i = 1; i < shards; ++i) {
      Shard& sh = *shards_[i];
      sh.ring.reset(new Batch[kRingSlots]);
      sh.thread = std::thread([this, &sh, i, factory] { run(sh, i, *factory); });
    }
  } catch (...) {  // std::system_error: no thread could be started
    stop();
    throw EngineError("cannot start the flow metering threads");
  }
}

ShardedMeter::~ShardedMeter() { stop(); }

void ShardedMeter::stop() noexcept {
  stopping_.store(true, std::memory_order_release);
  for (auto& sh : shards_) {
    if (!sh->thread.joinable()) continue;
    sh->tail.fetch_add(1, std::memory_order_release);  // wakes a shard waiting for a batch
    sh->tail.notify_all();
    sh->thread.join();
  }
}

std::size_t ShardedMeter::peak_flows() const {
  std::size_t n = 0;
  for (const auto& sh : shards_)
    if (sh->table) n += sh->table->peak_size();
  return n;
}

// ---- reader side ----------------------------------------------------------------------------

void ShardedMeter::acquire(Shard& sh) {
  const std::uint32_t t = sh.tail.load(std::memory_order_relaxed);
  if (t - sh.head.load(std::memory_order_acquire) >= kRingSlots) {
    // Full: wait until half of it is free, one wake-up per half ring rather than per batch
    // (the shard notifies from then on).
    for (;;) {
      if (failed_.load(std::memory_order_acquire)) rethrow_failure();
      const std::uint32_t h = sh.head.load(std::memory_order_acquire);
      if (t - h <= kRingSlots / 2) break;
      sh.head.wait(h, std::memory_order_acquire);
    }
  }
  Batch& b = sh.ring[t % kRingSlots];
  b.count = 0;
  b.arena_used = 0;
  b.last = false;
  sh.filling = &b;
}

void ShardedMeter::publish(Shard& sh, bool last) {
  Batch& b = *sh.filling;
  b.end_now_ms = now_ms_;
  b.last = last;
  sh.filling = nullptr;
  const std::uint32_t t = sh.tail.fetch_add(1, std::memory_order_release) + 1;
  // A shard that waits, waits for kWakeBatches (or the last one): a wake-up per few batches.
  // A stale head only makes this notify early.
  if (last || t - sh.head.load(std::memory_order_relaxed) >= kWakeBatches) sh.tail.notify_one();
}

void ShardedMeter::begin_round() {
  if (failed_.load(std::memory_order_relaxed)) rethrow_failure();
  for (std::size_t i = 1; i < shards_.size(); ++i) acquire(*shards_[i]);
}

void ShardedMeter::end_round() {
  for (std::size_t i = 1; i < shards_.size(); ++i) publish(*shards_[i], false);
  round_packets_ = 0;
  // Shard 0 moves to the clock as the others do at the end of their batches.
  move_clock(*shards_[0], now_ms_);
}

void ShardedMeter::push(unsigned s, const DecodedPacket& p, std::uint64_t ts_ms, std::uint64_t hash,
                        bool payload_stable) {
  Shard& sh = *shards_[s];
  const bool copy = payload_ && !payload_stable && p.l3 && p.l3_caplen;
  if (sh.filling->count == kBatchPackets ||
      (copy && sh.filling->arena_used + p.l3_caplen > sh.filling->arena_size &&
       sh.filling->count)) {
    end_round();
    begin_round();
  }
  Batch& b = *sh.filling;
  Item& it = b.items[b.count++];
  it.pkt = p;
  it.ts_ms = ts_ms;
  it.now_ms = now_ms_;
  it.hash = hash;
  if (copy) {
    copy_payload(s, it);
  } else if (!payload_) {
    it.pkt.l3 = nullptr;  // not read without DPI
  }
}

void ShardedMeter::copy_payload(unsigned s, Item& it) {
  Batch& b = *shards_[s]->filling;
  const std::size_t n = it.pkt.l3_caplen;
  if (b.arena_used + n > b.arena_size) {  // first use, or one packet larger than the arena
    b.arena_size = std::max(kArenaBytes, n);
    b.arena.reset(new std::uint8_t[b.arena_size]);
    b.arena_used = 0;
  }
  std::uint8_t* dst = b.arena.get() + b.arena_used;
  std::memcpy(dst, it.pkt.l3, n);
  b.arena_used += n;
  it.pkt.l3 = dst;
}

void ShardedMeter::finish() {
  if (round_packets_ == 0) begin_round();
  for (std::size_t i = 1; i < shards_.size(); ++i) publish(*shards_[i], true);
  round_packets_ = 0;
  // Shard 0 ends its flows while the threads end theirs.
  move_clock(*shards_[0], now_ms_);
  shards_[0]->table->flush(EndReason::kForcedEnd);
  for (auto& sh : shards_)
    if (sh->thread.joinable()) sh->thread.join();
  if (failed_.load(std::memory_order_acquire)) rethrow_failure();
}

void ShardedMeter::rethrow_failure() {
  stop();
  for (auto& sh : shards_) {
    if (!sh->error) continue;
    try {
      std::rethrow_exception(sh->error);
    } catch (const EngineError&) {
      throw;
    } catch (const std::exception& e) {
      throw EngineError(std::string("flow metering thread failed: ") + e.what());
    } catch (...) {
      throw EngineError("flow metering thread failed");
    }
  }
  throw EngineError("flow metering thread failed");
}

// ---- shard side -----------------------------------------------------------------------------

void ShardedMeter::run(Shard& sh, unsigned index, const ShardWorkFactory& make_work) {
  try {
    sh.work = make_work(index);
    sh.table = std::make_unique<FlowTable>(
        table_config(cfg_, static_cast<unsigned>(shards_.size()), index), sh.work->sink());
    for (std::uint32_t h = 0;; ++h) {
      if (sh.tail.load(std::memory_order_acquire) == h) {
        // Empty: wait for kWakeBatches, or for the last batch (the reader notifies then).
        for (;;) {
          if (stopping_.load(std::memory_order_acquire)) return;
          const std::uint32_t t = sh.tail.load(std::memory_order_acquire);
          if (t - h >= kWakeBatches || (t != h && sh.ring[(t - 1) % kRingSlots].last)) break;
          sh.tail.wait(t, std::memory_order_acquire);
        }
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      Batch& b = sh.ring[h % kRingSlots];
      meter(sh, b);
      const bool last = b.last;
      sh.head.store(h + 1, std::memory_order_release);
      // The reader waits on a full ring until half of it is free.
      if (sh.tail.load(std::memory_order_acquire) - (h + 1) <= kRingSlots / 2) sh.head.notify_one();
      if (last) break;
    }
    sh.table->flush(EndReason::kForcedEnd);
  } catch (...) {
    fail(sh, std::current_exception());
  }
}

void ShardedMeter::meter(Shard& sh, Batch& b) {
  FlowTable& table = *sh.table;
  ShardWork& work = *sh.work;
  for (std::uint32_t i = 0; i < b.count; ++i) {
    const Item& it = b.items[i];
    work.set_now(it.now_ms);
    table.advance(it.now_ms);
    const FlowTable::Hit hit = table.update(it.pkt, it.ts_ms, it.hash);
    work.on_packet(*hit.flow, it.pkt, it.ts_ms);
  }
  move_clock(sh, b.end_now_ms);
}

void ShardedMeter::fail(Shard& sh, std::exception_ptr e) {
  sh.error = std::move(e);
  failed_.store(true, std::memory_order_release);
  // Wakes the reader if it waits for room in this shard's ring; it then sees failed_.
  sh.head.fetch_add(1, std::memory_order_release);
  sh.head.notify_all();
}

}  // namespace ipfixweb::engine

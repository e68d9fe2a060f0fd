#include "flow_table.hpp"

#include <algorithm>
#include <cstring>

namespace ipfixweb::engine {
namespace {

inline std::uint64_t mix64(std::uint64_t x) {  // murmur3 finaliser
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline std::uint64_t endpoint_hash(const std::array<std::uint8_t, 16>& a, std::uint16_t port) {
  std::uint64_t w0;
  std::uint64_t w1;
  std::memcpy(&w0, a.data(), 8);
  std::memcpy(&w1, a.data() + 8, 8);
  return mix64(w0 * 0x9e3779b97f4a7c15ULL ^ mix64(w1 + port));
}

inline bool same_reversed(const FlowKey& a, const FlowKey& b) {
  return a.proto == b.proto && a.vlan == b.vlan && a.ip_version == b.ip_version &&
         a.sport == b.dport && a.dport == b.sport && a.src == b.dst && a.dst == b.src;
}

}  // namespace

std::uint64_t FlowTable::hash_key(const FlowKey& k) {
  // Symmetric in the two endpoints so both directions land on the same chain.
  const std::uint64_t e = endpoint_hash(k.src, k.sport) + endpoint_hash(k.dst, k.dport);
  return mix64(e ^ (std::uint64_t{k.proto} << 32) ^ (std::uint64_t{k.vlan} << 16) ^ k.ip_version);
}

FlowTable::FlowTable(const FlowTableConfig& cfg, FlowSink& sink) : cfg_(cfg), sink_(sink) {
  if (cfg_.max_flows == 0) cfg_.max_flows = 1;
  cfg_.tcp_close_grace_ms = std::min(cfg_.tcp_close_grace_ms, cfg_.idle_timeout_ms);
  slots_.assign(1024, 0);
  mask_ = slots_.size() - 1;
}

std::uint32_t FlowTable::find(const FlowKey& k, std::uint64_t h, bool& reverse) const {
  for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
    const std::uint32_t s = slots_[i];
    if (s == 0) return 0;
    const Flow& f = pool_[s - 1];
    if (f.hash != h) continue;
    if (f.key == k) {
      reverse = false;
      return s;
    }
    if (same_reversed(f.key, k)) {
      reverse = true;
      return s;
    }
  }
}

void FlowTable::index_insert(std::uint32_t idx) {
  if ((live_ + 1) * 2 > slots_.size()) grow_index();
  for (std::size_t i = pool_[idx].hash & mask_;; i = (i + 1) & mask_) {
    if (slots_[i] == 0) {
      slots_[i] = idx + 1;
      return;
    }
  }
}

void FlowTable::grow_index() {
  std::vector<std::uint32_t> old;
  old.swap(slots_);
  slots_.assign(old.size() * 2, 0);
  mask_ = slots_.size() - 1;
  for (std::uint32_t s : old) {
    if (s == 0) continue;
    for (std::size_t i = pool_[s - 1].hash & mask_;; i = (i + 1) & mask_) {
      if (slots_[i] == 0) {
        slots_[i] = s;
        break;
      }
    }
  }
}

void FlowTable::index_erase(std::uint32_t idx) {
  std::size_t i = pool_[idx].hash & mask_;
  while (slots_[i] != idx + 1) i = (i + 1) & mask_;
  // Backward-shift deletion keeps probe chains intact without tombstones.
  std::size_t j = i;
  for (;;) {
    j = (j + 1) & mask_;
    if (slots_[j] == 0) break;
    const std::size_t home = pool_[slots_[j] - 1].hash & mask_;
    const bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
    if (!between) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = 0;
}

void FlowTable::lru_unlink(std::uint32_t idx) {
  Flow& f = pool_[idx];
  if (f.lru_prev)
    pool_[f.lru_prev - 1].lru_next = f.lru_next;
  else
    lru_head_ = f.lru_next;
  if (f.lru_next)
    pool_[f.lru_next - 1].lru_prev = f.lru_prev;
  else
    lru_tail_ = f.lru_prev;
  f.lru_prev = f.lru_next = 0;
}

void FlowTable::lru_push_back(std::uint32_t idx) {
  Flow& f = pool_[idx];
  f.lru_prev = lru_tail_;
  f.lru_next = 0;
  if (lru_tail_)
    pool_[lru_tail_ - 1].lru_next = idx + 1;
  else
    lru_head_ = idx + 1;
  lru_tail_ = idx + 1;
}

std::uint32_t FlowTable::create(const FlowKey& k, std::uint64_t h) {
  if (live_ >= cfg_.max_flows && lru_head_) end_flow(lru_head_ - 1, EndReason::kLackOfResources);
  std::uint32_t idx;
  if (!free_.empty()) {
    idx = free_.back();
    free_.pop_back();
  } else {
    idx = static_cast<std::uint32_t>(pool_.size());
    pool_.emplace_back();
  }
  Flow& f = pool_[idx];
  const std::uint32_t gen = f.generation + 1;
  f = Flow{};
  f.generation = gen;
  f.key = k;
  f.hash = h;
  f.in_use = true;
  index_insert(idx);
  lru_push_back(idx);
  ++live_;
  peak_ = std::max(peak_, live_);
  return idx;
}

void FlowTable::end_flow(std::uint32_t idx, EndReason reason) {
  sink_.on_flow_end(pool_[idx], reason);
  index_erase(idx);
  lru_unlink(idx);
  Flow& f = pool_[idx];
  f.in_use = false;
  f.ndpi.reset();
  f.host.clear();
  f.host.shrink_to_fit();
  ++f.generation;
  free_.push_back(idx);
  --live_;
}

void FlowTable::expire(std::uint64_t now_ms) {
  while (!closing_.empty()) {
    const Closing& c = closing_.front();
    const Flow& f = pool_[c.idx];
    if (!f.in_use || f.generation != c.generation) {
      closing_.pop_front();
      continue;
    }
    if (c.deadline_ms >= now_ms) break;
    const std::uint32_t idx = c.idx;
    closing_.pop_front();
    end_flow(idx, EndReason::kEndOfFlow);
  }
  while (lru_head_) {
    const std::uint32_t idx = lru_head_ - 1;
    const Flow& f = pool_[idx];
    if (f.end_ms + cfg_.idle_timeout_ms >= now_ms) break;
    end_flow(idx, f.closing ? EndReason::kEndOfFlow : EndReason::kIdleTimeout);
  }
}

FlowTable::Hit FlowTable::update(const DecodedPacket& pkt, std::uint64_t ts_ms, std::uint64_t h) {
  advance(ts_ms);
  bool reverse = false;
  std::uint32_t slot = find(pkt.key, h, reverse);
  if (slot) {
    Flow& f = pool_[slot - 1];
    const bool syn_only = pkt.key.proto == 6 && (pkt.tcp_flags & 0x12) == 0x02;
    if (f.closing && syn_only) {
      end_flow(slot - 1, EndReason::kEndOfFlow);  // a new connection reuses the 5-tuple
      slot = 0;
    } else if (ts_ms > f.end_ms + cfg_.idle_timeout_ms) {
      end_flow(slot - 1, f.closing ? EndReason::kEndOfFlow : EndReason::kIdleTimeout);
      slot = 0;
    } else if (f.start_ms + cfg_.active_timeout_ms <= ts_ms) {
      sink_.on_flow_end(f, EndReason::kActiveTimeout);  // record ends, the flow goes on
      f.reset_counters();
    }
  }
  if (!slot) {
    slot = create(pkt.key, h) + 1;
    reverse = false;
  }
  const std::uint32_t idx = slot - 1;
  Flow& f = pool_[idx];
  const bool first_packet = f.fwd.packets + f.rev.packets == 0;
  DirectionStats& d = reverse ? f.rev : f.fwd;
  if (d.packets == 0) {
    d.first_ms = d.last_ms = ts_ms;
    d.icmp_type_code = pkt.icmp_type_code;
    d.tos = pkt.tos;
  }
  ++d.packets;
  d.octets += pkt.ip_octets;
  d.first_ms = std::min(d.first_ms, ts_ms);
  d.last_ms = std::max(d.last_ms, ts_ms);
  d.tcp_flags |= pkt.tcp_flags;
  if (first_packet) {
    f.start_ms = f.end_ms = ts_ms;
  } else {
    f.start_ms = std::min(f.start_ms, ts_ms);
    f.end_ms = std::max(f.end_ms, ts_ms);
  }
  f.tunnels |= pkt.tunnels;
  if (lru_tail_ != slot) {
    lru_unlink(idx);
    lru_push_back(idx);
  }
  if (pkt.key.proto == 6 && !f.closing) {
    if (pkt.tcp_flags & 0x01) (reverse ? f.fin_rev : f.fin_fwd) = true;
    if ((pkt.tcp_flags & 0x04) || (f.fin_fwd && f.fin_rev)) {
      f.closing = true;
      closing_.push_back({idx, f.generation, now_ms_ + cfg_.tcp_close_grace_ms});
    }
  }
  return {&f, reverse};
}

void FlowTable::flush(EndReason reason) {
  while (lru_head_) {
    const std::uint32_t idx = lru_head_ - 1;
    end_flow(idx, pool_[idx].closing ? EndReason::kEndOfFlow : reason);
  }
  closing_.clear();
}

// ---------------------------------------------------------------------------------------------

FragmentTracker::Key FragmentTracker::make_key(const DecodedPacket& p) {
  Key k{p.key, p.frag_id};
  k.flow.sport = k.flow.dport = 0;
  return k;
}

std::size_t FragmentTracker::KeyHash::operator()(const Key& k) const noexcept {
  return static_cast<std::size_t>(FlowTable::hash_key(k.flow) ^
                                  (std::uint64_t{k.id} * 0x9e3779b97f4a7c15ULL));
}

void FragmentTracker::remember(const DecodedPacket& p, std::uint64_t ts_ms) {
  if (map_.size() >= kPruneAt) prune(ts_ms);
  map_[make_key(p)] = Entry{{p.key.sport, p.key.dport}, ts_ms};
}

bool FragmentTracker::resolve(DecodedPacket& p, std::uint64_t ts_ms) {
  const auto it = map_.find(make_key(p));
  if (it == map_.end()) return false;
  p.key.sport = it->second.ports.sport;
  p.key.dport = it->second.ports.dport;
  it->second.ts_ms = std::max(it->second.ts_ms, ts_ms);
  return true;
}

void FragmentTracker::prune(std::uint64_t ts_ms) {
  std::erase_if(map_, [&](const auto& kv) { return kv.second.ts_ms + kLifetimeMs < ts_ms; });
  if (map_.size() >= kPruneAt) map_.clear();
}

}  // namespace ipfixweb::engine

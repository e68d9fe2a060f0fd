// Biflow table (RFC 5103): open-addressing hash index over a pool of flows, an intrusive LRU
// list ordered by last packet time for idle expiry and eviction, and a FIFO of TCP flows that
// saw FIN in both directions or RST. All timing is packet time (milliseconds since the epoch).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "decoder.hpp"
#include "ipfixweb/flows/writer.hpp"

struct ndpi_flow_struct;

namespace ipfixweb::engine {

// IANA flowEndReason values (IE 136).
enum class EndReason : std::uint8_t {
  kIdleTimeout = 1,
  kActiveTimeout = 2,
  kEndOfFlow = 3,
  kForcedEnd = 4,
  kLackOfResources = 5,
};

struct NdpiFlowDeleter {
  void operator()(ndpi_flow_struct* f) const noexcept;
};
using NdpiFlowPtr = std::unique_ptr<ndpi_flow_struct, NdpiFlowDeleter>;

struct DirectionStats {
  std::uint64_t packets = 0;
  std::uint64_t octets = 0;
  std::uint64_t first_ms = 0;
  std::uint64_t last_ms = 0;
  std::uint16_t tcp_flags = 0;
  std::uint16_t icmp_type_code = 0;  // of the first packet in this direction
  std::uint8_t tos = 0;              // of the first packet in this direction
};

struct Flow {
  FlowKey key;  // forward direction = first packet seen
  DirectionStats fwd;
  DirectionStats rev;
  std::uint64_t start_ms = 0;  // min over both directions
  std::uint64_t end_ms = 0;    // max over both directions
  std::uint64_t hash = 0;
  std::uint32_t lru_prev = 0;  // indices + 1; 0 = none
  std::uint32_t lru_next = 0;
  std::uint32_t generation = 0;
  bool fin_fwd = false;
  bool fin_rev = false;
  bool closing = false;  // FIN both ways or RST: ends after a short grace period
  bool in_use = false;
  std::uint8_t tunnels = 0;
  // DPI state (see dpi.hpp); the nDPI flow is freed as soon as classification ends.
  NdpiFlowPtr ndpi;
  std::uint16_t dpi_packets = 0;
  bool dpi_done = false;
  std::uint16_t master_proto = 0;
  std::uint16_t app_proto = 0;
  std::string host;                     // SNI / HTTP Host / DNS query as nDPI reports it
  std::array<std::uint8_t, 16> ja3c{};  // JA3 client MD5 (TLS/QUIC/DTLS), all zero when none
  bool has_ja3c = false;
  // nDPI flow risk (ndpi_risk bitmap) and its score (client + server, ndpi_risk2score), taken
  // when DPI ends, just before the nDPI flow is freed (see Dpi::finish).
  std::uint64_t risk = 0;
  std::uint16_t risk_score = 0;
  // The time buckets of this record's packets (only with a flow store).
  flows::RecordBuckets buckets;

  void reset_counters() {
    fwd = DirectionStats{};
    rev = DirectionStats{};
    start_ms = end_ms = 0;
    buckets.clear();
  }
};

class FlowSink {
 public:
  virtual ~FlowSink() = default;
  // Called once per finished flow record, before the flow is removed or reset.
  virtual void on_flow_end(Flow& flow, EndReason reason) = 0;
};

struct FlowTableConfig {
  std::uint64_t idle_timeout_ms = 300'000;
  std::uint64_t active_timeout_ms = 1'800'000;
  std::uint64_t tcp_close_grace_ms = 5'000;  // capped by idle_timeout_ms
  std::size_t max_flows = 1u << 20;
};

class FlowTable {
 public:
  FlowTable(const FlowTableConfig& cfg, FlowSink& sink);
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  struct Hit {
    Flow* flow;
    bool reverse;  // packet goes in the flow's reverse direction
  };
  // Accounts one packet. `ts_ms` is its capture time. Expires idle flows first.
  Hit update(const DecodedPacket& pkt, std::uint64_t ts_ms) {
    return update(pkt, ts_ms, hash_key(pkt.key));
  }
  // The same with hash_key(pkt.key) already computed.
  Hit update(const DecodedPacket& pkt, std::uint64_t ts_ms, std::uint64_t hash);
  // Moves the table's clock to `now_ms` (packet time of a packet metered elsewhere: the other
  // shards of a threaded conversion) and expires what is due then, as update() would.
  void advance(std::uint64_t now_ms) {
    if (now_ms > now_ms_) {
      now_ms_ = now_ms;
      expire(now_ms_);
    }
  }
  // Exports every flow still in the table with `reason` (end of input = kForcedEnd).
  void flush(EndReason reason);
  std::size_t size() const { return live_; }
  std::size_t peak_size() const { return peak_; }
  std::uint64_t now_ms() const { return now_ms_; }

  static std::uint64_t hash_key(const FlowKey& k);

 private:
  void expire(std::uint64_t now_ms);
  std::uint32_t find(const FlowKey& k, std::uint64_t h, bool& reverse) const;
  std::uint32_t create(const FlowKey& k, std::uint64_t h);
  void end_flow(std::uint32_t idx, EndReason reason);  // sink + remove
  void index_insert(std::uint32_t idx);
  void index_erase(std::uint32_t idx);
  void grow_index();
  void lru_unlink(std::uint32_t idx);
  void lru_push_back(std::uint32_t idx);

  FlowTableConfig cfg_;
  FlowSink& sink_;
  std::vector<Flow> pool_;
  std::vector<std::uint32_t> free_;
  std::vector<std::uint32_t> slots_;  // flow index + 1, 0 = empty
  std::size_t mask_ = 0;
  std::size_t live_ = 0;
  std::size_t peak_ = 0;
  std::uint32_t lru_head_ = 0;  // index + 1
  std::uint32_t lru_tail_ = 0;
  struct Closing {
    std::uint32_t idx;
    std::uint32_t generation;
    std::uint64_t deadline_ms;
  };
  std::deque<Closing> closing_;
  std::uint64_t now_ms_ = 0;
};

// Remembers the ports of first fragments so later fragments join the same flow.
class FragmentTracker {
 public:
  struct Ports {
    std::uint16_t sport;
    std::uint16_t dport;
  };
  void remember(const DecodedPacket& p, std::uint64_t ts_ms);
  // Fills the ports of a non-first fragment; false when its first fragment was not seen.
  bool resolve(DecodedPacket& p, std::uint64_t ts_ms);

 private:
  struct Key {
    FlowKey flow;  // ports zero
    std::uint32_t id;
    bool operator==(const Key& o) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept;
  };
  struct Entry {
    Ports ports;
    std::uint64_t ts_ms;
  };
  static Key make_key(const DecodedPacket& p);
  void prune(std::uint64_t ts_ms);
  std::unordered_map<Key, Entry, KeyHash> map_;
  static constexpr std::uint64_t kLifetimeMs = 30'000;
  static constexpr std::size_t kPruneAt = 8192;
};

}  // namespace ipfixweb::engine

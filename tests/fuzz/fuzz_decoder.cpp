// libFuzzer target for the packet decoder and the flow-key handling behind it
// (decode_packet -> FragmentTracker -> FlowTable), built and run by scripts/fuzz.
//
// Input format: byte 0 selects the link type (low 4 bits index kDlts) and options (bit 7: no
// tunnel decapsulation, bit 6: Teredo decapsulation, bit 5: frames were cut by a snaplen, their
// wire length is 1000 bytes more); then frames, each as a 2-byte little-endian
// length followed by that many bytes (the last frame takes what is left). Every frame is copied
// into its own exactly-sized heap buffer so AddressSanitizer sees any read past its end.
//
// tests/fuzz/make_seeds.cpp turns captures into such inputs (`fuzz_seeds decoder OUTDIR FILE...`).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "decoder.hpp"
#include "flow_table.hpp"
#include "fuzz_decoder_dlts.hpp"

namespace ipfixweb::engine {
// The fuzz build has no nDPI: flows never own an nDPI state, so the deleter is never called.
void NdpiFlowDeleter::operator()(ndpi_flow_struct*) const noexcept { __builtin_trap(); }
}  // namespace ipfixweb::engine

namespace {

using namespace ipfixweb::engine;

// Checks that every finished flow is consistent with what was fed.
class CheckingSink final : public FlowSink {
 public:
  void on_flow_end(Flow& f, EndReason reason) override {
    const auto r = static_cast<int>(reason);
    if (r < 1 || r > 5) __builtin_trap();
    if (f.fwd.packets + f.rev.packets == 0) __builtin_trap();  // no empty records
    if (f.start_ms > f.end_ms) __builtin_trap();
    if (f.key.ip_version != 4 && f.key.ip_version != 6) __builtin_trap();
    packets += f.fwd.packets + f.rev.packets;
    octets += f.fwd.octets + f.rev.octets;
  }
  std::uint64_t packets = 0;
  std::uint64_t octets = 0;
};

void check_decoded(const DecodedPacket& p, const std::uint8_t* frame, std::size_t len) {
  if (p.key.ip_version != 4 && p.key.ip_version != 6) __builtin_trap();
  if (p.l3 < frame || p.l3 > frame + len) __builtin_trap();
  if (p.l3_caplen > static_cast<std::size_t>(frame + len - p.l3)) __builtin_trap();
  if (p.key.ip_version == 4) {
    for (std::size_t i = 4; i < 16; ++i) {
      if (p.key.src[i] || p.key.dst[i]) __builtin_trap();  // IPv4 keys use the first 4 bytes only
    }
  }
  if (p.fragment && !p.first_fragment && (p.key.sport || p.key.dport)) __builtin_trap();
  if (p.tcp_flags > 0x1ff) __builtin_trap();
  // Touch the metered bytes as nDPI would.
  volatile std::uint8_t sink = 0;
  for (std::uint32_t i = 0; i < p.l3_caplen; ++i) sink = static_cast<std::uint8_t>(sink ^ p.l3[i]);
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t ctl = data[0];
  const int dlt = fuzz::kDlts[(ctl & 0x0f) % fuzz::kDltCount];
  DecodeOptions opts;
  opts.decapsulate_tunnels = (ctl & 0x80) == 0;
  opts.decapsulate_teredo = (ctl & 0x40) != 0;

  FlowTableConfig cfg;
  cfg.idle_timeout_ms = 1000;
  cfg.active_timeout_ms = 3000;
  cfg.max_flows = 4;  // small, so eviction runs
  CheckingSink sink;
  std::uint64_t fed_packets = 0;
  std::uint64_t fed_octets = 0;
  {
    FlowTable table(cfg, sink);
    FragmentTracker fragments;
    std::size_t pos = 1;
    std::uint64_t ts_ms = 1'000'000;
    while (pos < size) {
      std::size_t len = size - pos;
      if (len >= 2) {
        const std::size_t want = data[pos] | (std::size_t{data[pos + 1]} << 8);
        pos += 2;
        len = std::min(want, size - pos);
      } else {
        pos += len;
        len = 0;
      }
      std::vector<std::uint8_t> frame(data + pos, data + pos + len);
      pos += len;
      ts_ms += 700;  // some frames expire others (idle 1 s), some hit the active timeout
      DecodedPacket p;
      const auto caplen = static_cast<std::uint32_t>(frame.size());
      const std::uint32_t wirelen = (ctl & 0x20) ? caplen + 1000 : caplen;
      if (decode_packet(dlt, frame.data(), caplen, opts, p, wirelen) != DecodeStatus::kOk) {
        continue;
      }
      check_decoded(p, frame.data(), frame.size());
      if (p.fragment) {
        if (p.first_fragment) {
          fragments.remember(p, ts_ms);
        } else {
          fragments.resolve(p, ts_ms);
        }
      }
      const FlowTable::Hit hit = table.update(p, ts_ms);
      if (!hit.flow || !hit.flow->in_use) __builtin_trap();
      if (table.size() > cfg.max_flows) __builtin_trap();
      ++fed_packets;
      fed_octets += p.ip_octets;
    }
    table.flush(EndReason::kForcedEnd);
    if (table.size() != 0) __builtin_trap();
  }
  // Every metered packet ends up in exactly one record.
  if (sink.packets != fed_packets || sink.octets != fed_octets) __builtin_trap();
  return 0;
}

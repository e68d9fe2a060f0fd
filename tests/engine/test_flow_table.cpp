// Flow table unit tests: biflow merge, timeouts (packet time), TCP end, eviction, flush.
#include <gtest/gtest.h>

#include "decoder.hpp"
#include "flow_table.hpp"
#include "pcap_writer.hpp"

namespace ipfixweb::engine {
namespace {

struct Ended {
  FlowKey key;
  EndReason reason;
  std::uint64_t fwd_packets, rev_packets, fwd_octets, rev_octets, start_ms, end_ms;
  std::uint16_t fwd_flags, rev_flags;
};

class RecordingSink : public FlowSink {
 public:
  void on_flow_end(Flow& f, EndReason r) override {
    ended.push_back({f.key, r, f.fwd.packets, f.rev.packets, f.fwd.octets, f.rev.octets, f.start_ms,
                     f.end_ms, f.fwd.tcp_flags, f.rev.tcp_flags});
  }
  std::vector<Ended> ended;
};

DecodedPacket tcp_pkt(const std::string& s, std::uint16_t sp, const std::string& d,
                      std::uint16_t dp, std::uint8_t flags, std::size_t payload = 0) {
  const test::Bytes ip = test::ipv4(s, d, 6, test::tcp(sp, dp, flags, payload));
  DecodedPacket p;
  EXPECT_EQ(decode_packet(kDltRaw, ip.data(), static_cast<std::uint32_t>(ip.size()), {}, p),
            DecodeStatus::kOk);
  return p;
}

DecodedPacket udp_pkt(const std::string& s, std::uint16_t sp, const std::string& d,
                      std::uint16_t dp, std::size_t payload = 0) {
  const test::Bytes ip = test::ipv4(s, d, 17, test::udp(sp, dp, payload));
  DecodedPacket p;
  EXPECT_EQ(decode_packet(kDltRaw, ip.data(), static_cast<std::uint32_t>(ip.size()), {}, p),
            DecodeStatus::kOk);
  return p;
}

FlowTableConfig cfg(std::uint64_t idle_ms = 10'000, std::uint64_t active_ms = 60'000,
                    std::size_t max_flows = 1000) {
  FlowTableConfig c;
  c.idle_timeout_ms = idle_ms;
  c.active_timeout_ms = active_ms;
  c.max_flows = max_flows;
  c.tcp_close_grace_ms = 2'000;
  return c;
}

TEST(FlowTable, BothDirectionsMergeIntoOneBiflow) {
  RecordingSink sink;
  FlowTable t(cfg(), sink);
  const auto a = t.update(tcp_pkt("10.0.0.1", 1000, "10.0.0.2", 80, 0x02), 1000);
  EXPECT_FALSE(a.reverse);
  const auto b = t.update(tcp_pkt("10.0.0.2", 80, "10.0.0.1", 1000, 0x12), 1001);
  EXPECT_TRUE(b.reverse);
  t.update(tcp_pkt("10.0.0.1", 1000, "10.0.0.2", 80, 0x10, 100), 1002);
  EXPECT_EQ(t.size(), 1u);
  t.flush(EndReason::kForcedEnd);
  ASSERT_EQ(sink.ended.size(), 1u);
  const Ended& e = sink.ended[0];
  EXPECT_EQ(e.reason, EndReason::kForcedEnd);
  EXPECT_EQ(e.key.sport, 1000);
  EXPECT_EQ(e.fwd_packets, 2u);
  EXPECT_EQ(e.rev_packets, 1u);
  EXPECT_EQ(e.fwd_octets, 40u + 140u);
  EXPECT_EQ(e.rev_octets, 40u);
  EXPECT_EQ(e.fwd_flags, 0x12);  // SYN | ACK
  EXPECT_EQ(e.rev_flags, 0x12);
  EXPECT_EQ(e.start_ms, 1000u);
  EXPECT_EQ(e.end_ms, 1002u);
}

TEST(FlowTable, IdleTimeoutSplitsByPacketTime) {
  RecordingSink sink;
  FlowTable t(cfg(10'000), sink);
  t.update(udp_pkt("10.0.0.1", 5000, "10.0.0.2", 53), 0 + 1'000'000);
  t.update(udp_pkt("10.0.0.2", 53, "10.0.0.1", 5000), 5'000 + 1'000'000);
  // 10 s after the last packet is still within the timeout (strictly greater expires).
  t.update(udp_pkt("10.0.0.1", 5000, "10.0.0.2", 53), 15'000 + 1'000'000);
  EXPECT_TRUE(sink.ended.empty());
  t.update(udp_pkt("10.0.0.1", 5000, "10.0.0.2", 53), 25'001 + 1'000'000);
  ASSERT_EQ(sink.ended.size(), 1u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kIdleTimeout);
  EXPECT_EQ(sink.ended[0].fwd_packets + sink.ended[0].rev_packets, 3u);
  // Another flow expires while unrelated packets arrive.
  t.update(udp_pkt("10.9.9.9", 1, "10.8.8.8", 2), 26'000 + 1'000'000);
  t.update(udp_pkt("10.7.7.7", 1, "10.8.8.8", 2), 40'000 + 1'000'000);
  ASSERT_EQ(sink.ended.size(), 3u);
  EXPECT_EQ(sink.ended[1].reason, EndReason::kIdleTimeout);
  EXPECT_EQ(sink.ended[2].reason, EndReason::kIdleTimeout);
  EXPECT_EQ(t.size(), 1u);
}

TEST(FlowTable, ActiveTimeoutCutsLongFlows) {
  RecordingSink sink;
  FlowTable t(cfg(10'000, 30'000), sink);
  for (std::uint64_t s = 0; s <= 70; s += 5) {
    t.update(udp_pkt("10.0.0.1", 9, "10.0.0.2", 9), 1'000'000 + s * 1000);
  }
  t.flush(EndReason::kForcedEnd);
  // Records: [0,25] [30,55] [60,70] (each record covers < 30 s of packets).
  ASSERT_EQ(sink.ended.size(), 3u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kActiveTimeout);
  EXPECT_EQ(sink.ended[0].fwd_packets, 6u);
  EXPECT_EQ(sink.ended[1].reason, EndReason::kActiveTimeout);
  EXPECT_EQ(sink.ended[1].start_ms, 1'030'000u);
  EXPECT_EQ(sink.ended[2].reason, EndReason::kForcedEnd);
  EXPECT_EQ(sink.ended[2].fwd_packets, 3u);
}

TEST(FlowTable, FinBothWaysEndsFlowAfterGraceAndKeepsLastAck) {
  RecordingSink sink;
  FlowTable t(cfg(), sink);
  const std::string c = "192.168.1.1";
  const std::string s = "192.168.1.2";
  t.update(tcp_pkt(c, 4000, s, 80, 0x02), 1000);
  t.update(tcp_pkt(s, 80, c, 4000, 0x12), 1010);
  t.update(tcp_pkt(c, 4000, s, 80, 0x11), 1020);  // FIN
  t.update(tcp_pkt(s, 80, c, 4000, 0x11), 1030);  // FIN
  t.update(tcp_pkt(c, 4000, s, 80, 0x10), 1040);  // last ACK: same flow
  EXPECT_TRUE(sink.ended.empty());
  t.update(udp_pkt("1.1.1.1", 1, "2.2.2.2", 2), 5000);  // time passes beyond the grace period
  ASSERT_EQ(sink.ended.size(), 1u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kEndOfFlow);
  EXPECT_EQ(sink.ended[0].fwd_packets, 3u);
  EXPECT_EQ(sink.ended[0].rev_packets, 2u);
}

TEST(FlowTable, RstAndPortReuse) {
  RecordingSink sink;
  FlowTable t(cfg(), sink);
  t.update(tcp_pkt("10.0.0.1", 1, "10.0.0.2", 2, 0x02), 1000);
  t.update(tcp_pkt("10.0.0.2", 2, "10.0.0.1", 1, 0x14), 1001);  // RST ACK
  t.update(tcp_pkt("10.0.0.1", 1, "10.0.0.2", 2, 0x02), 1100);  // new SYN on the same tuple
  ASSERT_EQ(sink.ended.size(), 1u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kEndOfFlow);
  EXPECT_EQ(sink.ended[0].fwd_packets + sink.ended[0].rev_packets, 2u);
  t.flush(EndReason::kForcedEnd);
  ASSERT_EQ(sink.ended.size(), 2u);
  EXPECT_EQ(sink.ended[1].reason, EndReason::kForcedEnd);
  EXPECT_EQ(sink.ended[1].fwd_packets, 1u);
}

TEST(FlowTable, ClosedFlowAtEndOfInputReportsEndOfFlow) {
  RecordingSink sink;
  FlowTable t(cfg(), sink);
  t.update(tcp_pkt("10.0.0.1", 1, "10.0.0.2", 2, 0x04), 1000);
  t.flush(EndReason::kForcedEnd);
  ASSERT_EQ(sink.ended.size(), 1u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kEndOfFlow);
}

TEST(FlowTable, EvictsLeastRecentlySeenWhenFull) {
  RecordingSink sink;
  FlowTable t(cfg(1'000'000, 10'000'000, 3), sink);
  t.update(udp_pkt("10.0.0.1", 1, "10.0.0.9", 9), 1000);
  t.update(udp_pkt("10.0.0.2", 1, "10.0.0.9", 9), 1001);
  t.update(udp_pkt("10.0.0.3", 1, "10.0.0.9", 9), 1002);
  t.update(udp_pkt("10.0.0.1", 1, "10.0.0.9", 9), 1003);  // refresh flow 1
  t.update(udp_pkt("10.0.0.4", 1, "10.0.0.9", 9), 1004);  // evicts flow 2
  ASSERT_EQ(sink.ended.size(), 1u);
  EXPECT_EQ(sink.ended[0].reason, EndReason::kLackOfResources);
  EXPECT_EQ(sink.ended[0].key.src, test::addr("10.0.0.2"));
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.peak_size(), 3u);
}

TEST(FlowTable, VlanSeparatesFlows) {
  RecordingSink sink;
  FlowTable t(cfg(), sink);
  DecodedPacket a = udp_pkt("10.0.0.1", 1, "10.0.0.2", 2);
  DecodedPacket b = a;
  b.key.vlan = 7;
  t.update(a, 1000);
  t.update(b, 1000);
  EXPECT_EQ(t.size(), 2u);
}

TEST(FlowTable, ManyFlowsSurviveIndexGrowthAndDeletion) {
  RecordingSink sink;
  FlowTable t(cfg(1000, 1'000'000, 100'000), sink);
  for (std::uint32_t i = 0; i < 20000; ++i) {
    const std::string src = "10." + std::to_string((i >> 16) & 255) + "." +
                            std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
    t.update(udp_pkt(src, static_cast<std::uint16_t>(i), "10.255.0.1", 53), 10'000 + i / 10);
    // Every flow gets a reply so lookups must find it in the reverse direction.
    const auto hit =
        t.update(udp_pkt("10.255.0.1", 53, src, static_cast<std::uint16_t>(i)), 10'000 + i / 10);
    ASSERT_TRUE(hit.reverse) << i;
  }
  t.flush(EndReason::kForcedEnd);
  std::uint64_t pkts = 0;
  for (const auto& e : sink.ended) {
    pkts += e.fwd_packets + e.rev_packets;
    EXPECT_EQ(e.fwd_packets, 1u);
    EXPECT_EQ(e.rev_packets, 1u);
  }
  EXPECT_EQ(sink.ended.size(), 20000u);
  EXPECT_EQ(pkts, 40000u);
}

TEST(FragmentTracker, LaterFragmentsGetTheFirstFragmentsPorts) {
  FragmentTracker ft;
  const test::Bytes first =
      test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1111, 2222, 32), 0, 5, 0, true);
  const test::Bytes second = test::ipv4("10.0.0.1", "10.0.0.2", 17, test::Bytes(64, 'z'), 0, 5, 5);
  const test::Bytes other = test::ipv4("10.0.0.1", "10.0.0.2", 17, test::Bytes(64, 'z'), 0, 6, 5);
  DecodedPacket a;
  DecodedPacket b;
  DecodedPacket c;
  decode_packet(kDltRaw, first.data(), static_cast<std::uint32_t>(first.size()), {}, a);
  decode_packet(kDltRaw, second.data(), static_cast<std::uint32_t>(second.size()), {}, b);
  decode_packet(kDltRaw, other.data(), static_cast<std::uint32_t>(other.size()), {}, c);
  ft.remember(a, 1000);
  EXPECT_TRUE(ft.resolve(b, 1001));
  EXPECT_EQ(b.key.sport, 1111);
  EXPECT_EQ(b.key.dport, 2222);
  EXPECT_FALSE(ft.resolve(c, 1001));
}

}  // namespace
}  // namespace ipfixweb::engine

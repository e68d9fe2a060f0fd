// Decoder unit tests on packets built in the test.
#include <gtest/gtest.h>

#include "decoder.hpp"
#include "pcap_writer.hpp"

namespace ipfixweb::engine {
namespace {

using test::Bytes;

DecodedPacket decode_ok(int dlt, const Bytes& frame, std::uint32_t caplen = UINT32_MAX) {
  DecodedPacket p;
  const auto len = std::min<std::uint32_t>(caplen, static_cast<std::uint32_t>(frame.size()));
  // The wire length is the whole frame: a shorter `caplen` is a snaplen cut.
  const DecodeStatus s = decode_packet(dlt, frame.data(), len, DecodeOptions{}, p,
                                       static_cast<std::uint32_t>(frame.size()));
  EXPECT_EQ(s, DecodeStatus::kOk) << decode_status_name(s);
  return p;
}

DecodeStatus status(int dlt, const Bytes& frame, std::uint32_t caplen = UINT32_MAX) {
  DecodedPacket p;
  const auto len = std::min<std::uint32_t>(caplen, static_cast<std::uint32_t>(frame.size()));
  return decode_packet(dlt, frame.data(), len, DecodeOptions{}, p,
                       static_cast<std::uint32_t>(frame.size()));
}

TEST(Decoder, EthernetIpv4Tcp) {
  const Bytes ip = test::ipv4("10.0.0.1", "10.0.0.2", 6, test::tcp(1234, 80, 0x02, 10), 0x10);
  const DecodedPacket p = decode_ok(kDltEthernet, test::ether4(ip));
  EXPECT_EQ(p.key.ip_version, 4);
  EXPECT_EQ(p.key.proto, 6);
  EXPECT_EQ(p.key.src, test::addr("10.0.0.1"));
  EXPECT_EQ(p.key.dst, test::addr("10.0.0.2"));
  EXPECT_EQ(p.key.sport, 1234);
  EXPECT_EQ(p.key.dport, 80);
  EXPECT_EQ(p.tcp_flags, 0x02);
  EXPECT_EQ(p.tos, 0x10);
  EXPECT_EQ(p.ip_octets, 20u + 20u + 10u);
  EXPECT_EQ(p.key.vlan, 0);
}

TEST(Decoder, EthernetTrailerNotCounted) {
  Bytes frame = test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1, 2, 2)));
  frame.resize(60, 0);  // minimum frame size padding
  const DecodedPacket p = decode_ok(kDltEthernet, frame);
  EXPECT_EQ(p.ip_octets, 30u);
}

TEST(Decoder, QinQUsesOuterVlan) {
  const Bytes ip = test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(53, 5353, 4));
  const DecodedPacket p = decode_ok(kDltEthernet, test::ether4(ip, {100, 200}));
  EXPECT_EQ(p.key.vlan, 100);
  EXPECT_EQ(p.key.dport, 5353);
  const DecodedPacket q = decode_ok(kDltEthernet, test::ether4(ip, {0x2000 | 42}));  // PCP bits
  EXPECT_EQ(q.key.vlan, 42);
}

TEST(Decoder, Ipv6WithExtensionHeaders) {
  // Hop-by-hop (8 bytes) then destination options (8 bytes) then UDP.
  Bytes ext = {60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0};
  const Bytes ip = test::ipv6("2001:db8::1", "2001:db8::2", 17, test::udp(1000, 53, 12), ext, 0);
  const DecodedPacket p = decode_ok(kDltEthernet, test::ether6(ip));
  EXPECT_EQ(p.key.ip_version, 6);
  EXPECT_EQ(p.key.proto, 17);
  EXPECT_EQ(p.key.sport, 1000);
  EXPECT_EQ(p.key.dport, 53);
  EXPECT_EQ(p.ip_octets, 40u + 16u + 20u);
  EXPECT_EQ(format_address(p.key.src, 6), "2001:db8::1");
}

TEST(Decoder, Icmpv6TypeCode) {
  const Bytes ip = test::ipv6("fe80::1", "ff02::1", 58, test::icmp(135, 0, 20));
  const DecodedPacket p = decode_ok(kDltEthernet, test::ether6(ip));
  EXPECT_EQ(p.key.proto, 58);
  EXPECT_EQ(p.icmp_type_code, 135 << 8);
  EXPECT_EQ(p.key.sport, 0);
  EXPECT_EQ(p.key.dport, 0);
}

TEST(Decoder, OtherLinkTypes) {
  const Bytes ip = test::ipv4("192.0.2.1", "192.0.2.2", 6, test::tcp(5, 6, 0x10));
  Bytes sll(16, 0);
  sll[14] = 0x08;
  EXPECT_EQ(decode_ok(kDltLinuxSll, test::concat(sll, ip)).key.sport, 5);
  Bytes sll2(20, 0);
  sll2[0] = 0x08;
  EXPECT_EQ(decode_ok(kDltLinuxSll2, test::concat(sll2, ip)).key.sport, 5);
  EXPECT_EQ(decode_ok(kDltRaw, ip).key.sport, 5);
  EXPECT_EQ(decode_ok(kDltIpv4, ip).key.sport, 5);
  const Bytes null_le = {2, 0, 0, 0};
  EXPECT_EQ(decode_ok(kDltNull, test::concat(null_le, ip)).key.sport, 5);
  const Bytes loop_be = {0, 0, 0, 2};
  EXPECT_EQ(decode_ok(kDltLoop, test::concat(loop_be, ip)).key.sport, 5);
  const Bytes ip6 = test::ipv6("::1", "::2", 17, test::udp(7, 8));
  const Bytes null6 = {30, 0, 0, 0};  // AF_INET6 on macOS
  EXPECT_EQ(decode_ok(kDltNull, test::concat(null6, ip6)).key.sport, 7);
  EXPECT_EQ(decode_ok(kDltIpv6, ip6).key.sport, 7);
  const Bytes ppp = {0xff, 0x03, 0x00, 0x21};
  EXPECT_EQ(decode_ok(kDltPpp, test::concat(ppp, ip)).key.sport, 5);
  const Bytes chdlc = {0x0f, 0x00, 0x08, 0x00};
  EXPECT_EQ(decode_ok(kDltCiscoHdlc, test::concat(chdlc, ip)).key.sport, 5);
  EXPECT_FALSE(link_type_supported(105));  // 802.11
}

TEST(Decoder, TruncatedSnaplenKeepsIpTotalLength) {
  const Bytes ip = test::ipv4("10.0.0.1", "10.0.0.2", 6, test::tcp(1, 2, 0x18, 1400));
  const Bytes frame = test::ether4(ip);
  const DecodedPacket p = decode_ok(kDltEthernet, frame, 14 + 20 + 20 + 10);
  EXPECT_EQ(p.ip_octets, 1440u);
  EXPECT_EQ(p.tcp_flags, 0x18);
  // Cut inside the TCP ports: no flow key.
  EXPECT_EQ(status(kDltEthernet, frame, 14 + 20 + 2), DecodeStatus::kTruncated);
  // Cut inside the IP header.
  EXPECT_EQ(status(kDltEthernet, frame, 14 + 10), DecodeStatus::kTruncated);
}

// An IP total length longer than the frame on the wire is a lie (tshark: "IPv4 total length
// exceeds packet length"); a snaplen cut (captured < wire length) is not.
TEST(Decoder, IpLengthBeyondWireLengthIsMalformed) {
  const Bytes f4 = test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(53, 5353, 200)));
  Bytes lie4 = f4;
  lie4[14 + 2] = 0x05;  // total length 1500 + 220 bytes
  lie4[14 + 3] = 0xdc;
  DecodedPacket p;
  const auto n4 = static_cast<std::uint32_t>(f4.size());
  EXPECT_EQ(decode_packet(kDltEthernet, lie4.data(), n4, DecodeOptions{}, p, n4),
            DecodeStatus::kMalformed);
  EXPECT_EQ(decode_packet(kDltEthernet, lie4.data(), n4, DecodeOptions{}, p),
            DecodeStatus::kMalformed);
  // Cut by the snaplen at 60 bytes out of 1514 on the wire: metered with the header's length.
  EXPECT_EQ(decode_packet(kDltEthernet, lie4.data(), 60, DecodeOptions{}, p, 1514),
            DecodeStatus::kOk);
  EXPECT_EQ(p.ip_octets, 1500u);
  // Cut at 60 of 300 on the wire: still longer than the wire -> malformed.
  EXPECT_EQ(decode_packet(kDltEthernet, lie4.data(), 60, DecodeOptions{}, p, 300),
            DecodeStatus::kMalformed);
  Bytes lie6 = test::ether6(test::ipv6("2001:db8::1", "2001:db8::2", 17, test::udp(1, 2, 100)));
  lie6[14 + 4] = 0x04;  // payload length 1024
  lie6[14 + 5] = 0x00;
  const auto n6 = static_cast<std::uint32_t>(lie6.size());
  EXPECT_EQ(decode_packet(kDltEthernet, lie6.data(), n6, DecodeOptions{}, p, n6),
            DecodeStatus::kMalformed);
  EXPECT_EQ(decode_packet(kDltEthernet, lie6.data(), n6, DecodeOptions{}, p, n6 + 1000),
            DecodeStatus::kOk);
  EXPECT_EQ(p.ip_octets, 40u + 1024u);
}

TEST(Decoder, NonIpAndMalformed) {
  const Bytes arp = test::ether(Bytes(28, 0), 0x0806);
  EXPECT_EQ(status(kDltEthernet, arp), DecodeStatus::kNonIp);
  Bytes bad = test::ipv4("10.0.0.1", "10.0.0.2", 6, test::tcp(1, 2, 0));
  bad[0] = 0x43;  // IHL 3
  EXPECT_EQ(status(kDltRaw, bad), DecodeStatus::kMalformed);
  EXPECT_EQ(status(kDltEthernet, test::ether(bad, 0x0800)), DecodeStatus::kMalformed);
}

TEST(Decoder, Ipv4Fragments) {
  const Bytes first =
      test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1111, 2222, 32), 0, 77, 0, true);
  const DecodedPacket f = decode_ok(kDltRaw, first);
  EXPECT_TRUE(f.fragment);
  EXPECT_TRUE(f.first_fragment);
  EXPECT_EQ(f.frag_id, 77u);
  EXPECT_EQ(f.key.sport, 1111);
  const Bytes second = test::ipv4("10.0.0.1", "10.0.0.2", 17, Bytes(100, 'z'), 0, 77, 5, false);
  const DecodedPacket s = decode_ok(kDltRaw, second);
  EXPECT_TRUE(s.fragment);
  EXPECT_FALSE(s.first_fragment);
  EXPECT_EQ(s.key.proto, 17);
  EXPECT_EQ(s.key.sport, 0);
  EXPECT_EQ(s.ip_octets, 120u);
}

TEST(Decoder, Ipv6FragmentHeader) {
  // Fragment header: next=UDP, offset 0, M=1, id 0x01020304.
  const Bytes fh = {17, 0, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04};
  const Bytes ip = test::ipv6("2001:db8::1", "2001:db8::2", 17, test::udp(9, 10, 40), fh, 44);
  const DecodedPacket p = decode_ok(kDltIpv6, ip);
  EXPECT_TRUE(p.fragment && p.first_fragment);
  EXPECT_EQ(p.frag_id, 0x01020304u);
  EXPECT_EQ(p.key.dport, 10);
}

TEST(Decoder, IpInIpAndGreAndVxlanDecapsulated) {
  const Bytes inner = test::ipv4("172.16.0.1", "172.16.0.2", 6, test::tcp(4000, 443, 0x02, 5));
  // IPv4 in IPv4
  const DecodedPacket a =
      decode_ok(kDltEthernet, test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 4, inner)));
  EXPECT_EQ(a.key.src, test::addr("172.16.0.1"));
  EXPECT_EQ(a.ip_octets, inner.size());
  EXPECT_TRUE(a.tunnels & kTunnelIpInIp);
  // 6in4
  const Bytes inner6 = test::ipv6("2001:db8::a", "2001:db8::b", 17, test::udp(5, 53, 10));
  const DecodedPacket b =
      decode_ok(kDltEthernet, test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 41, inner6)));
  EXPECT_EQ(b.key.ip_version, 6);
  EXPECT_EQ(b.key.dport, 53);
  // GRE (no options) carrying IPv4
  const Bytes gre = test::concat(Bytes{0, 0, 0x08, 0x00}, inner);
  const DecodedPacket c =
      decode_ok(kDltEthernet, test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 47, gre)));
  EXPECT_EQ(c.key.dport, 443);
  EXPECT_TRUE(c.tunnels & kTunnelGre);
  // VXLAN carrying Ethernet/IPv4
  const Bytes vx = test::concat(Bytes{0x08, 0, 0, 0, 0, 0, 1, 0}, test::ether4(inner));
  const DecodedPacket d = decode_ok(
      kDltEthernet, test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 17, test::udp(5555, 4789, vx))));
  EXPECT_EQ(d.key.sport, 4000);
  EXPECT_TRUE(d.tunnels & kTunnelVxlan);
  // Decapsulation off: the outer UDP flow is metered.
  DecodedPacket e;
  const Bytes outer = test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 17, test::udp(5555, 4789, vx)));
  ASSERT_EQ(decode_packet(kDltEthernet, outer.data(), static_cast<std::uint32_t>(outer.size()),
                          DecodeOptions{false}, e),
            DecodeStatus::kOk);
  EXPECT_EQ(e.key.dport, 4789);
  // Broken inner packet: falls back to the outer flow.
  const Bytes junk_gre = test::concat(Bytes{0, 0, 0x08, 0x00}, Bytes{0x45, 0});
  const DecodedPacket g =
      decode_ok(kDltEthernet, test::ether4(test::ipv4("1.1.1.1", "2.2.2.2", 47, junk_gre)));
  EXPECT_EQ(g.key.proto, 47);
  EXPECT_EQ(g.key.src, test::addr("1.1.1.1"));
}

TEST(Decoder, MplsAndPppoe) {
  const Bytes ip = test::ipv4("10.1.1.1", "10.2.2.2", 17, test::udp(100, 200));
  const Bytes labels = {0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40};  // two labels, S on 2nd
  EXPECT_EQ(decode_ok(kDltEthernet, test::ether(test::concat(labels, ip), 0x8847)).key.dport, 200);
  const Bytes pppoe = {0x11, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21};
  EXPECT_EQ(decode_ok(kDltEthernet, test::ether(test::concat(pppoe, ip), 0x8864)).key.dport, 200);
}

}  // namespace
}  // namespace ipfixweb::engine

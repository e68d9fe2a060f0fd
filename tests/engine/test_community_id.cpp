// Community ID v1 against the published test vectors, and the flow-level rules on top of it.
//
// Vectors, transcribed from:
//  [spec]  github.com/corelight/community-id-spec, baseline/README.md, tables "Default settings"
//          and "A custom seed=1 value" (ports column = ICMP type / code for ICMP rows; "-" = no
//          ports);
//  [py]    github.com/corelight/pycommunityid 1.5.0, tests/communityid_test.py (test_icmp,
//          test_icmp6, test_sctp, test_tcp, test_udp: default and seed=1 columns).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ndpi/ndpi_api.h>

#include <array>
#include <cstring>
#include <string>

#include "community_id.hpp"
#include "flow_table.hpp"

namespace ipfixweb::engine {
namespace {

struct Addr {
  std::uint8_t version = 0;
  std::array<std::uint8_t, 16> bytes{};
};

Addr addr(const char* text) {
  Addr a;
  if (inet_pton(AF_INET, text, a.bytes.data()) == 1) {
    a.version = 4;
  } else if (inet_pton(AF_INET6, text, a.bytes.data()) == 1) {
    a.version = 6;
  }
  return a;
}

std::string cid(const char* src, const char* dst, std::uint8_t proto, std::uint16_t sport,
                std::uint16_t dport, std::uint16_t seed = 0) {
  const Addr s = addr(src);
  const Addr d = addr(dst);
  EXPECT_NE(s.version, 0) << src;
  EXPECT_EQ(s.version, d.version) << src << " " << dst;
  return community_id(s.version, s.bytes.data(), d.bytes.data(), proto, sport, dport, seed);
}

struct Vector {
  const char* src;
  const char* dst;
  std::uint8_t proto;
  std::uint16_t sport;  // ICMP: type
  std::uint16_t dport;  // ICMP: code
  const char* seed0;
  const char* seed1;
  const char* source;
};

const Vector kVectors[] = {
    // [spec] default and seed=1 tables
    {"1.2.3.4", "5.6.7.8", 6, 1122, 3344,
     "1:wCb3OG7yAFWelaUydu0D+125CLM=", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=", "spec TCP out"},
    {"5.6.7.8", "1.2.3.4", 6, 3344, 1122,
     "1:wCb3OG7yAFWelaUydu0D+125CLM=", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=", "spec TCP back"},
    {"1.2.3.4", "5.6.7.8", 17, 1122, 3344,
     "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", "1:OShq+iKDAMVouh/4bMxB9Sz4amw=", "spec UDP out"},
    {"5.6.7.8", "1.2.3.4", 17, 3344, 1122,
     "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", "1:OShq+iKDAMVouh/4bMxB9Sz4amw=", "spec UDP back"},
    {"1.2.3.4", "5.6.7.8", 132, 1122, 3344,
     "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", "1:uitchpn5MMGAQKBJh7bIr/bAr7s=", "spec SCTP out"},
    {"5.6.7.8", "1.2.3.4", 132, 3344, 1122,
     "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", "1:uitchpn5MMGAQKBJh7bIr/bAr7s=", "spec SCTP back"},
    {"1.2.3.4", "5.6.7.8", 1, 8, 0,
     "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=", "spec ICMP echo request"},
    {"5.6.7.8", "1.2.3.4", 1, 0, 0,
     "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=", "spec ICMP echo reply"},
    {"1.2.3.4", "5.6.7.8", 1, 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=",
     "1:1DD7cWGC/Yg91YGsQeni8du3pIA=", "spec ICMP one-way (time exceeded)"},
    {"fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 58, 128,
     0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE=",
     "spec ICMPv6 echo request"},
    {"fe80:1011:1213:1415:1617:1819:1A1B:1C1D", "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", 58, 129,
     0,
     "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE=", "spec ICMPv6 echo reply"},
    {"fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 58, 146,
     0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10=", "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s=", "spec ICMPv6 one-way"},
    {"1.2.3.4", "5.6.7.8", 46, 0, 0, "1:ikv3kmf89luf73WPz1jOs49S768=",
     "1:/buhqeOmaRCopOZFy9HnoJd5XW8=", "spec RSVP (no ports) out"},
    {"5.6.7.8", "1.2.3.4", 46, 0, 0,
     "1:ikv3kmf89luf73WPz1jOs49S768=", "1:/buhqeOmaRCopOZFy9HnoJd5XW8=", "spec RSVP back"},
    {"fe80:0001:0203:0405:0607:0809:0A0B:0C0D", "fe80:1011:1213:1415:1617:1819:1A1B:1C1D", 46, 0, 0,
     "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=", "spec RSVP over IPv6 out"},
    {"fe80:1011:1213:1415:1617:1819:1A1B:1C1D", "fe80:0001:0203:0405:0607:0809:0A0B:0C0D", 46, 0, 0,
     "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=",
     "spec RSVP over IPv6 back"},
    // [py] tests/communityid_test.py
    {"192.168.0.89", "192.168.0.1", 1, 8, 0,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA=", "py ICMP echo"},
    {"192.168.0.1", "192.168.0.89", 1, 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
     "1:03g6IloqVBdcZlPyX8r0hgoE7kA=", "py ICMP echo reply (code ignored)"},
    {"192.168.0.89", "192.168.0.1", 1, 20, 0, "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=",
     "1:lCXHHxavE1Vq3oX9NH5ladQg02o=", "py ICMP type 20 code 0 (one-way)"},
    {"192.168.0.89", "192.168.0.1", 1, 20, 1, "1:tz/fHIDUHs19NkixVVoOZywde+I=",
     "1:Ie3wmFyxiEyikbsbcO03d2nh+PM=", "py ICMP type 20 code 1 (one-way: code counts)"},
    {"192.168.0.1", "192.168.0.89", 1, 0, 20, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
     "1:03g6IloqVBdcZlPyX8r0hgoE7kA=", "py ICMP echo reply, code 20"},
    {"fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 58, 135, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
     "py ICMPv6 neighbour solicitation"},
    {"fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 58, 136, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY=",
     "py ICMPv6 neighbour advertisement"},
    {"3ffe:507:0:1:260:97ff:fe07:69ea", "3ffe:507:0:1:200:86ff:fe05:80da", 58, 3, 0,
     "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=", "1:OlOWx9psIbBFi7lOCw/4MhlKR9M=",
     "py ICMPv6 time exceeded, larger address first (one-way: not reordered)"},
    {"3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:507:0:1:260:97ff:fe07:69ea", 58, 3, 0,
     "1:/OGBt9BN1ofenrmSPWYicpij2Vc=", "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE=",
     "py ICMPv6 time exceeded, other direction"},
    {"192.168.170.8", "192.168.170.56", 132, 7, 80,
     "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU=", "py SCTP"},
    {"192.168.170.56", "192.168.170.8", 132, 80, 7,
     "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU=", "py SCTP back"},
    {"128.232.110.120", "66.35.250.204", 6, 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc=", "py TCP"},
    {"66.35.250.204", "128.232.110.120", 6, 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc=", "py TCP back"},
    {"10.0.0.1", "10.0.0.2", 6, 10, 11569, "1:SXBGMX1lBOwhhoDrZynfROxnhnM=",
     "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo=", "py TCP, pycommunityid issue 3"},
    {"192.168.1.52", "8.8.8.8", 17, 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=", "py UDP"},
    {"8.8.8.8", "192.168.1.52", 17, 53, 54585,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI=", "py UDP back"},
};

TEST(CommunityId, PublishedVectorsSeed0And1) {
  for (const Vector& v : kVectors) {
    EXPECT_EQ(cid(v.src, v.dst, v.proto, v.sport, v.dport), v.seed0) << v.source;
    EXPECT_EQ(cid(v.src, v.dst, v.proto, v.sport, v.dport, 1), v.seed1) << v.source;
  }
  EXPECT_EQ(cid("1.2.3.4", "5.6.7.8", 6, 1122, 3344).size(), kCommunityIdLength);
}

// Equal addresses: the ports decide, compared as numbers (big-endian), not as host-order bytes.
TEST(CommunityId, EqualAddressesOrderedByPortValue) {
  // SHA1 of 00 00 | 7f 00 00 01 | 7f 00 00 01 | 06 00 | 00 01 | 01 00 (port 1 before port 256),
  // computed outside the engine (Python hashlib + base64).
  const char* const expected = "1:9G06OuEPcXMmo8FH4s0/L264LPE=";
  EXPECT_EQ(cid("127.0.0.1", "127.0.0.1", 6, 256, 1), expected);
  EXPECT_EQ(cid("127.0.0.1", "127.0.0.1", 6, 1, 256), expected);
  FlowKey k;
  k.ip_version = 4;
  k.src = {127, 0, 0, 1};
  k.dst = {127, 0, 0, 1};
  k.proto = 6;
  k.sport = 256;
  k.dport = 1;
  EXPECT_EQ(community_id(k, 0), expected);
}

// nDPI 4.2's helper agrees wherever the addresses differ (seed 0), which cross-checks the byte
// layout; with equal addresses it orders the ports after htons() and can give another ID, one
// reason the engine has its own implementation.
TEST(CommunityId, NdpiHelperAgreesWhenAddressesDiffer) {
  for (const Vector& v : kVectors) {
    const Addr s = addr(v.src);
    const Addr d = addr(v.dst);
    const bool icmp = v.proto == 1 || v.proto == 58;
    u_char buf[64] = {};
    int rc;
    if (s.version == 4) {
      std::uint32_t a, b;
      std::memcpy(&a, s.bytes.data(), 4);
      std::memcpy(&b, d.bytes.data(), 4);
      rc =
          ndpi_flowv4_flow_hash(v.proto, ntohl(a), ntohl(b), icmp ? 0 : v.sport, icmp ? 0 : v.dport,
                                icmp ? v.sport : 0, icmp ? v.dport : 0, buf, sizeof buf);
    } else {
      ndpi_in6_addr a, b;
      std::memcpy(&a, s.bytes.data(), 16);
      std::memcpy(&b, d.bytes.data(), 16);
      rc = ndpi_flowv6_flow_hash(v.proto, &a, &b, icmp ? 0 : v.sport, icmp ? 0 : v.dport,
                                 icmp ? v.sport : 0, icmp ? v.dport : 0, buf, sizeof buf);
    }
    ASSERT_EQ(rc, 0) << v.source;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf)), v.seed0) << v.source;
  }
  u_char buf[64] = {};
  ASSERT_EQ(ndpi_flowv4_flow_hash(6, 0x7f000001, 0x7f000001, 256, 1, 0, 0, buf, sizeof buf), 0);
  // Port 256 hashed before port 1 (SHA1 of ... 06 00 | 01 00 | 00 01, by hand as above).
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf)), "1:pwU6SVbii+vScCRwhlqfMuAKrrM=")
      << "nDPI now orders equal-address ports right: its helper could be used";
}

Flow icmp_flow(std::uint16_t fwd_type_code, std::uint64_t fwd_packets, std::uint16_t rev_type_code,
               std::uint64_t rev_packets) {
  Flow f;
  f.key.ip_version = 4;
  f.key.src = {192, 168, 0, 89};
  f.key.dst = {192, 168, 0, 1};
  f.key.proto = 1;
  f.fwd.packets = fwd_packets;
  f.fwd.icmp_type_code = fwd_type_code;
  f.rev.packets = rev_packets;
  f.rev.icmp_type_code = rev_type_code;
  return f;
}

TEST(CommunityId, FlowRecordUsesItsFirstIcmpTypeAndCode) {
  // Echo request forward, reply back: the [py] echo vector, whichever side is asked.
  EXPECT_EQ(community_id(icmp_flow(8 << 8, 3, 0, 3)), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
  // A record with only reverse packets (e.g. after an active timeout): the reverse direction's
  // first type/code with the key reversed, here echo replies from 192.168.0.1.
  EXPECT_EQ(community_id(icmp_flow(0, 0, 0, 2)), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
  // One-way type 20 code 1 from 192.168.0.89, as [py].
  EXPECT_EQ(community_id(icmp_flow((20 << 8) | 1, 1, 0, 0)), "1:tz/fHIDUHs19NkixVVoOZywde+I=");
  // Seed.
  EXPECT_EQ(community_id(icmp_flow(8 << 8, 1, 0, 0), 1), "1:03g6IloqVBdcZlPyX8r0hgoE7kA=");
}

TEST(CommunityId, FlowKeyEitherWay) {
  FlowKey k;
  k.ip_version = 4;
  k.src = {128, 232, 110, 120};
  k.dst = {66, 35, 250, 204};
  k.proto = 6;
  k.sport = 34855;
  k.dport = 80;
  k.vlan = 7;  // not part of the ID
  EXPECT_EQ(community_id(k, 0), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
  EXPECT_EQ(community_id(k.reversed(), 0), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
  EXPECT_EQ(community_id(k, 0x0800), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=") << "ICMP-only argument";
}

}  // namespace
}  // namespace ipfixweb::engine

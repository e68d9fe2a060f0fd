// Summary "analysis" breakdown (analysis_list): tcp/udp/icmp by IP protocol, dns/tls/http/quic by
// the nDPI label (or by well-known ports when DPI is off), other = none of the requested families.
#include <gtest/gtest.h>

#include <map>

#include "ipfixweb/engine/engine.hpp"
#include "pcap_writer.hpp"
#include "summary.hpp"

namespace ipfixweb::engine {
namespace {

using test::Bytes;

Engine& engine() {
  static Engine e;
  return e;
}

struct Expect {
  std::uint64_t flows = 0, packets = 0, bytes = 0;
};

// Writes a capture with one flow per kind and records the exact per-flow figures.
// Flows: "http" (TCP 40000->80, GET with Host), "tcp_other" (TCP 41000->9999, no payload),
// "dns" (UDP 33333->53 query/response), "udp_other" (UDP 5000->6000), "icmp" (echo v4),
// "icmp6" (echo v6), "ospf" (IP protocol 89).
std::map<std::string, Expect> write_mixed(const std::string& path) {
  std::map<std::string, Expect> e;
  test::PcapWriter w(path);
  std::uint64_t t = 1'700'000'000'000'000ULL;
  auto add4 = [&](const std::string& flow, const Bytes& ip) {
    w.add(t += 1000, test::ether4(ip));
    Expect& x = e[flow];
    x.flows = 1;
    ++x.packets;
    x.bytes += ip.size();
  };
  auto add6 = [&](const std::string& flow, const Bytes& ip) {
    w.add(t += 1000, test::ether6(ip));
    Expect& x = e[flow];
    x.flows = 1;
    ++x.packets;
    x.bytes += ip.size();
  };
  const std::string c = "10.0.0.1", s = "10.0.0.2";
  add4("http",
       test::ipv4(c, s, 6,
                  test::tcp(40000, 80, 0x18,
                            test::text("GET /index.html HTTP/1.1\r\nHost: www.example.org\r\n"
                                       "User-Agent: test/1.0\r\nAccept: */*\r\n\r\n"))));
  add4("http", test::ipv4(s, c, 6,
                          test::tcp(80, 40000, 0x18,
                                    test::text("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                               "Content-Length: 5\r\n\r\nhello"))));
  add4("tcp_other", test::ipv4(c, "10.0.0.9", 6, test::tcp(41000, 9999, 0x02)));
  add4("tcp_other", test::ipv4("10.0.0.9", c, 6, test::tcp(9999, 41000, 0x14)));
  add4("dns", test::ipv4(c, "10.0.0.53", 17,
                         test::udp(33333, 53, test::dns(0x1234, "www.example.com", false))));
  add4("dns", test::ipv4("10.0.0.53", c, 17,
                         test::udp(53, 33333, test::dns(0x1234, "www.example.com", true))));
  add4("udp_other", test::ipv4("10.0.0.3", "10.0.0.4", 17, test::udp(5000, 6000, 100)));
  add4("icmp", test::ipv4(c, s, 1, test::icmp(8, 0, 56)));
  add4("icmp", test::ipv4(s, c, 1, test::icmp(0, 0, 56)));
  add6("icmp6", test::ipv6("2001:db8::1", "2001:db8::2", 58, test::icmp(128, 0, 32)));
  add6("icmp6", test::ipv6("2001:db8::2", "2001:db8::1", 58, test::icmp(129, 0, 32)));
  add4("ospf", test::ipv4("10.0.0.5", "224.0.0.5", 89, Bytes(44, 1)));
  w.close();
  return e;
}

Expect sum(const std::map<std::string, Expect>& e, std::initializer_list<const char*> flows) {
  Expect r;
  for (const char* f : flows) {
    const Expect& x = e.at(f);
    r.flows += x.flows;
    r.packets += x.packets;
    r.bytes += x.bytes;
  }
  return r;
}

void expect_family(const nlohmann::json& j, const std::string& fam, const Expect& x) {
  SCOPED_TRACE(fam);
  ASSERT_TRUE(j["analysis"].contains(fam)) << j["analysis"].dump();
  const auto& a = j["analysis"][fam];
  EXPECT_EQ(a["flows"].get<std::uint64_t>(), x.flows);
  EXPECT_EQ(a["packets"].get<std::uint64_t>(), x.packets);
  EXPECT_EQ(a["bytes"].get<std::uint64_t>(), x.bytes);
  EXPECT_TRUE(a["top_hosts"].is_array());
  EXPECT_TRUE(a["top_applications"].is_array());
  EXPECT_TRUE(a["top_server_names"].is_array());
}

bool has_entry(const nlohmann::json& arr, const char* key, const std::string& value) {
  for (const auto& x : arr) {
    if (x[key] == value) return true;
  }
  return false;
}

TEST(Analysis, FamiliesByProtocolAndLabelWithDpi) {
  test::TempDir dir;
  const auto e = write_mixed(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.analysis = {"TCP", "udp", "icmp", "dns", "http", "tls", "quic", "other", "tcp"};
  const auto j = engine().convert(o);
  EXPECT_EQ(j["analysis_method"], "dpi");
  EXPECT_EQ(j["analysis"].size(), 8u);  // duplicates dropped, names lower-cased
  expect_family(j, "tcp", sum(e, {"http", "tcp_other"}));
  expect_family(j, "udp", sum(e, {"dns", "udp_other"}));
  expect_family(j, "icmp", sum(e, {"icmp", "icmp6"}));  // ICMPv6 included
  expect_family(j, "dns", sum(e, {"dns"}));
  expect_family(j, "http", sum(e, {"http"}));
  expect_family(j, "tls", Expect{});
  expect_family(j, "quic", Expect{});
  expect_family(j, "other", sum(e, {"ospf"}));
  const auto& tcp = j["analysis"]["tcp"];
  EXPECT_GT(tcp["bytes"].get<std::uint64_t>(),
            0u);  // regression: tcp used to match label parts only
  EXPECT_TRUE(has_entry(tcp["top_hosts"], "host", "10.0.0.1"));
  EXPECT_TRUE(has_entry(tcp["top_hosts"], "host", "10.0.0.9"));
  EXPECT_EQ(tcp["top_hosts"][0]["host"], "10.0.0.1");  // endpoint of both TCP flows
  EXPECT_TRUE(has_entry(tcp["top_applications"], "application", "HTTP"));
  EXPECT_TRUE(
      has_entry(j["analysis"]["http"]["top_server_names"], "server_name", "www.example.org"));
  EXPECT_TRUE(
      has_entry(j["analysis"]["dns"]["top_server_names"], "server_name", "www.example.com"));
  EXPECT_TRUE(has_entry(j["analysis"]["icmp"]["top_hosts"], "host", "2001:db8::1"));
  EXPECT_TRUE(j["warnings"].empty()) << j["warnings"].dump();
}

TEST(Analysis, OtherIsEverythingOutsideTheRequestedFamilies) {
  test::TempDir dir;
  const auto e = write_mixed(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.analysis = {"dns", "other"};
  const auto j = engine().convert(o);
  expect_family(j, "dns", sum(e, {"dns"}));
  expect_family(j, "other", sum(e, {"http", "tcp_other", "udp_other", "icmp", "icmp6", "ospf"}));
  o.analysis = {"other"};  // alone: every flow
  const auto k = engine().convert(o);
  expect_family(k, "other",
                sum(e, {"http", "tcp_other", "dns", "udp_other", "icmp", "icmp6", "ospf"}));
}

TEST(Analysis, WithoutDpiApplicationFamiliesUseWellKnownPortsAndSaySo) {
  test::TempDir dir;
  const auto e = write_mixed(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.dpi = false;
  o.analysis = {"tcp", "dns", "http", "other"};
  const auto j = engine().convert(o);
  EXPECT_EQ(j["analysis_method"], "ports");
  expect_family(j, "tcp", sum(e, {"http", "tcp_other"}));
  expect_family(j, "dns", sum(e, {"dns"}));
  expect_family(j, "http", sum(e, {"http"}));
  expect_family(j, "other", sum(e, {"udp_other", "icmp", "icmp6", "ospf"}));
  EXPECT_TRUE(j["analysis"]["tcp"]["top_applications"].empty());
  ASSERT_EQ(j["warnings"].size(), 1u);
  EXPECT_NE(j["warnings"][0].get<std::string>().find("well-known ports"), std::string::npos);
  // Protocol-only families need no warning.
  o.analysis = {"tcp", "udp"};
  EXPECT_TRUE(engine().convert(o)["warnings"].empty());
}

TEST(Analysis, FamilyMatchRules) {
  FlowKey k;
  k.proto = 6;
  k.sport = 50000;
  k.dport = 443;
  const std::string tls_yt = "TLS.YouTube", quic_g = "QUIC.Google", dns_g = "DNS.Google";
  const std::string proxy = "HTTP_Proxy", unknown = "Unknown";
  EXPECT_TRUE(analysis_family_match("tcp", k, &unknown));
  EXPECT_FALSE(analysis_family_match("udp", k, &unknown));
  EXPECT_TRUE(analysis_family_match("tls", k, &tls_yt));
  EXPECT_TRUE(analysis_family_match("tls", k, nullptr));      // port 443 without DPI
  EXPECT_FALSE(analysis_family_match("tls", k, &unknown));    // DPI says not TLS
  EXPECT_TRUE(analysis_family_match("youtube", k, &tls_yt));  // any label part
  EXPECT_TRUE(analysis_family_match("http", k, &proxy));
  EXPECT_FALSE(analysis_family_match("other", k, &unknown));  // handled by Summary
  k.proto = 17;
  EXPECT_TRUE(analysis_family_match("quic", k, &quic_g));
  EXPECT_TRUE(analysis_family_match("quic", k, nullptr));
  EXPECT_FALSE(analysis_family_match("tls", k, nullptr));  // UDP 443 is quic, not tls
  EXPECT_TRUE(analysis_family_match("dns", k, &dns_g));
  k.proto = 58;
  EXPECT_TRUE(analysis_family_match("icmp", k, nullptr));
}

}  // namespace
}  // namespace ipfixweb::engine

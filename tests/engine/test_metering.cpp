// Metering rules on a generated capture with exactly known flows: every exported record (biflow
// and uniflow) is compared field by field, through ipfixDump, with what the rules in
// worker/engine/README.md say. One record per rule case:
//   A  idle timeout (1), then the same 5-tuple again later (new record, end of input 4)
//   B  active timeout (2) cuts a long flow, the rest ends at end of input
//   C  TCP FIN both ways (3), the last ACK inside the grace period stays in the flow
//   D  TCP RST (3), a new SYN on the same 5-tuple starts a new record (idle 1)
//   E  the same 5-tuple as A on VLAN 10: a separate flow
//   F  IPv6
//   G  IPv4 fragments join the first fragment's flow; an orphan fragment gets a port-0 flow
//   H  snaplen cut: octets from the IP header's total length
//   I  IP-in-IP: the inner packet is metered (outer with --no-decap)
//   K  ICMP echo (type/code per direction)
//   plus an ARP frame (not metered) and a --max-flows run (eviction, reason 5).
#include <gtest/gtest.h>

#include <algorithm>
#include <ctime>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

constexpr std::uint64_t kT0 = 1'700'000'000'000ULL;  // ms

std::string ms_text(std::uint64_t ms) {  // as ipfixDump prints times
  const auto secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  char out[80];
  std::snprintf(out, sizeof out, "%s.%03u", buf, static_cast<unsigned>(ms % 1000));
  return out;
}

struct Dir {
  std::uint64_t packets = 0, octets = 0, first = 0, last = 0;
  unsigned flags = 0;
  unsigned icmp = 0;
};
struct Expected {
  std::string src, dst;
  unsigned sport = 0, dport = 0, proto = 0, vlan = 0;
  Dir fwd, rev;
  unsigned reason = 0;
};

std::string biflow_row(const Expected& e) {
  std::ostringstream s;
  s << e.src << ":" << e.sport << ">" << e.dst << ":" << e.dport << "/" << e.proto << " vlan "
    << e.vlan << " fwd " << e.fwd.packets << "/" << e.fwd.octets << " flags " << e.fwd.flags
    << " rev " << e.rev.packets << "/" << e.rev.octets << " flags " << e.rev.flags << " "
    << ms_text(std::min(e.fwd.first, e.rev.packets ? e.rev.first : e.fwd.first)) << " - "
    << ms_text(std::max(e.fwd.last, e.rev.last)) << " reason " << e.reason;
  return s.str();
}

std::vector<std::string> uniflow_rows(const Expected& e) {
  std::vector<std::string> out;
  const auto row = [&](const std::string& a, unsigned ap, const std::string& b, unsigned bp,
                       const Dir& d) {
    std::ostringstream s;
    s << a << ":" << ap << ">" << b << ":" << bp << "/" << e.proto << " vlan " << e.vlan << " "
      << d.packets << "/" << d.octets << " flags " << d.flags << " " << ms_text(d.first) << " - "
      << ms_text(d.last) << " reason " << e.reason;
    out.push_back(s.str());
  };
  if (e.fwd.packets) row(e.src, e.sport, e.dst, e.dport, e.fwd);
  if (e.rev.packets) row(e.dst, e.dport, e.src, e.sport, e.rev);
  return out;
}

std::string get(const Record& r, const char* k, const char* def = "0") {
  const auto it = r.find(k);
  return it == r.end() ? def : it->second;
}

std::multiset<std::string> our_rows(const std::vector<Record>& recs, bool biflow) {
  std::multiset<std::string> rows;
  for (const auto& r : recs) {
    const std::string src = r.count("8") ? get(r, "8") : get(r, "27");
    const std::string dst = r.count("12") ? get(r, "12") : get(r, "28");
    std::ostringstream s;
    s << src << ":" << get(r, "7") << ">" << dst << ":" << get(r, "11") << "/" << get(r, "4")
      << " vlan " << get(r, "58");
    if (biflow) {
      s << " fwd " << get(r, "2") << "/" << get(r, "1") << " flags " << get(r, "6") << " rev "
        << get(r, "29305/2") << "/" << get(r, "29305/1") << " flags " << get(r, "29305/6");
    } else {
      s << " " << get(r, "2") << "/" << get(r, "1") << " flags " << get(r, "6");
    }
    s << " " << get(r, "152") << " - " << get(r, "153") << " reason " << get(r, "136");
    rows.insert(s.str());
  }
  return rows;
}

std::string diff(const std::multiset<std::string>& want, const std::multiset<std::string>& got) {
  std::vector<std::string> a, b;
  std::set_difference(want.begin(), want.end(), got.begin(), got.end(), std::back_inserter(a));
  std::set_difference(got.begin(), got.end(), want.begin(), want.end(), std::back_inserter(b));
  std::string d;
  for (const auto& x : a) d += "\n  missing " + x;
  for (const auto& x : b) d += "\n  unexpected " + x;
  return d;
}

struct Capture {
  std::vector<std::pair<std::uint64_t, std::pair<Bytes, std::size_t>>> frames;  // ms, frame, caplen
  void add(std::uint64_t ms, const Bytes& f, std::size_t caplen = SIZE_MAX) {
    frames.push_back({ms, {f, caplen}});
  }
  void write(const std::string& path) {
    std::stable_sort(frames.begin(), frames.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    PcapWriter w(path);
    for (const auto& [ms, f] : frames) w.add(ms * 1000, f.first, f.second);
  }
};

std::vector<Expected> build(Capture& c) {
  std::vector<Expected> e;
  const auto udp4 = [&](std::uint64_t ms, const std::string& s, unsigned sp, const std::string& d,
                        unsigned dp, std::size_t payload, std::vector<std::uint16_t> vlans = {}) {
    c.add(kT0 + ms,
          ether4(ipv4(s, d, 17,
                      udp(static_cast<std::uint16_t>(sp), static_cast<std::uint16_t>(dp), payload)),
                 vlans));
    return 28 + payload;
  };
  const auto tcp4 = [&](std::uint64_t ms, const std::string& s, unsigned sp, const std::string& d,
                        unsigned dp, std::uint8_t flags, std::size_t payload = 0) {
    c.add(kT0 + ms, ether4(ipv4(s, d, 6,
                                tcp(static_cast<std::uint16_t>(sp), static_cast<std::uint16_t>(dp),
                                    flags, payload))));
    return 40 + payload;
  };
  // A: idle timeout (30 s), then the 5-tuple again at 95 s.
  udp4(0, "10.0.0.1", 1000, "10.0.0.2", 53, 30);
  udp4(10, "10.0.0.2", 53, "10.0.0.1", 1000, 60);
  e.push_back(
      {"10.0.0.1", "10.0.0.2", 1000, 53, 17, 0, {1, 58, kT0, kT0}, {1, 88, kT0 + 10, kT0 + 10}, 1});
  udp4(95000, "10.0.0.1", 1000, "10.0.0.2", 53, 30);
  e.push_back({"10.0.0.1", "10.0.0.2", 1000, 53, 17, 0, {1, 58, kT0 + 95000, kT0 + 95000}, {}, 4});
  // B: 11 packets 10 s apart from 1 s; the active timeout (60 s) cuts after 6.
  for (std::uint64_t k = 0; k <= 10; ++k)
    udp4(1000 + 10000 * k, "10.0.0.3", 2000, "10.0.0.4", 2001, 100);
  e.push_back(
      {"10.0.0.3", "10.0.0.4", 2000, 2001, 17, 0, {6, 768, kT0 + 1000, kT0 + 51000}, {}, 2});
  e.push_back(
      {"10.0.0.3", "10.0.0.4", 2000, 2001, 17, 0, {5, 640, kT0 + 61000, kT0 + 101000}, {}, 4});
  // C: TCP handshake, data, FIN both ways, last ACK.
  tcp4(2000, "10.0.0.5", 3000, "10.0.0.6", 80, 0x02);
  tcp4(2001, "10.0.0.6", 80, "10.0.0.5", 3000, 0x12);
  tcp4(2002, "10.0.0.5", 3000, "10.0.0.6", 80, 0x10);
  tcp4(2003, "10.0.0.5", 3000, "10.0.0.6", 80, 0x18, 100);
  tcp4(2004, "10.0.0.6", 80, "10.0.0.5", 3000, 0x11);
  tcp4(2005, "10.0.0.5", 3000, "10.0.0.6", 80, 0x11);
  tcp4(2006, "10.0.0.5", 3000, "10.0.0.6", 80, 0x10);
  e.push_back({"10.0.0.5",
               "10.0.0.6",
               3000,
               80,
               6,
               0,
               {5, 300, kT0 + 2000, kT0 + 2006, 0x1b},
               {2, 80, kT0 + 2001, kT0 + 2004, 0x13},
               3});
  // D: SYN, RST from the server, a new SYN 1 s later (inside the 5 s grace): two records.
  tcp4(3000, "10.0.0.7", 4000, "10.0.0.8", 443, 0x02);
  tcp4(3001, "10.0.0.8", 443, "10.0.0.7", 4000, 0x14);
  tcp4(4000, "10.0.0.7", 4000, "10.0.0.8", 443, 0x02);
  e.push_back({"10.0.0.7",
               "10.0.0.8",
               4000,
               443,
               6,
               0,
               {1, 40, kT0 + 3000, kT0 + 3000, 0x02},
               {1, 40, kT0 + 3001, kT0 + 3001, 0x14},
               3});
  e.push_back(
      {"10.0.0.7", "10.0.0.8", 4000, 443, 6, 0, {1, 40, kT0 + 4000, kT0 + 4000, 0x02}, {}, 1});
  // E: A's 5-tuple on VLAN 10.
  udp4(100, "10.0.0.1", 1000, "10.0.0.2", 53, 30, {10});
  e.push_back({"10.0.0.1", "10.0.0.2", 1000, 53, 17, 10, {1, 58, kT0 + 100, kT0 + 100}, {}, 1});
  // F: IPv6.
  c.add(kT0 + 80000, ether6(ipv6("2001:db8::1", "2001:db8::2", 17, udp(5000, 5001, 20))));
  c.add(kT0 + 80001, ether6(ipv6("2001:db8::2", "2001:db8::1", 17, udp(5001, 5000, 40))));
  e.push_back({"2001:db8::1",
               "2001:db8::2",
               5000,
               5001,
               17,
               0,
               {1, 68, kT0 + 80000, kT0 + 80000},
               {1, 88, kT0 + 80001, kT0 + 80001},
               4});
  // G: first fragment + second fragment (id 77), and an orphan fragment (id 99).
  c.add(kT0 + 90000,
        ether4(ipv4("10.0.0.9", "10.0.0.10", 17, udp(6000, 6001, 32), 0, 77, 0, true)));
  c.add(kT0 + 90001, ether4(ipv4("10.0.0.9", "10.0.0.10", 17, Bytes(64, 'z'), 0, 77, 5)));
  c.add(kT0 + 90002, ether4(ipv4("10.0.0.9", "10.0.0.10", 17, Bytes(64, 'z'), 0, 99, 5)));
  e.push_back(
      {"10.0.0.9", "10.0.0.10", 6000, 6001, 17, 0, {2, 144, kT0 + 90000, kT0 + 90001}, {}, 4});
  e.push_back({"10.0.0.9", "10.0.0.10", 0, 0, 17, 0, {1, 84, kT0 + 90002, kT0 + 90002}, {}, 4});
  // H: 1040-byte TCP packet captured with 64 bytes.
  c.add(kT0 + 91000, ether4(ipv4("10.0.0.11", "10.0.0.12", 6, tcp(7000, 7001, 0x18, 1000))), 64);
  e.push_back({"10.0.0.11",
               "10.0.0.12",
               7000,
               7001,
               6,
               0,
               {1, 1040, kT0 + 91000, kT0 + 91000, 0x18},
               {},
               4});
  // I: UDP inside IP-in-IP.
  c.add(kT0 + 92000, ether4(ipv4("192.0.2.1", "192.0.2.2", 4,
                                 ipv4("10.0.0.13", "10.0.0.14", 17, udp(8000, 8001, 10)))));
  e.push_back(
      {"10.0.0.13", "10.0.0.14", 8000, 8001, 17, 0, {1, 38, kT0 + 92000, kT0 + 92000}, {}, 4});
  // J: ARP, not metered.
  c.add(kT0 + 93000, ether(Bytes(28, 0), 0x0806));
  // K: ICMP echo request / reply (20 + 4 + 56 bytes).
  c.add(kT0 + 94000, ether4(ipv4("10.0.0.20", "10.0.0.21", 1, icmp(8, 0, 56))));
  c.add(kT0 + 94001, ether4(ipv4("10.0.0.21", "10.0.0.20", 1, icmp(0, 0, 56))));
  e.push_back({"10.0.0.20",
               "10.0.0.21",
               0,
               0,
               1,
               0,
               {1, 80, kT0 + 94000, kT0 + 94000},
               {1, 80, kT0 + 94001, kT0 + 94001},
               4});
  return e;
}

#define REQUIRE_IPFIXDUMP() \
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed"

nlohmann::json convert_with(const std::string& in, const std::string& out,
                            const std::string& extra) {
  const std::string js = out + ".json";
  const RunResult r = run(
      shell_quote(pcap2ipfix()) + " -q --no-dpi --idle-timeout 30 --active-timeout 60 " + extra +
      " --summary-json " + shell_quote(js) + " -o " + shell_quote(out) + " " + shell_quote(in));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(read_text(js));
}

TEST(Metering, EveryRuleGivesExactlyTheExpectedBiflowRecords) {
  REQUIRE_IPFIXDUMP();
  TempDir dir;
  Capture c;
  const auto want = build(c);
  c.write(dir.file("in.pcap"));
  const auto j = convert_with(dir.file("in.pcap"), dir.file("bi.ipfix"), "");
  std::multiset<std::string> expected;
  for (const auto& e : want) expected.insert(biflow_row(e));
  const auto got = our_rows(ipfix_dump(dir.file("bi.ipfix")).records, true);
  EXPECT_TRUE(got == expected) << diff(expected, got);
  EXPECT_EQ(j["not_metered"]["non_ip"].get<int>(), 1);
  EXPECT_EQ(j["fragments_unmatched"].get<int>(), 1);
  EXPECT_EQ(j["tunnelled_packets"].get<int>(), 1);
  EXPECT_EQ(j["flow_end_reasons"]["idle_timeout"].get<int>(), 3);
  EXPECT_EQ(j["flow_end_reasons"]["active_timeout"].get<int>(), 1);
  EXPECT_EQ(j["flow_end_reasons"]["end_of_flow"].get<int>(), 2);
  EXPECT_EQ(j["flow_end_reasons"]["end_of_input"].get<int>(), 8);
  std::uint64_t pkts = 0, bytes = 0;
  for (const auto& e : want) {
    pkts += e.fwd.packets + e.rev.packets;
    bytes += e.fwd.octets + e.rev.octets;
  }
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), pkts);
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), bytes);
}

TEST(Metering, UniflowRecordsCarryPerDirectionCountsAndTimes) {
  REQUIRE_IPFIXDUMP();
  TempDir dir;
  Capture c;
  const auto want = build(c);
  c.write(dir.file("in.pcap"));
  const auto j = convert_with(dir.file("in.pcap"), dir.file("uni.ipfix"), "--uniflow");
  std::multiset<std::string> expected;
  for (const auto& e : want) {
    for (auto& r : uniflow_rows(e)) expected.insert(r);
  }
  const auto got = our_rows(ipfix_dump(dir.file("uni.ipfix")).records, false);
  EXPECT_TRUE(got == expected) << diff(expected, got);
  EXPECT_EQ(j["flows"].get<std::size_t>(), expected.size());
  EXPECT_EQ(j["biflows"].get<std::size_t>(), want.size());
}

TEST(Metering, NoDecapMetersTheOuterTunnelPacket) {
  REQUIRE_IPFIXDUMP();
  TempDir dir;
  Capture c;
  c.add(kT0, ether4(ipv4("192.0.2.1", "192.0.2.2", 4,
                         ipv4("10.0.0.13", "10.0.0.14", 17, udp(8000, 8001, 10)))));
  c.write(dir.file("in.pcap"));
  const auto j = convert_with(dir.file("in.pcap"), dir.file("o.ipfix"), "--no-decap");
  const std::multiset<std::string> expected = {
      biflow_row({"192.0.2.1", "192.0.2.2", 0, 0, 4, 0, {1, 58, kT0, kT0}, {}, 4})};
  const auto got = our_rows(ipfix_dump(dir.file("o.ipfix")).records, true);
  EXPECT_TRUE(got == expected) << diff(expected, got);
  EXPECT_EQ(j["tunnelled_packets"].get<int>(), 0);
}

// --max-flows 3: X Y Z, X again, W evicts Y (least recently seen), Y again evicts Z.
TEST(Metering, MaxFlowsEvictsLeastRecentlySeenWithReasonFive) {
  REQUIRE_IPFIXDUMP();
  TempDir dir;
  Capture c;
  const auto flow = [&](std::uint64_t ms, const char* src) {
    c.add(kT0 + ms, ether4(ipv4(src, "10.9.9.9", 17, udp(1234, 53, 12))));
  };
  flow(0, "10.1.0.1");  // X
  flow(1, "10.1.0.2");  // Y
  flow(2, "10.1.0.3");  // Z
  flow(3, "10.1.0.1");  // X again
  flow(4, "10.1.0.4");  // W: table full, Y evicted
  flow(5, "10.1.0.2");  // Y again: Z evicted
  c.write(dir.file("in.pcap"));
  const auto j = convert_with(dir.file("in.pcap"), dir.file("m.ipfix"), "--max-flows 3");
  const auto rec = [](const char* src, std::uint64_t pkts, std::uint64_t first, std::uint64_t last,
                      unsigned reason) {
    return biflow_row(
        {src, "10.9.9.9", 1234, 53, 17, 0, {pkts, 40 * pkts, kT0 + first, kT0 + last}, {}, reason});
  };
  const std::multiset<std::string> expected = {
      rec("10.1.0.2", 1, 1, 1, 5), rec("10.1.0.3", 1, 2, 2, 5), rec("10.1.0.1", 2, 0, 3, 4),
      rec("10.1.0.4", 1, 4, 4, 4), rec("10.1.0.2", 1, 5, 5, 4)};
  const auto got = our_rows(ipfix_dump(dir.file("m.ipfix")).records, true);
  EXPECT_TRUE(got == expected) << diff(expected, got);
  EXPECT_EQ(j["flow_end_reasons"]["lack_of_resources"].get<int>(), 2);
  EXPECT_EQ(j["peak_flows"].get<int>(), 3);
}

}  // namespace
}  // namespace ipfixweb::engine::test

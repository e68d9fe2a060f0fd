// Flow enrichment in the IPFIX output, read back with tshark: Community ID (PEN 32473 id 1)
// against tshark's own Community ID of the captured packets, and nDPI risk (ntop 35632/509
// bitmap, 510 names, 527 score) against ndpiReader 4.2's "[Risk: ...][Risk Score: N]".
// tshark 4.0 does not name these elements; tshark_records() reads them from its PDML
// (cflow.enterprise_private_entry, "Type N").
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

const char* const kCommunityId = "32473/1";
const char* const kRisk = "35632/509";
const char* const kRiskName = "35632/510";
const char* const kRiskScore = "35632/527";

void convert(const std::string& in, const std::string& out, const std::string& extra = "") {
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q " + extra + " -o " + shell_quote(out) +
                          " " + shell_quote(in));
  EXPECT_EQ(r.exit_code, 0) << in << ": " << r.err;
}

std::string get(const Record& r, const std::string& k) {
  const auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

std::string canon_addr(const std::string& a) {
  unsigned char b[16];
  char buf[INET6_ADDRSTRLEN];
  if (a.find(':') != std::string::npos && inet_pton(AF_INET6, a.c_str(), b) == 1 &&
      inet_ntop(AF_INET6, b, buf, sizeof buf)) {
    return buf;
  }
  return a;
}

// "6 10.0.0.1:80 10.0.0.2:1234", endpoints sorted; ICMP keys leave the ports out.
std::string flow_key(int proto, std::string a, std::string b, const std::string& pa,
                     const std::string& pb) {
  a = canon_addr(a);
  b = canon_addr(b);
  if (proto != 1 && proto != 58) {
    a += ":" + (pa.empty() ? std::string("0") : pa);
    b += ":" + (pb.empty() ? std::string("0") : pb);
  }
  if (b < a) std::swap(a, b);
  return std::to_string(proto) + " " + a + " " + b;
}

// Our records of one file, by flow key.
std::multimap<std::string, Record> our_records(const std::string& ipfix) {
  std::multimap<std::string, Record> out;
  std::string err;
  for (auto& r : tshark_records(ipfix, &err)) {
    const std::string src =
        r.count("cflow.srcaddr") ? get(r, "cflow.srcaddr") : get(r, "cflow.srcaddrv6");
    const std::string dst =
        r.count("cflow.dstaddr") ? get(r, "cflow.dstaddr") : get(r, "cflow.dstaddrv6");
    const int proto = std::stoi(get(r, "cflow.protocol").empty() ? "0" : get(r, "cflow.protocol"));
    out.emplace(flow_key(proto, src, dst, get(r, "cflow.srcport"), get(r, "cflow.dstport")), r);
  }
  EXPECT_TRUE(err.empty()) << ipfix << ": " << err;
  return out;
}

// tshark's Community ID of every packet of a capture (its "communityid" post-dissector, seed 0,
// base64), by flow key. The L4 protocol is that of the first transport header tshark finds, so
// ICMP errors count as ICMP and IPv6 extension headers are skipped.
std::map<std::string, std::set<std::string>> tshark_community_ids(const std::string& pcap) {
  const RunResult r =
      run("tshark -r " + shell_quote(pcap) +
          " -o communityid.do_base64:TRUE --enable-protocol communityid -T fields -E occurrence=f"
          " -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst -e ip.proto -e ipv6.nxt -e icmp.type"
          " -e icmpv6.type -e tcp.srcport -e tcp.dstport -e udp.srcport -e udp.dstport"
          " -e sctp.srcport -e sctp.dstport -e communityid");
  EXPECT_EQ(r.exit_code, 0) << pcap << ": " << r.err;
  std::map<std::string, std::set<std::string>> ids;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream fs_(line);
    std::string v;
    while (std::getline(fs_, v, '\t')) f.push_back(v);
    f.resize(15);
    if (f[14].empty()) continue;
    const std::string& a = f[0].empty() ? f[2] : f[0];
    const std::string& b = f[1].empty() ? f[3] : f[1];
    int proto = std::stoi(!f[4].empty() ? f[4] : f[5].empty() ? "0" : f[5]);
    std::string pa, pb;
    if (!f[6].empty()) {
      proto = 1;
    } else if (!f[7].empty()) {
      proto = 58;
    } else if (!f[8].empty()) {
      proto = 6, pa = f[8], pb = f[9];
    } else if (!f[10].empty()) {
      proto = 17, pa = f[10], pb = f[11];
    } else if (!f[12].empty()) {
      proto = 132, pa = f[12], pb = f[13];
    }
    ids[flow_key(proto, a, b, pa, pb)].insert(f[14]);
  }
  return ids;
}

struct CidTally {
  std::size_t same = 0;
  std::vector<std::string> problems;
};

// Every record's Community ID is the one tshark computes for the packets of its flow: the only
// one for port-based protocols, one of them for ICMP (tshark hashes each packet's own type and
// code; a record uses those of its first packet).
CidTally compare_community_ids(const std::string& pcap, const std::string& ipfix) {
  CidTally t;
  const auto theirs = tshark_community_ids(pcap);
  for (const auto& [key, r] : our_records(ipfix)) {
    const std::string ours = get(r, kCommunityId);
    const auto it = theirs.find(key);
    const bool icmp = key.rfind("1 ", 0) == 0 || key.rfind("58 ", 0) == 0;
    if (it == theirs.end()) {
      t.problems.push_back(key + " ours " + ours + ": no packet of tshark's");
    } else if (!it->second.count(ours) || (!icmp && it->second.size() != 1)) {
      std::string s;
      for (const auto& id : it->second) s += " " + id;
      t.problems.push_back(key + " ours " + ours + " tshark" + s);
    } else {
      ++t.same;
    }
  }
  return t;
}

TEST(Enrich, CommunityIdAndRiskOfKnownFlowsThroughTshark) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  TempDir dir;
  convert(pcaps + "/WebattackSQLinj.pcap", dir.file("sqli.ipfix"));
  const auto sqli = our_records(dir.file("sqli.ipfix"));
  ASSERT_EQ(sqli.count("6 172.16.0.1:36198 192.168.10.50:80"), 1u);
  const Record& r = sqli.find("6 172.16.0.1:36198 192.168.10.50:80")->second;
  // tshark -r WebattackSQLinj.pcap --enable-protocol communityid: 1:wR+LkyMJl10m+prbAQ057vZL5eA=
  EXPECT_EQ(get(r, kCommunityId), "1:wR+LkyMJl10m+prbAQ057vZL5eA=");
  // ndpiReader: [Risk: ** SQL Injection **** HTTP Numeric IP Address **][Risk Score: 260];
  // bits 2 (NDPI_URL_POSSIBLE_SQL_INJECTION) and 12 (NDPI_HTTP_NUMERIC_IP_HOST).
  EXPECT_EQ(get(r, kRiskName), "SQL Injection,HTTP Numeric IP Address");
  EXPECT_EQ(be_uint(get(r, kRiskScore)), 260u);
  EXPECT_EQ(be_uint(get(r, kRisk)), (1u << 2) | (1u << 12));
  EXPECT_EQ(get(r, kRisk).size(), 8u);
  EXPECT_EQ(get(r, kRiskScore).size(), 2u);
  EXPECT_EQ(get(r, "cflow.appl_name"), "HTTP");

  convert(pcaps + "/ssh.pcap", dir.file("ssh.ipfix"));
  const auto ssh = our_records(dir.file("ssh.ipfix"));
  ASSERT_EQ(ssh.size(), 1u);
  const Record& s = ssh.begin()->second;
  EXPECT_EQ(get(s, kCommunityId), "1:0DS0MyjYIXDiddU6z7bmf6d699A=");
  EXPECT_EQ(get(s, kRiskName),
            "SSH Obsolete Client Version/Cipher,SSH Obsolete Server Version/Cipher");
  EXPECT_EQ(be_uint(get(s, kRiskScore)), 150u);
  EXPECT_EQ(be_uint(get(s, kRisk)), (1u << 18) | (1u << 19));

  // A flow without risk: bitmap and score 0, name empty; the ID is always there.
  convert(pcaps + "/443-git.pcap", dir.file("tls.ipfix"));
  for (const auto& [key, t] : our_records(dir.file("tls.ipfix"))) {
    EXPECT_EQ(get(t, kCommunityId).size(), 30u) << key;
    EXPECT_EQ(be_uint(get(t, kRisk)), 0u) << key;
    EXPECT_EQ(be_uint(get(t, kRiskScore)), 0u) << key;
    EXPECT_EQ(get(t, kRiskName), "") << key;
  }

  // Without DPI: the Community ID stays, the risk elements are not in the templates.
  convert(pcaps + "/WebattackSQLinj.pcap", dir.file("nodpi.ipfix"), "--no-dpi");
  const auto nodpi = our_records(dir.file("nodpi.ipfix"));
  ASSERT_EQ(nodpi.size(), sqli.size());
  for (const auto& [key, n] : nodpi) {
    EXPECT_EQ(get(n, kCommunityId), get(sqli.find(key)->second, kCommunityId)) << key;
    EXPECT_FALSE(n.count(kRisk) || n.count(kRiskName) || n.count(kRiskScore)) << key;
  }

  // Uniflow: both directions of a flow carry the flow's one ID.
  convert(pcaps + "/WebattackSQLinj.pcap", dir.file("uni.ipfix"), "--uniflow");
  const auto uni = our_records(dir.file("uni.ipfix"));
  EXPECT_EQ(uni.size(), 2 * sqli.size());
  for (const auto& [key, u] : uni) {
    EXPECT_EQ(get(u, kCommunityId), get(sqli.find(key)->second, kCommunityId)) << key;
    EXPECT_EQ(get(u, kRiskName), get(sqli.find(key)->second, kRiskName)) << key;
  }

  for (const char* f : {"sqli.ipfix", "nodpi.ipfix", "uni.ipfix"}) {
    const RunResult w = run("tshark -r " + shell_quote(dir.file(f)) +
                            " -Y '_ws.malformed || _ws.expert.severity >= warning'"
                            " -T fields -e frame.number");
    EXPECT_EQ(w.exit_code, 0) << w.err;
    EXPECT_TRUE(w.out.empty()) << f << ": tshark warnings in frames " << w.out;
  }
}

// A generated capture with the cases the corpus lacks: SCTP, a protocol without ports, equal
// addresses ordered by port, a one-way ICMP message, ICMPv6 echo.
TEST(Enrich, CommunityIdsMatchTsharkOnGeneratedFlows) {
  REQUIRE_TOOL("tshark");
  TempDir dir;
  {
    PcapWriter w(dir.file("in.pcap"));
    std::uint64_t t = 1'700'000'000'000'000ULL;
    const Bytes sctp = {0x00, 0x07, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0,  // 7 -> 80, vtag 1
                        0x01, 0x00, 0x00, 0x04};  // an empty INIT-like chunk header
    const Bytes sctp_back = {0x00, 0x50, 0x00, 0x07, 0,    0,    0,    1,
                             0,    0,    0,    0,    0x02, 0x00, 0x00, 0x04};
    w.add(t += 1000, ether4(ipv4("192.168.170.8", "192.168.170.56", 132, sctp)));
    w.add(t += 1000, ether4(ipv4("192.168.170.56", "192.168.170.8", 132, sctp_back)));
    w.add(t += 1000, ether4(ipv4("10.1.12.1", "10.1.12.2", 46, Bytes(8, 0))));  // RSVP
    w.add(t += 1000, ether4(ipv4("10.1.12.2", "10.1.12.1", 46, Bytes(8, 0))));
    w.add(t += 1000, ether4(ipv4("127.0.0.1", "127.0.0.1", 6, tcp(256, 1, 0x02))));
    w.add(t += 1000, ether4(ipv4("127.0.0.1", "127.0.0.1", 6, tcp(1, 256, 0x12))));
    w.add(t += 1000, ether4(ipv4("10.0.0.9", "10.0.0.1", 1, icmp(11, 0))));  // time exceeded
    w.add(t += 1000, ether4(ipv4("10.0.0.1", "10.0.0.9", 1, icmp(8, 0))));
    w.add(t += 1000, ether6(ipv6("2001:db8::2", "2001:db8::1", 58, icmp(128, 0, 16))));
    w.add(t += 1000, ether6(ipv6("2001:db8::1", "2001:db8::2", 58, icmp(129, 0, 16))));
    w.add(t += 1000, ether4(ipv4("1.2.3.4", "5.6.7.8", 17, udp(1122, 3344, 4))));
  }
  convert(dir.file("in.pcap"), dir.file("out.ipfix"));
  const CidTally t = compare_community_ids(dir.file("in.pcap"), dir.file("out.ipfix"));
  for (const auto& p : t.problems) ADD_FAILURE() << p;
  EXPECT_EQ(t.same, 6u);
  // The spec's baseline UDP vector, through the whole chain.
  const auto ours = our_records(dir.file("out.ipfix"));
  ASSERT_EQ(ours.count("17 1.2.3.4:1122 5.6.7.8:3344"), 1u);
  EXPECT_EQ(get(ours.find("17 1.2.3.4:1122 5.6.7.8:3344")->second, kCommunityId),
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=");
}

// Every flow of corpus captures (IPv4 and IPv6; TCP, UDP, ICMP, ICMPv6 with extension
// headers; IP fragments) gets the Community ID tshark computes for its packets. Captures with
// tunnels are left out: which header tshark hashes there is its own choice.
TEST(Enrich, CommunityIdsMatchTsharkOnCorpusCaptures) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  TempDir dir;
  std::size_t checked = 0;
  for (const char* name : {"1kxun.pcap", "iphone.pcap", "android.pcap", "teams.pcap",
                           "alexa-app.pcapng", "anyconnect-vpn.pcap", "dns_fragmented.pcap",
                           "malformed_icmp.pcap", "http_ipv6.pcap", "quic_interop_V.pcapng"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    const std::string out = dir.file(std::string(name) + ".ipfix");
    convert(in, out);
    const CidTally t = compare_community_ids(in, out);
    for (const auto& p : t.problems) ADD_FAILURE() << name << ": " << p;
    EXPECT_GT(t.same, 0u) << name;
    checked += t.same;
  }
  EXPECT_GE(checked, 500u);
}

// ndpiReader 4.2 (no configuration files, like the engine) as the oracle for risks: per flow
// key, the multiset of "names|score" must be the same. ndpiReader's names are its
// "** name **" items in order; ours the 35632/510 string. The captures cover every risk the
// corpus shows except where flows are split differently (see docs/ipfix-elements.md).
TEST(Enrich, RisksMatchNdpiReader) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  REQUIRE_TOOL("ndpiReader");
  TempDir dir;
  std::size_t risky = 0;
  std::set<std::string> names_seen;
  for (const char* name :
       {"WebattackSQLinj.pcap", "log4j-webapp-exploit.pcap", "1kxun.pcap", "teams.pcap", "ssh.pcap",
        "selfsigned.pcap", "tls_esni_sni_both.pcap", "http_auth.pcap", "exe_download.pcap",
        "dns-tunnel-iodine.pcap", "alexa-app.pcapng", "quic_interop_V.pcapng",
        "malformed_icmp.pcap", "dns_fragmented.pcap", "rdp.pcap", "ftp.pcap", "http_ipv6.pcap",
        "KakaoTalk_chat.pcap", "bittorrent.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    std::map<std::string, std::multiset<std::string>> theirs, ours;
    {
      const RunResult r = run("ndpiReader -q -v 2 -i " + shell_quote(in));
      ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
      std::istringstream s(r.out);
      std::string line;
      while (std::getline(s, line)) {
        std::istringstream f(line);
        std::string idx, l4, a, arrow, b;
        if (!(f >> idx >> l4 >> a >> arrow >> b) || (arrow != "<->" && arrow != "->")) continue;
        if (idx.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto ep = [](const std::string& e, std::string& host, std::string& port) {
          const auto colon = e.rfind(':');
          host = e.substr(0, colon);
          port = e.substr(colon + 1);
          if (!host.empty() && host[0] == '[') host = host.substr(1, host.size() - 2);
        };
        std::string aa, ap, ba, bp;
        ep(a, aa, ap);
        ep(b, ba, bp);
        const int proto = l4 == "TCP"      ? 6
                          : l4 == "UDP"    ? 17
                          : l4 == "ICMP"   ? 1
                          : l4 == "ICMPV6" ? 58
                          : l4 == "IGMP"   ? 2
                          : l4 == "VRRP"   ? 112
                                           : std::atoi(l4.c_str());
        std::string names;
        std::string score = "0";
        if (const auto at = line.find("[Risk: "); at != std::string::npos) {
          const auto end = line.find("][Risk Score: ", at);
          std::string list = line.substr(at + 7, end - at - 7);
          for (std::size_t p = list.find("** "); p != std::string::npos; p = list.find("** ", p)) {
            const auto q = list.find(" **", p + 3);
            if (!names.empty()) names += ',';
            names += list.substr(p + 3, q - p - 3);
            names_seen.insert(list.substr(p + 3, q - p - 3));
            p = q + 3;
          }
          score = line.substr(end + 14, line.find(']', end + 14) - end - 14);
          ++risky;
        }
        theirs[flow_key(proto, aa, ba, proto == 1 || proto == 58 ? "" : ap,
                        proto == 1 || proto == 58 ? "" : bp)]
            .insert(names + "|" + score);
      }
    }
    const std::string out = dir.file(std::string(name) + ".ipfix");
    convert(in, out);
    for (const auto& [key, r] : our_records(out)) {
      ours[key].insert(get(r, kRiskName) + "|" + std::to_string(be_uint(get(r, kRiskScore))));
    }
    for (const auto& [key, m] : theirs) {
      const auto it = ours.find(key);
      if (it == ours.end()) {
        ADD_FAILURE() << name << ": " << key << " only in ndpiReader's list";
        continue;
      }
      EXPECT_EQ(it->second, m) << name << ": " << key;
    }
    for (const auto& [key, m] : ours) {
      EXPECT_TRUE(theirs.count(key)) << name << ": " << key << " only in ours";
    }
  }
  EXPECT_GE(risky, 100u);
  EXPECT_GE(names_seen.size(), 20u);
}

}  // namespace
}  // namespace ipfixweb::engine::test

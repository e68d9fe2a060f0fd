// Golden tests: pcap2ipfix output decoded by independent tools (ipfixDump, tshark) and compared
// with capinfos, tshark conversation tables and ndpiReader's flow labels.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ipfix_walk.hpp"
#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

std::string convert(const std::string& in, const std::string& out, const std::string& extra = "") {
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q " + extra + " -o " + shell_quote(out) +
                          " " + shell_quote(in));
  EXPECT_EQ(r.exit_code, 0) << in << ": " << r.err;
  return r.err;
}

std::uint64_t u64(const Record& r, const std::string& k) {
  const auto it = r.find(k);
  return it == r.end() ? 0 : std::stoull(it->second);
}
std::string str(const Record& r, const std::string& k) {
  const auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}
std::string src_addr(const Record& r) { return r.count("8") ? str(r, "8") : str(r, "27"); }
std::string dst_addr(const Record& r) { return r.count("12") ? str(r, "12") : str(r, "28"); }
std::uint64_t total_packets(const Record& r) { return u64(r, "2") + u64(r, "29305/2"); }

TEST(Golden, GeneratedCaptureDecodesWithIpfixDumpAndTshark) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  {
    PcapWriter w(dir.file("in.pcap"));
    const std::uint64_t t = 1'700'000'000'000'000ULL;
    w.add(t, ether4(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, 0x02)), {42}));
    w.add(t + 1000, ether4(ipv4("10.0.0.2", "10.0.0.1", 6, tcp(80, 40000, 0x12)), {42}));
    w.add(t + 2000, ether4(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, 0x04)), {42}));
    w.add(t + 3000, ether6(ipv6("2001:db8::1", "2001:db8::2", 58, icmp(128, 0, 16))));
    w.add(t + 4000, ether6(ipv6("2001:db8::2", "2001:db8::1", 58, icmp(129, 0, 16))));
  }
  convert(dir.file("in.pcap"), dir.file("out.ipfix"));
  const DumpResult d = ipfix_dump(dir.file("out.ipfix"));
  EXPECT_TRUE(d.stderr_text.empty()) << d.stderr_text;
  ASSERT_EQ(d.records.size(), 2u);
  const Record& v6 = d.records[0].count("27") ? d.records[0] : d.records[1];
  const Record& v4 = d.records[0].count("8") ? d.records[0] : d.records[1];
  EXPECT_EQ(str(v4, "8"), "10.0.0.1");
  EXPECT_EQ(str(v4, "12"), "10.0.0.2");
  EXPECT_EQ(u64(v4, "7"), 40000u);
  EXPECT_EQ(u64(v4, "11"), 80u);
  EXPECT_EQ(u64(v4, "2"), 2u);
  EXPECT_EQ(u64(v4, "29305/2"), 1u);
  EXPECT_EQ(u64(v4, "1"), 80u);
  EXPECT_EQ(u64(v4, "58"), 42u);
  EXPECT_EQ(u64(v4, "6"), 0x06u);  // SYN | RST
  EXPECT_EQ(u64(v4, "29305/6"), 0x12u);
  EXPECT_EQ(u64(v4, "136"), 3u);  // end of flow (RST)
  EXPECT_EQ(u64(v4, "4"), 6u);
  EXPECT_EQ(str(v4, "152"), "2023-11-14 22:13:20.000");
  EXPECT_EQ(str(v4, "153"), "2023-11-14 22:13:20.002");
  EXPECT_EQ(str(v6, "27"), "2001:db8::1");
  EXPECT_EQ(u64(v6, "139"), 128u << 8);
  EXPECT_EQ(u64(v6, "29305/139"), 129u << 8);
  EXPECT_EQ(u64(v6, "136"), 4u);  // end of input
  EXPECT_EQ(str(v6, "96"), "ICMPV6");

  if (have_tool("tshark")) {
    const RunResult t =
        run("tshark -r " + shell_quote(dir.file("out.ipfix")) +
            " -Y 'cflow && _ws.expert.severity >= warning' -T fields -e frame.number");
    EXPECT_EQ(t.exit_code, 0) << t.err;
    EXPECT_TRUE(t.out.empty()) << "tshark expert warnings in frames: " << t.out;
    const RunResult s =
        run("tshark -r " + shell_quote(dir.file("out.ipfix")) +
            " -T fields -e cflow.appl_name -e cflow.appl_id.classification_engine_id");
    EXPECT_NE(s.out.find("ICMPV6"), std::string::npos) << s.out;
  }
}

TEST(Golden, DpiMetadataAsNtopElements) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");  // tshark names the ntop (PEN 35632) elements; ipfixDump does not
  TempDir dir;
  const auto field = [&](const std::string& file, const std::string& f) {
    return run("tshark -r " + shell_quote(file) + " -T fields -E aggregator=, -e " + f).out;
  };
  convert(pcaps + "/443-git.pcap", dir.file("tls.ipfix"));
  EXPECT_NE(field(dir.file("tls.ipfix"), "cflow.appl_name").find("TLS.Github"), std::string::npos);
  EXPECT_NE(field(dir.file("tls.ipfix"), "cflow.pie.ntop.ssl_server_name").find("github.com"),
            std::string::npos);
  EXPECT_NE(field(dir.file("tls.ipfix"), "cflow.pie.ntop.flow_server_name").find("github.com"),
            std::string::npos);
  convert(pcaps + "/dns_ambiguous_names.pcap", dir.file("dns.ipfix"));
  EXPECT_NE(field(dir.file("dns.ipfix"), "cflow.pie.ntop.dns_query").find("teams.skype.com"),
            std::string::npos);
  convert(pcaps + "/extra/pppoe-session-http.pcap", dir.file("http.ipfix"));
  EXPECT_FALSE(field(dir.file("http.ipfix"), "cflow.pie.ntop.http_host").find_first_not_of("\n") ==
               std::string::npos);
}

// JA3 client hashes (ntop 35632/489, which tshark shows as cflow.enterprise_private_entry
// "(ntop) Type 489"): the same set as ndpiReader's "[JA3C: ...]" for TLS and QUIC captures.
TEST(Golden, Ja3ClientHashesMatchNdpiReader) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  REQUIRE_TOOL("ndpiReader");
  TempDir dir;
  int checked = 0;
  for (const char* name :
       {"443-git.pcap", "443-chrome.pcap", "443-firefox.pcap", "443-curl.pcap",
        "ja3_lots_of_cipher_suites.pcap", "quic.pcap", "tls_verylong_certificate.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    std::set<std::string> theirs;
    {
      const std::string out = run("ndpiReader -q -v 2 -i " + shell_quote(in)).out;
      for (std::size_t at = out.find("[JA3C: "); at != std::string::npos;
           at = out.find("[JA3C: ", at + 1)) {
        theirs.insert(out.substr(at + 7, 32));
      }
    }
    const std::string ipfix = dir.file(std::string(name) + ".ipfix");
    convert(in, ipfix);
    std::set<std::string> ours;
    for (const Record& r : tshark_records(ipfix)) {
      const auto it = r.find("35632/489");
      if (it != r.end() && !it->second.empty()) ours.insert(it->second);
    }
    EXPECT_EQ(ours, theirs) << name;
    checked += theirs.empty() ? 0 : 1;
  }
  EXPECT_GE(checked, 3);
}

TEST(Golden, ExtraEncapsulations) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  struct Case {
    const char* file;
    std::size_t records;
    const char* must_contain;  // an inner endpoint
  };
  const Case cases[] = {{"extra/vxlan.pcap", 13, "SSH"},
                        {"extra/gre-sample.pcap", 6, "SSH"},
                        {"extra/pppoe-session-http.pcap", 1, "HTTP.Google"},
                        {"extra/decode-sll2-01.pcap", 1, "HTTP"},
                        {"extra/ipv4frags.pcap", 1, "ICMP"},
                        {"extra/frag-ip-tcp.pcap", 1, ""},
                        {"extra/frag-eth-vlan-ipv6-tcp.pcap", 1, ""}};
  for (const auto& c : cases) {
    const std::string in = pcaps + "/" + c.file;
    if (!fs::exists(in)) continue;
    const std::string out = dir.file("x.ipfix");
    convert(in, out);
    const DumpResult d = ipfix_dump(out);
    EXPECT_TRUE(d.stderr_text.empty()) << c.file << d.stderr_text;
    EXPECT_EQ(d.records.size(), c.records) << c.file;
    bool found = *c.must_contain == 0;
    for (const auto& r : d.records) found |= str(r, "96") == c.must_contain;
    EXPECT_TRUE(found) << c.file << " has no " << c.must_contain << " record";
    if (have_tool("capinfos")) {
      std::uint64_t pkts = 0;
      for (const auto& r : d.records) pkts += total_packets(r);
      EXPECT_EQ(pkts, capinfos_packets(in)) << c.file;  // every packet metered (fragments too)
    }
  }
}

// analysis_list on a real TCP-heavy capture: tcp bytes equal tshark's IP length sum of TCP frames,
// and the TLS flows (TLS.Google etc.) count as tls.
TEST(Golden, AnalysisFamiliesOnRealCapture) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  TempDir dir;
  const std::string in = pcaps + "/443-chrome.pcap";
  if (!fs::exists(in)) GTEST_SKIP() << "443-chrome.pcap missing";
  convert(in, dir.file("out.ipfix"),
          "--analysis tcp --analysis udp --analysis tls --analysis other --summary-json " +
              shell_quote(dir.file("s.json")));
  const auto j = nlohmann::json::parse(read_text(dir.file("s.json")));
  std::uint64_t tcp_len = 0, tcp_frames = 0;
  {
    std::istringstream s(
        run("tshark -r " + shell_quote(in) + " -Y tcp -T fields -e ip.len -e ipv6.plen").out);
    std::string line;
    while (std::getline(s, line)) {
      if (line.empty()) continue;
      ++tcp_frames;
      if (line[0] == '\t') {
        tcp_len += 40 + std::stoull(line.substr(1));
      } else {
        tcp_len += std::stoull(line);
      }
    }
  }
  ASSERT_GT(tcp_frames, 0u);
  const auto& a = j["analysis"];
  EXPECT_EQ(a["tcp"]["packets"].get<std::uint64_t>(), tcp_frames);
  EXPECT_EQ(a["tcp"]["bytes"].get<std::uint64_t>(), tcp_len);
  EXPECT_GT(a["tls"]["bytes"].get<std::uint64_t>(), 0u);
  EXPECT_LE(a["tls"]["bytes"].get<std::uint64_t>(), tcp_len);
  EXPECT_EQ(a["tcp"]["bytes"].get<std::uint64_t>() + a["udp"]["bytes"].get<std::uint64_t>() +
                a["other"]["bytes"].get<std::uint64_t>(),
            j["bytes"].get<std::uint64_t>());
}

// Captures in which every frame is IPv4/IPv6 (checked with tshark below).
const char* const kAllIpCaptures[] = {"ssh.pcap",
                                      "dns_ambiguous_names.pcap",
                                      "quic.pcap",
                                      "443-git.pcap",
                                      "http_ipv6.pcap",
                                      "443-chrome.pcap",
                                      "bittorrent.pcap",
                                      "smtp.pcap",
                                      "ocs.pcap",
                                      "nats.pcap",
                                      "KakaoTalk_chat.pcap",
                                      "ajp.pcap",
                                      "tls_verylong_certificate.pcap",
                                      "wireguard.pcap",
                                      "dns_fragmented.pcap",
                                      "6in4tunnel.pcap"};

TEST(Golden, PacketTotalsMatchCapinfos) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_TOOL("capinfos");
  REQUIRE_TOOL("tshark");
  TempDir dir;
  int checked = 0;
  for (const char* name : kAllIpCaptures) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    const RunResult nonip =
        run("tshark -r " + shell_quote(in) + " -Y 'not ip and not ipv6' -T fields -e frame.number");
    ASSERT_TRUE(nonip.out.empty()) << name << " has non-IP frames; fix the list";
    const std::string out = dir.file(std::string(name) + ".ipfix");
    convert(in, out, "--no-dpi");
    const DumpResult d = ipfix_dump(out);
    EXPECT_TRUE(d.stderr_text.empty()) << name << ": " << d.stderr_text;
    std::uint64_t pkts = 0;
    for (const auto& r : d.records) pkts += total_packets(r);
    EXPECT_EQ(pkts, capinfos_packets(in)) << name;
    ++checked;
  }
  EXPECT_GT(checked, 5);
}

// "a:port b:port" with endpoints sorted, as tshark prints them (IPv6 unbracketed).
std::string conv_key(const std::string& l4, const std::string& a, const std::string& b) {
  return l4 + " " + std::min(a, b) + " " + std::max(a, b);
}

// Per conversation: packets against `tshark -z conv`, and IP bytes (our octetDeltaCount) against
// the sum of tshark's ip.len / 40 + ipv6.plen over the conversation's frames (tshark's conv byte
// column counts whole frames, link headers included, so it is not comparable). ajp.pcap is left
// out: tshark's conversation table skips its 8 Cisco FabricPath-encapsulated duplicate frames,
// which we decode and meter.
TEST(Golden, ConversationsMatchTsharkConv) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_TOOL("tshark");
  TempDir dir;
  int checked = 0;
  for (const char* name : {"ssh.pcap", "dns_ambiguous_names.pcap", "quic.pcap", "1kxun.pcap",
                           "443-chrome.pcap", "smtp.pcap", "http_ipv6.pcap", "KakaoTalk_chat.pcap",
                           "nats.pcap", "bittorrent.pcap", "ocs.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    std::map<std::string, std::uint64_t> theirs;
    for (const char* l4 : {"tcp", "udp"}) {
      const RunResult t = run("tshark -r " + shell_quote(in) + " -q -z conv," + l4);
      std::istringstream s(t.out);
      std::string line;
      while (std::getline(s, line)) {
        std::istringstream f(line);
        std::vector<std::string> tok((std::istream_iterator<std::string>(f)),
                                     std::istream_iterator<std::string>());
        if (tok.size() < 10 || tok[1] != "<->") continue;
        theirs[conv_key(l4, tok[0], tok[2])] += std::stoull(tok[9]);
      }
    }
    std::map<std::string, std::uint64_t> their_bytes;
    {
      const RunResult t =
          run("tshark -r " + shell_quote(in) +
              " -Y '(tcp or udp) and not icmp and not icmpv6' -T fields -E occurrence=f -E "
              "separator=/t -e ip.src -e ip.dst"
              " -e ipv6.src -e ipv6.dst -e tcp.srcport -e tcp.dstport -e udp.srcport"
              " -e udp.dstport -e ip.len -e ipv6.plen");
      std::istringstream s(t.out);
      std::string line;
      while (std::getline(s, line)) {
        std::vector<std::string> c;
        std::istringstream f(line);
        std::string v;
        while (std::getline(f, v, '\t')) c.push_back(v);
        c.resize(10);
        const bool v4 = !c[0].empty();
        const bool tcp = !c[4].empty();
        const std::string a = (v4 ? c[0] : c[2]) + ":" + (tcp ? c[4] : c[6]);
        const std::string b = (v4 ? c[1] : c[3]) + ":" + (tcp ? c[5] : c[7]);
        if ((v4 ? c[8] : c[9]).empty()) continue;
        their_bytes[conv_key(tcp ? "tcp" : "udp", a, b)] +=
            v4 ? std::stoull(c[8]) : 40 + std::stoull(c[9]);
      }
    }
    const std::string out = dir.file(std::string(name) + ".ipfix");
    // Long timeouts: tshark does not split conversations by time.
    convert(in, out, "--no-dpi --no-decap --idle-timeout 100000000 --active-timeout 100000000");
    std::map<std::string, std::uint64_t> ours;
    std::map<std::string, std::uint64_t> our_bytes;
    for (const auto& r : ipfix_dump(out).records) {
      const auto proto = u64(r, "4");
      if (proto != 6 && proto != 17) continue;
      const std::string k = conv_key(proto == 6 ? "tcp" : "udp", src_addr(r) + ":" + str(r, "7"),
                                     dst_addr(r) + ":" + str(r, "11"));
      ours[k] += total_packets(r);
      our_bytes[k] += u64(r, "1") + u64(r, "29305/1");
    }
    std::string diff;
    for (const auto& [k, v] : theirs) {
      const auto it = ours.find(k);
      if (it == ours.end() || it->second != v) {
        diff += "\n  tshark " + k + " " + std::to_string(v) + ", ours " +
                (it == ours.end() ? std::string("-") : std::to_string(it->second));
      }
    }
    for (const auto& [k, v] : ours) {
      if (!theirs.count(k)) diff += "\n  ours only " + k + " " + std::to_string(v);
    }
    EXPECT_TRUE(diff.empty()) << name << diff;
    EXPECT_TRUE(our_bytes == their_bytes) << name << " IP bytes per conversation differ";
    for (const auto& [k, v] : their_bytes) {
      if (our_bytes[k] != v)
        ADD_FAILURE() << name << " " << k << " tshark " << v << " ours " << our_bytes[k];
    }
    ++checked;
  }
  EXPECT_GT(checked, 6);
}

// Normalised "L4 endpointA endpointB label" rows (VALIDATORS.md section 2.2).
std::string ep(const std::string& a, const std::string& port) {
  return (a.find(':') != std::string::npos ? "[" + a + "]" : a) + ":" + port;
}

// ndpiReader prints IPv6 with its own zero compression ("b00c:0:2"): canonicalise.
std::string canon_ep(const std::string& e) {
  if (e.empty() || e[0] != '[') return e;
  const auto close = e.find(']');
  unsigned char a[16];
  char buf[INET6_ADDRSTRLEN];
  const std::string addr = e.substr(1, close - 1);
  if (inet_pton(AF_INET6, addr.c_str(), a) != 1 || !inet_ntop(AF_INET6, a, buf, sizeof buf)) {
    return e;
  }
  return "[" + std::string(buf) + e.substr(close);
}

std::multiset<std::string> ndpi_reader_flows(const std::string& in) {
  const RunResult r = run("ndpiReader -q -i " + shell_quote(in) + " -v 2");
  std::multiset<std::string> rows;
  std::istringstream s(r.out);
  std::string line;
  while (std::getline(s, line)) {
    std::istringstream f(line);
    std::string idx, l4, a, arrow, b, proto_tag, proto;
    if (!(f >> idx >> l4 >> a >> arrow >> b >> proto_tag)) continue;
    if (proto_tag.rfind("[VLAN:", 0) == 0 && !(f >> proto_tag)) continue;  // "[VLAN: 7][proto:"
    if (proto_tag.size() > 7 && proto_tag.compare(proto_tag.size() - 7, 7, "[proto:") == 0) {
      proto_tag = "[proto:";
    }
    if (!(f >> proto)) continue;
    if ((arrow != "<->" && arrow != "->") || proto_tag != "[proto:") continue;
    if (l4 != "TCP" && l4 != "UDP" && l4 != "ICMP" && l4 != "ICMPV6") continue;
    // "92/SSH][Encrypted]..." -> "SSH"
    const auto slash = proto.find('/');
    const auto close = proto.find(']');
    const std::string label = proto.substr(slash + 1, close - slash - 1);
    a = canon_ep(a);
    b = canon_ep(b);
    rows.insert(l4 + " " + std::min(a, b) + " " + std::max(a, b) + " " + label);
  }
  return rows;
}

std::multiset<std::string> our_flows(const std::string& ipfix) {
  std::multiset<std::string> rows;
  for (const auto& r : ipfix_dump(ipfix).records) {
    const auto p = u64(r, "4");
    const char* l4 = p == 6    ? "TCP"
                     : p == 17 ? "UDP"
                     : p == 1  ? "ICMP"
                     : p == 58 ? "ICMPV6"
                               : nullptr;
    if (!l4) continue;
    const std::string a = ep(src_addr(r), str(r, "7"));
    const std::string b = ep(dst_addr(r), str(r, "11"));
    rows.insert(std::string(l4) + " " + std::min(a, b) + " " + std::max(a, b) + " " + str(r, "96"));
  }
  return rows;
}

struct Agreement {
  std::size_t same = 0;
  std::size_t total = 0;
  std::vector<std::string> diff;
};

Agreement compare_labels(const std::string& in, const std::string& out) {
  const auto theirs = ndpi_reader_flows(in);
  const auto ours = our_flows(out);
  Agreement a;
  a.total = std::max(theirs.size(), ours.size());
  std::vector<std::string> common;
  std::set_intersection(theirs.begin(), theirs.end(), ours.begin(), ours.end(),
                        std::back_inserter(common));
  a.same = common.size();
  std::set_symmetric_difference(theirs.begin(), theirs.end(), ours.begin(), ours.end(),
                                std::back_inserter(a.diff));
  return a;
}

TEST(Golden, LabelsMatchNdpiReaderExactlyOnSimpleCaptures) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_TOOL("ndpiReader");
  TempDir dir;
  for (const char* name : {"ssh.pcap", "dns_ambiguous_names.pcap", "quic.pcap", "443-git.pcap",
                           "6in4tunnel.pcap", "http_ipv6.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    const std::string out = dir.file(std::string(name) + ".ipfix");
    convert(in, out, "--idle-timeout 100000 --active-timeout 100000");
    const Agreement a = compare_labels(in, out);
    std::string diff;
    for (const auto& d : a.diff) diff += "\n  " + d;
    EXPECT_EQ(a.same, a.total) << name << diff;
  }
}

TEST(Golden, LabelAgreementWithNdpiReaderOnMixedCaptures) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_TOOL("ndpiReader");
  TempDir dir;
  std::size_t same = 0;
  std::size_t total = 0;
  for (const char* name : {"1kxun.pcap", "android.pcap", "iphone.pcap", "teams.pcap",
                           "anyconnect-vpn.pcap", "alexa-app.pcapng", "bittorrent.pcap",
                           "facebook.pcap", "tor.pcap", "skype.pcap", "youtube_quic.pcap"}) {
    const std::string in = pcaps + "/" + name;
    if (!fs::exists(in)) continue;
    const std::string out = dir.file(std::string(name) + ".ipfix");
    convert(in, out, "--idle-timeout 100000 --active-timeout 100000");
    const Agreement a = compare_labels(in, out);
    same += a.same;
    total += a.total;
    std::printf("[ labels ] %-24s %zu/%zu\n", name, a.same, a.total);
  }
  if (total == 0) GTEST_SKIP() << "no mixed captures found";
  const double pct = 100.0 * static_cast<double>(same) / static_cast<double>(total);
  std::printf("[ labels ] overall agreement %.1f%% (%zu/%zu)\n", pct, same, total);
  EXPECT_GE(pct, 90.0);
}

// Records as tshark decodes them: every record of every template has protocolIdentifier, and
// tshark prints one value per record (all of a message's on one line, joined by ',').
std::uint64_t tshark_record_count(const std::string& ipfix) {
  const RunResult r = run("tshark -r " + shell_quote(ipfix) +
                          " -T fields -E occurrence=a -E aggregator=, -e cflow.protocol");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::uint64_t n = 0;
  std::istringstream s(r.out);
  std::string line;
  while (std::getline(s, line)) {
    if (!line.empty()) n += 1 + std::count(line.begin(), line.end(), ',');
  }
  return n;
}

// RFC 7011 3.3.1: a data set holds at least one record. libfixbuf 2.4.1 wrote a set header with no
// record at the end of a message when the template changed there and the next record did not fit
// (fixed in 2.5.2); tshark marked that frame malformed and libfixbuf's reader misread the next set.
// Mixed IPv4/IPv6 captures switch templates often; the outputs are walked set by set
// (ipfix_walk.hpp, not libfixbuf) and decoded by tshark.
TEST(Golden, NoMessageHoldsAnEmptySet) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  TempDir dir;
  struct Case {
    const char* name;
    const char* options;
  };
  int checked = 0;
  for (const Case& c :
       {Case{"bench/mixed-dense.pcap", ""}, Case{"bench/mixed-dense.pcap", "--uniflow"},
        Case{"bench/mixed-dense.pcap", "--no-dpi"}, Case{"1kxun.pcap", ""},
        Case{"1kxun.pcap", "--uniflow"}, Case{"6in4tunnel.pcap", "--uniflow"},
        Case{"4in6tunnel.pcap", ""}, Case{"http_ipv6.pcap", "--uniflow"},
        Case{"android.pcap", ""}}) {
    const std::string in = pcaps + "/" + c.name;
    if (!fs::exists(in)) continue;
    SCOPED_TRACE(std::string(c.name) + " " + c.options);
    const std::string out = dir.file("out" + std::to_string(checked) + ".ipfix");
    const std::string err = convert(in, out, c.options);
    const IpfixWalk w = walk_ipfix(read_text(out));
    EXPECT_TRUE(w.problems.empty())
        << w.problems.size() << " problems, the first: " << w.problems.front();
    EXPECT_GT(w.records, 0u);
    const RunResult bad = run("tshark -r " + shell_quote(out) +
                              " -Y '_ws.malformed || _ws.expert.severity >= warning'"
                              " -T fields -e frame.number");
    EXPECT_EQ(bad.exit_code, 0) << bad.err;
    EXPECT_TRUE(bad.out.empty()) << "tshark: malformed or warned frames " << bad.out;
    EXPECT_EQ(tshark_record_count(out), w.records);
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "none of the captures found";
}

}  // namespace
}  // namespace ipfixweb::engine::test

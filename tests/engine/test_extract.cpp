// The extract mode: the packets of one flow record cut out of its captures into a pcap file.
// For every record of corpus captures chosen for what a BPF expression on the 5-tuple would
// get wrong (IP fragments without ports, tunnels whose inner addresses are not the outer
// header's, uniflow records), the pcap holds exactly the record's packets: counted by libpcap
// reading the written file, not by the engine.
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/flows/selector.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

struct StoredFlow {
  long long id = 0, packets = 0, bytes = 0;
  std::string selector;
};

// Every record of a flow store with the selector the api would write for it.
std::vector<StoredFlow> stored_flows(const std::string& path) {
  std::vector<StoredFlow> out;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db,
                               "SELECT id, packets, bytes, ip_version, proto, src, sport, dst, "
                               "dport, vlan, start_ms, end_ms, rev_packets IS NOT NULL "
                               "FROM flows ORDER BY id",
                               -1, &s, nullptr),
            SQLITE_OK);
  while (sqlite3_step(s) == SQLITE_ROW) {
    StoredFlow f;
    f.id = sqlite3_column_int64(s, 0);
    f.packets = sqlite3_column_int64(s, 1);
    f.bytes = sqlite3_column_int64(s, 2);
    const bool v6 = sqlite3_column_int(s, 3) == 6;
    const auto ep = [&](int a, int p) {
      const std::string addr = reinterpret_cast<const char*>(sqlite3_column_text(s, a));
      return (v6 ? "[" + addr + "]" : addr) + ":" + std::to_string(sqlite3_column_int(s, p));
    };
    f.selector = std::to_string(sqlite3_column_int(s, 4)) + " " + ep(5, 6) +
                 (sqlite3_column_int(s, 12) ? " <-> " : " -> ") + ep(7, 8) + " vlan " +
                 std::to_string(sqlite3_column_int(s, 9)) + " ms " +
                 std::to_string(sqlite3_column_int64(s, 10)) + "-" +
                 std::to_string(sqlite3_column_int64(s, 11));
    out.push_back(f);
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

// Packets in a capture file, as libpcap reads it (-1: not readable).
long long pcap_packets(const std::string& path, int* dlt = nullptr) {
  char err[PCAP_ERRBUF_SIZE] = {};
  pcap_t* p = pcap_open_offline(path.c_str(), err);
  if (!p) return -1;
  if (dlt) *dlt = pcap_datalink(p);
  long long n = 0;
  pcap_pkthdr* h = nullptr;
  const u_char* data = nullptr;
  while (pcap_next_ex(p, &h, &data) == 1) ++n;
  pcap_close(p);
  return n;
}

class Extract : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("extract-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Converts `pcap` (DPI off: labels do not change the records) with its flow store.
  std::vector<StoredFlow> convert(const std::string& pcap, bool biflow = true) {
    Options o;
    o.inputs = {pcap};
    o.output = dir_ + "/conv.ipfix";
    o.flows_db = o.output + ".flows.sqlite";
    o.dpi = false;
    o.biflow = biflow;
    fs::remove(o.flows_db);
    engine_.convert(o);
    return stored_flows(o.flows_db);
  }
  Conversion extract(const std::string& pcap, const std::string& selector, const std::string& out) {
    Options o;
    o.mode = Mode::Extract;
    o.inputs = {pcap};
    o.output = out;
    o.flow = selector;
    return engine_.convert_text(o);
  }
  // Every record's extract has the record's packets and bytes; returns the records checked.
  std::size_t check_every_record(const std::string& pcap, bool biflow = true) {
    SCOPED_TRACE(pcap + (biflow ? "" : " (uniflow)"));
    const auto flows = convert(pcap, biflow);
    EXPECT_FALSE(flows.empty());
    const std::string out = dir_ + "/flow.pcap";
    for (const auto& f : flows) {
      SCOPED_TRACE("record " + std::to_string(f.id) + ": " + f.selector);
      const Conversion c = extract(pcap, f.selector, out);
      EXPECT_EQ(pcap_packets(out), f.packets);
      EXPECT_EQ(static_cast<long long>(c.packets), f.packets);
      EXPECT_EQ(static_cast<long long>(c.bytes), f.bytes);
    }
    return flows.size();
  }

  Engine engine_{false};
  std::string dir_;
};

}  // namespace

TEST_F(Extract, EveryRecordsPcapHoldsItsPacketsOnCapturesWithFragmentsAndTunnels) {
  REQUIRE_PCAPS();
  std::size_t checked = 0;
  for (const char* name :
       {"dns_fragmented.pcap", "ip_fragmented_garbage.pcap", "4in4tunnel.pcap", "6in4tunnel.pcap",
        "4in6tunnel.pcap", "teredo.pcap", "ipv6_in_gtp.pcap", "1kxun.pcap"}) {
    const std::string pcap = pcaps + "/" + name;
    ASSERT_TRUE(fs::exists(pcap)) << pcap;
    checked += check_every_record(pcap);
  }
  EXPECT_GT(checked, 200u);
}

TEST_F(Extract, AUniflowRecordsPcapHoldsOnlyItsDirection) {
  REQUIRE_PCAPS();
  EXPECT_GT(check_every_record(pcaps + "/1kxun.pcap", false), 150u);
}

TEST_F(Extract, TsharkReadsThePcapAndSeesOnlyTheFlowsEndpoints) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("tshark");
  const std::string pcap = pcaps + "/443-chrome.pcap";
  const auto flows = convert(pcap);
  ASSERT_FALSE(flows.empty());
  const StoredFlow* big = &flows.front();
  for (const auto& f : flows)
    if (f.packets > big->packets) big = &f;
  const std::string out = dir_ + "/big.pcap";
  extract(pcap, big->selector, out);
  const RunResult r = run("tshark -n -r " + shell_quote(out) +
                          " -T fields -e ip.src -e ip.dst -e tcp.srcport -e tcp.dstport");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto sel = std::get<flows::Selector>(flows::parse_selector(big->selector));
  const std::string text = flows::format_selector(sel);  // "tcp A:p <-> B:q ms ..."
  std::set<std::string> endpoints;
  long long lines = 0;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    ++lines;
    std::istringstream f(line);
    std::string src, dst, sport, dport;
    f >> src >> dst >> sport >> dport;
    endpoints.insert(src + ":" + sport);
    endpoints.insert(dst + ":" + dport);
  }
  EXPECT_EQ(lines, big->packets);
  ASSERT_EQ(endpoints.size(), 2u) << r.out.substr(0, 2000);
  for (const auto& e : endpoints) EXPECT_NE(text.find(" " + e + " "), std::string::npos) << e;
}

TEST_F(Extract, NoMatchingPacketGivesAValidEmptyCaptureAndSaysSo) {
  REQUIRE_PCAPS();
  const std::string pcap = pcaps + "/443-chrome.pcap";
  const std::string out = dir_ + "/none.pcap";
  const Conversion c = extract(pcap, "udp 192.0.2.1:1 <-> 192.0.2.2:2", out);
  EXPECT_EQ(c.packets, 0u);
  EXPECT_EQ(c.flows, 0u);
  int dlt = -1;
  EXPECT_EQ(pcap_packets(out, &dlt), 0);
  EXPECT_EQ(dlt, DLT_EN10MB);
  EXPECT_NE(c.summary.find("no packet of the flow was found"), std::string::npos) << c.summary;
}

TEST_F(Extract, ABadSelectorOrInputIsAClearErrorAndLeavesNoFile) {
  REQUIRE_PCAPS();
  const std::string out = dir_ + "/bad.pcap";
  try {
    extract(pcaps + "/443-chrome.pcap", "tcp 10.0.0.1:1 <> 10.0.0.2:2", out);
    ADD_FAILURE() << "a bad selector was accepted";
  } catch (const EngineError& e) {
    EXPECT_NE(std::string(e.what()).find("not a flow selector"), std::string::npos) << e.what();
  }
  EXPECT_THROW(extract(dir_ + "/missing.pcap", "tcp 10.0.0.1:1 <-> 10.0.0.2:2", out), EngineError);
  for (const auto& e : fs::directory_iterator(dir_)) ADD_FAILURE() << "left: " << e.path();
}

TEST_F(Extract, Pcap2ipfixExtractWritesTheFlowsPcapAsCapinfosCountsIt) {
  REQUIRE_PCAPS();
  REQUIRE_TOOL("capinfos");
  const std::string pcap = pcaps + "/1kxun.pcap";
  const auto flows = convert(pcap);
  ASSERT_FALSE(flows.empty());
  const StoredFlow* big = &flows.front();
  for (const auto& f : flows)
    if (f.packets > big->packets) big = &f;
  const std::string out = dir_ + "/cli.pcap";
  RunResult r = run(pcap2ipfix() + " -q --extract " + shell_quote(big->selector) + " -o " +
                    shell_quote(out) + " " + shell_quote(pcap));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(static_cast<long long>(capinfos_packets(out)), big->packets);
  r = run(pcap2ipfix() + " -q --extract 'tcp 1.2.3.4:1 <> 1.2.3.5:2' -o " + shell_quote(out) + " " +
          shell_quote(pcap));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a flow selector"), std::string::npos) << r.err;
  r = run(pcap2ipfix() + " -q --extract " + shell_quote(big->selector) + " --flows-db x -o " +
          shell_quote(out) + " " + shell_quote(pcap));
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace ipfixweb::engine::test

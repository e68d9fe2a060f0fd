// The flow store (pcap2ipfix --flows-db) holds the IPFIX file's records, record for record and
// in the same order, as tshark decodes the file (not as our code does): addresses, ports,
// protocol, forward counters, application name, Community ID and risk; and its time series
// sums to the records' totals per application and protocol.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <map>

#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

struct Row {
  std::string src, dst, app, community_id;
  long long sport = 0, dport = 0, proto = 0, fwd_bytes = 0, fwd_packets = 0, risk = 0;
  bool has_app = false;
};

std::vector<Row> store_rows(const std::string& path) {
  std::vector<Row> out;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db,
                               "SELECT src, dst, sport, dport, proto, fwd_bytes, fwd_packets, app, "
                               "community_id, risk FROM flows ORDER BY id",
                               -1, &s, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  const auto text = [&](int i) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
    return p ? std::string(p) : std::string();
  };
  while (sqlite3_step(s) == SQLITE_ROW) {
    Row r;
    r.src = text(0);
    r.dst = text(1);
    r.sport = sqlite3_column_int64(s, 2);
    r.dport = sqlite3_column_int64(s, 3);
    r.proto = sqlite3_column_int64(s, 4);
    r.fwd_bytes = sqlite3_column_int64(s, 5);
    r.fwd_packets = sqlite3_column_int64(s, 6);
    r.has_app = sqlite3_column_type(s, 7) != SQLITE_NULL;
    r.app = text(7);
    r.community_id = text(8);
    r.risk = sqlite3_column_int64(s, 9);
    out.push_back(r);
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

long long scalar(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW)
    v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

std::string field(const Record& r, const std::string& a, const std::string& b = "") {
  auto it = r.find(a);
  if (it == r.end() && !b.empty()) it = r.find(b);
  return it == r.end() ? std::string() : it->second;
}

long long num(const std::string& s) { return s.empty() ? 0 : std::stoll(s); }

// Converts `pcap` with `extra` flags and compares the store with tshark's reading of the file.
void check_capture(const std::string& pcap, const std::string& extra) {
  SCOPED_TRACE(pcap + " " + extra);
  const std::string dir = fs::temp_directory_path() / ("flowstore-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string ipfix = dir + "/out.ipfix", store = dir + "/out.ipfix.flows.sqlite";
  fs::remove(store);
  const RunResult r = run(pcap2ipfix() + " -q " + extra + " -o " + shell_quote(ipfix) +
                          " --flows-db " + shell_quote(store) + " " + shell_quote(pcap));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string err;
  const std::vector<Record> decoded = tshark_records(ipfix, &err);
  ASSERT_TRUE(err.empty()) << err;
  const std::vector<Row> rows = store_rows(store);
  ASSERT_EQ(rows.size(), decoded.size());
  ASSERT_FALSE(rows.empty());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE("record " + std::to_string(i + 1));
    const Record& d = decoded[i];
    const Row& s = rows[i];
    EXPECT_EQ(s.src, field(d, "cflow.srcaddr", "cflow.srcaddrv6"));
    EXPECT_EQ(s.dst, field(d, "cflow.dstaddr", "cflow.dstaddrv6"));
    EXPECT_EQ(s.sport, num(field(d, "cflow.srcport")));
    EXPECT_EQ(s.dport, num(field(d, "cflow.dstport")));
    EXPECT_EQ(s.proto, num(field(d, "cflow.protocol")));
    EXPECT_EQ(s.fwd_bytes, num(field(d, "cflow.octets")));
    EXPECT_EQ(s.fwd_packets, num(field(d, "cflow.packets")));
    EXPECT_EQ(s.community_id, field(d, "32473/1"));
    if (s.has_app) {
      EXPECT_EQ(s.app, field(d, "cflow.appl_name"));
      EXPECT_EQ(static_cast<std::uint64_t>(s.risk), be_uint(field(d, "35632/509")));
    }
  }
  // The series holds every packet, byte and record once, by application and by protocol.
  for (const std::string dim : {"app", "proto"}) {
    if (dim == "app" && !rows.front().has_app) continue;
    EXPECT_EQ(scalar(store, "SELECT sum(packets) FROM series WHERE dim = '" + dim + "'"),
              scalar(store, "SELECT sum(packets) FROM flows"));
    EXPECT_EQ(scalar(store, "SELECT sum(bytes) FROM series WHERE dim = '" + dim + "'"),
              scalar(store, "SELECT sum(bytes) FROM flows"));
    EXPECT_EQ(scalar(store, "SELECT sum(flows) FROM series WHERE dim = '" + dim + "'"),
              static_cast<long long>(rows.size()));
  }
  EXPECT_EQ(scalar(store,
                   "SELECT count(*) FROM (SELECT app, sum(packets) p FROM flows GROUP BY app) f "
                   "LEFT JOIN (SELECT key, sum(packets) p FROM series WHERE dim = 'app' GROUP BY "
                   "key) s ON s.key = f.app WHERE s.p IS NOT f.p AND f.app IS NOT NULL"),
            0);
  fs::remove_all(dir);
}

TEST(FlowStore, HoldsTheIpfixRecordsAsTsharkDecodesThemOnTheSampleCapture) {
  REQUIRE_TOOL("tshark");
  const std::string sample = std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap";
  check_capture(sample, "");
  check_capture(sample, "--uniflow");
  check_capture(sample, "--no-dpi");
}

TEST(FlowStore, HoldsTheIpfixRecordsAsTsharkDecodesThemOnTheCorpus) {
  REQUIRE_TOOL("tshark");
  REQUIRE_PCAPS();
  for (const char* name :
       {"443-chrome.pcap", "6in4tunnel.pcap", "WebattackSQLinj.pcap", "bittorrent.pcap",
        "KakaoTalk_chat.pcap", "alexa-app.pcapng", "bad-dns-traffic.pcap", "NTPv4.pcap"}) {
    const std::string p = pcaps + "/" + name;
    if (!fs::exists(p)) continue;
    check_capture(p, "");
  }
  const std::string p = pcaps + "/443-chrome.pcap";
  if (fs::exists(p)) check_capture(p, "--uniflow");
}

TEST(FlowStore, IsNotLeftBehindWhenTheConversionFails) {
  const std::string dir =
      fs::temp_directory_path() / ("flowstore-fail-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string bad = dir + "/bad.pcap";
  std::FILE* f = std::fopen(bad.c_str(), "wb");
  std::fputs("not a capture at all, just text", f);
  std::fclose(f);
  const RunResult r =
      run(pcap2ipfix() + " -q -o " + shell_quote(dir + "/o.ipfix") + " --flows-db " +
          shell_quote(dir + "/o.flows.sqlite") + " " + shell_quote(bad));
  EXPECT_NE(r.exit_code, 0);
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename(), "bad.pcap") << "left behind: " << e.path();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ipfixweb::engine::test

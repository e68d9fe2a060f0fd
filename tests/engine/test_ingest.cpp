// IPFIX ingest (Mode::Ingest, pcap2ipfix --ingest): IPFIX files of other exporters and of our
// own become an IPFIX file in our templates, a flow store and a summary. Counts and values are
// checked against ipfixDump and tshark (independent decoders), not against our own reader.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fixbuf/public.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "ipfix_ingest.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Engine& engine() {
  static Engine e(false);  // nDPI is set up on first use (labels given as numbers only)
  return e;
}

// ---- helpers --------------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Every file in `dir` but `keep`.
std::vector<std::string> others_in(const std::string& dir, const std::set<std::string>& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!keep.count(n)) out.push_back(n);
  }
  return out;
}

Options ingest_options(const std::vector<std::string>& inputs, const std::string& out,
                       bool store = true) {
  Options o;
  o.mode = Mode::Ingest;
  o.inputs = inputs;
  o.output = out;
  if (store) o.flows_db = out + ".flows.sqlite";
  return o;
}

// A flow store's `flows` rows, every column as text (nullopt = NULL), in id order.
using StoreRow = std::map<std::string, std::optional<std::string>>;
std::vector<StoreRow> store_rows(const std::string& path) {
  std::vector<StoreRow> out;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK) << path;
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, "SELECT * FROM flows ORDER BY id", -1, &s, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  while (s && sqlite3_step(s) == SQLITE_ROW) {
    StoreRow r;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      const std::string name = sqlite3_column_name(s, i);
      if (sqlite3_column_type(s, i) == SQLITE_NULL) {
        r[name] = std::nullopt;
      } else if (sqlite3_column_type(s, i) == SQLITE_BLOB) {
        const auto* b = static_cast<const char*>(sqlite3_column_blob(s, i));
        r[name] = std::string(b, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
      } else {
        r[name] = std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, i)));
      }
    }
    out.push_back(std::move(r));
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return out;
}

std::string scalar(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  std::string v = "(error)";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW) {
    const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    v = t ? t : "NULL";
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return v;
}

long long num(const std::optional<std::string>& v) { return v ? std::stoll(*v) : -1; }

// ipfixDump's reading of a file: every data record with its template id, and which templates
// are options templates.
struct DumpRecord {
  unsigned tid = 0;
  std::map<std::string, std::string> fields;  // by element id ("8", "29305/85")
};
struct Dump {
  std::vector<DumpRecord> records;
  std::set<unsigned> options_tids;
  std::string err;
  std::vector<const DumpRecord*> data() const {  // options records left out
    std::vector<const DumpRecord*> v;
    for (const auto& r : records)
      if (!options_tids.count(r.tid)) v.push_back(&r);
    return v;
  }
};

Dump ipfix_dump_full(const std::string& path, const std::string& flags = "") {
  Dump d;
  const RunResult r = run("ipfixDump " + flags + " --in " + shell_quote(path));
  d.err = r.err;
  std::istringstream in(r.out);
  std::string line;
  DumpRecord* cur = nullptr;
  bool options_template = false, in_template = false;
  while (std::getline(in, line)) {
    if (line.rfind("--- options template record", 0) == 0 ||
        line.rfind("--- template record", 0) == 0) {
      options_template = line.rfind("--- options", 0) == 0;
      in_template = true;
      cur = nullptr;
      continue;
    }
    if (line.rfind("--- data record", 0) == 0) {
      d.records.emplace_back();
      cur = &d.records.back();
      in_template = false;
      continue;
    }
    if (line.rfind("---", 0) == 0 || line.rfind("***", 0) == 0) {
      cur = nullptr;
      in_template = false;
      continue;
    }
    if (const auto p = line.find("tid: "); p != std::string::npos && (in_template || cur)) {
      const unsigned tid = static_cast<unsigned>(std::stoul(line.substr(p + 5)));
      if (in_template && options_template) d.options_tids.insert(tid);
      if (cur) cur->tid = tid;
      continue;
    }
    if (!cur || line.size() < 3 || line[0] != '\t' || line[1] != '(') continue;
    const auto close = line.find(')');
    const auto colon = line.find(" : ", close);
    if (close == std::string::npos || colon == std::string::npos) continue;
    std::string value = line.substr(colon + 3);
    if (value.rfind("(len: ", 0) == 0) {
      const auto end = value.find(") ");
      value = end == std::string::npos ? std::string() : value.substr(end + 2);
    }
    const std::string id = line.substr(2, close - 2);
    if (id == "27" || id == "28") {
      unsigned char a[16];
      char buf[INET6_ADDRSTRLEN];
      if (inet_pton(AF_INET6, value.c_str(), a) == 1 && inet_ntop(AF_INET6, a, buf, sizeof buf))
        value = buf;
    }
    cur->fields[id] = value;
  }
  return d;
}

// "2016-08-02 02:19:35.419" (ipfixDump's milliseconds, UTC) -> ms since 1970.
long long dump_ms(const std::string& t) {
  std::tm tm{};
  int ms = 0;
  std::sscanf(t.c_str(), "%d-%d-%d %d:%d:%d.%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
              &tm.tm_min, &tm.tm_sec, &ms);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<long long>(timegm(&tm)) * 1000 + ms;
}

unsigned long long dump_num(const DumpRecord& r, const std::string& id) {
  const auto it = r.fields.find(id);
  return it == r.fields.end() ? 0 : std::stoull(it->second);
}

// ---- IPFIX messages built byte by byte ------------------------------------------------------

struct Bytes8 {
  std::string b;
  Bytes8& u8(unsigned v) {
    b.push_back(static_cast<char>(v & 0xff));
    return *this;
  }
  Bytes8& u16(unsigned v) { return u8(v >> 8).u8(v); }
  Bytes8& u32(std::uint32_t v) { return u16(v >> 16).u16(v & 0xffff); }
  Bytes8& u64(std::uint64_t v) {
    return u32(static_cast<std::uint32_t>(v >> 32)).u32(v & 0xffffffff);
  }
  Bytes8& ip4(const std::string& a) {
    in_addr x{};
    inet_pton(AF_INET, a.c_str(), &x);
    b.append(reinterpret_cast<const char*>(&x), 4);
    return *this;
  }
  Bytes8& str(const std::string& s) {
    u8(static_cast<unsigned>(s.size()));
    b += s;
    return *this;
  }
};

std::string ipfix_set(unsigned id, const std::string& body) {
  Bytes8 h;
  h.u16(id).u16(static_cast<unsigned>(4 + body.size()));
  return h.b + body;
}
// A template record: (element id | 0x8000 when enterprise, length, PEN) triples.
struct Spec {
  unsigned id;
  unsigned len;
  std::uint32_t pen = 0;
};
std::string template_record(unsigned tid, const std::vector<Spec>& fields, unsigned scope = 0) {
  Bytes8 t;
  t.u16(tid).u16(static_cast<unsigned>(fields.size()));
  if (scope) t.u16(scope);
  for (const auto& f : fields) {
    t.u16(f.pen ? (f.id | 0x8000) : f.id).u16(f.len);
    if (f.pen) t.u32(f.pen);
  }
  return t.b;
}
std::string ipfix_message(std::uint32_t export_s, std::uint32_t seq, std::uint32_t domain,
                          const std::vector<std::string>& sets) {
  std::string body;
  for (const auto& s : sets) body += s;
  Bytes8 h;
  h.u16(10).u16(static_cast<unsigned>(16 + body.size())).u32(export_s).u32(seq).u32(domain);
  return h.b + body;
}

const std::string kFixtures = std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data";

// ---- the reference files -----------------------------------------------------------------------

// Loads one of ../shared/pcaps/ipfix-samples and checks rows and totals against ipfixDump.
void check_sample(
    const std::string& file,
    const std::function<void(const json&, const std::vector<StoreRow>&, const Dump&)>& more) {
  REQUIRE_TOOL("ipfixDump");
  const std::string pcaps = pcaps_dir();
  if (pcaps.empty()) GTEST_SKIP() << "shared pcaps not found";
  const std::string in = pcaps + "/ipfix-samples/" + file;
  TempDir dir;
  const Options o = ingest_options({in}, dir.file("out.ipfix"));
  const json j = engine().convert(o);
  const Dump d = ipfix_dump_full(in);
  const auto data = d.data();
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), data.size()) << "rows = ipfixDump's data records less options records";
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), data.size());
  unsigned long long packets = 0, bytes = 0;
  for (const auto* r : data) {
    packets += dump_num(*r, "2") + dump_num(*r, "86");
    bytes += dump_num(*r, "1") + dump_num(*r, "85");
  }
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), packets);
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), bytes);
  EXPECT_EQ(scalar(o.flows_db, "SELECT sum(packets) FROM flows"), std::to_string(packets));
  EXPECT_EQ(scalar(o.flows_db, "SELECT sum(bytes) FROM flows"), std::to_string(bytes));
  EXPECT_EQ(scalar(o.flows_db, "SELECT sum(packets) FROM series WHERE dim = 'proto'"),
            std::to_string(packets));
  EXPECT_EQ(scalar(o.flows_db, "SELECT sum(flows) FROM series WHERE dim = 'proto'"),
            std::to_string(rows.size()));
  EXPECT_EQ(scalar(o.flows_db, "SELECT value FROM meta WHERE key = 'source'"), "ipfix");
  EXPECT_EQ(j["source"], "ipfix");
  EXPECT_EQ(j["ipfix"]["options_records"].get<std::uint64_t>(), d.records.size() - data.size());
  EXPECT_EQ(j["inputs"][0]["file_bytes"].get<std::uint64_t>(), fs::file_size(in));
  EXPECT_EQ(j["inputs"][0]["records"].get<std::uint64_t>(), d.records.size());
  // The re-exported file is clean for ipfixDump and has the same number of records.
  const Dump again = ipfix_dump_full(o.output);
  EXPECT_EQ(again.err, "");
  EXPECT_EQ(again.records.size(), rows.size());
  more(j, rows, d);
}

TEST(Ingest, SoftflowdRecordsLoadWithIpfixDumpCounts) {
  check_sample(
      "softflowd-1kxun.ipfix", [](const json& j, const std::vector<StoreRow>& rows, const Dump& d) {
        EXPECT_EQ(rows.size(), 164u);  // VALIDATORS.md: nfdump counts 164 flows, 1439 packets
        EXPECT_EQ(j["packets"].get<std::uint64_t>(), 1439u);
        EXPECT_EQ(j["bytes"].get<std::uint64_t>(), 609679u);
        EXPECT_EQ(j["ipfix"]["uniflow_records"].get<std::uint64_t>(), 164u);
        EXPECT_EQ(j["ipfix"]["options_templates"].get<std::uint64_t>(), 1u);
        // Every record, field by field, as ipfixDump prints it (uniflow: no reverse columns).
        const auto data = d.data();
        for (std::size_t i = 0; i < rows.size(); ++i) {
          SCOPED_TRACE("record " + std::to_string(i + 1));
          const DumpRecord& r = *data[i];
          const StoreRow& s = rows[i];
          const bool v6 = r.fields.count("27") > 0;
          EXPECT_EQ(*s.at("src"), r.fields.at(v6 ? "27" : "8"));
          EXPECT_EQ(*s.at("dst"), r.fields.at(v6 ? "28" : "12"));
          EXPECT_EQ(num(s.at("ip_version")), v6 ? 6 : 4);
          EXPECT_EQ(num(s.at("sport")), static_cast<long long>(dump_num(r, "7")));
          EXPECT_EQ(num(s.at("dport")), static_cast<long long>(dump_num(r, "11")));
          EXPECT_EQ(num(s.at("proto")), static_cast<long long>(dump_num(r, "4")));
          EXPECT_EQ(num(s.at("packets")), static_cast<long long>(dump_num(r, "2")));
          EXPECT_EQ(num(s.at("bytes")), static_cast<long long>(dump_num(r, "1")));
          EXPECT_EQ(num(s.at("start_ms")), dump_ms(r.fields.at("152")));
          EXPECT_EQ(num(s.at("end_ms")), dump_ms(r.fields.at("153")));
          EXPECT_EQ(num(s.at("end_reason")), static_cast<long long>(dump_num(r, "136")));
          EXPECT_EQ(num(s.at("tos")), static_cast<long long>(dump_num(r, "5")));
          EXPECT_EQ(num(s.at("tcp_flags")), static_cast<long long>(dump_num(r, "6")));
          const std::string icmp = v6 ? "139" : "32";
          if (r.fields.count(icmp)) {
            EXPECT_EQ(num(s.at("icmp_type_code")), static_cast<long long>(dump_num(r, icmp)));
          }
          EXPECT_FALSE(s.at("rev_packets"));
          EXPECT_FALSE(s.at("app"));  // softflowd knows no applications
          EXPECT_TRUE(s.at("community_id"));
        }
      });
}

TEST(Ingest, HandWrittenSampleKeepsItsApplicationNames) {
  check_sample("sample-v4-appname.ipfix",
               [](const json& j, const std::vector<StoreRow>& rows, const Dump& d) {
                 const auto data = d.data();
                 ASSERT_EQ(rows.size(), 2u);
                 for (std::size_t i = 0; i < rows.size(); ++i) {
                   EXPECT_EQ(*rows[i].at("app"), data[i]->fields.at("96"));
                   EXPECT_EQ(num(rows[i].at("start_ms")), dump_ms(data[i]->fields.at("152")));
                   EXPECT_EQ(num(rows[i].at("end_ms")), dump_ms(data[i]->fields.at("153")));
                 }
                 EXPECT_EQ(*rows[0].at("app"), "TLS.Google");
                 EXPECT_EQ(j["top_applications_by_bytes"][0]["application"], "TLS.Google");
                 EXPECT_EQ(j["ipfix"]["labelled_records"].get<std::uint64_t>(), 2u);
               });
}

TEST(Ingest, NtopElementsNameTheApplicationAsTsharkDoes) {
  REQUIRE_TOOL("tshark");
  check_sample("sample-v6-ntop-ie.ipfix",
               [](const json& j, const std::vector<StoreRow>& rows, const Dump&) {
                 ASSERT_EQ(rows.size(), 1u);
                 const std::string in = pcaps_dir() + "/ipfix-samples/sample-v6-ntop-ie.ipfix";
                 const auto t = tshark_records(in);
                 ASSERT_EQ(t.size(), 1u);
                 // 35632/119 L7_PROTO_NAME names it; applicationId (PANA-L7-PEN 35632, selector
                 // 188) and 35632/118 L7_PROTO give the nDPI id.
                 EXPECT_EQ(*rows[0].at("app"), t[0].at("cflow.pie.ntop.l7_proto_name"));
                 EXPECT_EQ(*rows[0].at("app_id"), t[0].at("cflow.pie.ntop.l7_proto"));
                 EXPECT_EQ(*rows[0].at("src"), t[0].at("cflow.srcaddrv6"));
                 EXPECT_EQ(*rows[0].at("dst"), t[0].at("cflow.dstaddrv6"));
                 // No time elements: the message's export time (2023-11-14 22:13:22), with a
                 // warning.
                 EXPECT_EQ(num(rows[0].at("start_ms")), 1700000002000LL);
                 EXPECT_EQ(num(rows[0].at("end_ms")), 1700000002000LL);
                 EXPECT_EQ(j["ipfix"]["times_from_export_time"].get<std::uint64_t>(), 1u);
                 EXPECT_FALSE(j["warnings"].empty());
               });
}

// Without applicationName and L7_PROTO_NAME, the nDPI id of applicationId is named by nDPI;
// other classification engines are shown as engine:selector.
TEST(Ingest, NumericApplicationIdsAreNamed) {
  TempDir dir;
  const std::string tmpl =
      template_record(300, {{8, 4}, {12, 4}, {4, 1}, {2, 8}, {1, 8}, {95, 0xffff}});
  Bytes8 d;
  const auto rec = [&](const std::string& app_id) {
    d.ip4("10.0.0.1").ip4("10.0.0.2").u8(17).u64(1).u64(100).str(app_id);
  };
  rec(std::string("\x14\x00\x00\x8b\x30\x00\xbc", 7));  // PANA-L7-PEN 35632 188 (nDPI: QUIC)
  rec(std::string("\x16\x00\x07", 3));                  // engine 22 (ours), nDPI 7 (HTTP)
  rec(std::string("\x03\x01\xbb", 3));                  // IANA-L4 443
  write_file(dir.file("in.ipfix"),
             ipfix_message(1700000000, 0, 1, {ipfix_set(2, tmpl), ipfix_set(300, d.b)}));
  const Options o = ingest_options({dir.file("in.ipfix")}, dir.file("out.ipfix"));
  engine().convert(o);
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(*rows[0].at("app"), "QUIC");
  EXPECT_EQ(*rows[0].at("app_id"), "188");
  EXPECT_EQ(*rows[1].at("app"), "HTTP");
  EXPECT_EQ(*rows[1].at("app_id"), "7");
  EXPECT_EQ(*rows[2].at("app"), "IANA-L4:443");
  EXPECT_EQ(*rows[2].at("app_id"), "0");
}

// ---- our own files round-trip -------------------------------------------------------------------

// Converts a capture, ingests its IPFIX file, and compares the stores row for row (every
// column) and the two IPFIX files record for record as tshark decodes them.
void check_round_trip(const std::string& pcap, bool biflow, bool dpi, bool through_tshark = true) {
  SCOPED_TRACE(pcap + (biflow ? " biflow" : " uniflow") + (dpi ? "" : " no-dpi"));
  TempDir dir;
  Options c;
  c.inputs = {pcap};
  c.output = dir.file("conv.ipfix");
  c.flows_db = c.output + ".flows.sqlite";
  c.biflow = biflow;
  c.dpi = dpi;
  static Engine with_dpi;  // the conversion labels with nDPI
  const json cj = with_dpi.convert(c);
  Options i = ingest_options({c.output}, dir.file("ingested.ipfix"));
  i.biflow = biflow;
  i.dpi = dpi;
  const json ij = engine().convert(i);

  const auto a = store_rows(c.flows_db), b = store_rows(i.flows_db);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (a[k] != b[k]) {
      for (const auto& [col, v] : a[k]) {
        EXPECT_EQ(v, b[k].at(col)) << "row " << k + 1 << " column " << col;
      }
      FAIL() << "row " << k + 1 << " differs";
    }
  }
  for (const char* key :
       {"packets", "bytes", "flows", "first_packet", "last_packet", "applications_distinct"}) {
    EXPECT_EQ(cj[key], ij[key]) << key;
  }
  // A conversion counts flows there, an ingest records: the same with biflow records.
  if (biflow) {
    for (const char* key : {"top_applications_by_bytes", "top_applications_by_flows", "protocols",
                            "flow_end_reasons", "biflows"}) {
      EXPECT_EQ(cj[key], ij[key]) << key;
    }
  }
  EXPECT_EQ(scalar(i.flows_db, "SELECT sum(bytes) FROM series WHERE dim = 'proto'"),
            scalar(c.flows_db, "SELECT sum(bytes) FROM series WHERE dim = 'proto'"));
  EXPECT_EQ(scalar(i.flows_db, "SELECT sum(flows) FROM series WHERE dim = 'app'"),
            scalar(c.flows_db, "SELECT sum(flows) FROM series WHERE dim = 'app'"));

  if (!through_tshark || !have_tool("tshark")) return;
  std::string err1, err2;
  const auto ta = tshark_records(c.output, &err1), tb = tshark_records(i.output, &err2);
  ASSERT_EQ(err1, "");
  ASSERT_EQ(err2, "");
  ASSERT_EQ(ta.size(), tb.size());
  for (std::size_t k = 0; k < ta.size(); ++k) EXPECT_EQ(ta[k], tb[k]) << "record " << k + 1;
}

TEST(Ingest, OwnConversionRoundTripsRowForRow) {
  REQUIRE_PCAPS();
  for (const char* name : {"1kxun.pcap", "6in4tunnel.pcap", "WebattackSQLinj.pcap",
                           "ja3_lots_of_cipher_suites.pcap", "iphone.pcap"}) {
    const std::string p = pcaps + "/" + name;
    if (!fs::exists(p)) continue;
    check_round_trip(p, true, true);
  }
  const std::string p = pcaps + "/6in4tunnel.pcap";
  if (fs::exists(p)) {
    check_round_trip(p, false, true);
    check_round_trip(p, true, false);
  }
  // 21 messages of 64 KiB, one with an empty data set (libfixbuf 2.4 writes them).
  const std::string dense = pcaps + "/bench/mixed-dense.pcap";
  if (fs::exists(dense)) check_round_trip(dense, true, true, false);
}

// An empty data set (libfixbuf 2.4's exporter writes them, RFC 7011 does not allow them) is
// skipped: libfixbuf's reader would take it for a record and read the next set's in its place.
TEST(Ingest, EmptyDataSetsAreSkipped) {
  const std::string t4 = template_record(300, {{8, 4}, {12, 4}, {2, 8}});
  const std::string t6 = template_record(301, {{27, 16}, {28, 16}, {2, 8}});
  Bytes8 r4, r6;
  r4.ip4("10.0.0.1").ip4("10.0.0.2").u64(3);
  r6.u64(0x20010db800000000ULL).u64(1).u64(0x20010db800000000ULL).u64(2).u64(5);
  json j;
  TempDir dir;
  write_file(dir.file("in.ipfix"),
             ipfix_message(1700000000, 0, 1,
                           {ipfix_set(2, t4 + t6), ipfix_set(300, r4.b), ipfix_set(300, ""),
                            ipfix_set(301, r6.b), ipfix_set(300, "")}));
  const Options o = ingest_options({dir.file("in.ipfix")}, dir.file("out.ipfix"));
  j = engine().convert(o);
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(*rows[0].at("src"), "10.0.0.1");
  EXPECT_EQ(*rows[1].at("src"), "2001:db8::1");
  EXPECT_EQ(*rows[1].at("dst"), "2001:db8::2");
  EXPECT_EQ(num(rows[1].at("packets")), 5);
}

// libfixbuf's information model is built once (0.6 ms) and reused by the next ingest, unless
// reading a file added elements to it (libfixbuf adds the enterprise elements it does not
// know): such a model is dropped.
TEST(Ingest, AModelIsReusedUnlessReadingAddedElementsToIt) {
  TempDir dir;
  Bytes8 r4;
  r4.ip4("10.0.0.1").ip4("10.0.0.2").u64(3);
  write_file(dir.file("plain.ipfix"),
             ipfix_message(1700000000, 0, 1,
                           {ipfix_set(2, template_record(300, {{8, 4}, {12, 4}, {2, 8}})),
                            ipfix_set(300, r4.b)}));
  Bytes8 ra;
  ra.ip4("10.0.0.3").ip4("10.0.0.4").u64(4).u32(7);
  write_file(dir.file("alien.ipfix"),
             ipfix_message(
                 1700000000, 0, 1,
                 {ipfix_set(2, template_record(301, {{8, 4}, {12, 4}, {2, 8}, {77, 4, 4242424}})),
                  ipfix_set(301, ra.b)}));
  int n = 0;
  auto ingest = [&](const char* in) {
    const Options o = ingest_options({dir.file(in)}, dir.file("out" + std::to_string(++n)));
    const json j = engine().convert(o);
    EXPECT_EQ(store_rows(o.flows_db).size(), 1u) << in;
    return j;
  };
  ingest("plain.ipfix");  // a model is in the pool now
  const auto made = ingest_models_made();
  ingest("plain.ipfix");
  EXPECT_EQ(ingest_models_made(), made) << "the model was not reused";
  ingest("alien.ipfix");
  EXPECT_EQ(ingest_models_made(), made);
  ingest("plain.ipfix");
  EXPECT_EQ(ingest_models_made(), made + 1) << "a model that learnt an element was reused";
  ingest("alien.ipfix");
  ingest("alien.ipfix");
  EXPECT_EQ(ingest_models_made(), made + 2);
}

TEST(Ingest, GeneratedCaptureRoundTripsInEveryMode) {
  const std::string sample = kFixtures + "/sample.pcap";
  ASSERT_TRUE(fs::exists(sample));
  check_round_trip(sample, true, true);
  check_round_trip(sample, false, true);
  check_round_trip(sample, true, false);
  check_round_trip(sample, false, false);
}

// ---- a YAF-style biflow file written with libfixbuf ---------------------------------------------

constexpr std::uint32_t kCertPen = 6871;

struct YafRecord {
  std::uint64_t flowStartMilliseconds;
  std::uint64_t flowEndMilliseconds;
  std::uint64_t octetTotalCount;
  std::uint64_t reverseOctetTotalCount;
  std::uint64_t packetTotalCount;
  std::uint64_t reversePacketTotalCount;
  std::uint32_t reverseFlowDeltaMilliseconds;
  std::uint32_t sourceIPv4Address;
  std::uint32_t destinationIPv4Address;
  std::uint16_t sourceTransportPort;
  std::uint16_t destinationTransportPort;
  std::uint16_t flowAttributes;
  std::uint16_t reverseFlowAttributes;
  std::uint16_t silkAppLabel;
  std::uint16_t vlanId;
  std::uint8_t protocolIdentifier;
  std::uint8_t flowEndReason;
  std::uint8_t initialTCPFlags;
  std::uint8_t unionTCPFlags;
  std::uint8_t reverseInitialTCPFlags;
  std::uint8_t reverseUnionTCPFlags;
  std::uint8_t ipClassOfService;
  std::uint8_t reverseIpClassOfService;
};
static_assert(sizeof(YafRecord) == 80);

// Writes `records` the way YAF 2 does (its element choices, CERT elements as YAF defines them:
// reversible, the reverse ones numbered with 0x4000).
void write_yaf_file(const std::string& path, const std::vector<YafRecord>& records) {
  fbInfoModel_t* model = fbInfoModelAlloc();
  const auto add = [&](const char* name, std::uint16_t num, std::uint16_t len, std::uint8_t type,
                       bool reversible) {
    fbInfoElement_t ie{};
    ie.ref.name = name;
    ie.ent = kCertPen;
    ie.num = num;
    ie.len = len;
    ie.type = type;
    ie.flags = FB_IE_F_ENDIAN | (reversible ? FB_IE_F_REVERSIBLE : 0);
    fbInfoModelAddElement(model, &ie);
  };
  add("initialTCPFlags", 14, 1, FB_UINT_8, true);
  add("unionTCPFlags", 15, 1, FB_UINT_8, true);
  add("reverseFlowDeltaMilliseconds", 21, 4, FB_UINT_32, false);
  add("silkAppLabel", 33, 2, FB_UINT_16, false);
  add("flowAttributes", 40, 2, FB_UINT_16, true);
#define IE(n, l) {const_cast<char*>(n), l, 0}
  fbInfoElementSpec_t spec[] = {IE("flowStartMilliseconds", 8),
                                IE("flowEndMilliseconds", 8),
                                IE("octetTotalCount", 8),
                                IE("reverseOctetTotalCount", 8),
                                IE("packetTotalCount", 8),
                                IE("reversePacketTotalCount", 8),
                                IE("reverseFlowDeltaMilliseconds", 4),
                                IE("sourceIPv4Address", 4),
                                IE("destinationIPv4Address", 4),
                                IE("sourceTransportPort", 2),
                                IE("destinationTransportPort", 2),
                                IE("flowAttributes", 2),
                                IE("reverseFlowAttributes", 2),
                                IE("silkAppLabel", 2),
                                IE("vlanId", 2),
                                IE("protocolIdentifier", 1),
                                IE("flowEndReason", 1),
                                IE("initialTCPFlags", 1),
                                IE("unionTCPFlags", 1),
                                IE("reverseInitialTCPFlags", 1),
                                IE("reverseUnionTCPFlags", 1),
                                IE("ipClassOfService", 1),
                                IE("reverseIpClassOfService", 1),
                                FB_IESPEC_NULL};
#undef IE
  GError* err = nullptr;
  fbSession_t* session = fbSessionAlloc(model);
  fbTemplate_t* t = fbTemplateAlloc(model);
  ASSERT_TRUE(fbTemplateAppendSpecArray(t, spec, 0, &err)) << err->message;
  ASSERT_NE(fbSessionAddTemplate(session, TRUE, 0x1001, t, &err), 0);
  fbTemplate_t* e = fbTemplateAlloc(model);
  ASSERT_TRUE(fbTemplateAppendSpecArray(e, spec, 0, &err));
  ASSERT_NE(fbSessionAddTemplate(session, FALSE, 0x1001, e, &err), 0);
  fbExporter_t* ex = fbExporterAllocFile(path.c_str());
  fBuf_t* buf = fBufAllocForExport(session, ex);
  fBufSetExportTime(buf, 1700000100);
  ASSERT_TRUE(fbSessionExportTemplates(session, &err));
  ASSERT_TRUE(fBufSetInternalTemplate(buf, 0x1001, &err));
  ASSERT_TRUE(fBufSetExportTemplate(buf, 0x1001, &err));
  for (const auto& r : records) {
    YafRecord copy = r;
    ASSERT_TRUE(fBufAppend(buf, reinterpret_cast<std::uint8_t*>(&copy), sizeof copy, &err));
  }
  ASSERT_TRUE(fBufEmit(buf, &err));
  fBufFree(buf);
  fbInfoModelFree(model);
}

std::uint32_t v4(const char* a) {
  in_addr x{};
  inet_pton(AF_INET, a, &x);
  return ntohl(x.s_addr);
}

std::vector<YafRecord> yaf_records() {
  const std::uint64_t t = 1700000000000ULL;
  std::vector<YafRecord> v;
  YafRecord http{};
  http.flowStartMilliseconds = t;
  http.flowEndMilliseconds = t + 1500;
  http.octetTotalCount = 520;
  http.reverseOctetTotalCount = 4800;
  http.packetTotalCount = 6;
  http.reversePacketTotalCount = 5;
  http.reverseFlowDeltaMilliseconds = 12;
  http.sourceIPv4Address = v4("10.1.1.1");
  http.destinationIPv4Address = v4("93.184.216.34");
  http.sourceTransportPort = 51000;
  http.destinationTransportPort = 80;
  http.silkAppLabel = 80;
  http.vlanId = 12;
  http.protocolIdentifier = 6;
  http.flowEndReason = 3;
  http.initialTCPFlags = 0x02;
  http.unionTCPFlags = 0x19;
  http.reverseInitialTCPFlags = 0x12;
  http.reverseUnionTCPFlags = 0x19;
  http.ipClassOfService = 0x10;
  v.push_back(http);
  YafRecord dns{};
  dns.flowStartMilliseconds = dns.flowEndMilliseconds = t + 200;
  dns.flowEndMilliseconds += 30;
  dns.octetTotalCount = 70;
  dns.reverseOctetTotalCount = 130;
  dns.packetTotalCount = dns.reversePacketTotalCount = 1;
  dns.reverseFlowDeltaMilliseconds = 30;
  dns.sourceIPv4Address = v4("10.1.1.1");
  dns.destinationIPv4Address = v4("8.8.8.8");
  dns.sourceTransportPort = 40000;
  dns.destinationTransportPort = 53;
  dns.silkAppLabel = 53;
  dns.protocolIdentifier = 17;
  dns.flowEndReason = 1;
  v.push_back(dns);
  YafRecord ping{};  // YAF puts ICMP type << 8 | code into destinationTransportPort
  ping.flowStartMilliseconds = t + 300;
  ping.flowEndMilliseconds = t + 1300;
  ping.octetTotalCount = 168;
  ping.packetTotalCount = 2;
  ping.sourceIPv4Address = v4("10.1.1.1");
  ping.destinationIPv4Address = v4("10.1.1.254");
  ping.destinationTransportPort = 0x0800;
  ping.protocolIdentifier = 1;
  ping.flowEndReason = 0x80 | 2;  // active timeout, continued
  v.push_back(ping);
  return v;
}

TEST(Ingest, YafStyleBiflowFileLoadsWithIpfixDumpYafCounts) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::string in = dir.file("yaf.ipfix");
  write_yaf_file(in, yaf_records());
  const Dump d = ipfix_dump_full(in, "--yaf");
  ASSERT_EQ(d.err, "");
  ASSERT_EQ(d.records.size(), 3u);
  unsigned long long packets = 0, bytes = 0;
  for (const auto& r : d.records) {
    packets += dump_num(r, "86") + dump_num(r, "29305/86");
    bytes += dump_num(r, "85") + dump_num(r, "29305/85");
  }
  // ipfixDump --yaf knows the CERT elements by the numbers written.
  const std::string text = run("ipfixDump --yaf --in " + shell_quote(in)).out;
  EXPECT_NE(text.find("silkAppLabel : 80"), std::string::npos) << text;
  EXPECT_NE(text.find("reverseFlowDeltaMilliseconds"), std::string::npos);
  EXPECT_NE(text.find("reverseUnionTCPFlags"), std::string::npos);

  const Options o = ingest_options({in}, dir.file("out.ipfix"));
  const json j = engine().convert(o);
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), d.records.size());
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), packets);
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), bytes);
  EXPECT_EQ(j["ipfix"]["biflow_records"].get<std::uint64_t>(), 3u);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE("record " + std::to_string(i + 1));
    const DumpRecord& r = d.records[i];
    EXPECT_EQ(num(rows[i].at("fwd_packets")), static_cast<long long>(dump_num(r, "86")));
    EXPECT_EQ(num(rows[i].at("rev_packets")), static_cast<long long>(dump_num(r, "29305/86")));
    EXPECT_EQ(num(rows[i].at("fwd_bytes")), static_cast<long long>(dump_num(r, "85")));
    EXPECT_EQ(num(rows[i].at("rev_bytes")), static_cast<long long>(dump_num(r, "29305/85")));
    EXPECT_EQ(num(rows[i].at("start_ms")), dump_ms(r.fields.at("152")));
    EXPECT_EQ(num(rows[i].at("end_ms")), dump_ms(r.fields.at("153")));
    EXPECT_EQ(*rows[i].at("src"), r.fields.at("8"));
    EXPECT_EQ(*rows[i].at("dst"), r.fields.at("12"));
  }
  EXPECT_EQ(*rows[0].at("app"), "HTTP");
  EXPECT_EQ(*rows[1].at("app"), "DNS");
  EXPECT_EQ(*rows[2].at("app"), "Unknown");           // silkAppLabel 0
  EXPECT_EQ(num(rows[0].at("tcp_flags")), 0x1b);      // initial | union
  EXPECT_EQ(num(rows[0].at("rev_tcp_flags")), 0x1b);  // reverse initial | union
  EXPECT_EQ(num(rows[0].at("vlan")), 12);
  EXPECT_EQ(num(rows[0].at("tos")), 0x10);
  EXPECT_EQ(num(rows[2].at("icmp_type_code")), 0x0800);
  EXPECT_EQ(num(rows[2].at("dport")), 0);
  EXPECT_EQ(num(rows[2].at("end_reason")), 2);

  // Uniflow output: each biflow becomes its directions; the reverse one starts
  // reverseFlowDeltaMilliseconds after the flow.
  Options u = ingest_options({in}, dir.file("uni.ipfix"));
  u.biflow = false;
  engine().convert(u);
  const auto urows = store_rows(u.flows_db);
  ASSERT_EQ(urows.size(), 5u);  // the ping has no reverse packets
  EXPECT_EQ(*urows[1].at("src"), "93.184.216.34");
  EXPECT_EQ(num(urows[1].at("start_ms")), 1700000000012LL);
  EXPECT_EQ(num(urows[1].at("fwd_packets")), 5);
  EXPECT_FALSE(urows[1].at("rev_packets"));
}

// ---- time elements ------------------------------------------------------------------------------

TEST(Ingest, EveryKindOfTimeElementGivesMilliseconds) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::uint32_t exp = 1700000100;  // export time of every message, seconds
  const std::uint64_t ntp = 2208988800ULL;
  const auto ntp_of = [&](std::uint64_t ms) {  // NTP 64-bit of a time in ms
    return ((ms / 1000 + ntp) << 32) | (((ms % 1000) << 32) / 1000 + 1);
  };
  const std::vector<Spec> key = {{8, 4}, {12, 4}, {4, 1}, {2, 8}, {1, 8}};
  const auto with = [&](std::vector<Spec> extra) {
    std::vector<Spec> v = key;
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  };
  const auto head = [](Bytes8& b, int n) {
    b.ip4("10.0.0." + std::to_string(n)).ip4("10.0.1.1").u8(17).u64(1).u64(100);
  };
  std::string t;
  t += template_record(301, with({{150, 4}, {151, 4}}));
  t += template_record(302, with({{154, 8}, {155, 8}}));
  t += template_record(303, with({{156, 8}, {157, 8}}));
  t += template_record(304, with({{22, 4}, {21, 4}}));
  t += template_record(305, with({{152, 8}, {161, 4}}));
  t += template_record(306, with({{158, 4}, {159, 4}}));
  t += template_record(307, key);
  const std::string options = template_record(400, {{143, 4}, {160, 8}}, 1);
  Bytes8 s1, s2, s3, s4, s5, s6, s7, opt;
  head(s1, 1);
  s1.u32(1700000000).u32(1700000003);
  head(s2, 2);
  s2.u64(ntp_of(1700000000250ULL)).u64(ntp_of(1700000000750ULL));
  head(s3, 3);
  s3.u64(ntp_of(1700000001001ULL)).u64(ntp_of(1700000001002ULL));
  head(s4, 4);
  s4.u32(5000).u32(9000);  // sysUpTime, the exporter started at 1700000050000
  head(s5, 5);
  s5.u64(1700000000100ULL).u32(400);
  head(s6, 6);
  s6.u32(3'000'000).u32(2'000'000);  // 3 s and 2 s before the export time
  head(s7, 7);
  opt.u32(1).u64(1700000050000ULL);
  std::string file =
      ipfix_message(exp, 0, 1, {ipfix_set(2, t), ipfix_set(3, options), ipfix_set(400, opt.b)});
  file += ipfix_message(
      exp, 1, 1,
      {ipfix_set(301, s1.b), ipfix_set(302, s2.b), ipfix_set(303, s3.b), ipfix_set(304, s4.b),
       ipfix_set(305, s5.b), ipfix_set(306, s6.b), ipfix_set(307, s7.b)});
  // sysUpTime in a domain without systemInitTimeMilliseconds: it ends at the export time.
  Bytes8 s8;
  head(s8, 8);
  s8.u32(1000).u32(4000);
  file += ipfix_message(
      exp, 0, 2,
      {ipfix_set(2, template_record(304, with({{22, 4}, {21, 4}}))), ipfix_set(304, s8.b)});
  write_file(dir.file("times.ipfix"), file);
  const Dump d = ipfix_dump_full(dir.file("times.ipfix"));
  EXPECT_EQ(d.data().size(), 8u) << d.err;

  const Options o = ingest_options({dir.file("times.ipfix")}, dir.file("out.ipfix"));
  const json j = engine().convert(o);
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), 8u);
  const std::vector<std::pair<long long, long long>> want = {
      {1700000000000LL, 1700000003000LL},  // seconds
      {1700000000250LL, 1700000000750LL},  // microseconds (NTP)
      {1700000001001LL, 1700000001002LL},  // nanoseconds (NTP)
      {1700000055000LL, 1700000059000LL},  // sysUpTime + options record's init time
      {1700000000100LL, 1700000000500LL},  // start + flowDurationMilliseconds
      {1700000097000LL, 1700000098000LL},  // delta microseconds before the export time
      {1700000100000LL, 1700000100000LL},  // none: the export time
      {1700000097000LL, 1700000100000LL},  // sysUpTime without init: ends at export time
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(num(rows[i].at("start_ms")), want[i].first) << "record " << i + 1;
    EXPECT_EQ(num(rows[i].at("end_ms")), want[i].second) << "record " << i + 1;
  }
  EXPECT_EQ(j["ipfix"]["options_records"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["ipfix"]["times_from_export_time"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["ipfix"]["sysuptime_from_export_time"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["ipfix"]["observation_domains"].get<std::uint64_t>(), 2u);
}

// Review finding: packet and octet counters are unsigned 64-bit numbers, and a record counting
// 2^63 bytes or more became a negative number in the flow store, after which filters and /top
// (precomputed and grouped) disagreed. Counts above 2^53 (9 PB in one record) are not
// plausible: such records are skipped and counted, in every output alike.
TEST(Ingest, RecordsCountingImplausiblyManyPacketsOrBytesAreSkippedAndCounted) {
  TempDir dir;
  const std::vector<Spec> key = {{8, 4}, {12, 4}, {4, 1}, {2, 8}, {1, 8}, {150, 4}, {151, 4}};
  Bytes8 data;
  const auto rec = [&](int n, std::uint64_t packets, std::uint64_t bytes) {
    data.ip4("10.0.0." + std::to_string(n)).ip4("10.0.1.1").u8(17).u64(packets).u64(bytes);
    data.u32(1700000000).u32(1700000001);
  };
  rec(1, 1, 100);
  rec(2, 3, (std::uint64_t{1} << 63) + 5);
  rec(3, ~std::uint64_t{0}, 60);
  rec(4, 2, std::uint64_t{1} << 53);  // the largest count taken
  std::string file = ipfix_message(
      1700000100, 0, 1, {ipfix_set(2, template_record(300, key)), ipfix_set(300, data.b)});
  write_file(dir.file("counts.ipfix"), file);
  const Options o = ingest_options({dir.file("counts.ipfix")}, dir.file("out.ipfix"));
  const json j = engine().convert(o);
  EXPECT_EQ(j["ipfix"]["skipped_implausible_counts"].get<std::uint64_t>(), 2u);
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), 100u + (std::uint64_t{1} << 53));
  const auto rows = store_rows(o.flows_db);
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& r : rows) EXPECT_GT(num(r.at("bytes")), 0) << "a count went negative";
  bool warned = false;
  for (const auto& w : j["warnings"])
    warned |= w.get<std::string>().find("2^53") != std::string::npos;
  EXPECT_TRUE(warned) << j["warnings"].dump();
}

// ---- summary, descriptors, the command line -----------------------------------------------------

TEST(Ingest, SummaryHasTheShapeOfAConversionSummary) {
  REQUIRE_PCAPS();
  TempDir dir;
  Options c;
  c.inputs = {kFixtures + "/sample.pcap"};
  c.output = dir.file("conv.ipfix");
  c.analysis = {"dns", "tcp"};
  const json cj = engine().convert(c);
  Options i = ingest_options({pcaps + "/ipfix-samples/softflowd-1kxun.ipfix", c.output},
                             dir.file("ing.ipfix"), false);
  i.analysis = c.analysis;
  const json ij = engine().convert(i);
  for (const auto& [k, v] : cj.items()) {
    if (k == "dpi_stats") continue;  // no DPI runs in an ingest
    EXPECT_TRUE(ij.contains(k)) << k;
    if (ij.contains(k)) {
      EXPECT_EQ(ij[k].type(), v.type()) << k;
    }
  }
  for (const auto& [k, v] : cj["inputs"][0].items()) EXPECT_TRUE(ij["inputs"][0].contains(k)) << k;
  EXPECT_EQ(ij["inputs"].size(), 2u);
  EXPECT_EQ(ij["inputs"][0]["link_name"], "IPFIX");
  EXPECT_EQ(ij["inputs"][1]["records"].get<std::uint64_t>(), cj["flows"].get<std::uint64_t>());
  EXPECT_EQ(ij["flows"].get<std::uint64_t>(), 164u + cj["flows"].get<std::uint64_t>());
  EXPECT_TRUE(ij["analysis"].contains("dns"));
  EXPECT_EQ(ij["source"], "ipfix");
  EXPECT_FALSE(cj.contains("source"));
  // softflowd's sequence numbers are off (VALIDATORS.md): libfixbuf's warning is passed on.
  bool sequence_warning = false;
  for (const auto& w : ij["warnings"])
    sequence_warning |= w.get<std::string>().find("out of sequence") != std::string::npos;
  EXPECT_TRUE(sequence_warning) << ij["warnings"].dump();
}

TEST(Ingest, ReadsThroughGivenDescriptorsOnly) {
  REQUIRE_PCAPS();
  TempDir dir;
  const std::string in = pcaps + "/ipfix-samples/sample-v4-appname.ipfix";
  const int fd = ::open(in.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::lseek(fd, 100, SEEK_SET);  // the engine reads from the start, and leaves the offset
  const int out_dir = ::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(out_dir, 0);
  Options o;
  o.mode = Mode::Ingest;
  o.inputs = {"/nonexistent/named-only.ipfix"};
  o.input_fds = {fd};
  o.output = "out.ipfix";
  o.output_dir_fd = out_dir;
  o.output_name = "out.ipfix";
  o.flows_db = "out.ipfix.flows.sqlite";
  const json j = engine().convert(o);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 2u);
  EXPECT_EQ(j["inputs"][0]["path"], "/nonexistent/named-only.ipfix");
  EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 100);
  EXPECT_EQ(store_rows(dir.file("out.ipfix.flows.sqlite")).size(), 2u);
  EXPECT_TRUE(others_in(dir.path(), {"out.ipfix", "out.ipfix.flows.sqlite"}).empty());
  ::close(fd);
  ::close(out_dir);
}

TEST(Ingest, Pcap2ipfixIngestWritesStoreAndExports) {
  REQUIRE_PCAPS();
  TempDir dir;
  const RunResult r = run(
      pcap2ipfix() + " -q --ingest " + shell_quote(pcaps + "/ipfix-samples/softflowd-1kxun.ipfix") +
      " -o " + shell_quote(dir.file("o.ipfix")) + " --flows-db " + shell_quote(dir.file("o.db")) +
      " --ndjson " + shell_quote(dir.file("o.ndjson")) + " --csv " +
      shell_quote(dir.file("o.csv")) + " --summary-json " + shell_quote(dir.file("s.json")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = [](const std::string& text) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  };
  EXPECT_EQ(lines(read_file(dir.file("o.ndjson"))), 164u);
  EXPECT_EQ(lines(read_file(dir.file("o.csv"))), 165u);  // with its header
  EXPECT_EQ(json::parse(read_file(dir.file("s.json")))["flows"].get<std::uint64_t>(), 164u);
  const std::string ndjson = read_file(dir.file("o.ndjson"));
  const json first = json::parse(ndjson.substr(0, ndjson.find('\n')));
  EXPECT_EQ(first["src"], "192.168.5.16");
  EXPECT_EQ(first["dport"], 80);
  // The NDJSON/CSV exports also work without --flows-db (a temporary store).
  const RunResult r2 = run(pcap2ipfix() + " -q --ingest " +
                           shell_quote(pcaps + "/ipfix-samples/sample-v4-appname.ipfix") + " -o " +
                           shell_quote(dir.file("p.ipfix")) + " --ndjson -");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(lines(r2.out), 2u);
  EXPECT_NE(r2.out.find("TLS.Google"), std::string::npos);
}

// ---- bad input ----------------------------------------------------------------------------------

// Ingests `data` as an IPFIX file; returns the error (empty when it succeeded) and checks that a
// failure leaves nothing but the input in the directory.
std::string ingest_error(const std::string& data, json* summary = nullptr) {
  TempDir dir;
  write_file(dir.file("in.ipfix"), data);
  const Options o = ingest_options({dir.file("in.ipfix")}, dir.file("out.ipfix"));
  try {
    const json j = engine().convert(o);
    if (summary) *summary = j;
    return {};
  } catch (const EngineError& e) {
    const auto left = others_in(dir.path(), {"in.ipfix"});
    EXPECT_TRUE(left.empty()) << "left behind: " << left.front();
    return e.what();
  }
}

TEST(Ingest, PcapGivenAsIpfixIsRefused) {
  const std::string err = ingest_error(read_file(kFixtures + "/sample.pcap"));
  EXPECT_NE(err.find("is a pcap capture, not an IPFIX file"), std::string::npos) << err;
  EXPECT_NE(err.find("in.ipfix"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos);
}

TEST(Ingest, EmptyAndTinyFilesAreRefused) {
  std::string err = ingest_error("");
  EXPECT_NE(err.find("is empty, not an IPFIX file"), std::string::npos) << err;
  err = ingest_error("hello, world");
  EXPECT_NE(err.find("not an IPFIX file"), std::string::npos) << err;
  err = ingest_error("just some text that is longer than sixteen bytes\n");
  EXPECT_NE(err.find("not an IPFIX file (it does not start with an IPFIX message header"),
            std::string::npos)
      << err;
}

TEST(Ingest, TruncatedFileKeepsTheRecordsBeforeTheCut) {
  REQUIRE_PCAPS();
  const std::string full = read_file(pcaps + "/ipfix-samples/softflowd-1kxun.ipfix");
  // The file's messages: cut the last one short.
  std::size_t off = 0, last = 0;
  while (off + 4 <= full.size()) {
    last = off;
    off += (static_cast<unsigned char>(full[off + 2]) << 8) |
           static_cast<unsigned char>(full[off + 3]);
  }
  json j;
  const std::string err = ingest_error(full.substr(0, last + 40), &j);
  ASSERT_EQ(err, "");
  EXPECT_TRUE(j["inputs"][0]["truncated"].get<bool>());
  EXPECT_GT(j["flows"].get<std::uint64_t>(), 0u);
  EXPECT_LT(j["flows"].get<std::uint64_t>(), 164u);
  bool warned = false;
  for (const auto& w : j["warnings"])
    warned |= w.get<std::string>().find("last message cut short") != std::string::npos;
  EXPECT_TRUE(warned) << j["warnings"].dump();
  // A few bytes of a header only.
  const std::string err2 = ingest_error(full + std::string("\x00\x0a\x01", 3), &j);
  ASSERT_EQ(err2, "");
  EXPECT_TRUE(j["inputs"][0]["truncated"].get<bool>());
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 164u);
}

TEST(Ingest, GarbageAfterAValidMessageIsAnError) {
  REQUIRE_PCAPS();
  std::string data = read_file(pcaps + "/ipfix-samples/sample-v4-appname.ipfix");
  std::mt19937 rng(7);
  for (int i = 0; i < 100; ++i) data.push_back(static_cast<char>(rng() & 0xff));
  data[192] = 0x47;  // not 0x000a: no message header
  const std::string err = ingest_error(data);
  EXPECT_NE(err.find("no IPFIX message at offset 192"), std::string::npos) << err;
}

// What makes libfixbuf 2.4 abort or loop for ever is refused or skipped before it sees it.
TEST(Ingest, HostileTemplatesNeitherCrashNorHang) {
  const std::string key_tmpl = template_record(300, {{8, 4}, {12, 4}});
  Bytes8 rec;
  rec.ip4("10.0.0.1").ip4("10.0.0.2");
  // A reserved template id (ipfixDump crashes on it).
  std::string err =
      ingest_error(ipfix_message(1, 0, 1, {ipfix_set(2, template_record(5, {{8, 4}}))}));
  EXPECT_NE(err.find("reserved template id 5"), std::string::npos) << err;
  // Records of no length.
  err = ingest_error(ipfix_message(
      1, 0, 1, {ipfix_set(2, template_record(300, {{8, 0}, {12, 0}})), ipfix_set(300, rec.b)}));
  EXPECT_NE(err.find("records of no length"), std::string::npos) << err;
  // Data for a withdrawn template: skipped with a warning.
  json j;
  err = ingest_error(
      ipfix_message(1, 0, 1, {ipfix_set(2, key_tmpl), ipfix_set(300, rec.b)}) +
          ipfix_message(1, 1, 1,
                        {ipfix_set(2, template_record(300, {})), ipfix_set(300, rec.b + rec.b)}),
      &j);
  EXPECT_EQ(err, "");
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 1u);
  // A set longer than its message, a reserved set id.
  err = ingest_error(ipfix_message(1, 0, 1, {std::string("\x00\x02\x00\xff", 4) + "abcd"}));
  EXPECT_NE(err.find("set at +16 has length 255"), std::string::npos) << err;
  std::string msg = ipfix_message(1, 0, 1, {ipfix_set(7, "abcd")});
  err = ingest_error(msg);
  EXPECT_NE(err.find("reserved set id 7"), std::string::npos) << err;
}

// Random damage inside the messages (headers intact): an error or a result, never a crash, a
// hang or a file left behind.
TEST(Ingest, DamagedMessagesGiveErrorsNotCrashes) {
  REQUIRE_PCAPS();
  TempDir conv;
  Options c;
  c.inputs = {kFixtures + "/sample.pcap"};
  c.output = conv.file("own.ipfix");
  static Engine with_dpi;
  with_dpi.convert(c);
  std::mt19937 rng(20240611);
  int errors = 0, results = 0;
  for (const std::string& path : {pcaps + "/ipfix-samples/softflowd-1kxun.ipfix", c.output,
                                  pcaps + "/ipfix-samples/sample-v6-ntop-ie.ipfix"}) {
    const std::string good = read_file(path);
    std::vector<std::size_t> headers;  // message starts
    for (std::size_t off = 0; off + 4 <= good.size();) {
      headers.push_back(off);
      off += (static_cast<unsigned char>(good[off + 2]) << 8) |
             static_cast<unsigned char>(good[off + 3]);
    }
    for (int n = 0; n < 150; ++n) {
      std::string bad = good;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < flips; ++k) {
        std::size_t at = rng() % bad.size();
        bool header = false;
        for (const std::size_t h : headers) header |= at >= h && at < h + 4;
        if (header) continue;
        bad[at] = static_cast<char>(rng() & 0xff);
      }
      const std::string err = ingest_error(bad);
      (err.empty() ? results : errors)++;
      if (!err.empty()) {
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
      }
    }
  }
  EXPECT_GT(results + errors, 0);
}

TEST(Ingest, CancelLeavesNothingBehind) {
  REQUIRE_PCAPS();
  TempDir dir;
  const std::string one = read_file(pcaps + "/ipfix-samples/softflowd-1kxun.ipfix");
  std::string many;
  for (int i = 0; i < 30; ++i) many += one;  // 210 messages
  write_file(dir.file("in.ipfix"), many);
  const Options o = ingest_options({dir.file("in.ipfix")}, dir.file("out.ipfix"));
  std::atomic<bool> cancel{false};
  int calls = 0;
  EXPECT_THROW(engine().convert(
                   o,
                   [&](const Progress& p) {
                     ++calls;
                     EXPECT_GT(p.bytes_read, 0u);
                     EXPECT_EQ(p.bytes_total, many.size());
                     cancel = true;
                   },
                   &cancel),
               Cancelled);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(others_in(dir.path(), {"in.ipfix"}).empty());
}

}  // namespace
}  // namespace ipfixweb::engine::test

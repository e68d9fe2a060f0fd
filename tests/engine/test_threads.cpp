// Threaded conversion (Options::threads > 1): the same records as one thread, read back with an
// independent decoder (ipfixDump) and from the flow store; cancel, errors and edge cases.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ipfixweb/engine/engine.hpp"
#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

// Captures of the shared corpus (pcap, pcapng, cap), sorted.
std::vector<std::string> corpus(const std::string& pcaps) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(pcaps)) {
    const auto ext = e.path().extension().string();
    if (e.is_regular_file() && (ext == ".pcap" || ext == ".pcapng" || ext == ".cap"))
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// ipfixDump's records of an IPFIX file as sorted text lines.
std::vector<std::string> decoded_records(const std::string& path) {
  return record_lines(ipfix_dump(path).records);
}

// The label of a decoded record line ("96=..." up to the next field), "" when none.
std::string label_of(const std::string& line) {
  const auto p = line.find("\t96=");
  if (p == std::string::npos) return "";
  const auto e = line.find('\t', p + 4);
  return line.substr(p + 4, e - p - 4);
}

// A record line without its DPI elements (application id and name, ntop's server name, JA3 and
// risk elements); the Community ID stays.
std::string metering_of(const std::string& line) {
  std::string s;
  std::size_t pos = 0;
  while (pos < line.size()) {
    const auto e = line.find('\t', pos);
    const std::string f = line.substr(pos, e - pos);
    if (f.rfind("95=", 0) != 0 && f.rfind("96=", 0) != 0 && f.rfind("35632/", 0) != 0)
      s += f + "\t";
    pos = e == std::string::npos ? line.size() : e + 1;
  }
  return s;
}

// The metering of each record line (metering_of), sorted.
std::vector<std::string> sorted_metering(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const auto& l : lines) out.push_back(metering_of(l));
  std::sort(out.begin(), out.end());
  return out;
}

// Rows of an SQL query as sorted text (columns `skip` left out; blobs as their bytes).
std::vector<std::string> sql_rows(const std::string& db_path, const std::string& sql,
                                  const std::set<std::string>& skip = {}) {
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    std::string row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      if (skip.count(sqlite3_column_name(st, i))) continue;
      const auto* p = static_cast<const char*>(sqlite3_column_blob(st, i));
      row.append(p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(st, i)))
                   : std::string("NULL"));
      row += '|';
    }
    rows.push_back(row);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  std::sort(rows.begin(), rows.end());
  return rows;
}

// The summary without what legitimately differs between runs: the output's name, wall time, and
// the peak table size (with threads: the sum of the shards' peaks).
nlohmann::json comparable(nlohmann::json s) {
  s.erase("output");
  s.erase("elapsed_s");
  s.erase("packets_per_s");
  s.erase("peak_flows");
  return s;
}

Options options_for(const std::string& in, const TempDir& dir, const std::string& name,
                    unsigned threads) {
  Options o;
  o.inputs = {in};
  o.output = dir.file(name + ".ipfix");
  o.threads = threads;
  o.analysis = {"tcp", "udp", "icmp", "dns", "tls", "http", "quic", "other"};
  return o;
}

// Runs one conversion; an EngineError's message stands for the result.
nlohmann::json convert_or_error(Engine& e, const Options& o) {
  try {
    return e.convert(o);
  } catch (const EngineError& err) {
    return std::string("error: ") + err.what();
  }
}

// Every capture of the corpus, one thread against two, read back by ipfixDump: the same
// records; the DPI labels identical except where nDPI's per-module caches (one module per
// shard) decide them (docs/engine.md, Threads): those are counted and printed, and must be a
// small minority.
TEST(ThreadedEngine, TwoThreadsWriteTheSameRecordsAsOneOverTheCorpus) {
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_PCAPS();
  const auto files = corpus(pcaps);
  ASSERT_GT(files.size(), 20u);
  TempDir dir;
  Engine one, two;
  std::size_t records = 0, label_diffs = 0, files_with_diffs = 0;
  for (const auto& in : files) {
    const auto s1 = convert_or_error(one, options_for(in, dir, "one", 1));
    const auto s2 = convert_or_error(two, options_for(in, dir, "two", 2));
    if (s1.is_string()) {
      EXPECT_EQ(s1, s2) << in;
      continue;
    }
    ASSERT_TRUE(s2.is_object()) << in << ": " << s2;
    const auto a = decoded_records(dir.file("one.ipfix"));
    const auto b = decoded_records(dir.file("two.ipfix"));
    ASSERT_EQ(a.size(), b.size()) << in;
    records += a.size();
    if (a == b) {
      EXPECT_EQ(comparable(s1), comparable(s2)) << in;
      continue;
    }
    // Same metering (keys, times, counters, end reasons), labels apart.
    EXPECT_EQ(sorted_metering(a), sorted_metering(b)) << in;
    std::map<std::string, std::multiset<std::string>> la, lb;
    for (const auto& l : a) la[metering_of(l)].insert(label_of(l));
    for (const auto& l : b) lb[metering_of(l)].insert(label_of(l));
    std::size_t diffs = 0;
    for (const auto& [k, labels] : la) {
      if (lb[k] == labels) continue;
      ++diffs;
      std::printf("[          ] %s: %s -> %s\n", fs::path(in).filename().c_str(),
                  labels.begin()->c_str(), lb[k].begin()->c_str());
    }
    label_diffs += diffs;
    ++files_with_diffs;
  }
  std::printf("[          ] %zu captures, %zu records, %zu with another label in %zu captures\n",
              files.size(), records, label_diffs, files_with_diffs);
  EXPECT_GT(records, 1000u);
  EXPECT_LE(label_diffs * 100, records);  // under 1 %
}

// Short timeouts make idle, active and end-of-flow expiry happen all through every capture:
// with three shards every flow store row (times, counters, end reason, Community ID) and the
// time series are those of one thread.
TEST(ThreadedEngine, TimeoutsFireAtTheSamePacketTimeAsOneThreadOverTheCorpus) {
  REQUIRE_PCAPS();
  const auto files = corpus(pcaps);
  TempDir dir;
  Engine one, three;
  std::size_t rows = 0;
  const std::set<std::string> labels = {"id",   "packed", "app_id",     "app",  "server_name",
                                        "ja3c", "risk",   "risk_score", "risks"};
  for (const auto& in : files) {
    auto o1 = options_for(in, dir, "one", 1);
    auto o3 = options_for(in, dir, "three", 3);
    for (Options* o : {&o1, &o3}) {
      o->idle_timeout_s = 2;
      o->active_timeout_s = 10;
      o->dpi = false;  // labels: see the test above
      o->flows_db = o->output + ".flows.sqlite";
    }
    const auto s1 = convert_or_error(one, o1);
    const auto s3 = convert_or_error(three, o3);
    if (s1.is_string()) {
      EXPECT_EQ(s1, s3) << in;
      continue;
    }
    EXPECT_EQ(comparable(s1), comparable(s3)) << in;
    const auto a = sql_rows(o1.flows_db, "SELECT * FROM flows", labels);
    EXPECT_EQ(a, sql_rows(o3.flows_db, "SELECT * FROM flows", labels)) << in;
    EXPECT_EQ(sql_rows(o1.flows_db, "SELECT * FROM series"),
              sql_rows(o3.flows_db, "SELECT * FROM series"))
        << in;
    rows += a.size();
  }
  EXPECT_GT(rows, 1000u);
}

// A capture with flows that start, close (FIN both ways, RST), idle out and pass the active
// timeout while packets of other flows keep the clock going, in several VLANs.
std::string timing_capture(const TempDir& dir) {
  const std::string path = dir.file("timing.pcap");
  PcapWriter w(path);
  std::uint64_t t = 1'700'000'000'000'000ull;
  for (int i = 0; i < 400; ++i) {
    const std::string c = "10.0." + std::to_string(i % 7) + "." + std::to_string(1 + i % 200);
    const std::string s = "192.0.2." + std::to_string(1 + i % 5);
    const auto sp = static_cast<std::uint16_t>(40000 + i);
    const std::vector<std::uint16_t> vlan = {static_cast<std::uint16_t>(i % 3)};
    w.add(t, ether4(ipv4(c, s, 6, tcp(sp, 80, 0x02)), vlan));
    w.add(t + 1000, ether4(ipv4(s, c, 6, tcp(80, sp, 0x12)), vlan));
    w.add(t + 2000, ether4(ipv4(c, s, 17, udp(sp, 53, 20)), vlan));
    if (i % 3 == 0) w.add(t + 3000, ether4(ipv4(c, s, 6, tcp(sp, 80, 0x11)), vlan));
    if (i % 3 == 0) w.add(t + 4000, ether4(ipv4(s, c, 6, tcp(80, sp, 0x11)), vlan));
    if (i % 5 == 0) w.add(t + 5000, ether4(ipv4(s, c, 6, tcp(80, sp, 0x04)), vlan));
    if (i % 4 == 0) w.add(t + 9000, ether4(ipv4(c, s, 6, tcp(sp, 80, 0x02)), vlan));  // reuse
    t += 700'000;  // 0.7 s: idle timeouts of 2 s end earlier flows as the capture goes on
  }
  w.close();
  return path;
}

// The same records with 1 to 8 threads (more threads than VLAN/flow groups included), and with
// more threads than flows.
TEST(ThreadedEngine, AnyThreadCountWritesTheSameRecords) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  auto run = [&](unsigned threads, const std::string& input) {
    Options o = options_for(input, dir, "t" + std::to_string(threads), threads);
    o.idle_timeout_s = 2;
    o.active_timeout_s = 30;
    const auto s = e.convert(o);
    return std::make_pair(decoded_records(o.output), comparable(s));
  };
  const auto base = run(1, in);
  ASSERT_GT(base.first.size(), 500u);
  for (unsigned n : {2u, 3u, 4u, 8u}) {
    const auto got = run(n, in);
    EXPECT_EQ(base.first, got.first) << n << " threads";
    EXPECT_EQ(base.second, got.second) << n << " threads";
  }
  // Two flows, sixteen threads: most shards see no packet at all.
  const std::string small = dir.file("small.pcap");
  {
    PcapWriter w(small);
    w.add(1'000'000, ether4(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, 10))));
    w.add(2'000'000, ether4(ipv4("10.0.0.2", "10.0.0.1", 17, udp(53, 1000, 10))));
    w.add(3'000'000, ether4(ipv4("10.0.0.3", "10.0.0.4", 6, tcp(1234, 80, 0x02))));
  }
  const auto one = run(1, small);
  const auto sixteen = run(16, small);
  EXPECT_EQ(one.first, sixteen.first);
  EXPECT_EQ(one.second, sixteen.second);
  EXPECT_EQ(one.first.size(), 2u);
}

// Captures read through libpcap (compressed, pcapng) hand their packets' bytes over in copies
// (a memory-mapped pcap does not): DPI sees the same bytes, the records are the same.
TEST(ThreadedEngine, CopiedPayloadsOfCompressedAndPcapngInputsLabelTheSame) {
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_TOOL("gzip");
  REQUIRE_PCAPS();
  TempDir dir;
  Engine e;
  int checked = 0;
  for (const char* name : {"1kxun.pcap", "quic_interop_V.pcapng", "ja3_lots_of_cipher_suites.pcap",
                           "http_ipv6.pcap", "dns_doh.pcap", "whois.pcapng"}) {
    const std::string src = pcaps + "/" + name;
    if (!fs::exists(src)) continue;
    const std::string gz = dir.file(std::string(name) + ".gz");
    ASSERT_EQ(run("gzip -c " + shell_quote(src) + " > " + shell_quote(gz)).exit_code, 0);
    const auto s1 = e.convert(options_for(src, dir, "one", 1));
    const auto s2 = e.convert(options_for(gz, dir, "two", 2));
    const auto a = decoded_records(dir.file("one.ipfix"));
    EXPECT_EQ(a, decoded_records(dir.file("two.ipfix"))) << name;
    EXPECT_EQ(s1["dpi_stats"], s2["dpi_stats"]) << name;
    EXPECT_FALSE(a.empty()) << name;
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

// One nDPI module per metering thread: set up in parallel by Engine(true, N) (or by the shards
// on first use), reset and reused by later conversions, which label like the first.
TEST(ThreadedEngine, ModulesAreSetUpOncePerThreadAndReused) {
  REQUIRE_PCAPS();
  const std::string in = pcaps + "/stun_signal.pcapng";  // labels that depend on nDPI's caches
  if (!fs::exists(in)) GTEST_SKIP() << "stun_signal.pcapng missing";
  TempDir dir;
  Engine ready(true, 3);
  EXPECT_EQ(ready.dpi_initialisations(), 3u);
  const auto first = ready.convert(options_for(in, dir, "a", 3));
  const auto second = ready.convert(options_for(in, dir, "b", 3));
  EXPECT_EQ(comparable(first), comparable(second));
  EXPECT_EQ(ready.dpi_initialisations(), 3u);
  Engine later(false);  // no module until a conversion with DPI
  EXPECT_EQ(later.dpi_initialisations(), 0u);
  const auto third = later.convert(options_for(in, dir, "c", 3));
  EXPECT_EQ(later.dpi_initialisations(), 3u);
  EXPECT_EQ(comparable(first), comparable(third));
  // Other thread counts on the same engine: one more module for a fourth shard, none for two.
  later.convert(options_for(in, dir, "d", 4));
  EXPECT_EQ(later.dpi_initialisations(), 4u);
  const auto two = later.convert(options_for(in, dir, "e", 2));
  EXPECT_EQ(later.dpi_initialisations(), 4u);
  Engine fresh_two(true, 2);
  EXPECT_EQ(comparable(two), comparable(fresh_two.convert(options_for(in, dir, "f", 2))));
}

// threads = 1 is the single-threaded engine: the same bytes as the default options; out of
// range counts are refused before anything is written.
TEST(ThreadedEngine, OneThreadIsTheDefaultAndBadCountsAreRefused) {
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  Options o;
  o.inputs = {in};
  o.output = dir.file("default.ipfix");
  e.convert(o);
  o.output = dir.file("one.ipfix");
  o.threads = 1;
  e.convert(o);
  EXPECT_EQ(read_text(dir.file("default.ipfix")), read_text(dir.file("one.ipfix")));
  for (unsigned bad : {0u, Options::kMaxThreads + 1}) {
    o.threads = bad;
    o.output = dir.file("bad.ipfix");
    EXPECT_THROW(e.convert(o), EngineError) << bad;
    EXPECT_FALSE(fs::exists(o.output));
  }
}

bool only_entry_is(const TempDir& dir, const std::string& name) {
  for (const auto& e : fs::directory_iterator(dir.path()))
    if (e.path().filename() != name) return false;
  return true;
}

// Cancel raised from the progress callback while the shards are busy: Cancelled, no output and
// no temporary left, the engine usable again (its threads are gone and its modules reusable).
TEST(ThreadedEngine, CancelMidRunLeavesNoOutput) {
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  std::atomic<bool> cancel{false};
  Options o;
  o.inputs = {in};
  o.output = dir.file("out.ipfix");
  o.flows_db = dir.file("out.flows.sqlite");
  o.threads = 3;
  o.progress_every_packets = 256;
  std::uint64_t seen = 0;
  const ProgressFn progress = [&](const Progress& p) {
    seen = p.packets;
    if (p.packets >= 1024) cancel = true;
  };
  EXPECT_THROW(e.convert(o, progress, &cancel), Cancelled);
  EXPECT_GE(seen, 1024u);
  EXPECT_TRUE(only_entry_is(dir, "timing.pcap"));
  cancel = false;
  const auto s = e.convert(o, {}, &cancel);
  EXPECT_GT(s["flows"].get<std::uint64_t>(), 500u);
}

// A capture whose records go bad in the middle (an impossible capture length): the reader's
// EngineError reaches the caller, the shards stop, nothing is published.
TEST(ThreadedEngine, CorruptCaptureFailsWithoutOutput) {
  TempDir dir;
  const std::string good = timing_capture(dir);
  const std::string bad = dir.file("bad.pcap");
  fs::copy_file(good, bad);
  {
    const std::string junk(16, '\xff');  // a record header with caplen 0xffffffff
    std::ofstream(bad, std::ios::binary | std::ios::app) << junk << std::string(64, '\0');
  }
  Engine e;
  Options o;
  o.inputs = {bad};
  o.output = dir.file("out.ipfix");
  o.flows_db = dir.file("out.flows.sqlite");
  o.threads = 2;
  try {
    e.convert(o);
    ADD_FAILURE() << "no error";
  } catch (const EngineError& err) {
    EXPECT_NE(std::string(err.what()).find("capture length"), std::string::npos) << err.what();
  }
  EXPECT_FALSE(fs::exists(o.output));
  EXPECT_FALSE(fs::exists(o.flows_db));
  // A capture cut short in the middle of a record is not an error: a warning, same records.
  const std::string cut = dir.file("cut.pcap");
  {
    std::string bytes = read_text(good);
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2 + 7);
  }
  o.inputs = {cut};
  o.flows_db.clear();
  const auto s2 = e.convert(o);
  o.threads = 1;
  o.output = dir.file("one.ipfix");
  const auto s1 = e.convert(o);
  EXPECT_EQ(comparable(s1), comparable(s2));
  EXPECT_FALSE(s2["warnings"].empty());
}

// pcap2ipfix --threads N: in --help, converts, and refuses 0.
TEST(ThreadedEngine, Pcap2ipfixTakesThreads) {
  TempDir dir;
  const std::string in = timing_capture(dir);
  const auto help = run(shell_quote(pcap2ipfix()) + " --help");
  EXPECT_NE(help.out.find("--threads"), std::string::npos);
  const auto ok = run(shell_quote(pcap2ipfix()) + " -q --threads 3 -o " +
                      shell_quote(dir.file("o.ipfix")) + " " + shell_quote(in));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(fs::exists(dir.file("o.ipfix")));
  const auto zero = run(shell_quote(pcap2ipfix()) + " -q --threads 0 -o " +
                        shell_quote(dir.file("z.ipfix")) + " " + shell_quote(in));
  EXPECT_EQ(zero.exit_code, 2) << zero.err;
}

// ---- Flow partitions (Options::partition / partitions): one capture converted in parts ----

// The whole capture's records from parts 0..n-1 (each part read with `threads`), sorted, and
// every part's summary.
std::pair<std::vector<std::string>, std::vector<nlohmann::json>> parts_of(Engine& e, Options o,
                                                                          const TempDir& dir,
                                                                          unsigned n,
                                                                          unsigned threads) {
  std::vector<std::string> records;
  std::vector<nlohmann::json> summaries;
  for (unsigned i = 0; i < n; ++i) {
    o.partition = i;
    o.partitions = n;
    o.threads = threads;
    o.output = dir.file("part" + std::to_string(i) + ".ipfix");
    summaries.push_back(e.convert(o));
    for (auto& r : decoded_records(o.output)) records.push_back(std::move(r));
  }
  std::sort(records.begin(), records.end());
  return {records, summaries};
}

// Converts partitions 0..n-1 of `o` (each with its flow store and summary), then merges them,
// giving the parts in reverse order: the merge's options (its summary in `summary`). `records`
// (when given): the parts' decoded records, sorted.
Options merge_of_parts(Engine& e, Options o, const TempDir& dir, unsigned n,
                       nlohmann::json& summary, std::vector<std::string>* records = nullptr) {
  Options m = o;
  m.mode = Mode::Merge;
  m.inputs.clear();
  for (unsigned i = n; i-- > 0;) {
    Options p = o;
    p.partition = i;
    p.partitions = n;
    p.output = dir.file("mpart" + std::to_string(i) + ".ipfix");
    p.flows_db = p.output + ".flows.sqlite";
    m.inputs.push_back(p.output);
    m.part_summaries.push_back(e.convert_text(p).summary);
    m.part_stores.push_back(p.flows_db);
    if (records)
      for (auto& r : decoded_records(p.output)) records->push_back(std::move(r));
  }
  if (records) std::sort(records->begin(), records->end());
  m.output = dir.file("merged.ipfix");
  m.flows_db = m.output + ".flows.sqlite";
  summary = e.convert(m);
  return m;
}

// The flow store's tables as sorted rows, without what differs between runs (row ids, when the
// store was made).
std::vector<std::string> store_rows(const std::string& db) {
  std::vector<std::string> rows;
  for (const char* sql : {"SELECT * FROM flow_rows", "SELECT * FROM series", "SELECT * FROM top",
                          "SELECT * FROM meta WHERE key != 'created_at'"}) {
    for (auto& r : sql_rows(db, sql, {"id"})) rows.push_back(sql + (": " + r));
  }
  return rows;
}

// Parts 0..N-1 of a capture with closes, port reuse, idle and active expiry in several VLANs
// together write exactly the records of the whole conversion (times, counters, end reasons,
// labels), alone or with threads; each part reads and counts every packet, and the parts are
// balanced.
TEST(Partitions, PartsTogetherWriteTheRecordsOfTheWholeConversion) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  Options o = options_for(in, dir, "whole", 1);
  o.idle_timeout_s = 2;
  o.active_timeout_s = 30;
  const auto whole_summary = e.convert(o);
  const auto whole = decoded_records(o.output);
  ASSERT_GT(whole.size(), 500u);
  for (const auto& [n, threads] :
       std::vector<std::pair<unsigned, unsigned>>{{1, 1}, {2, 1}, {3, 1}, {4, 1}, {2, 2}, {3, 4}}) {
    SCOPED_TRACE(std::to_string(n) + " parts, " + std::to_string(threads) + " threads");
    const auto [records, summaries] = parts_of(e, o, dir, n, threads);
    EXPECT_EQ(records, whole);
    std::uint64_t flows = 0;
    for (const auto& s : summaries) {
      EXPECT_EQ(s["packets_read"], whole_summary["packets_read"]);
      EXPECT_EQ(s["first_packet"], whole_summary["first_packet"]);
      EXPECT_EQ(s["last_packet"], whole_summary["last_packet"]);
      // Balanced: each part holds more than half its share (measured: 419/428 of 847 in 2
      // parts, 213/206/199/229 in 4).
      EXPECT_GT(s["flows"].get<std::uint64_t>() * 2 * n,
                whole_summary["flows"].get<std::uint64_t>());
      flows += s["flows"].get<std::uint64_t>();
    }
    EXPECT_EQ(flows, whole_summary["flows"].get<std::uint64_t>());
  }
}

// Every capture of the corpus in 3 parts: the metering of every record is the whole run's; labels
// may differ where nDPI's per-module caches decide them (as with threads), in under 1 % of them.
TEST(Partitions, ThreePartsMeterEveryCorpusCaptureAsTheWholeRunDoes) {
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_PCAPS();
  TempDir dir;
  Engine e;
  std::size_t records = 0, label_diffs = 0;
  for (const auto& in : corpus(pcaps)) {
    Options o = options_for(in, dir, "whole", 1);
    const auto s1 = convert_or_error(e, o);
    if (s1.is_string()) {  // a capture the engine refuses is refused in a part too
      Options part = o;
      part.partition = 1;
      part.partitions = 3;
      EXPECT_EQ(convert_or_error(e, part), s1) << in;
      continue;
    }
    const auto whole = decoded_records(o.output);
    const auto parts = parts_of(e, o, dir, 3, 1).first;
    ASSERT_EQ(whole.size(), parts.size()) << in;
    records += whole.size();
    if (whole == parts) continue;
    EXPECT_EQ(sorted_metering(whole), sorted_metering(parts)) << in;
    std::multiset<std::string> a(whole.begin(), whole.end());
    for (const auto& l : parts)
      if (auto it = a.find(l); it != a.end()) a.erase(it);
    label_diffs += a.size();
  }
  std::printf("[          ] %zu records, %zu with another label in parts\n", records, label_diffs);
  EXPECT_GT(records, 1000u);
  EXPECT_LE(label_diffs * 100, records);
}

// Out-of-range partitions are refused before anything is written; pcap2ipfix takes I/N.
TEST(Partitions, BadPartitionsAreRefusedAndPcap2ipfixTakesThem) {
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  Options o = options_for(in, dir, "bad", 1);
  for (const auto& [i, n] : std::vector<std::pair<unsigned, unsigned>>{
           {0, 0}, {2, 2}, {5, 3}, {0, Options::kMaxPartitions + 1}}) {
    o.partition = i;
    o.partitions = n;
    EXPECT_THROW(e.convert(o), EngineError) << i << "/" << n;
    EXPECT_FALSE(fs::exists(o.output));
  }
  const auto help = run(shell_quote(pcap2ipfix()) + " --help");
  EXPECT_NE(help.out.find("--partition"), std::string::npos);
  const auto ok = run(shell_quote(pcap2ipfix()) + " -q --partition 1/2 -o " +
                      shell_quote(dir.file("p.ipfix")) + " " + shell_quote(in));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(fs::exists(dir.file("p.ipfix")));
  for (const char* bad : {"2/2", "1", "a/b", "0/0", "1/2x"}) {
    const auto r = run(shell_quote(pcap2ipfix()) + " -q --partition " + bad + " -o " +
                       shell_quote(dir.file("x.ipfix")) + " " + shell_quote(in));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
}

// A merge of partitions 0..N-1 is the whole conversion: the same records (ipfixDump), the same
// flow store row for row (records, series, top lists, meta) and the same summary, except the
// peak table size (the parts' peaks summed: an upper bound), the wall time and "parts". With DPI
// and biflows, and without DPI in uniflows.
TEST(Partitions, AMergeOfThePartsIsTheWholeConversion) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::string in = timing_capture(dir);
  Engine e;
  for (const auto& [n, plain] :
       std::vector<std::pair<unsigned, bool>>{{2, false}, {3, false}, {5, false}, {3, true}}) {
    SCOPED_TRACE(std::to_string(n) + " parts" + (plain ? ", no DPI, uniflows" : ""));
    Options o = options_for(in, dir, "whole", 1);
    o.idle_timeout_s = 2;
    o.active_timeout_s = 30;
    o.flows_db = o.output + ".flows.sqlite";
    o.dpi = !plain;
    o.biflow = !plain;
    const auto whole_summary = e.convert(o);
    const auto whole = decoded_records(o.output);
    const auto whole_store = store_rows(o.flows_db);
    ASSERT_GT(whole.size(), 500u);
    nlohmann::json merged;
    const Options m = merge_of_parts(e, o, dir, n, merged);
    EXPECT_EQ(decoded_records(m.output), whole);
    EXPECT_EQ(store_rows(m.flows_db), whole_store);
    EXPECT_EQ(merged["parts"], n);
    EXPECT_GE(merged["peak_flows"].get<std::uint64_t>(),
              whole_summary["peak_flows"].get<std::uint64_t>());
    merged.erase("parts");
    auto whole_s = comparable(whole_summary);
    if (plain) {  // uniflows: the "flows" of top lists count records (docs/engine.md)
      for (auto* sum : {&merged, &whole_s})
        for (auto& [family, v] : (*sum)["analysis"].items())
          for (const char* top : {"top_applications", "top_hosts", "top_server_names"})
            v.erase(top);
    }
    EXPECT_EQ(comparable(merged), whole_s);
  }
}

// Every capture of the corpus in 3 parts, merged: the merge holds exactly the parts' records, and
// where the parts labelled every record as the whole run did, it is the whole run's summary and
// flow store (series, top lists).
TEST(Partitions, AMergeOfThreePartsOfEachCorpusCaptureHoldsThePartsRecords) {
  REQUIRE_TOOL("ipfixDump");
  REQUIRE_PCAPS();
  TempDir dir;
  Engine e;
  std::size_t records = 0, whole_equal = 0, captures = 0;
  for (const auto& in : corpus(pcaps)) {
    Options o = options_for(in, dir, "whole", 1);
    o.flows_db = o.output + ".flows.sqlite";
    const auto s1 = convert_or_error(e, o);
    if (s1.is_string()) continue;  // refused whole and in parts (the test above this one)
    ++captures;
    nlohmann::json merged;
    std::vector<std::string> parts;
    const Options m = merge_of_parts(e, o, dir, 3, merged, &parts);
    const auto got = decoded_records(m.output);
    EXPECT_EQ(got, parts) << in;
    records += got.size();
    if (parts != decoded_records(o.output)) continue;
    ++whole_equal;
    merged.erase("parts");
    EXPECT_EQ(comparable(merged), comparable(s1)) << in;
    EXPECT_EQ(store_rows(m.flows_db), store_rows(o.flows_db)) << in;
  }
  std::printf("[          ] %zu captures, %zu records; %zu merges equal to the whole run\n",
              captures, records, whole_equal);
  EXPECT_GT(records, 1000u);
  EXPECT_GT(whole_equal * 10, captures * 9);
}

// A merge refuses, before it writes anything, parts that are not partitions 0..N-1 of one
// conversion: one missing, one twice, one of another capture, a whole conversion's output,
// and parts without their summaries or flow stores.
TEST(Partitions, AMergeRefusesPartsThatAreNotOneConversion) {
  TempDir dir;
  const std::string in = timing_capture(dir);
  const std::string other = dir.file("other.pcap");
  {
    PcapWriter w(other);
    w.add(1'700'000'000'000'000ull, ether4(ipv4("10.9.0.1", "10.9.0.2", 17, udp(5000, 53, 20))));
    w.close();
  }
  Engine e(false);
  auto part = [&](const std::string& capture, unsigned i, unsigned n) {
    Options p = options_for(
        capture, dir,
        fs::path(capture).stem().string() + std::to_string(i) + "of" + std::to_string(n), 1);
    p.dpi = false;
    p.partition = i;
    p.partitions = n;
    p.flows_db = p.output + ".flows.sqlite";
    return std::tuple{p.output, e.convert_text(p).summary, p.flows_db};
  };
  const auto a0 = part(in, 0, 3), a1 = part(in, 1, 3), a2 = part(in, 2, 3);
  const auto b1 = part(other, 1, 3);
  Options whole = options_for(in, dir, "whole", 1);
  whole.dpi = false;
  const std::string whole_summary = e.convert_text(whole).summary;
  using P = std::tuple<std::string, std::string, std::string>;
  const std::vector<std::pair<std::vector<P>, std::string>> cases = {
      {{a0, a1}, "partition 0 of 3, but 2 parts were given"},
      {{a0, a1, a1}, "partition 1 was given twice"},
      {{a0, b1, a2}, "partition 1 is not of the same conversion as partition 0"},
      {{a0, a1, {whole.output, whole_summary, ""}}, "is not that of a flow partition"},
  };
  for (const auto& [parts, expected] : cases) {
    Options m = options_for(in, dir, "merged", 1);
    m.mode = Mode::Merge;
    m.inputs.clear();
    for (const auto& [ipfix, summary, store] : parts) {
      m.inputs.push_back(ipfix);
      m.part_summaries.push_back(summary);
      m.part_stores.push_back(store);
    }
    try {
      e.convert(m);
      ADD_FAILURE() << "accepted; expected: " << expected;
    } catch (const EngineError& err) {
      EXPECT_NE(std::string(err.what()).find(expected), std::string::npos) << err.what();
    }
    EXPECT_FALSE(fs::exists(m.output)) << expected;
  }
  // Without the summaries, or (for a flow store) the parts' stores.
  Options m = options_for(in, dir, "merged", 1);
  m.mode = Mode::Merge;
  m.inputs = {std::get<0>(a0), std::get<0>(a1), std::get<0>(a2)};
  EXPECT_THROW(e.convert(m), EngineError);
  m.part_summaries = {std::get<1>(a0), std::get<1>(a1), std::get<1>(a2)};
  m.flows_db = m.output + ".flows.sqlite";
  EXPECT_THROW(e.convert(m), EngineError);
  EXPECT_FALSE(fs::exists(m.output));
  EXPECT_FALSE(fs::exists(m.flows_db));
  m.part_stores = {std::get<2>(a0), std::get<2>(a1), std::get<2>(a2)};
  EXPECT_EQ(e.convert(m)["flows"], e.convert(whole)["flows"]);
}

// pcap2ipfix --merge finds each part's summary and flow store beside it, and says which is
// missing.
TEST(Partitions, Pcap2ipfixMergesPartsWrittenWithPartitionAndSummaryJson) {
  REQUIRE_TOOL("ipfixDump");
  TempDir dir;
  const std::string in = timing_capture(dir);
  const std::string tool = shell_quote(pcap2ipfix());
  const auto whole =
      run(tool + " -q -o " + shell_quote(dir.file("whole.ipfix")) + " " + shell_quote(in));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  std::string parts;
  for (int i = 0; i < 2; ++i) {
    const std::string out = dir.file("cli" + std::to_string(i) + ".ipfix");
    const auto r = run(tool + " -q --partition " + std::to_string(i) + "/2 -o " + shell_quote(out) +
                       " --flows-db " + shell_quote(out + ".flows.sqlite") + " --summary-json " +
                       shell_quote(out + ".summary.json") + " " + shell_quote(in));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    parts += " " + shell_quote(out);
  }
  const std::string merged = dir.file("cli-merged.ipfix");
  const auto r = run(tool + " -q --merge -o " + shell_quote(merged) + " --flows-db " +
                     shell_quote(merged + ".flows.sqlite") + " --summary-json -" + parts);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["parts"], 2);
  EXPECT_EQ(decoded_records(merged), decoded_records(dir.file("whole.ipfix")));
  fs::remove(dir.file("cli1.ipfix.summary.json"));
  const auto missing = run(tool + " -q --merge -o " + shell_quote(dir.file("m2.ipfix")) + parts);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("cli1.ipfix.summary.json"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir.file("m2.ipfix")));
}

}  // namespace
}  // namespace ipfixweb::engine::test

// Engine::convert on captures generated in the test: summary figures, output handling, errors.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "ipfixweb/engine/engine.hpp"
#include "output_file.hpp"
#include "outputs.hpp"
#include "pcap_writer.hpp"

namespace ipfixweb::engine {
namespace {

namespace fs = std::filesystem;
using test::Bytes;

Engine& engine() {
  static Engine e;  // nDPI initialised once for the whole test binary
  return e;
}

bool no_temp_left(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
  }
  return true;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// `count` single-packet UDP flows (10.0.0.1 -> 10.0.0.2:53, source ports from 1024), one every
// `step_us` microseconds.
void write_udp_flows(const std::string& path, std::uint16_t count, std::uint64_t step_us) {
  test::PcapWriter w(path);
  std::uint64_t t = 1'700'000'000'000'000ULL;
  for (std::uint16_t i = 0; i < count; ++i)
    w.add(t += step_us,
          test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17,
                                  test::udp(static_cast<std::uint16_t>(1024 + i), 53, 20))));
}

// 3 flows: a TCP connection (SYN..FIN, 7 packets), a DNS exchange over IPv6 (2), ICMP echo (2),
// plus an ARP frame (not metered).
void write_small_capture(const std::string& path) {
  test::PcapWriter w(path);
  const std::string c = "192.168.0.10";
  const std::string s = "192.168.0.20";
  std::uint64_t t = 1'700'000'000'000'000ULL;
  w.add(t, test::ether4(test::ipv4(c, s, 6, test::tcp(40000, 8080, 0x02))));
  w.add(t += 1000, test::ether4(test::ipv4(s, c, 6, test::tcp(8080, 40000, 0x12))));
  w.add(t += 1000, test::ether4(test::ipv4(c, s, 6, test::tcp(40000, 8080, 0x10))));
  w.add(t += 1000, test::ether4(test::ipv4(c, s, 6, test::tcp(40000, 8080, 0x18, 100))));
  w.add(t += 1000, test::ether4(test::ipv4(s, c, 6, test::tcp(8080, 40000, 0x11))));
  w.add(t += 1000, test::ether4(test::ipv4(c, s, 6, test::tcp(40000, 8080, 0x11))));
  w.add(t += 1000, test::ether4(test::ipv4(s, c, 6, test::tcp(8080, 40000, 0x10))));
  w.add(t += 1000,
        test::ether6(test::ipv6("2001:db8::1", "2001:db8::53", 17, test::udp(5353, 53, 30))));
  w.add(t += 1000,
        test::ether6(test::ipv6("2001:db8::53", "2001:db8::1", 17, test::udp(53, 5353, 60))));
  w.add(t += 1000, test::ether4(test::ipv4(c, s, 1, test::icmp(8, 0, 56))));
  w.add(t += 1000, test::ether4(test::ipv4(s, c, 1, test::icmp(0, 0, 56))));
  w.add(t += 1000, test::ether(Bytes(28, 0), 0x0806));
  w.close();
}

TEST(Engine, ConvertsSmallCaptureAndSummarises) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.analysis = {"dns"};
  std::vector<Progress> seen;
  const auto j = engine().convert(o, [&](const Progress& p) { seen.push_back(p); });
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), 11u);
  EXPECT_EQ(j["packets_read"].get<std::uint64_t>(), 12u);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 3u);
  EXPECT_EQ(j["not_metered"]["non_ip"].get<std::uint64_t>(), 1u);
  // 7 TCP packets of 40 bytes + 100 payload; UDP 40+8+30 and 40+8+60; ICMP 2 * (20+4+56)
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), 7u * 40 + 100 + 78 + 108 + 2 * 80);
  EXPECT_EQ(j["protocols"]["TCP"]["packets"].get<std::uint64_t>(), 7u);
  EXPECT_EQ(j["protocols"]["UDP"]["flows"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["protocols"]["ICMP"]["packets"].get<std::uint64_t>(), 2u);
  EXPECT_EQ(j["flow_end_reasons"]["end_of_flow"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["flow_end_reasons"]["end_of_input"].get<std::uint64_t>(), 2u);
  EXPECT_EQ(j["first_packet"].get<std::string>(), "2023-11-14T22:13:20.000Z");
  // Times of metered packets (the ARP frame at .011 is not metered).
  EXPECT_EQ(j["last_packet"].get<std::string>(), "2023-11-14T22:13:20.010Z");
  EXPECT_TRUE(j["warnings"].empty());
  EXPECT_TRUE(j.contains("analysis"));
  EXPECT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().packets, 12u);
  EXPECT_TRUE(fs::exists(o.output));
  EXPECT_GT(fs::file_size(o.output), 100u);
  EXPECT_TRUE(no_temp_left(dir.path()));
}

TEST(Engine, UniflowWritesOneRecordPerDirection) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.biflow = false;
  o.dpi = false;
  const auto j = engine().convert(o);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 6u);
  EXPECT_EQ(j["biflows"].get<std::uint64_t>(), 3u);
  EXPECT_FALSE(j.contains("dpi_stats"));
}

TEST(Engine, MultipleInputsMergeInTimeOrderAndShareFlowState) {
  test::TempDir dir;
  const std::uint64_t t = 1'600'000'000'000'000ULL;
  {
    test::PcapWriter a(dir.file("a.pcap"));
    a.add(t, test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1, 2))));
    a.add(t + 2000, test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1, 2))));
    test::PcapWriter b(dir.file("b.pcap"), 101);  // raw IP link type
    b.add(t + 1000, test::ipv4("10.0.0.2", "10.0.0.1", 17, test::udp(2, 1)));
    b.add(t + 3000, test::ipv4("10.0.0.2", "10.0.0.1", 17, test::udp(2, 1)));
  }
  Options o;
  o.inputs = {dir.file("a.pcap"), dir.file("b.pcap")};
  o.output = dir.file("out.ipfix");
  const auto j = engine().convert(o);
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), 4u);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["out_of_order_packets"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(j["inputs"].size(), 2u);
}

TEST(Engine, TimeoutsAndMaxFlowsFromOptions) {
  test::TempDir dir;
  const std::uint64_t t = 1'600'000'000'000'000ULL;
  {
    test::PcapWriter w(dir.file("in.pcap"));
    for (int i = 0; i < 5; ++i) {  // 5 distinct flows, 1 s apart, then flow 0 again after 10 s
      w.add(t + static_cast<std::uint64_t>(i) * 1'000'000,
            test::ether4(
                test::ipv4("10.0.0." + std::to_string(i + 1), "10.0.1.1", 17, test::udp(7, 7))));
    }
    w.add(t + 14'000'000, test::ether4(test::ipv4("10.0.0.1", "10.0.1.1", 17, test::udp(7, 7))));
  }
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.idle_timeout_s = 5;
  o.max_flows = 3;
  o.dpi = false;
  const auto j = engine().convert(o);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 6u);
  EXPECT_EQ(j["flow_end_reasons"]["lack_of_resources"].get<std::uint64_t>(), 2u);
  EXPECT_EQ(j["flow_end_reasons"]["idle_timeout"].get<std::uint64_t>(), 3u);
  EXPECT_EQ(j["flow_end_reasons"]["end_of_input"].get<std::uint64_t>(), 1u);
}

TEST(Engine, TruncatedSnaplenCountsIpLength) {
  test::TempDir dir;
  {
    test::PcapWriter w(dir.file("in.pcap"), 1, 64);
    w.add(1'600'000'000'000'000ULL,
          test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 6, test::tcp(1, 2, 0x18, 1000))), 64);
  }
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  const auto j = engine().convert(o);
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), 1u);
  EXPECT_EQ(j["bytes"].get<std::uint64_t>(), 1040u);
}

TEST(Engine, TruncatedLastRecordIsAWarning) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  fs::resize_file(dir.file("in.pcap"), fs::file_size(dir.file("in.pcap")) - 10);
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  const auto j = engine().convert(o);
  EXPECT_EQ(j["packets_read"].get<std::uint64_t>(), 11u);
  ASSERT_EQ(j["warnings"].size(), 1u);
  EXPECT_NE(j["warnings"][0].get<std::string>().find("cut short"), std::string::npos);
  EXPECT_TRUE(j["inputs"][0]["truncated"].get<bool>());
}

void expect_error(const Options& o, const std::string& fragment) {
  try {
    engine().convert(o);
    FAIL() << "no error, expected: " << fragment;
  } catch (const EngineError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  if (!o.output.empty()) {
    EXPECT_FALSE(fs::exists(o.output));
  }
}

TEST(Engine, ErrorsAreOneLineAndLeaveNoOutput) {
  test::TempDir dir;
  write_small_capture(dir.file("good.pcap"));
  std::ofstream(dir.file("text.txt")) << "hello, this is not a capture\n";
  std::ofstream(dir.file("empty.pcap")).close();
  Options o;
  o.output = dir.file("out.ipfix");
  o.inputs = {dir.file("missing.pcap")};
  expect_error(o, "No such file");
  o.inputs = {dir.file("empty.pcap")};
  expect_error(o, "empty");
  o.inputs = {dir.file("text.txt")};
  expect_error(o, "not a readable pcap");
  {
    test::PcapWriter w(dir.file("wifi.pcap"), 105);
    w.add(1, Bytes(30, 0));
  }
  o.inputs = {dir.file("wifi.pcap")};
  expect_error(o, "unsupported link type 105");
  o.inputs = {dir.file("good.pcap")};
  o.bpf_filter = "tcp port nonsense";
  expect_error(o, "bad BPF filter");
  o.bpf_filter.clear();
  o.output = dir.file("no/such/dir/out.ipfix");
  expect_error(o, "cannot write output");
  o.output = dir.file("out.ipfix");
  o.idle_timeout_s = 0;
  expect_error(o, "idle timeout");
  EXPECT_TRUE(no_temp_left(dir.path()));
}

TEST(Engine, BpfFilterSelectsPackets) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.bpf_filter = "tcp";
  const auto j = engine().convert(o);
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), 7u);
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 1u);
}

TEST(Engine, CancelLeavesNoOutput) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  std::atomic<bool> cancel{true};
  EXPECT_THROW(engine().convert(o, {}, &cancel), Cancelled);
  EXPECT_FALSE(fs::exists(o.output));
  EXPECT_TRUE(no_temp_left(dir.path()));
}

// Cancelled midway, after flows have gone to the flow store's writer thread: neither the IPFIX
// file nor the store, nor a temporary of either, is left.
TEST(Engine, CancelMidwayLeavesNeitherOutputNorFlowStore) {
  test::TempDir dir;
  write_udp_flows(dir.file("many.pcap"), 5000, 1'000'000);  // ended by the idle timeout
  Options o;
  o.inputs = {dir.file("many.pcap")};
  o.output = dir.file("out.ipfix");
  o.flows_db = dir.file("out.ipfix.flows.sqlite");
  o.idle_timeout_s = 1;
  o.progress_every_packets = 100;
  std::atomic<bool> cancel{false};
  EXPECT_THROW(engine().convert(
                   o, [&](const Progress& p) { cancel = p.packets >= 3000; }, &cancel),
               Cancelled);
  EXPECT_FALSE(fs::exists(o.output));
  EXPECT_FALSE(fs::exists(o.flows_db));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename(), "many.pcap") << "left behind: " << e.path();
  // The same conversion without the cancel writes both, the store with every record.
  const auto j = engine().convert(o);
  EXPECT_TRUE(fs::exists(o.output));
  EXPECT_TRUE(fs::exists(o.flows_db));
  EXPECT_EQ(j["flows"].get<std::uint64_t>(), 5000u);
}

// The flow store's page size follows the inputs' size: SQLite's 4 KiB for a small capture (a
// tiny task's store stays about 44 KB), 16 KiB from 16 MiB of input on (a large store is written
// about 2 % faster and read through faster: docs/flow-store.md, Pages).
TEST(Engine, AFlowStoresPagesAreLargerForLargeInputs) {
  EXPECT_EQ(store_page_size(0), 4096u);
  EXPECT_EQ(store_page_size(kLargeStoreInput - 1), 4096u);
  EXPECT_EQ(store_page_size(kLargeStoreInput), flows::kLargeStorePageSize);
  EXPECT_EQ(store_page_size(std::uint64_t{1} << 40), flows::kLargeStorePageSize);
  test::TempDir dir;
  write_udp_flows(dir.file("few.pcap"), 50, 1'000'000);
  Options o;
  o.inputs = {dir.file("few.pcap")};
  o.output = dir.file("out.ipfix");
  o.flows_db = dir.file("out.ipfix.flows.sqlite");
  engine().convert(o);
  std::ifstream f(o.flows_db, std::ios::binary);
  unsigned char header[18] = {};
  ASSERT_TRUE(f.read(reinterpret_cast<char*>(header), sizeof header));
  EXPECT_EQ(header[16] << 8 | header[17], 4096);  // the SQLite header's page size
  // A merge's store is written from its parts' files and their stores: they count, whether
  // named by path or opened (sparse files of 10 MiB).
  for (const char* name : {"part0.ipfix", "part0.ipfix.flows.sqlite"}) {
    std::ofstream(dir.file(name)).close();
    fs::resize_file(dir.file(name), std::uint64_t{10} << 20);
  }
  Options m;
  m.inputs = {dir.file("part0.ipfix")};
  EXPECT_EQ(store_input_bytes(m), std::uint64_t{10} << 20);
  m.part_stores = {dir.file("part0.ipfix.flows.sqlite"), dir.file("missing.flows.sqlite")};
  EXPECT_EQ(store_input_bytes(m), std::uint64_t{20} << 20);
  EXPECT_EQ(store_page_size(store_input_bytes(m)), flows::kLargeStorePageSize);
}

// A full disk, as far as this process can tell: RLIMIT_FSIZE makes writes past the limit fail
// (EFBIG) the way ENOSPC would. The conversion fails with the reason, the previous output
// stays as it was and no temporary is left.
TEST(Engine, AFullDiskFailsTheConversionAndKeepsThePreviousOutput) {
  test::TempDir dir;
  write_udp_flows(dir.file("many.pcap"), 3000, 1000);  // far more IPFIX than the limit
  std::ofstream(dir.file("out.ipfix")) << "the previous output";
  Engine& e = engine();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{16 * 1024, 16 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    Options o;
    o.inputs = {dir.file("many.pcap")};
    o.output = dir.file("out.ipfix");
    try {
      e.convert(o);
      _exit(2);  // no error
    } catch (const EngineError& err) {
      const std::string what = err.what();
      _exit(what.find("error writing IPFIX output") != std::string::npos &&
                    what.find("File too large") != std::string::npos
                ? 0
                : 3);
    } catch (...) {
      _exit(4);
    }
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: no error, 3: another message, 4: another exception";
  std::ifstream in(dir.file("out.ipfix"));
  std::string previous;
  std::getline(in, previous);
  EXPECT_EQ(previous, "the previous output");
  EXPECT_TRUE(no_temp_left(dir.path()));
}

// Found by scripts/chaos: a frozen worker's run was given up, the task ran again elsewhere and
// succeeded, then the frozen run woke and renamed its own output over the good one, so the
// file no longer was the one the broker recorded (downloads answered 410). A run now publishes
// nothing when another writer put a file under its output's name while it went on: not the
// IPFIX file, not the flow store, not the summary.
TEST(Engine, ARunDoesNotReplaceAnOutputPublishedByAnotherWriterWhileItRan) {
  test::TempDir dir;
  write_udp_flows(dir.file("many.pcap"), 3000, 1000);
  for (const bool with_store : {true, false}) {
    SCOPED_TRACE(with_store ? "with a flow store" : "without a flow store");
    const std::string out = dir.file(with_store ? "a.ipfix" : "b.ipfix");
    Options o;
    o.inputs = {dir.file("many.pcap")};
    o.output = out;
    if (with_store) o.flows_db = out + ".flows.sqlite";
    o.summary_file = out + ".summary.json";
    o.progress_every_packets = 100;
    bool published = false;
    // The later run publishes its files midway through this one (temporary, then rename).
    const auto later_run = [&](const Progress& p) {
      if (published || p.packets < 1000) return;
      for (const std::string& f : {out, out + ".flows.sqlite", out + ".summary.json"}) {
        std::ofstream(f + ".other") << "the later run's " << f;
        fs::rename(f + ".other", f);
      }
      published = true;
    };
    EXPECT_THROW(engine().convert(o, later_run), OutputReplaced);
    ASSERT_TRUE(published);
    for (const std::string& f : {out, out + ".flows.sqlite", out + ".summary.json"})
      EXPECT_TRUE(slurp(f) == "the later run's " + f) << f << " was replaced";
    EXPECT_TRUE(no_temp_left(dir.path()));
  }
}

// What the check leaves alone: a file that was under the name before the run (an overwrite)
// is replaced, and one removed while the run went on is no newer output.
TEST(Engine, ARunReplacesTheFileThatWasThereBeforeItAndOneRemovedMeanwhile) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Options o;
  o.inputs = {dir.file("in.pcap")};
  o.output = dir.file("out.ipfix");
  o.flows_db = dir.file("out.ipfix.flows.sqlite");
  std::ofstream(o.output) << "an older output";
  std::ofstream(o.flows_db) << "an older store";
  engine().convert(o);
  EXPECT_TRUE(slurp(o.output) != "an older output");
  EXPECT_TRUE(slurp(o.flows_db) != "an older store");
  bool removed = false;
  o.progress_every_packets = 1;
  engine().convert(o, [&](const Progress& p) {
    if (!removed && p.packets < 6) removed = fs::remove(o.output);  // of 12 packets
  });
  EXPECT_TRUE(removed);
  EXPECT_TRUE(fs::exists(o.output));
  EXPECT_TRUE(no_temp_left(dir.path()));
}

// The same rule for a file written under its temporary name from the start (file systems
// without O_TMPFILE) and for one in an unnamed file: a free name is taken by a hard link,
// atomically, so a file another writer put there meanwhile stays even if this process still
// saw the name free (an NFS client's cache); a file that was there at the start is replaced.
TEST(OutputFileTest, AFreeNameIsTakenByALinkThatFailsIfAnotherWriterGotThereFirst) {
  test::TempDir dir;
  for (const bool unnamed : {true, false}) {
    SCOPED_TRACE(unnamed ? "unnamed temporary" : "named temporary");
    OutputFileConfig cfg;
    cfg.path = dir.file(unnamed ? "u.ipfix" : "n.ipfix");
    cfg.unnamed_temporary = unnamed;
    {
      OutputFile f(cfg);
      std::fputs("mine", f.file());
      std::ofstream(cfg.path) << "another writer's";  // created in place, no rename
      EXPECT_THROW(f.commit(), OutputReplaced);
    }
    EXPECT_EQ(slurp(cfg.path), "another writer's");
    EXPECT_TRUE(no_temp_left(dir.path()));
    {
      OutputFile f(cfg);  // the name holds a file now: an overwrite
      std::fputs("mine", f.file());
      f.commit();
    }
    EXPECT_EQ(slurp(cfg.path), "mine");
    fs::remove(cfg.path);
    {
      OutputFile f(cfg);  // free, and free at the end
      std::fputs("mine again", f.file());
      f.commit();
    }
    EXPECT_EQ(slurp(cfg.path), "mine again");
    EXPECT_TRUE(no_temp_left(dir.path()));
  }
}

TEST(Engine, ForkedChildrenShareTheInitialisedEngine) {
  test::TempDir dir;
  write_small_capture(dir.file("in.pcap"));
  Engine& e = engine();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Options o;
    o.inputs = {dir.file("in.pcap")};
    o.output = dir.file("child.ipfix");
    try {
      const auto j = e.convert(o);
      _exit(j["flows"].get<std::uint64_t>() == 3 ? 0 : 2);
    } catch (...) {
      _exit(3);
    }
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(fs::exists(dir.file("child.ipfix")));
}

}  // namespace
}  // namespace ipfixweb::engine

namespace ipfixweb::engine {
namespace {

// The summary is written as text directly: strings that are not UTF-8 (file names are bytes)
// come out with U+FFFD, control characters and quotes escaped, and the text parses.
TEST(Engine, SummaryTextEscapesNamesAndReplacesInvalidUtf8) {
  test::TempDir dir;
  const std::string odd = dir.file("caf\xc3\xa9 \xff\xfe \"q\" \x01.pcap");
  write_small_capture(odd);
  Options o;
  o.inputs = {odd};
  o.output = dir.file("out.ipfix");
  o.analysis = {"udp", "Tab\there", "dns"};
  const Conversion c = engine().convert_text(o);
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(c.summary)) << c.summary;
  EXPECT_EQ(j["inputs"][0]["path"],
            dir.file("caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd \"q\" \x01.pcap"));
  EXPECT_NE(c.summary.find("\\\"q\\\" \\u0001.pcap"), std::string::npos) << c.summary;
  ASSERT_TRUE(j["analysis"].contains("tab\there")) << j["analysis"].dump();
  EXPECT_EQ(j["analysis"]["udp"]["flows"], 1);
  EXPECT_EQ(c.packets, j["packets"].get<std::uint64_t>());
  EXPECT_EQ(c.bytes, j["bytes"].get<std::uint64_t>());
  EXPECT_EQ(c.flows, j["flows"].get<std::uint64_t>());
  EXPECT_EQ(c.summary, j.dump()) << "keys in byte order, no spaces, as nlohmann writes them";
}

}  // namespace
}  // namespace ipfixweb::engine

// Compressed captures (docs/engine.md, Compressed input): gzip, zstd, xz and bzip2 files made by
// the command-line compressors give the same summary and the same IPFIX records (decoded by
// ipfixDump) as the plain capture; detection is by content; progress counts compressed bytes;
// corrupt streams and decompression bombs fail with a clear error and no output; a stream cut
// short is read up to the cut with a warning. A test skips when its compressor is missing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "ipfixweb/engine/engine.hpp"
#include "pcap_reader.hpp"
#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

struct Codec {
  const char* tool;  // the command line compressor
  const char* name;  // the summary's "compression"
  const char* ext;
};
const Codec kCodecs[] = {
    {"gzip", "gzip", "gz"}, {"zstd", "zstd", "zst"}, {"xz", "xz", "xz"}, {"bzip2", "bzip2", "bz2"}};
const Codec& kGzip = kCodecs[0];
const Codec& kZstd = kCodecs[1];

#define REQUIRE_CODEC(c) REQUIRE_TOOL((c).tool)

// `in` compressed by the command line tool into `out` (default level).
void compress(const Codec& c, const std::string& in, const std::string& out) {
  const RunResult r =
      run(std::string(c.tool) + " -q -c " + shell_quote(in) + " > " + shell_quote(out));
  ASSERT_EQ(r.exit_code, 0) << c.tool << ": " << r.err;
}

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary)
      .write(data.data(), static_cast<std::streamsize>(data.size()));
}

// A real capture when the shared ones are there, else the repository's sample.
std::string test_capture() {
  const std::string pcaps = pcaps_dir();
  if (!pcaps.empty() && fs::exists(pcaps + "/1kxun.pcap")) return pcaps + "/1kxun.pcap";
  return std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap";
}

// A capture of `n` UDP packets with random payloads (it hardly compresses: the compressed file
// is about as large as the capture, so progress and corruption fall mid-way through the run).
void write_random_capture(const std::string& path, std::size_t n) {
  std::mt19937 rng(7);
  PcapWriter w(path);
  for (std::size_t i = 0; i < n; ++i) {
    Bytes payload(600);
    for (auto& b : payload) b = static_cast<std::uint8_t>(rng());
    const std::string a = "10.0." + std::to_string(i % 50) + ".1";
    w.add(1'700'000'000'000'000ULL + i * 100,
          ether4(
              ipv4(a, "10.1.0.1", 17, udp(static_cast<std::uint16_t>(1000 + i % 7), 53, payload))));
  }
}

struct Conv {
  RunResult r;
  nlohmann::json summary;
};

Conv convert(const std::vector<std::string>& ins, const std::string& out,
             const std::string& extra = "") {
  Conv x;
  std::string cmd =
      shell_quote(pcap2ipfix()) + " -q --summary-json - " + extra + " -o " + shell_quote(out);
  for (const auto& in : ins) {
    cmd += ' ';
    cmd += shell_quote(in);
  }
  x.r = run(cmd);
  if (x.r.exit_code == 0) x.summary = nlohmann::json::parse(x.r.out);
  return x;
}
Conv convert(const std::string& in, const std::string& out, const std::string& extra = "") {
  return convert(std::vector<std::string>{in}, out, extra);
}

// The summary without what names or measures the run rather than the traffic.
nlohmann::json traffic_of(nlohmann::json s) {
  s.erase("elapsed_s");
  s.erase("packets_per_s");
  s.erase("output");
  for (auto& i : s["inputs"]) {
    i.erase("path");
    i.erase("file_bytes");
    i.erase("compression");
  }
  return s;
}

bool only_files(const std::string& dir, std::initializer_list<std::string> names) {
  std::set<std::string> want(names), have;
  for (const auto& e : fs::directory_iterator(dir)) have.insert(e.path().filename().string());
  return want == have;
}

void same_as_plain(const std::string& plain);

// The repository's sample (classic pcap) and, when the shared captures are there, a real pcapng.
std::vector<std::string> test_captures() {
  std::vector<std::string> v{std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap"};
  if (test_capture() != v[0]) v.push_back(test_capture());
  return v;
}

TEST(CompressedCapture, EveryFormatGivesTheSameSummaryAndIpfixRecordsAsThePlainCapture) {
  for (const std::string& plain : test_captures()) {
    SCOPED_TRACE(plain);
    same_as_plain(plain);
  }
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed: summaries compared";
}

void same_as_plain(const std::string& plain) {
  TempDir dir;
  const Conv base = convert(plain, dir.file("plain.ipfix"));
  ASSERT_EQ(base.r.exit_code, 0) << base.r.err;
  ASSERT_GT(base.summary["packets"].get<std::uint64_t>(), 0u);
  const bool dump = have_tool("ipfixDump");
  const DumpResult base_records = dump ? ipfix_dump(dir.file("plain.ipfix")) : DumpResult{};
  for (const Codec& c : kCodecs) {
    if (!have_tool(c.tool)) {
      std::cout << "[ skipped  ] " << c.tool << " not installed\n";
      continue;
    }
    const std::string z = dir.file(std::string("in.pcap.") + c.ext);
    compress(c, plain, z);
    const std::string out = dir.file(std::string(c.ext) + ".ipfix");
    const Conv got = convert(z, out);
    ASSERT_EQ(got.r.exit_code, 0) << c.tool << ": " << got.r.err;
    EXPECT_EQ(traffic_of(got.summary), traffic_of(base.summary)) << c.tool;
    EXPECT_EQ(got.summary["inputs"][0]["compression"], c.name);
    EXPECT_EQ(got.summary["inputs"][0]["file_bytes"], fs::file_size(z)) << "compressed bytes";
    if (dump) {
      const DumpResult records = ipfix_dump(out);
      EXPECT_TRUE(records.stderr_text.empty()) << records.stderr_text;
      EXPECT_EQ(records.records, base_records.records) << c.tool;
    }
  }
}

TEST(CompressedCapture, PcapngInsideGzipIsReadLikeThePlainPcapng) {
  REQUIRE_CODEC(kGzip);
  REQUIRE_TOOL("editcap");
  TempDir dir;
  const RunResult e = run("editcap -F pcapng " + shell_quote(test_capture()) + " " +
                          shell_quote(dir.file("in.pcapng")));
  ASSERT_EQ(e.exit_code, 0) << e.err;
  compress(kGzip, dir.file("in.pcapng"), dir.file("in.pcapng.gz"));
  const Conv base = convert(dir.file("in.pcapng"), dir.file("a.ipfix"));
  const Conv got = convert(dir.file("in.pcapng.gz"), dir.file("b.ipfix"));
  ASSERT_EQ(base.r.exit_code, 0) << base.r.err;
  ASSERT_EQ(got.r.exit_code, 0) << got.r.err;
  EXPECT_GT(got.summary["packets"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(traffic_of(got.summary), traffic_of(base.summary));
  EXPECT_EQ(got.summary["inputs"][0]["compression"], "gzip");
}

TEST(CompressedCapture, CompressionIsToldByContentNotByName) {
  REQUIRE_CODEC(kZstd);
  TempDir dir;
  const std::string plain = test_capture();
  compress(kZstd, plain, dir.file("zstd-inside.pcap"));
  fs::copy_file(plain, dir.file("plain-inside.gz"));
  const Conv base = convert(plain, dir.file("a.ipfix"));
  const Conv z = convert(dir.file("zstd-inside.pcap"), dir.file("b.ipfix"));
  const Conv p = convert(dir.file("plain-inside.gz"), dir.file("c.ipfix"));
  ASSERT_EQ(z.r.exit_code, 0) << z.r.err;
  ASSERT_EQ(p.r.exit_code, 0) << p.r.err;
  EXPECT_EQ(z.summary["inputs"][0]["compression"], "zstd");
  EXPECT_FALSE(p.summary["inputs"][0].contains("compression"));
  EXPECT_EQ(traffic_of(z.summary), traffic_of(base.summary));
  EXPECT_EQ(traffic_of(p.summary), traffic_of(base.summary));
  // A classic pcap under a compressed name still takes the memory-mapped path.
  write_random_capture(dir.file("classic.pcap"), 10);
  fs::copy_file(dir.file("classic.pcap"), dir.file("classic.pcap.gz"));
  compress(kZstd, dir.file("classic.pcap"), dir.file("classic.zst.pcap"));
  EXPECT_TRUE(PcapReader(dir.file("classic.pcap.gz"), "").memory_mapped());
  EXPECT_FALSE(PcapReader(dir.file("classic.zst.pcap"), "").memory_mapped());
}

TEST(CompressedCapture, ProgressCountsCompressedBytesAndReachesTheCompressedSize) {
  REQUIRE_CODEC(kZstd);
  TempDir dir;
  write_random_capture(dir.file("in.pcap"), 20000);
  compress(kZstd, dir.file("in.pcap"), dir.file("in.pcap.zst"));
  const std::uint64_t size = fs::file_size(dir.file("in.pcap.zst"));
  Options o;
  o.inputs = {dir.file("in.pcap.zst")};
  o.output = dir.file("out.ipfix");
  o.dpi = false;
  o.progress_every_packets = 500;
  std::vector<Progress> seen;
  Engine(false).convert(o, [&](const Progress& p) { seen.push_back(p); });
  ASSERT_GE(seen.size(), 3u);
  bool midway = false;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].bytes_total, size);
    EXPECT_LE(seen[i].bytes_read, size);
    if (i) {
      EXPECT_GE(seen[i].bytes_read, seen[i - 1].bytes_read) << "report " << i;
    }
    midway |= seen[i].bytes_read > 0 && seen[i].bytes_read < size;
  }
  EXPECT_TRUE(midway) << "some report between the start and the end";
  EXPECT_EQ(seen.back().bytes_read, size);
  EXPECT_EQ(seen.back().packets, 20000u);
}

TEST(CompressedCapture, AnOpenDescriptorAsTheWorkerPassesItIsReadCompressed) {
  REQUIRE_CODEC(kGzip);
  TempDir dir;
  const std::string plain = test_capture();
  compress(kGzip, plain, dir.file("in.gz"));
  const int fd = ::open(dir.file("in.gz").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Options o;
  o.inputs = {"upload-17"};
  o.input_fds = {fd};
  o.output = dir.file("out.ipfix");
  const nlohmann::json s = Engine().convert(o);
  EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 0) << "the caller's offset is left alone";
  ::close(fd);
  Options p = o;
  p.inputs = {plain};
  p.input_fds = {};
  p.output = dir.file("plain.ipfix");
  EXPECT_EQ(traffic_of(s), traffic_of(Engine().convert(p)));
  EXPECT_EQ(s["inputs"][0]["path"], "upload-17");
}

TEST(CompressedCapture, AnExtractFromACompressedCaptureWritesThePlainExtractsPackets) {
  REQUIRE_CODEC(kZstd);
  TempDir dir;
  {
    PcapWriter w(dir.file("in.pcap"));
    for (int i = 0; i < 6; ++i) {
      const bool back = i % 2;
      const bool other = i >= 4;  // another flow
      w.add(
          1'650'000'000'000'000ULL + static_cast<std::uint64_t>(i) * 1000,
          ether4(ipv4(back ? "10.0.0.2" : "10.0.0.1", back ? "10.0.0.1" : "10.0.0.2", 17,
                      back ? udp(53, other ? 4444 : 3333, 40) : udp(other ? 4444 : 3333, 53, 20))));
    }
  }
  compress(kZstd, dir.file("in.pcap"), dir.file("in.zst"));
  const std::string sel = "'udp 10.0.0.1:3333 <-> 10.0.0.2:53'";
  const RunResult a = run(shell_quote(pcap2ipfix()) + " -q --extract " + sel + " -o " +
                          shell_quote(dir.file("a.pcap")) + " " + shell_quote(dir.file("in.pcap")));
  const RunResult b = run(shell_quote(pcap2ipfix()) + " -q --extract " + sel + " -o " +
                          shell_quote(dir.file("b.pcap")) + " " + shell_quote(dir.file("in.zst")));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(bytes_of(dir.file("b.pcap")), bytes_of(dir.file("a.pcap")));
  EXPECT_GT(fs::file_size(dir.file("a.pcap")), 24u + 4 * 16) << "the flow's 4 packets";
}

TEST(CompressedCapture, ACorruptStreamFailsWithAClearErrorAndLeavesNoOutput) {
  TempDir dir;
  write_random_capture(dir.file("in.pcap"), 10000);
  for (const Codec* c : {&kGzip, &kZstd}) {
    if (!have_tool(c->tool)) continue;
    const std::string work = dir.file(c->ext);
    fs::create_directory(work);
    const std::string z = work + "/in.pcap." + c->ext;
    compress(*c, dir.file("in.pcap"), z);
    std::string data = bytes_of(z);
    for (std::size_t i = data.size() / 2; i < data.size() / 2 + 32; ++i) data[i] ^= 0x5a;
    write_bytes(z, data);
    const Conv x = convert(z, work + "/out.ipfix", "--flows-db " + shell_quote(work + "/out.db"));
    EXPECT_EQ(x.r.exit_code, 1) << c->tool;
    EXPECT_NE(x.r.err.find("corrupt " + std::string(c->name) + " data"), std::string::npos)
        << x.r.err;
    EXPECT_NE(x.r.err.find("in.pcap." + std::string(c->ext)), std::string::npos) << x.r.err;
    EXPECT_TRUE(only_files(work, {"in.pcap." + std::string(c->ext)})) << "output left behind";
  }
}

TEST(CompressedCapture, AStreamCutShortIsReadUpToTheCutWithAWarningLikeACutShortCapture) {
  TempDir dir;
  write_random_capture(dir.file("in.pcap"), 10000);
  for (const Codec* c : {&kGzip, &kZstd}) {
    if (!have_tool(c->tool)) continue;
    const std::string z = dir.file(std::string("in.pcap.") + c->ext);
    compress(*c, dir.file("in.pcap"), z);
    fs::resize_file(z, fs::file_size(z) * 6 / 10);
    const Conv x = convert(z, dir.file(std::string(c->ext) + ".ipfix"));
    ASSERT_EQ(x.r.exit_code, 0) << c->tool << ": " << x.r.err;
    const auto& in = x.summary["inputs"][0];
    EXPECT_TRUE(in["truncated"].get<bool>()) << c->tool;
    const std::uint64_t packets = in["packets"];
    EXPECT_GT(packets, 4000u) << c->tool;
    EXPECT_LT(packets, 7000u) << c->tool;
    const std::string warnings = x.summary["warnings"].dump();
    EXPECT_NE(warnings.find("cut short"), std::string::npos) << warnings;
    EXPECT_NE(warnings.find("stream ends early"), std::string::npos) << warnings;
    EXPECT_TRUE(fs::exists(dir.file(std::string(c->ext) + ".ipfix")));
  }
}

TEST(CompressedCapture, ADecompressionBombIsStoppedWithItsBoundNamedAndNoOutput) {
  REQUIRE_CODEC(kZstd);
  TempDir dir;
  // A valid pcap file header, then 80 MiB of zeros (empty records): a few KiB with zstd -19.
  write_random_capture(dir.file("header"), 0);
  ASSERT_EQ(fs::file_size(dir.file("header")), 24u);
  const std::string bomb = dir.file("bomb.pcap.zst");
  ASSERT_EQ(run("(cat " + shell_quote(dir.file("header")) +
                "; head -c 80M /dev/zero) | zstd -19 -q -c > " + shell_quote(bomb))
                .exit_code,
            0);
  ASSERT_LT(fs::file_size(bomb), 20000u);
  const Conv x = convert(bomb, dir.file("out.ipfix"), "--no-dpi");
  EXPECT_EQ(x.r.exit_code, 1);
  EXPECT_NE(x.r.err.find("decompression ratio exceeded 1000:1: likely a decompression bomb"),
            std::string::npos)
      << x.r.err;
  EXPECT_FALSE(fs::exists(dir.file("out.ipfix")));

  // The size bound, set low, stops an ordinary compressed capture.
  compress(kZstd, test_capture(), dir.file("in.zst"));
  const Conv y = convert(dir.file("in.zst"), dir.file("y.ipfix"), "--max-decompressed-size 30000");
  EXPECT_EQ(y.r.exit_code, 1);
  EXPECT_NE(y.r.err.find("decompressed size exceeded the limit of 30000 bytes"), std::string::npos)
      << y.r.err;
  EXPECT_TRUE(only_files(dir.path(), {"header", "bomb.pcap.zst", "in.zst"}));
}

TEST(CompressedCapture, ACompressedFileThatHoldsNoCaptureSaysItIsNotACapture) {
  REQUIRE_CODEC(kGzip);
  TempDir dir;
  write_bytes(dir.file("notes.txt"), "GET / HTTP/1.1\r\nHost: example\r\n\r\n");
  compress(kGzip, dir.file("notes.txt"), dir.file("notes.pcap.gz"));
  const Conv x = convert(dir.file("notes.pcap.gz"), dir.file("out.ipfix"));
  EXPECT_EQ(x.r.exit_code, 1);
  EXPECT_NE(x.r.err.find("not a readable pcap/pcapng capture (gzip-compressed data that is "
                         "neither pcap nor pcapng)"),
            std::string::npos)
      << x.r.err;
  EXPECT_FALSE(fs::exists(dir.file("out.ipfix")));
}

TEST(CompressedCapture, AnIpfixIngestOfACompressedFileAsksForItDecompressed) {
  REQUIRE_CODEC(kGzip);
  TempDir dir;
  ASSERT_EQ(convert(test_capture(), dir.file("flows.ipfix"), "--no-dpi").r.exit_code, 0);
  compress(kGzip, dir.file("flows.ipfix"), dir.file("flows.ipfix.gz"));
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -q --ingest -o " + shell_quote(dir.file("out.ipfix")) +
          " " + shell_quote(dir.file("flows.ipfix.gz")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is gzip-compressed: an IPFIX ingest reads uncompressed IPFIX files only"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir.file("out.ipfix")));
}

TEST(CompressedCapture, PlainAndCompressedInputsMergeLikeThePlainOnes) {
  REQUIRE_CODEC(kGzip);
  REQUIRE_CODEC(kZstd);
  TempDir dir;
  write_random_capture(dir.file("a.pcap"), 3000);
  const std::string b = std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap";
  compress(kGzip, dir.file("a.pcap"), dir.file("a.gz"));
  compress(kZstd, b, dir.file("b.zst"));
  const Conv plain = convert({dir.file("a.pcap"), b}, dir.file("p.ipfix"));
  const Conv mixed = convert({dir.file("a.gz"), dir.file("b.zst")}, dir.file("m.ipfix"));
  ASSERT_EQ(plain.r.exit_code, 0) << plain.r.err;
  ASSERT_EQ(mixed.r.exit_code, 0) << mixed.r.err;
  EXPECT_EQ(traffic_of(mixed.summary), traffic_of(plain.summary));
  EXPECT_EQ(bytes_of(dir.file("m.ipfix")), bytes_of(dir.file("p.ipfix")));
}

TEST(CompressedCapture, TheReaderGivesTheSamePacketsDecodingInlineOrAheadAndEndsAtTheFileSize) {
  REQUIRE_CODEC(kGzip);
  TempDir dir;
  write_random_capture(dir.file("in.pcap"), 3000);
  compress(kGzip, dir.file("in.pcap"), dir.file("in.gz"));
  const auto packets = [&](const std::string& path, bool ahead, std::uint64_t* end_pos) {
    ReadOptions o;
    o.read_ahead = ahead;
    PcapReader r(-1, path, "", o);
    std::vector<std::string> out;
    RawPacket p;
    while (r.next(p)) {
      out.push_back(std::to_string(p.ts_us) + "/" + std::to_string(p.wirelen) + "/" +
                    std::string(reinterpret_cast<const char*>(p.data), p.caplen));
    }
    EXPECT_FALSE(r.truncated());
    if (end_pos) *end_pos = r.position();
    EXPECT_EQ(r.file_size(), fs::file_size(path));
    return out;
  };
  std::uint64_t inline_end = 0, ahead_end = 0;
  const auto plain = packets(dir.file("in.pcap"), true, nullptr);
  EXPECT_EQ(plain.size(), 3000u);
  EXPECT_EQ(packets(dir.file("in.gz"), false, &inline_end), plain);
  EXPECT_EQ(packets(dir.file("in.gz"), true, &ahead_end), plain);
  EXPECT_EQ(inline_end, fs::file_size(dir.file("in.gz")));
  EXPECT_EQ(ahead_end, fs::file_size(dir.file("in.gz")));
}

}  // namespace
}  // namespace ipfixweb::engine::test

// PcapReader: the memory-mapped classic-pcap path must give exactly what libpcap gives
// (timestamps, lengths, bytes, BPF filtering, truncation and errors), on crafted files and on
// every capture of the shared corpus.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ipfixweb/engine/engine.hpp"
#include "pcap_reader.hpp"
#include "pcap_writer.hpp"

namespace ipfixweb::engine {
namespace {

namespace fs = std::filesystem;
using test::Bytes;

struct ReadResult {
  std::vector<std::string> records;  // "ts caplen wirelen fnv(data)"
  bool truncated = false;
  std::string truncation;
  std::string error;
  bool mapped = false;
};

// `fd` >= 0: read through that open descriptor (named `path`), as the worker does.
ReadResult read_all(const std::string& path, bool allow_map, const std::string& filter = "",
                    int fd = -1) {
  ReadResult r;
  try {
    PcapReader rd(fd, path, filter, allow_map);
    r.mapped = rd.memory_mapped();
    RawPacket p;
    while (rd.next(p)) {
      std::uint64_t h = 1469598103934665603ULL;
      for (std::uint32_t i = 0; i < p.caplen; ++i) h = (h ^ p.data[i]) * 1099511628211ULL;
      r.records.push_back(std::to_string(p.ts_us) + " " + std::to_string(p.caplen) + " " +
                          std::to_string(p.wirelen) + " " + std::to_string(h));
    }
    r.truncated = rd.truncated();
    r.truncation = rd.truncation_message();
  } catch (const EngineError& e) {
    r.error = e.what();
  }
  return r;
}

void expect_same(const std::string& path, const std::string& filter = "", bool must_map = true) {
  std::string trace = path;
  trace += " filter: ";
  trace += filter;
  SCOPED_TRACE(trace);
  const ReadResult a = read_all(path, false, filter);
  const ReadResult b = read_all(path, true, filter);
  EXPECT_FALSE(a.mapped);
  if (must_map) {
    EXPECT_TRUE(b.mapped);
  }
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.truncated, b.truncated);
  EXPECT_EQ(a.truncation, b.truncation);
  ASSERT_EQ(a.records.size(), b.records.size());
  for (std::size_t i = 0; i < a.records.size(); ++i) {
    ASSERT_EQ(a.records[i], b.records[i]) << "record " << i;
  }
}

void put32(Bytes& b, std::uint32_t v, bool big) {
  for (int i = 0; i < 4; ++i) {
    b.push_back(static_cast<std::uint8_t>(big ? v >> (24 - 8 * i) : v >> (8 * i)));
  }
}
void put16(Bytes& b, std::uint16_t v, bool big) {
  b.push_back(static_cast<std::uint8_t>(big ? v >> 8 : v));
  b.push_back(static_cast<std::uint8_t>(big ? v : v >> 8));
}

struct Rec {
  std::uint32_t sec, frac, caplen, len;
  std::size_t data;  // bytes actually written
};

// Writes a classic pcap header (big-endian or not, us or ns) and records with arbitrary fields.
void write_raw(const std::string& path, bool big, bool ns, std::uint32_t snaplen,
               const std::vector<Rec>& recs, std::size_t cut_end = 0) {
  Bytes b;
  put32(b, ns ? 0xa1b23c4d : 0xa1b2c3d4, big);
  put16(b, 2, big);
  put16(b, 4, big);
  put32(b, 0, big);
  put32(b, 0, big);
  put32(b, snaplen, big);
  put32(b, 1, big);
  const Bytes frame = test::ether4(test::ipv4("10.0.0.1", "10.0.0.2", 17, test::udp(1, 2, 400)));
  for (const auto& r : recs) {
    put32(b, r.sec, big);
    put32(b, r.frac, big);
    put32(b, r.caplen, big);
    put32(b, r.len, big);
    for (std::size_t i = 0; i < r.data; ++i)
      b.push_back(frame[i % frame.size()] ^ static_cast<std::uint8_t>(i >> 8));
  }
  b.resize(b.size() - cut_end);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

TEST(Reader, MappedPathMatchesLibpcapOnCraftedFiles) {
  test::TempDir dir;
  const std::vector<Rec> normal = {
      {100, 5, 60, 60, 60}, {100, 999999, 442, 442, 442}, {101, 0, 42, 1500, 42}};
  int n = 0;
  for (const bool big : {false, true}) {
    for (const bool ns : {false, true}) {
      const std::string f = dir.file(std::to_string(n++) + ".pcap");
      std::vector<Rec> r = normal;
      if (ns) r[1].frac = 999'999'999;
      r.push_back({0x80000001u, 0xfffffff0u, 60, 60, 60});  // signed 32-bit fields, as libpcap
      r.push_back({5, 0x80000000u, 60, 60, 60});
      write_raw(f, big, ns, 65535, r);
      expect_same(f);
      expect_same(f, "udp");
      expect_same(f, "len > 100");
    }
  }
  // Last record cut inside its header / inside its data.
  write_raw(dir.file("cut_hdr.pcap"), false, false, 65535, normal, 42 + 8);
  expect_same(dir.file("cut_hdr.pcap"));
  write_raw(dir.file("cut_data.pcap"), false, false, 65535, normal, 10);
  expect_same(dir.file("cut_data.pcap"));
  // A record larger than the file's snapshot length, and snaplen 0 / huge in the header.
  write_raw(dir.file("oversnap.pcap"), false, false, 128,
            {{1, 0, 300, 300, 300}, {2, 0, 60, 60, 60}});
  expect_same(dir.file("oversnap.pcap"));
  write_raw(dir.file("oversnap_cut1.pcap"), false, false, 128, {{1, 0, 300, 300, 300}}, 100);
  expect_same(dir.file("oversnap_cut1.pcap"));
  write_raw(dir.file("oversnap_cut2.pcap"), false, false, 128, {{1, 0, 300, 300, 300}}, 250);
  expect_same(dir.file("oversnap_cut2.pcap"));
  write_raw(dir.file("snap0.pcap"), false, false, 0, normal);
  expect_same(dir.file("snap0.pcap"));
  write_raw(dir.file("snapbig.pcap"), true, false, 0x7fffffff, normal);
  expect_same(dir.file("snapbig.pcap"));
  // caplen above libpcap's maximum: a read error after the first packet.
  write_raw(dir.file("huge.pcap"), false, false, 65535,
            {{1, 0, 60, 60, 60}, {2, 0, 300000, 300000, 0}});
  expect_same(dir.file("huge.pcap"));
  EXPECT_NE(read_all(dir.file("huge.pcap"), true).error.find("after 1 packets"), std::string::npos);
  // caplen > wire length, zero-length records, header only.
  write_raw(dir.file("odd.pcap"), false, false, 65535,
            {{1, 0, 60, 20, 60}, {2, 0, 0, 0, 0}, {3, 0, 0, 60, 0}});
  expect_same(dir.file("odd.pcap"));
  write_raw(dir.file("hdr_only.pcap"), false, false, 65535, {});
  expect_same(dir.file("hdr_only.pcap"));
  // Version 2.3 (maybe-swapped lengths) and FCS bits in the link type: left to libpcap.
  write_raw(dir.file("v23.pcap"), false, false, 65535, {{1, 0, 60, 40, 60}});
  {
    std::fstream f(dir.file("v23.pcap"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(6);
    f.put(3);
  }
  expect_same(dir.file("v23.pcap"), "", false);
  EXPECT_FALSE(read_all(dir.file("v23.pcap"), true).mapped);
}

TEST(Reader, PcapngIsReadByLibpcap) {
  const char* dir = std::getenv("IPFIXWEB_PCAPS");
  const std::string pcaps = dir ? dir : IPFIXWEB_PCAPS_DEFAULT;
  const std::string f = pcaps + "/doq.pcapng";
  if (!fs::exists(f)) GTEST_SKIP() << f << " missing";
  EXPECT_FALSE(read_all(f, true).mapped);
}

TEST(Reader, MappedPathMatchesLibpcapOnEverySharedCapture) {
  const char* env = std::getenv("IPFIXWEB_PCAPS");
  const std::string pcaps = env ? env : IPFIXWEB_PCAPS_DEFAULT;
  if (!fs::is_directory(pcaps)) GTEST_SKIP() << "shared pcaps not found";
  int checked = 0;
  for (const auto& e : fs::recursive_directory_iterator(pcaps)) {
    if (!e.is_regular_file()) continue;
    const std::string p = e.path().string();
    const auto ext = e.path().extension().string();
    if (ext != ".pcap" && ext != ".cap" && ext != ".pcapng") continue;
    if (e.file_size() > 16u << 20) continue;  // the 75 MB bench capture: too slow for a unit test
    expect_same(p, "", false);
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

// The worker hands the engine descriptors it opened beneath its roots: read through them, every
// capture gives exactly what its path gives (mapped or through libpcap), errors included.
TEST(Reader, AnOpenDescriptorReadsExactlyLikeThePath) {
  const char* env = std::getenv("IPFIXWEB_PCAPS");
  const std::string pcaps = env ? env : IPFIXWEB_PCAPS_DEFAULT;
  test::TempDir dir;
  std::vector<std::string> files;
  write_raw(dir.file("crafted.pcap"), false, true, 65535,
            {{100, 5, 60, 60, 60}, {101, 7, 42, 42, 42}});
  write_raw(dir.file("cut.pcap"), true, false, 65535, {{100, 5, 60, 60, 60}, {101, 0, 60, 60, 60}},
            9);
  std::ofstream(dir.file("text.txt")) << "not a capture at all";
  files = {dir.file("crafted.pcap"), dir.file("cut.pcap"), dir.file("text.txt")};
  if (fs::is_directory(pcaps)) {
    for (const auto& e : fs::directory_iterator(pcaps)) {
      if (files.size() >= 40) break;
      const auto ext = e.path().extension().string();
      if (e.is_regular_file() && (ext == ".pcap" || ext == ".pcapng") && e.file_size() < (4u << 20))
        files.push_back(e.path().string());
    }
  }
  for (const auto& f : files) {
    SCOPED_TRACE(f);
    for (const bool map : {false, true}) {
      const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      ASSERT_GE(fd, 0);
      const ReadResult by_path = read_all(f, map);
      const ReadResult by_fd = read_all(f, map, "", fd);
      EXPECT_EQ(by_path.mapped, by_fd.mapped);
      EXPECT_EQ(by_path.error, by_fd.error);
      EXPECT_EQ(by_path.truncation, by_fd.truncation);
      EXPECT_EQ(by_path.records, by_fd.records);
      EXPECT_GE(::fcntl(fd, F_GETFD), 0) << "the reader closed the caller's descriptor";
      ::close(fd);
    }
  }
}

TEST(Reader, AnOpenDescriptorOfAFifoIsRefused) {
  test::TempDir dir;
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0600), 0);
  const int fd = ::open(dir.file("fifo").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const ReadResult r = read_all(dir.file("fifo"), true, "", fd);
  EXPECT_NE(r.error.find("not a regular file"), std::string::npos) << r.error;
  ::close(fd);
}

// Many inputs (rotated files) merge in timestamp order, ties by input order,
// and every packet comes out once. (Merging was a linear scan per packet:
// 300 inputs ran at a tenth of the single-file speed.)
TEST(Reader, ManyInputsMergeInTimestampOrder) {
  test::TempDir dir;
  const int kFiles = 200, kPackets = 50;
  std::vector<std::string> paths;
  for (int f = 0; f < kFiles; ++f) {
    paths.push_back(dir.file("part" + std::to_string(f) + ".pcap"));
    test::PcapWriter w(paths.back());
    for (int p = 0; p < kPackets; ++p) {
      // Interleaved times; every 10th packet shares its time with other files.
      std::uint64_t ts = p % 10 == 0 ? 1000000ull * p : 1000000ull * p + (f * 7919) % 1000000;
      w.add(ts, test::ether(test::ipv4("10.0.0.1", "10.0.0.2", 17,
                                       test::udp(static_cast<std::uint16_t>(1000 + f), 53)),
                            0x0800));
    }
    w.close();
  }
  MergedReader reader(paths, "");
  RawPacket pkt;
  std::uint64_t last_ts = 0;
  std::size_t last_input = 0, n = 0;
  while (reader.next(pkt)) {
    ASSERT_GE(pkt.ts_us, last_ts) << "packet " << n;
    if (pkt.ts_us == last_ts && n > 0) {
      EXPECT_GE(pkt.input, last_input) << "tie order, packet " << n;
    }
    last_ts = pkt.ts_us;
    last_input = pkt.input;
    ++n;
  }
  EXPECT_EQ(n, static_cast<std::size_t>(kFiles * kPackets));
}

}  // namespace
}  // namespace ipfixweb::engine

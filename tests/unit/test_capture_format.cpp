#include <string>
// Capture sniffing (ipfixweb/capture/format.hpp): what a file is, by its first bytes; and the
// streaming decompressor (ipfixweb/capture/decompress.hpp), against the command-line
// compressors (tests skip when one is missing).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "ipfixweb/capture/decompress.hpp"
#include "ipfixweb/capture/format.hpp"

using namespace ipfixweb::capture;
using namespace std::string_view_literals;
using namespace std::string_literals;

namespace {
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST(CaptureFormat, APcapFileIsRecognisedInBothByteOrdersAndBothTimeResolutions) {
  for (auto magic :
       {"\xd4\xc3\xb2\xa1"sv, "\xa1\xb2\xc3\xd4"sv, "\x4d\x3c\xb2\xa1"sv, "\xa1\xb2\x3c\x4d"sv}) {
    std::string head(magic);
    head.append(20, '\0');
    auto s = sniff(head);
    EXPECT_EQ(s.format, Format::Pcap);
    EXPECT_EQ(s.compression, Compression::None);
    EXPECT_EQ(describe(s), "pcap");
  }
}

TEST(CaptureFormat, ThePcapFilesOfTheTestDataAreRecognised) {
  auto s = sniff(read_file(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap"));
  EXPECT_EQ(s.format, Format::Pcap);
}

TEST(CaptureFormat, APcapNgSectionHeaderIsRecognisedByItsByteOrderMagic) {
  std::string le = "\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a"s;
  std::string be = "\x0a\x0d\x0d\x0a\x00\x00\x00\x1c\x1a\x2b\x3c\x4d"s;
  EXPECT_EQ(sniff(le).format, Format::PcapNg);
  EXPECT_EQ(sniff(be).format, Format::PcapNg);
  std::string bad = "\x0a\x0d\x0d\x0a\x00\x00\x00\x1c\x00\x00\x00\x00"s;
  EXPECT_EQ(sniff(bad).format, Format::Unknown);
}

TEST(CaptureFormat, AnIpfixMessageIsRecognisedByItsHeaderAndFirstSet) {
  // version 10, length 36, export time, sequence, domain; a template set (id 2) of 20 bytes.
  std::string msg =
      "\x00\x0a\x00\x24"
      "\x00\x00\x00\x00"
      "\x00\x00\x00\x00"
      "\x00\x00\x00\x01"
      "\x00\x02\x00\x14"s;
  msg.append(16, '\0');
  EXPECT_EQ(sniff(msg).format, Format::Ipfix);
  std::string not_set = msg;
  not_set[17] = 7;  // set id 7: reserved
  EXPECT_EQ(sniff(not_set).format, Format::Unknown);
}

TEST(CaptureFormat, CompressionIsToldByMagicNumbers) {
  EXPECT_EQ(sniff_compression("\x1f\x8b\x08\x00"sv), Compression::Gzip);
  EXPECT_EQ(sniff_compression("\x28\xb5\x2f\xfd\x00"sv), Compression::Zstd);
  EXPECT_EQ(sniff_compression("\xfd"
                              "7zXZ\x00\x00"sv),
            Compression::Xz);
  EXPECT_EQ(sniff_compression("BZh91AY&SY"sv), Compression::Bzip2);
  EXPECT_EQ(sniff_compression("BZhx"sv), Compression::None);
  EXPECT_EQ(sniff_compression("\xd4\xc3\xb2\xa1"sv), Compression::None);
}

TEST(CaptureFormat, TextAndEmptyFilesAreUnknownAndAShortPrefixAsksForMore) {
  EXPECT_EQ(sniff("hello, this is not a capture\n").format, Format::Unknown);
  EXPECT_FALSE(sniff("hello, this is not a capture\n").need_more);
  EXPECT_TRUE(sniff("\xd4\xc3"sv).need_more);
  EXPECT_TRUE(sniff("").need_more);
  EXPECT_FALSE(sniff("", true).need_more);
  EXPECT_EQ(sniff("\xd4\xc3"sv, true).format, Format::Unknown);
}

// --- compressed content and the streaming decompressor ---------------------------------------

namespace {

struct Tool {
  const char* name;  // the command
  const char* args;  // compress to stdout
  Compression compression;
};
const Tool kTools[] = {{"gzip", "-c", Compression::Gzip},
                       {"zstd", "-q -c", Compression::Zstd},
                       {"xz", "-c", Compression::Xz},
                       // 100 kB blocks: a file cut short still holds whole blocks
                       {"bzip2", "-1 -c", Compression::Bzip2}};

bool have(const char* tool) {
  return std::system(("command -v " + std::string(tool) + " >/dev/null 2>&1").c_str()) == 0;
}

// A scratch directory, removed with its files.
class TempDir {
 public:
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "capture-test.XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// `data` compressed by the tool's command line (an independent encoder).
std::string compress(const Tool& tool, const std::string& data) {
  TempDir dir;
  write_file(dir.file("in"), data);
  const std::string cmd =
      std::string(tool.name) + " " + tool.args + " " + dir.file("in") + " > " + dir.file("out");
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error(cmd + " failed");
  return read_file(dir.file("out"));
}

// Bytes that compress a little, like a capture: random runs and repeated runs.
std::string sample_data(std::size_t n) {
  std::mt19937 rng(42);
  std::string s;
  s.reserve(n);
  while (s.size() < n) {
    const std::size_t run = 1 + rng() % 300;
    if (rng() % 2) {
      for (std::size_t i = 0; i < run; ++i) s.push_back(static_cast<char>(rng()));
    } else {
      s.append(run, static_cast<char>('a' + rng() % 4));
    }
  }
  s.resize(n);
  return s;
}

// A file open for reading (closed at the end of the test).
class OpenFile {
 public:
  explicit OpenFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("cannot open " + path);
  }
  ~OpenFile() { ::close(fd_); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Everything `d` gives, `chunk` bytes per read().
std::string read_all(Decompressor& d, std::size_t chunk) {
  std::string out, buf(chunk, '\0');
  for (;;) {
    const std::size_t n = d.read(buf.data(), buf.size());
    if (n == 0) return out;
    out.append(buf.data(), n);
  }
}

Decompressor::Options ahead_options(bool ahead) {
  Decompressor::Options o;
  o.read_ahead = ahead;
  return o;
}

#define REQUIRE_COMPRESSOR(tool) \
  if (!have((tool).name)) GTEST_SKIP() << (tool).name << " not installed"

}  // namespace

TEST(CaptureFormat, ACompressedPcapIsRecognisedByItsContentInEveryFormat) {
  const std::string pcap = read_file(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap");
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    const std::string z = compress(t, pcap);
    const Sniff s = sniff(z.substr(0, std::min(z.size(), kSniffBytes)), z.size() <= kSniffBytes);
    EXPECT_EQ(s.compression, t.compression) << t.name;
    EXPECT_EQ(s.format, Format::Pcap) << t.name;
    EXPECT_FALSE(s.need_more) << t.name;
    EXPECT_EQ(describe(s), "pcap+" + std::string(name(t.compression)));
  }
}

TEST(CaptureFormat, AShortCompressedPrefixAsksForMoreUnlessItIsTheWholeFile) {
  const std::string pcap = read_file(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap");
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    const std::string prefix = compress(t, pcap).substr(0, 8);  // a header, no content yet
    const Sniff more = sniff(prefix);
    EXPECT_EQ(more.compression, t.compression) << t.name;
    EXPECT_EQ(more.format, Format::Unknown) << t.name;
    EXPECT_TRUE(more.need_more) << t.name;
    const Sniff decided = sniff(prefix, true);
    EXPECT_EQ(decided.format, Format::Unknown) << t.name;
    EXPECT_FALSE(decided.need_more) << t.name;
  }
}

TEST(CaptureFormat, AFewBytesOfACompressionMagicAskForMore) {
  EXPECT_TRUE(sniff("\x1f"sv).need_more);
  EXPECT_TRUE(sniff("\x28\xb5"sv).need_more);
  EXPECT_TRUE(sniff("\xfd"
                    "7z"sv)
                  .need_more);
  EXPECT_TRUE(sniff("BZh"sv).need_more);
  EXPECT_FALSE(sniff("\x28\xb5"sv, true).need_more);
}

TEST(CaptureFormat, CompressedTextIsDecidedAsCompressedButNotACapture) {
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    const Sniff s = sniff(compress(t, "hello, this is not a capture\n"));
    EXPECT_EQ(s.compression, t.compression) << t.name;
    EXPECT_EQ(s.format, Format::Unknown) << t.name;
    EXPECT_FALSE(s.need_more) << t.name << ": the stream ended, nothing more can tell";
  }
}

TEST(CaptureFormat, ACorruptCompressedStreamIsUnknown) {
  const Tool& gz = kTools[0];
  REQUIRE_COMPRESSOR(gz);
  std::string z = compress(gz, sample_data(100000));
  z[3] = '\xff';  // reserved header flags
  const Sniff s = sniff(z, true);
  EXPECT_EQ(s.compression, Compression::Gzip);
  EXPECT_EQ(s.format, Format::Unknown);
  EXPECT_FALSE(s.need_more);
}

TEST(Decompressor, GivesBackTheOriginalBytesInEveryFormatInlineAndReadingAhead) {
  const std::string data = sample_data(1'500'000);
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    TempDir dir;
    const std::string z = compress(t, data);
    write_file(dir.file("z"), z);
    for (bool ahead : {false, true}) {
      for (std::size_t chunk : {std::size_t{1000}, std::size_t{1} << 20}) {
        OpenFile f(dir.file("z"));
        Decompressor d(f.fd(), ahead_options(ahead));
        EXPECT_EQ(d.compression(), t.compression);
        EXPECT_EQ(read_all(d, chunk), data) << t.name << " ahead " << ahead << " chunk " << chunk;
        EXPECT_FALSE(d.truncated());
        EXPECT_EQ(d.compressed_position(), z.size()) << t.name;
        EXPECT_EQ(d.output_position(), data.size());
        EXPECT_EQ(d.read(nullptr, 0), 0u);
      }
    }
  }
}

TEST(Decompressor, ConcatenatedMembersFramesAndStreamsAreReadAsOne) {
  const std::string a = sample_data(200'000), b = "and a second part\n";
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    TempDir dir;
    write_file(dir.file("z"), compress(t, a) + compress(t, b));
    OpenFile f(dir.file("z"));
    Decompressor d(f.fd());
    EXPECT_EQ(read_all(d, 4096), a + b) << t.name;
    EXPECT_FALSE(d.truncated()) << t.name;
  }
}

TEST(Decompressor, ReadsFromTheStartAndLeavesTheCallersOffsetAlone) {
  const Tool& zst = kTools[1];
  REQUIRE_COMPRESSOR(zst);
  TempDir dir;
  write_file(dir.file("z"), compress(zst, "some content"));
  OpenFile f(dir.file("z"));
  ASSERT_EQ(::lseek(f.fd(), 5, SEEK_SET), 5);
  Decompressor d(f.fd());
  EXPECT_EQ(read_all(d, 100), "some content");
  EXPECT_EQ(::lseek(f.fd(), 0, SEEK_CUR), 5);
}

TEST(Decompressor, ACorruptStreamThrowsAnErrorNamingTheFormatAfterTheBytesBeforeIt) {
  const std::string data = sample_data(2'000'000);
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    for (bool ahead : {false, true}) {
      TempDir dir;
      std::string z = compress(t, data);
      for (std::size_t i = z.size() / 2; i < z.size() / 2 + 16; ++i)
        z[i] = static_cast<char>(~z[i]);
      write_file(dir.file("z"), z);
      OpenFile f(dir.file("z"));
      Decompressor d(f.fd(), ahead_options(ahead));
      std::string got;
      try {
        got = read_all(d, 65536);
        ADD_FAILURE() << t.name << ": no error";
      } catch (const DecompressError& e) {
        EXPECT_EQ(e.kind(), DecompressError::Kind::Corrupt) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind(
                      "corrupt " + std::string(name(t.compression)) + " data: ", 0),
                  0u)
            << e.what();
      }
      EXPECT_THROW(d.read(got.data(), 1), DecompressError) << "every read after fails";
    }
  }
}

// Fuzzing finding (fuzz_capture, tests/fuzz/regressions/capture/): a codec that found its
// data corrupt threw away what it had written in that call, so the bytes delivered before the
// error depended on the size of the output buffer: a bzip2 block whose CRC failed came out
// (up to the failing call) when read in small pieces, and not at all through the read-ahead
// thread's 256 KiB buffers. Now the output before the error is the same either way.
TEST(Decompressor, ACorruptStreamDeliversTheSameBytesBeforeItsErrorInlineAndReadingAhead) {
  const std::string data = sample_data(300'000);
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    const std::string clean = compress(t, data);
    // Damage in the middle of the data, and in the last bytes (gzip's CRC-32 and length,
    // zstd's checksum, xz's index and footer, bzip2's stream CRC).
    for (std::size_t at : {clean.size() / 2, clean.size() - 6}) {
      std::string z = clean;
      for (std::size_t i = at; i < at + 4; ++i) z[i] = static_cast<char>(~z[i]);
      TempDir dir;
      write_file(dir.file("z"), z);
      std::size_t delivered[2] = {0, 0};
      for (bool ahead : {false, true}) {
        OpenFile f(dir.file("z"));
        Decompressor d(f.fd(), ahead_options(ahead));
        std::string buf(7919, '\0');  // pieces that never line up with any buffer
        try {
          while (const std::size_t n = d.read(buf.data(), buf.size())) delivered[ahead] += n;
        } catch (const DecompressError&) {
        }
      }
      EXPECT_EQ(delivered[false], delivered[true])
          << t.name << " damaged at " << at << " of " << z.size()
          << ": bytes before the error inline vs reading ahead";
    }
  }
}

TEST(Decompressor, AStreamCutShortEndsAsTruncatedAfterDeliveringWhatItHeld) {
  const std::string data = sample_data(2'000'000);
  for (const Tool& t : kTools) {
    REQUIRE_COMPRESSOR(t);
    for (bool ahead : {false, true}) {
      TempDir dir;
      const std::string z = compress(t, data);
      write_file(dir.file("z"), z.substr(0, z.size() * 3 / 4));
      OpenFile f(dir.file("z"));
      Decompressor d(f.fd(), ahead_options(ahead));
      const std::string got = read_all(d, 65536);
      EXPECT_TRUE(d.truncated()) << t.name;
      EXPECT_NE(d.truncation_message().find("ends early"), std::string::npos)
          << d.truncation_message();
      EXPECT_EQ(got, data.substr(0, got.size())) << t.name << ": a prefix of the original";
      EXPECT_GT(got.size(), data.size() / 4) << t.name;
    }
  }
}

TEST(Decompressor, TheRatioBoundStopsADecompressionBombAndNamesTheBound) {
  const Tool& zst = kTools[1];
  REQUIRE_COMPRESSOR(zst);
  TempDir dir;
  // 80 MiB of zeros in a few KiB: past the 64 MiB floor, far beyond 1000:1.
  ASSERT_EQ(std::system(("head -c 80M /dev/zero | zstd -q -c > " + dir.file("z")).c_str()), 0);
  for (bool ahead : {false, true}) {
    OpenFile f(dir.file("z"));
    Decompressor d(f.fd(), ahead_options(ahead));
    try {
      read_all(d, 1 << 20);
      ADD_FAILURE() << "no error";
    } catch (const DecompressError& e) {
      EXPECT_EQ(e.kind(), DecompressError::Kind::Limit);
      EXPECT_STREQ(e.what(), "decompression ratio exceeded 1000:1: likely a decompression bomb");
    }
    EXPECT_LE(d.output_position(), (std::uint64_t{64} << 20) + (1 << 20));
  }
}

TEST(Decompressor, TheSizeBoundStopsTheOutputAtItsLimit) {
  const Tool& gz = kTools[0];
  REQUIRE_COMPRESSOR(gz);
  TempDir dir;
  write_file(dir.file("z"), compress(gz, sample_data(3'000'000)));
  OpenFile f(dir.file("z"));
  Decompressor::Options o;
  o.limits.max_output = 1'000'000;
  Decompressor d(f.fd(), o);
  try {
    read_all(d, 4096);
    ADD_FAILURE() << "no error";
  } catch (const DecompressError& e) {
    EXPECT_EQ(e.kind(), DecompressError::Kind::Limit);
    EXPECT_STREQ(e.what(),
                 "decompressed size exceeded the limit of 1000000 bytes: likely a decompression "
                 "bomb");
  }
  EXPECT_LE(d.output_position(), 1'000'000u + 4096) << "at most one read() past the bound";
}

TEST(Decompressor, RefusesAFileThatIsNotCompressed) {
  OpenFile f(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap");
  try {
    Decompressor d(f.fd());
    ADD_FAILURE() << "no error";
  } catch (const DecompressError& e) {
    EXPECT_EQ(e.kind(), DecompressError::Kind::Corrupt);
    EXPECT_NE(std::string(e.what()).find("not gzip, zstd, xz or bzip2"), std::string::npos);
  }
}

#include <string>
// Capture sniffing (ipfixweb/capture/format.hpp): what a file is, by its first bytes.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

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

#include "ipfixweb/capture/format.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include "codec.hpp"

namespace ipfixweb::capture {

namespace {

bool starts_with(std::string_view s, std::string_view magic) {
  return s.size() >= magic.size() && std::memcmp(s.data(), magic.data(), magic.size()) == 0;
}

// Whether `head` (shorter than `magic`) is a prefix of it.
bool could_be(std::string_view head, std::string_view magic) {
  return head.size() < magic.size() && std::memcmp(head.data(), magic.data(), head.size()) == 0;
}

using namespace std::string_view_literals;
constexpr std::string_view kGzip = "\x1f\x8b"sv;
constexpr std::string_view kZstd = "\x28\xb5\x2f\xfd"sv;
constexpr std::string_view kXz =
    "\xfd"
    "7zXZ\x00"sv;
constexpr std::string_view kBzip2 = "BZh"sv;

// pcap: a1b2c3d4 (microseconds) or a1b23c4d (nanoseconds), in either byte order.
constexpr std::string_view kPcapMagics[] = {"\xa1\xb2\xc3\xd4"sv, "\xd4\xc3\xb2\xa1"sv,
                                            "\xa1\xb2\x3c\x4d"sv, "\x4d\x3c\xb2\xa1"sv};
// pcapng: a Section Header Block (0a0d0d0a) whose byte-order magic is 1a2b3c4d.
constexpr std::string_view kPcapNgBlock = "\x0a\x0d\x0d\x0a"sv;

std::uint16_t be16(const char* p) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                                    static_cast<unsigned char>(p[1]));
}

}  // namespace

Compression sniff_compression(std::string_view head) {
  if (starts_with(head, kGzip)) return Compression::Gzip;
  if (starts_with(head, kZstd)) return Compression::Zstd;
  if (starts_with(head, kXz)) return Compression::Xz;
  // "BZh" then the block size '1'..'9' then the block magic 314159265359 ("1AY&SY").
  if (starts_with(head, kBzip2) && head.size() >= 4 && head[3] >= '1' && head[3] <= '9')
    return Compression::Bzip2;
  return Compression::None;
}

Sniff sniff_plain(std::string_view head) {
  Sniff s;
  for (auto m : kPcapMagics) {
    if (starts_with(head, m)) {
      // The file header is 24 bytes: major version 2 (libpcap reads 2.x).
      s.format = Format::Pcap;
      return s;
    }
    if (could_be(head, m)) s.need_more = true;
  }
  if (starts_with(head, kPcapNgBlock)) {
    if (head.size() < 12) {
      s.need_more = true;
      return s;
    }
    const std::string_view bom = head.substr(8, 4);
    if (bom == "\x1a\x2b\x3c\x4d"sv || bom == "\x4d\x3c\x2b\x1a"sv) s.format = Format::PcapNg;
    return s;
  }
  if (could_be(head, kPcapNgBlock)) s.need_more = true;
  // IPFIX message header (RFC 7011 3.1): version 10, a length of at least the 16-byte header,
  // then a set header whose id is 2 (template), 3 (options template) or >= 256 (data).
  if (head.size() >= 2 && be16(head.data()) == 10) {
    if (head.size() < 20) {
      s.need_more = true;
      return s;
    }
    const std::uint16_t length = be16(head.data() + 2);
    const std::uint16_t set_id = be16(head.data() + 16);
    const std::uint16_t set_len = be16(head.data() + 18);
    if (length >= 20 && (set_id == 2 || set_id == 3 || set_id >= 256) && set_len >= 4 &&
        set_len <= length - 16)
      s.format = Format::Ipfix;
    return s;
  }
  if (head.size() < 2) s.need_more = true;
  return s;
}

Sniff sniff(std::string_view head, bool complete) {
  const Compression c = sniff_compression(head);
  if (c == Compression::None) {
    Sniff s = sniff_plain(head);
    // The start of a compression magic number (or "BZh" without its block size yet).
    if (s.format == Format::Unknown && (could_be(head, kGzip) || could_be(head, kZstd) ||
                                        could_be(head, kXz) || could_be(head, "BZh1"sv)))
      s.need_more = true;
    if (complete) s.need_more = false;
    return s;
  }
  Sniff s;
  s.compression = c;
  // The content: as much of the decompressed prefix as `head` gives, at most kSniffBytes.
  std::vector<std::uint8_t> out(kSniffBytes);
  std::size_t produced = 0;
  bool at_end = false;
  try {
    const auto codec = detail::make_codec(c);
    const auto* in = reinterpret_cast<const std::uint8_t*>(head.data());
    std::size_t used = 0;
    while (produced < out.size()) {
      const detail::Codec::Step st = codec->step(
          in + used, head.size() - used, out.data() + produced, out.size() - produced, complete);
      if (st.error) std::rethrow_exception(st.error);
      used += st.consumed;
      produced += st.produced;
      at_end = st.at_end;
      if (!st.consumed && !st.produced) break;
    }
  } catch (const std::exception&) {
    // A corrupt stream is nothing that can be read: Unknown, even if a prefix decoded.
    return s;
  }
  const Sniff content =
      sniff_plain(std::string_view(reinterpret_cast<const char*>(out.data()), produced));
  s.format = content.format;
  // More of the file could decompress to more of the content, unless the file is all here or
  // its compressed stream already ended.
  s.need_more = content.need_more && !complete && !at_end;
  return s;
}

std::string_view name(Compression c) {
  switch (c) {
    case Compression::None:
      return "none";
    case Compression::Gzip:
      return "gzip";
    case Compression::Zstd:
      return "zstd";
    case Compression::Xz:
      return "xz";
    case Compression::Bzip2:
      return "bzip2";
  }
  return "none";
}

std::string_view name(Format f) {
  switch (f) {
    case Format::Unknown:
      return "unknown";
    case Format::Pcap:
      return "pcap";
    case Format::PcapNg:
      return "pcapng";
    case Format::Ipfix:
      return "ipfix";
  }
  return "unknown";
}

std::string describe(const Sniff& s) {
  std::string out(name(s.format));
  if (s.compression != Compression::None) {
    out += '+';  // (not "+" + std::string(...): GCC 12 warns of a false -Wrestrict there)
    out += name(s.compression);
  }
  return out;
}

}  // namespace ipfixweb::capture

// libFuzzer target: reading a capture file as the engine does (worker/engine/src/pcap_reader.cpp
// over shared/src/capture: format sniffing, streaming decompression of gzip, zstd, xz and bzip2
// with its bomb limits, libpcap reading the decompressed stream through fopencookie, and the
// engine's own memory-mapped reader of plain classic pcap files).
//
// Input: byte 0 says what the rest is: 0 (and 5..255 modulo 5) the file exactly as given; 1
// gzip, 2 zstd, 3 xz, 4 bzip2: a plain capture that this harness compresses (so the fuzzer's
// mutations reach the capture parsers behind a valid compressed stream; in mode 0 they reach
// the decompressors themselves, the seeds being compressed captures).
//
// Properties checked besides "no crash, no sanitizer report":
//  - the readers fail only with EngineError (the engine's one kind of input error);
//  - the same packets (times, lengths, bytes), and the same ending (clean, truncated, or an
//    error after the same number of packets), whichever way the file is read: memory-mapped
//    or through libpcap, with or without the read-ahead thread, compressed or plain;
//  - the Decompressor delivers the same bytes and stops the same way (end, truncated, error
//    of the same kind at the same output position) with and without read_ahead.
#include <sys/mman.h>
#include <unistd.h>

#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/capture/decompress.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "pcap_reader.hpp"

namespace capture = ipfixweb::capture;
namespace engine = ipfixweb::engine;

namespace {

// Small bounds, so a bomb among the inputs costs milliseconds, not seconds.
capture::DecompressLimits limits() {
  capture::DecompressLimits l;
  l.max_output = 8u << 20;
  l.max_ratio = 200;
  l.ratio_floor = 1u << 20;
  return l;
}

std::string gzip(std::string_view in) {
  z_stream z{};
  FUZZ_CHECK(deflateInit2(&z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, in.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string zstd(std::string_view in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  const std::size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 1);
  FUZZ_CHECK(!ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string xz(std::string_view in) {
  std::string out(lzma_stream_buffer_bound(in.size()), '\0');
  std::size_t pos = 0;
  FUZZ_CHECK(lzma_easy_buffer_encode(0, LZMA_CHECK_CRC64, nullptr,
                                     reinterpret_cast<const std::uint8_t*>(in.data()), in.size(),
                                     reinterpret_cast<std::uint8_t*>(out.data()), &pos,
                                     out.size()) == LZMA_OK);
  out.resize(pos);
  return out;
}

std::string bzip2(std::string_view in) {
  auto n = static_cast<unsigned>(in.size() + in.size() / 100 + 600);
  std::string out(n, '\0');
  FUZZ_CHECK(BZ2_bzBuffToBuffCompress(out.data(), &n, const_cast<char*>(in.data()),
                                      static_cast<unsigned>(in.size()), 1, 0, 0) == BZ_OK);
  out.resize(n);
  return out;
}

// The file as an open descriptor of a regular file in memory (memfd).
class MemFile {
 public:
  explicit MemFile(std::string_view bytes) : fd_(::memfd_create("fuzz-capture", MFD_CLOEXEC)) {
    FUZZ_CHECK(fd_ >= 0);
    std::size_t at = 0;
    while (at < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + at, bytes.size() - at);
      FUZZ_CHECK(n > 0);
      at += static_cast<std::size_t>(n);
    }
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

struct Packet {
  std::uint64_t ts_us;
  std::uint32_t caplen, wirelen;
  int dlt;
  std::string data;
  bool operator==(const Packet&) const = default;
};

struct Read {
  bool opened = false;
  std::vector<Packet> packets;
  enum class End { Clean, Truncated, Error } end = End::Clean;
  std::string message;
  bool mapped = false;
};

std::string describe(const Read& r) {
  if (!r.opened) return "not opened (" + r.message + ")";
  const char* end = r.end == Read::End::Clean       ? "clean"
                    : r.end == Read::End::Truncated ? "truncated"
                                                    : "error";
  return std::to_string(r.packets.size()) + " packets, " + end + (r.mapped ? ", mapped" : "") +
         (r.message.empty() ? "" : " (" + r.message + ")");
}

Read read_all(const MemFile& f, bool allow_map, bool read_ahead) {
  Read r;
  engine::ReadOptions o;
  o.allow_map = allow_map;
  o.read_ahead = read_ahead;
  o.limits = limits();
  try {
    engine::PcapReader reader(f.fd(), "fuzz.pcap", "", o);
    r.opened = true;
    r.mapped = reader.memory_mapped();
    engine::RawPacket p;
    while (reader.next(p)) {
      FUZZ_CHECK(p.data || p.caplen == 0);
      r.packets.push_back({p.ts_us, p.caplen, p.wirelen, p.dlt,
                           std::string(reinterpret_cast<const char*>(p.data), p.caplen)});
      FUZZ_CHECK(r.packets.size() < 1000000);
    }
    if (reader.truncated()) {
      r.end = Read::End::Truncated;
      r.message = reader.truncation_message();
    }
  } catch (const engine::EngineError& e) {
    r.end = Read::End::Error;
    r.message = e.what();
  }
  return r;
}

void same(const Read& a, const Read& b, const char* what) {
  FUZZ_CHECK(a.opened == b.opened, std::string(what) + ": " + describe(a) + " vs " + describe(b));
  if (!a.opened) return;
  FUZZ_CHECK(a.end == b.end && a.packets.size() == b.packets.size(),
             std::string(what) + ": " + describe(a) + " vs " + describe(b));
  for (std::size_t i = 0; i < a.packets.size(); ++i)
    FUZZ_CHECK(a.packets[i] == b.packets[i], std::string(what) + ": packet " + std::to_string(i) +
                                                 " differs: " + describe(a) + " vs " + describe(b));
}

struct Decoded {
  std::string bytes;
  bool truncated = false;
  std::optional<capture::DecompressError::Kind> error;
  std::string message;
  bool opened = false;
};

std::string describe(const Decoded& d) {
  std::string s = std::to_string(d.bytes.size()) + " bytes";
  if (!d.opened) s += ", not opened";
  if (d.truncated) s += ", truncated";
  if (d.error)
    s += ", error " + std::to_string(static_cast<int>(*d.error)) + " (" + d.message + ")";
  return s;
}

Decoded decompress(const MemFile& f, bool read_ahead) {
  Decoded d;
  capture::Decompressor::Options o;
  o.limits = limits();
  o.read_ahead = read_ahead;
  try {
    capture::Decompressor dec(f.fd(), o);
    d.opened = true;
    char buf[7919];  // a prime: pieces that never line up with the codecs' buffers
    for (;;) {
      const std::size_t n = dec.read(buf, sizeof buf);
      if (n == 0) break;
      d.bytes.append(buf, n);
      FUZZ_CHECK(dec.output_position() == d.bytes.size());
    }
    d.truncated = dec.truncated();
    FUZZ_CHECK(dec.read(buf, 1) == 0, "data after the end");
  } catch (const capture::DecompressError& e) {
    d.error = e.kind();
    d.message = e.what();
  }
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int mode = data[0] % 5;

  // What the api and the drop folder decide from a file's head.
  const auto s = capture::sniff(body, true);
  (void)capture::describe(s);
  (void)capture::sniff(body.substr(0, body.size() / 2), false);

  if (mode == 0) {
    const MemFile f(body);
    const Read mapped = read_all(f, true, true);
    const Read plain = read_all(f, false, false);
    same(mapped, plain, "mapped/read-ahead vs libpcap/inline");
    if (capture::sniff_compression(body) != capture::Compression::None) {
      const Decoded ahead = decompress(f, true), inline_ = decompress(f, false);
      FUZZ_CHECK(ahead.opened == inline_.opened && ahead.error == inline_.error &&
                     ahead.truncated == inline_.truncated && ahead.bytes == inline_.bytes,
                 "the decompressor with and without read-ahead: " + describe(ahead) + " vs " +
                     describe(inline_));
    }
    return 0;
  }
  // A plain capture and the same compressed: the same packets either way.
  if (capture::sniff_compression(body) != capture::Compression::None) return 0;
  const std::string packed = mode == 1   ? gzip(body)
                             : mode == 2 ? zstd(body)
                             : mode == 3 ? xz(body)
                                         : bzip2(body);
  const MemFile plain_file(body), packed_file(packed);
  const Read plain = read_all(plain_file, true, false);
  const Read unmapped = read_all(plain_file, false, false);
  same(plain, unmapped, "mapped vs libpcap");
  const Read ahead = read_all(packed_file, true, true);
  const Read inline_ = read_all(packed_file, true, false);
  same(ahead, inline_, "compressed with vs without read-ahead");
  // Plain and compressed: libpcap reads both (the mapping is for plain files only).
  same(unmapped, inline_, "plain vs compressed");
  return 0;
}

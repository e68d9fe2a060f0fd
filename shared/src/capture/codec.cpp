#include "codec.hpp"

#include <bzlib.h>
#include <isa-l/igzip_lib.h>
#include <lzma.h>
#include <zstd.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

namespace ipfixweb::capture::detail {
namespace {

std::exception_ptr corrupt(std::string_view codec, const std::string& why) {
  return std::make_exception_ptr(DecompressError(
      DecompressError::Kind::Corrupt, "corrupt " + std::string(codec) + " data: " + why));
}

// Every library takes at most UINT_MAX bytes per call.
std::size_t clamp32(std::size_t n) { return std::min<std::size_t>(n, UINT_MAX); }

// gzip through ISA-L's igzip: the header is parsed and the trailer's CRC-32 and length are
// checked (ISAL_GZIP). A member's end leaves the following bytes unread; a next member starts
// from a reset state.
class GzipCodec final : public Codec {
 public:
  GzipCodec() { start(); }
  Step step(const std::uint8_t* in, std::size_t in_len, std::uint8_t* out, std::size_t out_len,
            bool /*last*/) override {
    Step s;
    if (member_done_) {
      if (in_len == 0) {
        s.at_end = true;
        return s;
      }
      start();  // another member follows (gzip -d reads concatenated members as one)
    }
    st_.next_in = const_cast<std::uint8_t*>(in);
    st_.avail_in = static_cast<std::uint32_t>(clamp32(in_len));
    st_.next_out = out;
    st_.avail_out = static_cast<std::uint32_t>(clamp32(out_len));
    const std::uint32_t in0 = st_.avail_in;
    const std::uint32_t out0 = st_.avail_out;
    const int rc = isal_inflate(&st_);
    s.consumed = in0 - st_.avail_in;
    s.produced = out0 - st_.avail_out;
    if (rc < 0) {
      s.error = corrupt("gzip", reason(rc));
      return s;
    }
    if (st_.block_state == ISAL_BLOCK_FINISH) member_done_ = true;
    s.at_end = member_done_ && st_.avail_in == 0 && s.consumed == in_len;
    return s;
  }

 private:
  void start() {
    isal_inflate_init(&st_);
    st_.crc_flag = ISAL_GZIP;
    member_done_ = false;
  }
  static std::string reason(int rc) {
    switch (rc) {
      case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
      case ISAL_INVALID_SYMBOL:
        return "invalid deflate symbol";
      case ISAL_INVALID_LOOKBACK:
        return "invalid back-reference distance";
      case ISAL_INVALID_WRAPPER:
        return "invalid gzip header (or data that is not gzip after a member)";
      case ISAL_UNSUPPORTED_METHOD:
        return "unsupported compression method";
      case ISAL_INCORRECT_CHECKSUM:
        return "CRC-32 or length does not match the data";
      default:
        return "error " + std::to_string(rc);
    }
  }
  inflate_state st_{};
  bool member_done_ = false;
};

// zstd: a frame ends when ZSTD_decompressStream returns 0; frames follow each other (skippable
// frames are skipped). The frame's checksum, when it has one, is checked by the library.
class ZstdCodec final : public Codec {
 public:
  ZstdCodec() : ds_(ZSTD_createDStream()) {
    if (!ds_) throw std::bad_alloc();
  }
  ~ZstdCodec() override { ZSTD_freeDStream(ds_); }
  ZstdCodec(const ZstdCodec&) = delete;
  ZstdCodec& operator=(const ZstdCodec&) = delete;
  Step step(const std::uint8_t* in, std::size_t in_len, std::uint8_t* out, std::size_t out_len,
            bool /*last*/) override {
    ZSTD_inBuffer ib{in, in_len, 0};
    ZSTD_outBuffer ob{out, out_len, 0};
    const std::size_t rc = ZSTD_decompressStream(ds_, &ob, &ib);
    Step s;
    s.consumed = ib.pos;
    s.produced = ob.pos;
    if (ZSTD_isError(rc)) {
      s.error = corrupt("zstd", ZSTD_getErrorName(rc));
      return s;
    }
    if (rc == 0) frame_done_ = true;
    if (s.consumed > 0 && rc != 0) frame_done_ = false;
    s.at_end = frame_done_;
    return s;
  }

 private:
  ZSTD_DStream* ds_;
  bool frame_done_ = false;
};

// xz: liblzma's stream decoder over concatenated streams (and stream padding); the end is only
// told with LZMA_FINISH, once the whole input was given.
class XzCodec final : public Codec {
 public:
  XzCodec() {
    // The memory bound: xz -9 needs 65 MiB; 1 GiB refuses only files made to exhaust memory.
    const lzma_ret rc = lzma_stream_decoder(&st_, std::uint64_t{1} << 30, LZMA_CONCATENATED);
    if (rc != LZMA_OK) throw std::runtime_error("cannot set up an xz decoder");
  }
  ~XzCodec() override { lzma_end(&st_); }
  XzCodec(const XzCodec&) = delete;
  XzCodec& operator=(const XzCodec&) = delete;
  Step step(const std::uint8_t* in, std::size_t in_len, std::uint8_t* out, std::size_t out_len,
            bool last) override {
    Step s;
    if (ended_) {
      s.at_end = true;
      return s;
    }
    st_.next_in = in;
    st_.avail_in = in_len;
    st_.next_out = out;
    st_.avail_out = out_len;
    const lzma_ret rc = lzma_code(&st_, last ? LZMA_FINISH : LZMA_RUN);
    s.consumed = in_len - st_.avail_in;
    s.produced = out_len - st_.avail_out;
    switch (rc) {
      case LZMA_OK:
        break;
      case LZMA_STREAM_END:
        ended_ = true;
        break;
      case LZMA_BUF_ERROR:  // no progress possible (with LZMA_FINISH: the input is cut short)
        break;
      case LZMA_MEMLIMIT_ERROR:
        s.error = std::make_exception_ptr(DecompressError(
            DecompressError::Kind::Limit, "xz data needs more than 1 GiB of memory to decode"));
        return s;
      case LZMA_FORMAT_ERROR:
        s.error = corrupt("xz", "not an xz stream");
        return s;
      case LZMA_OPTIONS_ERROR:
        s.error = corrupt("xz", "unsupported options");
        return s;
      case LZMA_DATA_ERROR:
        s.error = corrupt("xz", "invalid data or check mismatch");
        return s;
      default:
        s.error = corrupt("xz", "error " + std::to_string(static_cast<int>(rc)));
        return s;
    }
    s.at_end = ended_;
    return s;
  }

 private:
  lzma_stream st_ = LZMA_STREAM_INIT;
  bool ended_ = false;
};

// bzip2: BZ_STREAM_END closes a stream; a next stream (pbzip2 writes many) starts from a new
// decoder state.
class Bzip2Codec final : public Codec {
 public:
  Bzip2Codec() { start(); }
  ~Bzip2Codec() override { BZ2_bzDecompressEnd(&st_); }
  Bzip2Codec(const Bzip2Codec&) = delete;
  Bzip2Codec& operator=(const Bzip2Codec&) = delete;
  Step step(const std::uint8_t* in, std::size_t in_len, std::uint8_t* out, std::size_t out_len,
            bool /*last*/) override {
    Step s;
    if (stream_done_) {
      if (in_len == 0) {
        s.at_end = true;
        return s;
      }
      BZ2_bzDecompressEnd(&st_);
      start();
    }
    st_.next_in = const_cast<char*>(reinterpret_cast<const char*>(in));
    st_.avail_in = static_cast<unsigned>(clamp32(in_len));
    st_.next_out = reinterpret_cast<char*>(out);
    st_.avail_out = static_cast<unsigned>(clamp32(out_len));
    const unsigned in0 = st_.avail_in;
    const unsigned out0 = st_.avail_out;
    const int rc = BZ2_bzDecompress(&st_);
    s.consumed = in0 - st_.avail_in;
    s.produced = out0 - st_.avail_out;
    switch (rc) {
      case BZ_OK:
        break;
      case BZ_STREAM_END:
        stream_done_ = true;
        break;
      case BZ_DATA_ERROR:
        s.error = corrupt("bzip2", "invalid data or CRC mismatch");
        return s;
      case BZ_DATA_ERROR_MAGIC:
        s.error = corrupt("bzip2", "not a bzip2 stream");
        return s;
      case BZ_MEM_ERROR:
        throw std::bad_alloc();
      default:
        s.error = corrupt("bzip2", "error " + std::to_string(rc));
        return s;
    }
    s.at_end = stream_done_ && s.consumed == in_len;
    return s;
  }

 private:
  void start() {
    st_ = bz_stream{};
    if (BZ2_bzDecompressInit(&st_, 0, 0) != BZ_OK)
      throw std::runtime_error("cannot set up a bzip2 decoder");
    stream_done_ = false;
  }
  bz_stream st_{};
  bool stream_done_ = false;
};

}  // namespace

std::unique_ptr<Codec> make_codec(Compression c) {
  switch (c) {
    case Compression::Gzip:
      return std::make_unique<GzipCodec>();
    case Compression::Zstd:
      return std::make_unique<ZstdCodec>();
    case Compression::Xz:
      return std::make_unique<XzCodec>();
    case Compression::Bzip2:
      return std::make_unique<Bzip2Codec>();
    case Compression::None:
      break;
  }
  throw std::invalid_argument("no codec for uncompressed data");
}

}  // namespace ipfixweb::capture::detail

// Streaming decompression of a gzip, zstd, xz or bzip2 file in one pass, with bounds against
// decompression bombs. The engine reads compressed captures through it (docs/engine.md,
// Compressed input).
//
// Codecs: ISA-L's igzip (gzip; checks each member's CRC-32 and length, about twice as fast as
// zlib), libzstd (zstd; checks the frame checksum when the frame has one, as zstd writes by
// default), liblzma (xz; checks the stream's check) and libbz2 (bzip2; checks the block CRCs).
// Concatenated members, frames and streams are read as one (as gzip -d, zstd -d, xz -d and
// bzip2 -d do).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipfixweb/capture/format.hpp"

namespace ipfixweb::capture {

namespace detail {
class Codec;
}

// Bounds on one stream's output. A decompression bomb (a small file that decompresses to an
// enormous one) is stopped by the ratio long before its size: zeros compress about 1:30,000
// with zstd -19 and 1:1,000 with gzip, captures seldom better than 1:10.
struct DecompressLimits {
  // The output may not exceed this many bytes (0: no bound). Default 1 TiB.
  std::uint64_t max_output = std::uint64_t{1} << 40;
  // Once the output exceeds `ratio_floor`, it may not exceed `max_ratio` times the compressed
  // bytes consumed (0: no bound). Defaults 1000:1 after 64 MiB.
  double max_ratio = 1000;
  std::uint64_t ratio_floor = std::uint64_t{64} << 20;
};

// What stopped a Decompressor: data that is not valid in its format (a bad checksum included),
// a bound of DecompressLimits, or the file itself (a read error). what() is one line, e.g.
// "corrupt zstd data: Restored data doesn't match checksum" or "decompression ratio exceeded
// 1000:1: likely a decompression bomb".
class DecompressError : public std::runtime_error {
 public:
  enum class Kind { Corrupt, Limit, Read };
  DecompressError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

class Decompressor {
 public:
  struct Options {
    DecompressLimits limits;
    // Decode on a thread of its own, a few buffers ahead of read() (a ring of four 256 KiB
    // buffers): decompression then overlaps the reader's work on a second core. read()
    // delivers the same bytes and errors at the same places either way (without it, read()
    // decodes the same 256 KiB pieces itself, one at a time: some decoders tell how far they
    // got before an error only per call).
    bool read_ahead = false;
  };

  // Reads the file open as `fd` from its start, whatever the descriptor's offset: through a
  // duplicate, with pread() (read() when the file cannot seek, e.g. a pipe), so the caller
  // keeps `fd` (and may close it) and its offset is left alone. The compression is told by the
  // file's magic number. Throws DecompressError (Kind::Read) when the file cannot be read,
  // (Kind::Corrupt) when it does not start like a gzip, zstd, xz or bzip2 file.
  explicit Decompressor(int fd, const Options& options);
  explicit Decompressor(int fd) : Decompressor(fd, Options{}) {}
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  Compression compression() const { return compression_; }

  // Up to `n` decompressed bytes into `buf`; fewer only at the end of the data, 0 at its end
  // (then truncated() tells whether the stream was cut short). Throws DecompressError on
  // corrupt data, a limit exceeded or a read error; after a throw, every call throws again.
  std::size_t read(void* buf, std::size_t n);
  // After read() returned 0: the file ended inside a member/frame/stream (cut short, e.g. by an
  // interrupted copy). The output up to that point was delivered; truncation_message() says
  // where.
  bool truncated() const { return truncated_; }
  const std::string& truncation_message() const { return truncation_message_; }
  // Bytes of the file consumed for the output delivered so far (for progress against the
  // file's size; as of the last 256 KiB buffer handed out).
  std::uint64_t compressed_position() const { return compressed_position_; }
  // Decompressed bytes delivered by read() so far.
  std::uint64_t output_position() const { return output_position_; }

 private:
  // The decoding state, driven by read() or by the read-ahead thread.
  struct Source;
  struct Buffer {
    // Not zeroed when allocated: the decoder writes every byte before it is read, and zeroing
    // (with the page faults it causes) cost more than a small capture's whole decoding.
    std::unique_ptr<std::uint8_t[]> data;
    std::size_t capacity = 0;
    std::size_t size = 0;
    std::uint64_t compressed_end = 0;  // compressed position once this buffer is consumed
    bool end = false;                  // no buffer follows this one
    bool truncated = false;            // with end: the stream was cut short
    std::string truncation_message;
    std::exception_ptr error;  // with end: thrown once the bytes before it were read
  };
  void fill(Buffer& b);  // decodes the next buffer (the thread's work, or read()'s)
  void run_ahead();

  Compression compression_ = Compression::None;
  std::unique_ptr<Source> src_;
  std::uint64_t compressed_position_ = 0;
  std::uint64_t output_position_ = 0;
  bool truncated_ = false;
  std::string truncation_message_;
  std::exception_ptr failed_;  // thrown again by every read() after a failure
  bool done_ = false;

  // The decoded buffers. read_ahead: a ring, `ring_[i]` for i in [head_, tail_) (mod size) is
  // filled and waits for read(); the thread fills ring_[tail_]. Without: one buffer, which
  // read() fills when count_ is 0.
  std::vector<Buffer> ring_;
  std::size_t head_ = 0, count_ = 0;  // guarded by mu_
  std::size_t head_pos_ = 0;          // read()'s position in ring_[head_] (consumer only)
  bool stop_ = false;                 // guarded by mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
};

}  // namespace ipfixweb::capture

#include "ipfixweb/capture/decompress.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "codec.hpp"

namespace ipfixweb::capture {

namespace {
constexpr std::size_t kInputBuffer = 256 * 1024;
constexpr std::size_t kRingBuffers = 4;
constexpr std::size_t kRingBufferSize = 256 * 1024;

std::string ratio_text(double r) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0f:1", r);
  return b;
}
}  // namespace

// The file, the codec and the bounds: everything the decoding needs, on whichever thread.
struct Decompressor::Source {
  Source(int given_fd, const DecompressLimits& lim)
      : limits(lim), in(std::make_unique_for_overwrite<std::uint8_t[]>(kInputBuffer)) {
    fd = ::fcntl(given_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) read_failed();
    try {
      // The magic number needs at most 6 bytes; the first read takes a whole buffer.
      while (end < 6 && !eof) fill_input();
      compression =
          sniff_compression(std::string_view(reinterpret_cast<const char*>(in.get()), end - begin));
      if (compression == Compression::None) {
        throw DecompressError(DecompressError::Kind::Corrupt,
                              "not gzip, zstd, xz or bzip2 data (no known magic number)");
      }
      codec = detail::make_codec(compression);
    } catch (...) {
      ::close(fd);
      throw;
    }
  }
  ~Source() { ::close(fd); }
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  [[noreturn]] static void read_failed() {
    throw DecompressError(DecompressError::Kind::Read,
                          std::string("cannot read the compressed file: ") + std::strerror(errno));
  }

  // More of the file after the unread input (moved to the front first).
  void fill_input() {
    if (begin > 0) {
      std::memmove(in.get(), in.get() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    for (;;) {
      const ssize_t r = seekable ? ::pread(fd, in.get() + end, kInputBuffer - end,
                                           static_cast<off_t>(file_offset))
                                 : ::read(fd, in.get() + end, kInputBuffer - end);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == ESPIPE && seekable && file_offset == 0) {
          seekable = false;
          continue;
        }
        read_failed();
      }
      if (r == 0) eof = true;
      end += static_cast<std::size_t>(r);
      file_offset += static_cast<std::uint64_t>(r);
      return;
    }
  }

  // The bounds on the output so far; `produced` (this call's output) loses what goes beyond
  // max_output, so that exactly max_output bytes come before the error, however the output
  // was cut into pieces.
  void check_limits(std::size_t& produced) {
    if (limits.max_output && output > limits.max_output) {
      const std::uint64_t excess = std::min<std::uint64_t>(output - limits.max_output, produced);
      produced -= static_cast<std::size_t>(excess);
      output -= excess;
      throw DecompressError(DecompressError::Kind::Limit,
                            "decompressed size exceeded the limit of " +
                                std::to_string(limits.max_output) +
                                " bytes: likely a decompression bomb");
    }
    if (limits.max_ratio > 0 && output > limits.ratio_floor &&
        static_cast<double>(output) > limits.max_ratio * static_cast<double>(consumed)) {
      throw DecompressError(DecompressError::Kind::Limit, "decompression ratio exceeded " +
                                                              ratio_text(limits.max_ratio) +
                                                              ": likely a decompression bomb");
    }
  }

  // Up to `n` bytes of output into `out`: n unless the data ends (0 at its end, `finished`
  // set). An error after some output is kept for the next call, so the output before it is
  // delivered first.
  std::size_t decode(std::uint8_t* out, std::size_t n) {
    if (pending) std::rethrow_exception(pending);
    std::size_t produced = 0;
    try {
      while (produced < n && !finished) {
        if (begin == end && !eof) fill_input();
        const detail::Codec::Step s =
            codec->step(in.get() + begin, end - begin, out + produced, n - produced, eof);
        begin += s.consumed;
        consumed += s.consumed;
        produced += s.produced;
        output += s.produced;
        if (s.error) std::rethrow_exception(s.error);  // after the output before it
        check_limits(produced);
        if (s.consumed || s.produced) continue;
        // No progress: the decoder needs more input than it has.
        if (!eof) {
          if (end - begin == kInputBuffer) {  // a full buffer is more than any codec asks for
            throw DecompressError(DecompressError::Kind::Corrupt,
                                  "corrupt " + std::string(name(compression)) +
                                      " data: the decoder makes no progress");
          }
          fill_input();
          continue;
        }
        finished = true;
        if (!s.at_end) {
          truncated = true;
          truncation_message = "the " + std::string(name(compression)) +
                               " stream ends early (cut short after " + std::to_string(consumed) +
                               " compressed bytes, " + std::to_string(output) + " bytes of output)";
        }
      }
    } catch (...) {
      if (produced == 0) throw;
      pending = std::current_exception();
    }
    return produced;
  }

  DecompressLimits limits;
  int fd = -1;
  bool seekable = true;
  std::uint64_t file_offset = 0;       // bytes read from the file
  std::unique_ptr<std::uint8_t[]> in;  // not zeroed: see Buffer
  std::size_t begin = 0, end = 0;      // unread input in `in`
  bool eof = false;
  Compression compression = Compression::None;
  std::unique_ptr<detail::Codec> codec;
  std::uint64_t consumed = 0;  // compressed bytes taken by the codec
  std::uint64_t output = 0;
  bool finished = false;
  bool truncated = false;
  std::string truncation_message;
  std::exception_ptr pending;
};

Decompressor::Decompressor(int fd, const Options& options)
    : src_(std::make_unique<Source>(fd, options.limits)) {
  compression_ = src_->compression;
  ring_.resize(options.read_ahead ? kRingBuffers : 1);
  for (auto& b : ring_) {
    b.data = std::make_unique_for_overwrite<std::uint8_t[]>(kRingBufferSize);
    b.capacity = kRingBufferSize;
  }
  if (options.read_ahead) thread_ = std::thread([this] { run_ahead(); });
}

Decompressor::~Decompressor() {
  if (thread_.joinable()) {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

void Decompressor::fill(Buffer& b) {
  b.size = 0;
  b.end = false;
  b.error = nullptr;
  try {
    b.size = src_->decode(b.data.get(), b.capacity);
    if (b.size == 0) {
      b.end = true;
      b.truncated = src_->truncated;
      b.truncation_message = src_->truncation_message;
    }
  } catch (...) {
    b.error = std::current_exception();
    b.end = true;
  }
  b.compressed_end = src_->consumed;
}

void Decompressor::run_ahead() {
  std::size_t tail = 0;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || count_ < ring_.size(); });
      if (stop_) return;
    }
    // ring_[tail] is not the consumer's until count_ says so.
    Buffer& b = ring_[tail];
    fill(b);
    {
      std::lock_guard lk(mu_);
      ++count_;
    }
    cv_.notify_all();
    if (b.end) return;
    tail = (tail + 1) % ring_.size();
  }
}

std::size_t Decompressor::read(void* buf, std::size_t n) {
  if (failed_) std::rethrow_exception(failed_);
  if (done_ || n == 0) return 0;
  auto* out = static_cast<std::uint8_t*>(buf);
  const bool ahead = thread_.joinable();
  std::size_t got = 0;
  while (got < n) {
    Buffer* b = nullptr;
    if (ahead) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return count_ > 0; });
      b = &ring_[head_];
    } else {
      b = &ring_[0];
      if (count_ == 0) {  // decoded here, in the read-ahead thread's pieces
        fill(*b);
        count_ = 1;
      }
    }
    if (head_pos_ < b->size) {
      if (head_pos_ == 0) compressed_position_ = b->compressed_end;
      const std::size_t k = std::min(n - got, b->size - head_pos_);
      std::memcpy(out + got, b->data.get() + head_pos_, k);
      head_pos_ += k;
      got += k;
      output_position_ += k;
      continue;
    }
    if (b->end) {  // the last buffer stays: the thread has stopped (or none follows)
      compressed_position_ = b->compressed_end;
      if (b->error) {
        failed_ = b->error;
        if (got) return got;
        std::rethrow_exception(failed_);
      }
      done_ = true;
      truncated_ = b->truncated;
      truncation_message_ = b->truncation_message;
      return got;
    }
    if (ahead) {
      {
        std::lock_guard lk(mu_);
        head_ = (head_ + 1) % ring_.size();
        --count_;
      }
      cv_.notify_all();
    } else {
      count_ = 0;
    }
    head_pos_ = 0;
  }
  return got;
}

}  // namespace ipfixweb::capture

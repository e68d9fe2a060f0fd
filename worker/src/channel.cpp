#include "ipfixweb/worker/channel.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace ipfixweb::worker::channel {
namespace {

constexpr std::size_t kHeader = 5;  // length, kind

bool write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);  // a gone peer is an error, not SIGPIPE
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, char* p, std::size_t n) {
  while (n) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// The length field: kind byte plus payload.
std::uint32_t length_at(const char* head) {
  const auto* p = reinterpret_cast<const unsigned char*>(head);
  return p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t{p[3]} << 24);
}

}  // namespace

std::string frame_bytes(Kind kind, std::string_view payload) {
  const auto n = static_cast<std::uint32_t>(payload.size() + 1);
  std::string frame;
  frame.reserve(payload.size() + kHeader);
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  frame.push_back(static_cast<char>(kind));
  frame.append(payload);
  return frame;
}

bool write_frame(int fd, Kind kind, std::string_view payload) {
  const std::string frame = frame_bytes(kind, payload);
  return write_all(fd, frame.data(), frame.size());
}

bool read_frame(int fd, Frame& frame) {
  char head[kHeader];
  if (!read_all(fd, head, kHeader)) return false;
  const std::uint32_t n = length_at(head);
  if (n == 0 || n > kMaxFrame) return false;
  frame.kind = static_cast<Kind>(head[4]);
  frame.payload.resize(n - 1);
  return read_all(fd, frame.payload.data(), n - 1);
}

void FrameReader::append(const char* data, std::size_t size) { buf_.append(data, size); }

std::optional<Frame> FrameReader::next() {
  if (pending() < kHeader) return std::nullopt;
  const std::uint32_t n = length_at(buf_.data() + off_);
  if (n == 0) {  // write_frame never writes one; skip it rather than loop
    off_ += 4;
    return std::nullopt;
  }
  if (pending() < 4 + std::size_t{n}) return std::nullopt;
  Frame frame{static_cast<Kind>(buf_[off_ + 4]), buf_.substr(off_ + kHeader, n - 1)};
  off_ += 4 + n;
  if (off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
  } else if (off_ > 65536) {
    buf_.erase(0, off_);
    off_ = 0;
  }
  return frame;
}

}  // namespace ipfixweb::worker::channel

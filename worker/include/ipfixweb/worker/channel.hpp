// The channel between the worker (the supervisor) and one of its task runners: a stream
// socketpair carrying frames of a 4-byte little-endian length (kind byte + payload), a kind
// byte, then the payload. Every payload is a protocol message (a msgpack envelope, see
// protocol.hpp) exactly as it travels between worker and broker: the supervisor passes a
// task on as it arrived and a runner's progress and result on as they are.
// See docs/protocol.md, "Task runners".
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ipfixweb::worker::channel {

enum class Kind : char {
  Task = 'T',      // supervisor -> runner: the `task` message as received from the broker
  Progress = 'P',  // runner -> supervisor: a `progress` message for the broker
  Done = 'D',      // runner -> supervisor: the task's `done` message for the broker
};

struct Frame {
  Kind kind = Kind::Task;
  std::string payload;
};

// A task's progress goes to the broker at most this often (seconds): a runner reports to
// its supervisor no more often, and the supervisor forwards no more often.
inline constexpr double kProgressInterval = 0.5;

// A frame longer than this is refused by read_frame (a runner reads only tasks).
inline constexpr std::size_t kMaxFrame = std::size_t{64} << 20;

// The bytes of one frame.
std::string frame_bytes(Kind kind, std::string_view payload);

// Writes one frame (blocking); false when the peer is gone.
bool write_frame(int fd, Kind kind, std::string_view payload);

// Reads one frame (blocking); false at the end of the stream, on an error or on a length
// that no frame has.
bool read_frame(int fd, Frame& frame);

// Cuts whole frames out of a byte stream that arrives in pieces of any size.
class FrameReader {
 public:
  void append(const char* data, std::size_t size);
  // The next whole frame; nullopt until one is complete.
  std::optional<Frame> next();
  // Bytes received and not yet cut into frames.
  std::size_t pending() const { return buf_.size() - off_; }

 private:
  std::string buf_;
  std::size_t off_ = 0;  // consumed by earlier frames (the buffer is compacted now and then)
};

}  // namespace ipfixweb::worker::channel

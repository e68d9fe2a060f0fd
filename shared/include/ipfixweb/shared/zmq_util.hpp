// Small helpers over cppzmq used by all three components.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace ipfixweb::zmqu {

// Parts of a multipart message kept by recv_multipart; a message with more arrives cut to
// this many (every caller expects fewer, so it is dropped as malformed).
inline constexpr std::size_t kMaxParts = 8;

// Receives one whole multipart message without blocking; nullopt when none.
std::optional<std::vector<zmq::message_t>> recv_multipart(zmq::socket_t& s);

// ROUTER send to one peer, never blocking. False when the peer is unknown or
// its queue is full (with ROUTER_MANDATORY set), so the caller can react.
bool send_to(zmq::socket_t& router, const std::string& identity, const std::string& payload);

// Sends a single frame without blocking; false if it could not be queued.
bool send_frame(zmq::socket_t& s, const std::string& payload);

// ZMQ_MAXMSGSIZE: a peer sending a larger frame is disconnected by ZeroMQ before the frame
// is buffered. Set on every socket that reads from a peer (docs/security.md).
void limit_message_size(zmq::socket_t& s, std::size_t max_bytes);

// zmq::poll that returns 0 when interrupted by a signal instead of throwing.
int poll(std::vector<zmq::pollitem_t>& items, long timeout_ms);

}  // namespace ipfixweb::zmqu

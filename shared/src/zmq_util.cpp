#include "ipfixweb/shared/zmq_util.hpp"

#include <cerrno>

namespace ipfixweb::zmqu {

std::optional<std::vector<zmq::message_t>> recv_multipart(zmq::socket_t& s) {
  std::vector<zmq::message_t> parts;
  bool first = true;
  while (true) {
    zmq::message_t m;
    auto r = s.recv(m, first ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
    if (!r) return std::nullopt;
    first = false;
    const bool more = m.more();
    // Frames past the bound are read (the message must leave the socket) but not kept.
    if (parts.size() < kMaxParts) parts.push_back(std::move(m));
    if (!more) return parts;
  }
}

void limit_message_size(zmq::socket_t& s, std::size_t max_bytes) {
  s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(max_bytes));
}

bool send_to(zmq::socket_t& router, const std::string& identity, const std::string& payload) {
  try {
    if (!router.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      return false;
    return router.send(zmq::buffer(payload), zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH || e.num() == EAGAIN) return false;
    throw;
  }
}

bool send_frame(zmq::socket_t& s, const std::string& payload) {
  try {
    return s.send(zmq::buffer(payload), zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH || e.num() == EAGAIN) return false;
    throw;
  }
}

int poll(std::vector<zmq::pollitem_t>& items, long timeout_ms) {
  try {
    return zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return 0;
    throw;
  }
}

}  // namespace ipfixweb::zmqu

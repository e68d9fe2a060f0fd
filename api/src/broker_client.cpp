#include "ipfixweb/api/broker_client.hpp"

#include <random>

#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"

namespace ipfixweb::api {

BrokerClient::BrokerClient(zmq::context_t& ctx, std::string endpoint, double timeout_s,
                           const curve::KeyPair* own, std::string server_public)
    : ctx_(ctx),
      endpoint_(std::move(endpoint)),
      timeout_s_(timeout_s),
      server_public_(std::move(server_public)) {
  if (own) keys_ = *own;
  std::random_device rd;
  next_id_ = (static_cast<std::uint64_t>(rd()) << 32) | rd();
  reset();
}

void BrokerClient::reset() {
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  sock_->set(zmq::sockopt::linger, 0);
  zmqu::limit_message_size(*sock_, proto::kMaxFrame);
  // Without a live connection, sends fail at once instead of queueing: an
  // unreachable broker becomes a fast 503, never a hanging request.
  sock_->set(zmq::sockopt::immediate, 1);
  sock_->set(zmq::sockopt::reconnect_ivl, 100);
  sock_->set(zmq::sockopt::reconnect_ivl_max, 1000);
  if (keys_) curve::make_client(*sock_, *keys_, server_public_);
  sock_->connect(endpoint_);
}

template <class Reply, class Req>
std::optional<Reply> BrokerClient::call(std::string_view type, std::string_view reply_type,
                                        Req& req, double timeout_s) {
  req.req_id = ++next_id_;
  std::string payload = proto::encode(type, req);
  double deadline = now_mono() + timeout_s;
  // A freshly made socket may need a moment to finish connecting.
  while (!zmqu::send_frame(*sock_, payload)) {
    if (now_mono() >= deadline) return std::nullopt;
    std::vector<zmq::pollitem_t> none;
    zmq::pollitem_t item{sock_->handle(), 0, ZMQ_POLLOUT, 0};
    none.push_back(item);
    zmqu::poll(none, 10);
  }
  while (true) {
    double left = deadline - now_mono();
    if (left <= 0) return std::nullopt;
    std::vector<zmq::pollitem_t> items = {{sock_->handle(), 0, ZMQ_POLLIN, 0}};
    zmqu::poll(items, static_cast<long>(left * 1000) + 1);
    while (auto parts = zmqu::recv_multipart(*sock_)) {
      if (parts->size() != 1) continue;
      auto env = proto::decode((*parts)[0].data(), (*parts)[0].size(), nullptr);
      if (!env || env->type != reply_type) continue;
      auto reply = env->template as<Reply>();
      if (reply && reply->req_id == req.req_id) return reply;
      // A late answer to an earlier, timed-out request: ignore it.
    }
  }
}

std::optional<proto::SubmitReply> BrokerClient::submit(proto::Submit s) {
  return call<proto::SubmitReply>(proto::type::kSubmit, proto::type::kSubmitReply, s, timeout_s_);
}

std::optional<proto::Pong> BrokerClient::ping(double timeout_s) {
  proto::Ping p;
  return call<proto::Pong>(proto::type::kPing, proto::type::kPong, p, timeout_s);
}

std::optional<proto::CancelReply> BrokerClient::cancel(const std::string& task_id) {
  proto::Cancel c;
  c.task_id = task_id;
  return call<proto::CancelReply>(proto::type::kCancel, proto::type::kCancelReply, c, timeout_s_);
}

}  // namespace ipfixweb::api

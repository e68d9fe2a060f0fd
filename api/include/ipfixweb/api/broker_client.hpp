// Request/reply to the broker's frontend over a DEALER socket. One thread at a time uses a
// client (the api lends them: lease_pool.hpp); ZeroMQ sockets are never used by two at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::api {

class BrokerClient {
 public:
  BrokerClient(zmq::context_t& ctx, std::string endpoint, double timeout_s,
               const curve::KeyPair* own = nullptr, std::string server_public = {});

  // Each returns nullopt when the broker did not answer within the timeout
  // (or is not connected at all): the caller answers 503 at once.
  std::optional<proto::SubmitReply> submit(proto::Submit s);
  std::optional<proto::Pong> ping(double timeout_s);
  std::optional<proto::CancelReply> cancel(const std::string& task_id);

 private:
  template <class Reply, class Req>
  std::optional<Reply> call(std::string_view type, std::string_view reply_type, Req& req,
                            double timeout_s);
  void reset();

  zmq::context_t& ctx_;
  std::string endpoint_;
  double timeout_s_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::uint64_t next_id_;
  std::optional<curve::KeyPair> keys_;
  std::string server_public_;
};

}  // namespace ipfixweb::api

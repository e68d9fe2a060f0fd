// Peers that speak the broker's protocol from inside a test: a worker that does only what
// the test says (it keeps the grants of the tasks it is given and echoes them, as a real
// worker does, unless the test sends something else), and a frontend client (what the api
// is to the broker), for rogue and malformed messages.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::test {

// CURVE client keys for a fake peer (Z85 text); empty: plain TCP.
struct CurveKeys {
  std::string server_public, public_key, secret_key;
};

struct FakeWorker {
  zmq::context_t ctx;
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  std::string id, incarnation;
  std::map<std::string, std::string> grants;  // task id -> the grant its Task carried

  FakeWorker(const std::string& endpoint, std::string wid, std::string inc,
             const CurveKeys& curve = {});
  // `ready` naming `running` with the grants it was given ("" for unknown tasks).
  void ready(std::vector<std::string> running, std::uint32_t slots = 1);
  // A result with the task's grant.
  void done(const std::string& task, const std::string& state);
  void send(const std::string& payload);
  // The next task message within the timeout (heartbeats skipped); remembers its grant.
  std::optional<proto::Task> next_task(std::chrono::milliseconds timeout);
  // The next message of any type (nullopt on timeout); remembers the grant of a task.
  std::optional<proto::Envelope> next_message(std::chrono::milliseconds timeout);
};

struct FakeClient {
  zmq::context_t ctx;
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  explicit FakeClient(const std::string& endpoint, const CurveKeys& curve = {});
  void send(const std::string& payload);
  // The next reply's envelope type and body bytes (nullopt on timeout).
  std::optional<std::string> next_reply(std::chrono::milliseconds timeout);
  // Sends a submission and decodes its reply.
  std::optional<proto::SubmitReply> submit(const proto::Submit& s,
                                           std::chrono::milliseconds timeout);
};

}  // namespace ipfixweb::test

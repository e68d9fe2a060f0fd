// Peers that speak the broker's protocol from inside a test: a worker that does only what
// the test says (it keeps the grants of the tasks it is given and echoes them, as a real
// worker does, unless the test sends something else), a frontend client (what the api
// is to the broker), for rogue and malformed messages, and a broker for one real worker.
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

// The broker side of the backend for one real worker process: a ROUTER socket (with
// handover, as the broker's) that hears its readies, keeps it alive with heartbeats (unless
// told to fall silent) and sends it tasks.
class FakeBroker {
 public:
  FakeBroker();
  std::string endpoint() const;

  // The next ready within the timeout (other messages are skipped).
  std::optional<proto::Ready> wait_ready(std::chrono::milliseconds timeout);
  // Sends a task (its id and grant as given) and returns its result (nullopt when none came).
  void send_task(const proto::Task& t);
  std::optional<proto::Done> wait_done(const std::string& task_id,
                                       std::chrono::milliseconds timeout);
  // A task with a fresh id, sent, and its result.
  std::optional<proto::Done> run(const proto::TaskSpec& spec,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // false: no more heartbeats, so the worker soon gives this connection up.
  void heartbeats(bool on) { heartbeats_ = on; }

 private:
  void send(const std::string& message);
  // The next message from the worker, heartbeats sent while waiting; nullopt at the deadline.
  std::optional<proto::Envelope> next(std::chrono::steady_clock::time_point deadline);

  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
  int port_;
  std::string worker_;  // the worker's routing id, once it spoke
  std::uint32_t beats_ = 0;
  int tasks_ = 0;
  bool heartbeats_ = true;
  std::chrono::steady_clock::time_point next_heartbeat_{};
};

}  // namespace ipfixweb::test

// The worker's session with the broker: one DEALER connection, registration (`ready`),
// heartbeats both ways, a fresh connection with back-off when the broker falls silent,
// recent results sent again after every registration, and the goodbye. It knows nothing of
// runners: the worker says what to register with and gets the broker's other messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/worker/config.hpp"

namespace ipfixweb::worker {

// When to send a heartbeat and when to give up on a silent broker. Pure: the caller passes
// the (monotonic) time.
class Liveness {
 public:
  Liveness(double heartbeat_s, int liveness) : interval_(heartbeat_s), liveness_(liveness) {}
  // A first connection: the broker counts as heard now, the first heartbeat is due in one
  // interval.
  void connected(double now);
  // Anything from the broker: it is alive, and the back-off starts again at 1 s.
  void heard(double now);
  // True when a heartbeat is due; then the next one is due one interval later.
  bool heartbeat_due(double now);
  double next_heartbeat() const { return next_heartbeat_; }
  // True when the broker has been silent for `liveness` intervals: connect afresh.
  bool silent(double now) const { return silent_for(now) > interval_ * liveness_; }
  double silent_for(double now) const { return now - last_heard_; }
  // True when we have sent the broker no heartbeat for `liveness` intervals (this process did
  // not run): by the broker's own rule it has given us up for lost.
  bool quiet(double now) const { return quiet_for(now) > interval_ * liveness_; }
  double quiet_for(double now) const { return now - (next_heartbeat_ - interval_); }
  // After a fresh connection because of silence, the next one comes no sooner than the
  // back-off (1 s, doubling up to 32 s) unless the broker is heard from before.
  void reconnected(double now);
  double backoff() const { return backoff_; }

 private:
  double interval_;
  int liveness_;
  double last_heard_ = 0;
  double next_heartbeat_ = 0;
  double backoff_ = 1.0;
};

// Results sent recently, to send again after every registration: a result queued on a
// socket that was replaced (or sent to a broker that restarted before reading it) would
// otherwise be lost and its task stay 'running'. The broker ignores repeats.
class RecentResults {
 public:
  static constexpr std::size_t kMax = 1024;
  explicit RecentResults(double keep_s) : keep_s_(keep_s) {}
  // Keeps a result sent at `now`, and forgets those older than the window or beyond kMax.
  void add(double now, std::string message);
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [when, message] : kept_) f(message);
  }
  std::size_t size() const { return kept_.size(); }

 private:
  double keep_s_;
  std::deque<std::pair<double, std::string>> kept_;
};

// How long results are kept for resending: well past the time the worker needs to notice
// a broker is gone and connect afresh.
double result_keep_seconds(const Config& cfg);

// What the worker registers with: its free capacity and the tasks its runners still run.
struct Registration {
  std::uint32_t slots = 0;
  std::vector<std::string> running;
  std::vector<std::string> grants;  // of each task in `running`
};

class Session {
 public:
  // The broker's messages the session does not handle itself (task, abort, ...), with their
  // bytes as received.
  using Deliver = std::function<void(const proto::Envelope& msg, std::string_view bytes)>;

  // Connects and registers with what `registration` says (asked again at every
  // registration). Gives the worker an id if `cfg` has none.
  Session(const Config& cfg, zmq::context_t& ctx, std::function<Registration()> registration);

  const std::string& worker_id() const { return id_; }
  // The socket now in use: 1 for the first, one more for each fresh one (proto::Ready).
  std::uint32_t connection() const { return connection_; }

  // For the caller's poll: the socket, and the time of the next heartbeat.
  zmq::pollitem_t poll_item();
  double next_heartbeat() const { return liveness_.next_heartbeat(); }

  // Handles every message waiting: heartbeats, requests to register again; the others go to
  // `deliver`.
  void receive(const Deliver& deliver);
  // Sends a heartbeat when one is due; connects afresh when the broker is silent too long.
  void tick(double now);

  // Registers (again): `ready`, then the recent results.
  void register_now();
  // Sends a message without keeping it.
  void send(std::string_view type, const std::string& message);
  // Sends a task's `done` and keeps it to send again after every registration for a while.
  void send_result(std::string message);
  // The goodbye, with a moment for it to leave.
  void bye();

 private:
  void connect();
  // Connects afresh (dropping what the old socket holds) and registers.
  void reconnect();
  void on_heartbeat(const proto::Envelope& msg);
  void on_reregister(const proto::Envelope& msg);

  std::string id_;
  std::string endpoint_;
  zmq::context_t& ctx_;
  std::function<Registration()> registration_;
  std::shared_ptr<spdlog::logger> log_;
  std::optional<curve::KeyPair> curve_keys_;
  std::string curve_server_;
  std::unique_ptr<zmq::socket_t> sock_;
  Liveness liveness_;
  RecentResults recent_;
  std::string incarnation_;  // new for every start of this process
  std::uint32_t hb_seq_ = 0;
  std::uint32_t connection_ = 0;
};

}  // namespace ipfixweb::worker

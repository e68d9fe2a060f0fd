// Submissions to the broker, batched: HTTP handlers hand their submission to
// one submitter thread with a callback (submit_async; the drop folder waits
// with submit); the submitter sends everything that is waiting as one
// `submit_batch` message (docs/protocol.md) and calls each submission's
// callback with its reply. While a batch is at the broker, new submissions
// gather for the next one, so batches grow with the load and a lone
// submission goes out at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::api {

class BatchSubmitter {
 public:
  struct Options {
    double timeout_s = 2.0;         // a handler waits at most this long for its reply
    std::size_t max_batch = 256;    // submissions per message (<= proto::kMaxSubmitBatch)
    std::size_t max_in_flight = 1;  // batches sent and not yet answered
  };

  // Starts the submitter thread and connects its DEALER to `endpoint`.
  BatchSubmitter(zmq::context_t& ctx, std::string endpoint, Options opts,
                 const curve::KeyPair* own = nullptr, std::string server_public = {});
  // Stops the thread; submissions still waiting are answered with nullopt.
  ~BatchSubmitter();
  BatchSubmitter(const BatchSubmitter&) = delete;
  BatchSubmitter& operator=(const BatchSubmitter&) = delete;

  // Thread-safe. Blocks until the broker answered, or returns nullopt after
  // the timeout (broker unreachable, reply lost) or while stopping: the
  // caller answers 503. Never throws for the broker's behaviour.
  std::optional<proto::SubmitReply> submit(proto::Submit s);

  // Thread-safe. Returns at once; `done` is called once with the broker's answer, or with
  // nullopt after the timeout (broker unreachable, reply lost) or while stopping. It runs on
  // the submitter's thread (or on the caller's, when stopping), must not block, and its
  // exceptions are logged and dropped.
  using Done = std::function<void(std::optional<proto::SubmitReply>)>;
  void submit_async(proto::Submit s, Done done);

  // Counters for tests and metrics.
  std::uint64_t batches_sent() const { return batches_sent_.load(std::memory_order_relaxed); }

 private:
  struct Slot;
  struct Batch;
  void run();
  void loop();
  void wake();
  zmq::socket_t connect();
  // Under the lock: moves the expired submissions to `expired` and, when the socket is
  // writable, up to a batch of the others to `take`. Returns whether more are waiting.
  bool take_pending(double now, bool writable, std::size_t in_flight,
                    std::vector<std::shared_ptr<Slot>>& take,
                    std::vector<std::shared_ptr<Slot>>& expired);
  void send_batch(zmq::socket_t& sock, std::vector<std::shared_ptr<Slot>>& take,
                  std::vector<Batch>& in_flight, std::uint64_t& next_id);
  void read_replies(zmq::socket_t& sock, std::vector<Batch>& in_flight);

  zmq::context_t& ctx_;
  std::string endpoint_;
  Options opts_;
  std::optional<curve::KeyPair> keys_;
  std::string server_public_;
  std::shared_ptr<spdlog::logger> log_;
  int wake_fd_ = -1;  // eventfd: a submission arrived while the thread was idle

  std::mutex mu_;
  std::deque<std::shared_ptr<Slot>> pending_;  // guarded by mu_
  bool idle_ = false;                          // guarded by mu_: thread needs a wake
  bool stop_ = false;                          // guarded by mu_
  std::atomic<std::uint64_t> batches_sent_{0};
  std::thread thread_;
};

}  // namespace ipfixweb::api

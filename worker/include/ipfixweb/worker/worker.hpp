// The worker: registers with the broker, grants credit (slots), runs each task in a forked
// task runner (a crash kills only that runner and its task; runners are reused for many
// tasks and replaced when they die) and reports progress and results. It wires two units:
// the broker session (session.hpp) and the runner pool (runner_pool.hpp).
// See docs/protocol.md.
#pragma once

#include <atomic>
#include <memory>

#include <zmq.hpp>

#include "ipfixweb/worker/config.hpp"

namespace ipfixweb::worker {

class Worker {
 public:
  // Sets up nDPI once (runners inherit it), connects and registers.
  Worker(Config cfg, zmq::context_t& ctx);
  ~Worker();  // kills whatever runners are left
  // Serves until `stop` is set, then drains (grace period), says goodbye and returns.
  void run(const std::atomic<bool>& stop);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::worker

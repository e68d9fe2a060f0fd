// The settings the broker's rules depend on (the core's; broker::Config adds the shell's).
#pragma once

#include <cstdint>

namespace ipfixweb::broker {

struct Settings {
  std::uint32_t max_queue = 64;  // tasks waiting beyond granted credit
  int max_attempts = 3;          // dispatches per task before it fails
  double heartbeat_s = 1.0;
  int liveness = 3;           // missed heartbeats before a worker is dead
  double task_timeout_s = 0;  // passed to workers with each task; 0 = none
  double orphan_grace_s = 0;  // after a restart, wait this long for workers to claim
                              // running tasks (0: heartbeat * liveness * 2)
};

}  // namespace ipfixweb::broker

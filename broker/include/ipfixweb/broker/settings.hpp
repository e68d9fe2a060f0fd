// The settings the broker's rules depend on (the core's; broker::Config adds the shell's).
#pragma once

#include <cstdint>
#include <string>

#include "ipfixweb/shared/spec_check.hpp"

namespace ipfixweb::broker {

struct Settings {
  std::uint32_t max_queue = 64;  // tasks waiting beyond granted credit
  int max_attempts = 3;          // dispatches per task before it fails
  double heartbeat_s = 1.0;
  int liveness = 3;              // missed heartbeats before a worker is dead
  double task_timeout_s = 3600;  // passed to workers with each task; 0 = none
  double orphan_grace_s = 0;     // after a restart, wait this long for workers to claim
                                 // running tasks (0: heartbeat * liveness * 2)
  // What a peer may not exceed (docs/security.md): a spec names paths inside these roots
  // (the shell refuses to start without them); a worker grants at most this many slots.
  proto::SpecRoots roots;
  std::uint32_t max_worker_slots = 1024;
  // Runs of a task that may end without a result of its own before the task fails: its
  // worker aborted it, said goodbye, went silent or unreachable, or did not reclaim it after
  // a broker restart. Such runs use no attempt (they are the infrastructure's loss), but
  // without a bound a peer (or a capture that takes down whatever runs it) could keep a task
  // going round for ever. After the first such run in a row, each retry waits
  // free_run_backoff_s, doubled each time, at most free_run_backoff_max_s.
  int max_free_runs = 20;
  double free_run_backoff_s = 1;
  double free_run_backoff_max_s = 30;
  // How long past task_timeout_s a run may go unreported before the broker gives up on it
  // (0: max(30 s, 4 * heartbeat * liveness)).
  double overdue_grace_s = 0;
  std::string grant_key;  // HMAC key of dispatch grants (grant.hpp)
};

}  // namespace ipfixweb::broker

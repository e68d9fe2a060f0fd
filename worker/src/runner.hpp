// Task runners: long-lived processes forked from the worker supervisor, each running one task
// at a time with the nDPI module the supervisor initialised (reset between tasks, see
// engine::NdpiModule::reset). A crash in a runner kills only that runner and its task; the
// supervisor reports it and forks a new runner when it needs one. Supervisor and runner talk
// over the channel of ipfixweb/worker/channel.hpp.
#pragma once

#include <cstdint>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::worker::detail {

struct RunnerLimits {
  std::uint64_t memory_limit_mb = 0;  // RLIMIT_AS of the runner; 0 = none
  std::uint64_t cpu_limit_s = 0;      // CPU seconds per task (RLIMIT_CPU re-armed per task)
  std::uint32_t max_tasks = 0;        // exit after this many tasks (0 = never)
};

// The runner's body, in the forked process: serves tasks from `fd` until the supervisor
// closes it (or max_tasks were run), then _exits. Never returns.
[[noreturn]] void runner_main(engine::Engine& engine, int fd, const RunnerLimits& limits);

}  // namespace ipfixweb::worker::detail

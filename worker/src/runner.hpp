// Task runners: long-lived processes forked from the worker supervisor, each running one task
// at a time with the nDPI module the supervisor initialised (reset between tasks, see
// engine::NdpiModule::reset). A crash in a runner kills only that runner and its task; the
// supervisor reports it and forks a new runner when it needs one. Supervisor and runner talk
// over the channel of ipfixweb/worker/channel.hpp.
#pragma once

#include <sys/types.h>
#include <array>
#include <cstdint>
#include <string>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/confine.hpp"

namespace ipfixweb::worker::detail {

struct RunnerLimits {
  std::uint64_t memory_limit_mb = 0;  // RLIMIT_AS of the runner; 0 = none (or not supported)
  std::uint64_t cpu_limit_s = 0;      // CPU seconds per task (RLIMIT_CPU re-armed per task)
  std::uint32_t max_tasks = 0;        // exit after this many tasks (0 = never)
  std::uint32_t max_threads = 1;      // cap on a task's metering threads (TaskSpec::threads)
};

// The runner's body, in the forked process: serves tasks from `fd` until the supervisor
// closes it (or max_tasks were run), then _exits. Never returns. A task's files are opened
// beneath `roots` only.
[[noreturn]] void runner_main(engine::Engine& engine, const confine::Roots& roots, int fd,
                              const RunnerLimits& limits);

// The names a task publishes in its output's directory: the output, its flow store and (a
// partition's) summary.
std::array<std::string, 3> published_names(const std::string& output_name);

// The names the runner `pid` writes those under until it publishes them
// (engine::temporary_output_name), in the output's directory.
std::array<std::string, 3> task_temporaries(const std::string& output_name, pid_t pid);

// False in AddressSanitizer builds: its shadow memory reserves terabytes of address space, so
// no RLIMIT_AS can be applied (the memory limit is then skipped, with a warning at start).
bool memory_limit_supported();

}  // namespace ipfixweb::worker::detail

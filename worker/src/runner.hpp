// Task runners: long-lived processes forked from the worker supervisor, each running one task
// at a time with the nDPI module the supervisor initialised (reset between tasks, see
// engine::NdpiModule::reset). A crash in a runner kills only that runner and its task; the
// supervisor reports it and forks a new runner when it needs one.
//
// Supervisor and runner talk over a stream socketpair in frames: a 4-byte little-endian
// length (kind byte + payload), a kind byte, then the payload:
//   'T' supervisor -> runner  a proto::Task (msgpack envelope, as received from the broker)
//   'P' runner -> supervisor  progress JSON {"progress": 0..1, "packets": N}
//   'D' runner -> supervisor  the result: a proto::Done message (msgpack envelope), which the
//                             supervisor forwards to the broker as it is
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::worker::detail {

// Progress of a task goes to the broker at most this often (seconds): the runner reports to
// the supervisor no more often, and the supervisor forwards no more often.
inline constexpr double kProgressInterval = 0.5;

struct RunnerLimits {
  std::uint64_t memory_limit_mb = 0;  // RLIMIT_AS of the runner; 0 = none
  std::uint64_t cpu_limit_s = 0;      // CPU seconds per task (RLIMIT_CPU re-armed per task)
  std::uint32_t max_tasks = 0;        // exit after this many tasks (0 = never)
};

// Writes one frame (blocking); false when the peer is gone.
bool write_frame(int fd, char kind, std::string_view payload);

// Cuts the next complete frame (kind, payload) out of bytes read from a runner; `off` is how
// much of `buf` earlier frames consumed (the buffer is compacted now and then).
std::optional<std::pair<char, std::string>> next_frame(std::string& buf, std::size_t& off);

// The runner's body, in the forked process: serves tasks from `fd` until the supervisor
// closes it (or max_tasks were run), then _exits. Never returns.
[[noreturn]] void runner_main(engine::Engine& engine, int fd, const RunnerLimits& limits);

}  // namespace ipfixweb::worker::detail

// A task split across workers ("parallelism": N): what its N parts and its merge are. The
// broker admits the task as one row (the parent, which the user sees), N part rows (ordinary
// `convert` tasks, each metering one flow partition of the same captures; docs/engine.md,
// Partitions) and, once every part has succeeded, runs the parent itself as the `merge` of
// their outputs into the output the user asked for. Pure functions: the broker derives the
// same parts and merge again after a restart from the parent's stored spec.
// Rules and states: docs/broker.md, "Split tasks".
#pragma once

#include <cstdint>
#include <string>

#include "ipfixweb/shared/spec_check.hpp"
#include "ipfixweb/shared/task_spec.hpp"

namespace ipfixweb::proto {

// How many parts a task may be split into at most (the engine allows 256 partitions; more
// parts than workers only queue).
inline constexpr std::uint32_t kMaxParallelism = 64;

// Part `index` (0-based) of `parts`: "<output>.part-<index>-of-<parts>", beside the output
// (beneath the output root, where the merge reads it).
std::string part_output(const std::string& output, std::uint32_t index, std::uint32_t parts);

// The summary a partition run writes beside its output, for the merge.
inline std::string part_summary_name(const std::string& output) { return output + ".summary.json"; }

// The spec of part `index`: the whole task's, metering one flow partition, written to
// part_output().
TaskSpec part_spec(const TaskSpec& whole, std::uint32_t index, std::uint32_t parts);

// The spec the parent runs once its parts succeeded: a `merge` of the parts' outputs into
// the whole task's output.
TaskSpec merge_spec(const TaskSpec& whole, std::uint32_t parts);

// Why `spec` cannot be split into `parallelism` parts (field "parallelism" or the field at
// fault; empty field: it can, or parallelism is 1).
KindProblem split_problem(const TaskSpec& spec, std::uint32_t parallelism);

}  // namespace ipfixweb::proto

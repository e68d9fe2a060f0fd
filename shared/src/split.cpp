#include "ipfixweb/shared/split.hpp"

namespace ipfixweb::proto {

std::string part_output(const std::string& output, std::uint32_t index, std::uint32_t parts) {
  return output + ".part-" + std::to_string(index) + "-of-" + std::to_string(parts);
}

TaskSpec part_spec(const TaskSpec& whole, std::uint32_t index, std::uint32_t parts) {
  TaskSpec p = whole;
  p.partition = index;
  p.partitions = parts;
  p.output = part_output(whole.output, index, parts);
  return p;
}

TaskSpec merge_spec(const TaskSpec& whole, std::uint32_t parts) {
  TaskSpec m = whole;
  m.kind = std::string(kKindMerge);
  m.inputs.clear();
  for (std::uint32_t i = 0; i < parts; ++i) m.inputs.push_back(part_output(whole.output, i, parts));
  m.filter.clear();  // applied by the parts
  m.threads = 1;
  m.partition = 0;
  m.partitions = 1;
  return m;
}

KindProblem split_problem(const TaskSpec& spec, std::uint32_t parallelism) {
  if (parallelism <= 1) return {};
  if (spec.kind != kKindConvert)
    return {"parallelism", "applies to kind convert only, not " + spec.kind};
  if (spec.partitions > 1)
    return {"parallelism", "cannot be combined with partitions (the split makes the partitions)"};
  if (parallelism > kMaxParallelism)
    return {"parallelism", "is more than " + std::to_string(kMaxParallelism)};
  return {};
}

}  // namespace ipfixweb::proto

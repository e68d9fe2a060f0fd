// Checks a TaskSpec that arrives from a peer (the broker's frontend, a worker's task) against
// the field descriptors (task_spec.hpp) and the configured roots, without touching the file
// system: the api resolved the paths already, so a spec that reaches the broker must name
// absolute, normalised paths inside the roots. The worker opens them beneath the roots
// itself (symlinks and file types are its check).
#pragma once

#include <string>
#include <vector>

#include "ipfixweb/shared/task_spec.hpp"

namespace ipfixweb::proto {

struct SpecRoots {
  std::vector<std::string> inputs;  // absolute, normalised (paths::canonical_dir or lexical)
  std::string output;
};

// "" when the spec is acceptable; otherwise the first problem, as a sentence a log or a
// refusal can carry ("inputs[3]: ...").
std::string check_spec(const TaskSpec& spec, const SpecRoots& roots);

// The same for the request's extras (priority's range).
std::string check_extras(const RequestExtras& extras);

// True when `path` is absolute and lexically normal: no empty, "." or ".." component, no
// trailing slash, no NUL byte, at most 4096 bytes.
bool is_normal_absolute(const std::string& path);

// `dir` made absolute and normal without resolving symlinks beyond what exists
// (std::filesystem::weakly_canonical), without a trailing slash.
std::string normal_root(const std::string& dir);

}  // namespace ipfixweb::proto

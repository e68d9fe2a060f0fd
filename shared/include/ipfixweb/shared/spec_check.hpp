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

// The rules between fields that depend on the task kind (a selector only for `extract`, which
// needs one; no capture filter for `ingest`): the request field at fault and what is wrong,
// or an empty field when there is nothing wrong. Part of check_spec; the api reports it per
// field.
struct KindProblem {
  std::string_view field;  // request key ("flow", "filter"); empty: no problem
  std::string message;
};
KindProblem kind_problem(const TaskSpec& spec);

// A flow selector's problem as a sentence ("at 12: expected ..."), or "" when it parses.
std::string selector_problem(const std::string& text);

// The same for the request's extras (priority's range).
std::string check_extras(const RequestExtras& extras);

// True when `path` is absolute and lexically normal: no empty, "." or ".." component, no
// trailing slash, no NUL byte, at most 4096 bytes.
bool is_normal_absolute(const std::string& path);

// `dir` made absolute and normal without resolving symlinks beyond what exists
// (std::filesystem::weakly_canonical), without a trailing slash.
std::string normal_root(const std::string& dir);

}  // namespace ipfixweb::proto

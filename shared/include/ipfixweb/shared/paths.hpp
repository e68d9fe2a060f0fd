// Confining user-supplied paths to configured roots. Every check is done on
// the resolved path (symlinks followed), so a link that points outside a root
// is refused like a literal "..".
#pragma once

#include <string>
#include <vector>

namespace ipfixweb::paths {

struct Resolved {
  bool ok = false;
  std::string path;   // absolute, resolved, when ok
  std::string error;  // human-readable reason, when !ok
};

// True if `path` is `root` or lies below it (both absolute and normalised).
bool is_within(const std::string& root, const std::string& path);

// An input capture: relative to one of `roots` (tried in order) or absolute
// inside one of them; must exist, be a regular file and be readable.
Resolved resolve_input(const std::vector<std::string>& roots, const std::string& user_path);

// An output file: relative to `root` or absolute inside it; its parent
// directories may not exist yet (the worker creates them) but the nearest
// existing ancestor must resolve inside the root, and the target must not be
// a directory or a symlink.
Resolved resolve_output(const std::string& root, const std::string& user_path);

// Canonical form of a directory that must exist (for configured roots).
std::string canonical_dir(const std::string& dir);  // throws std::runtime_error

// Why the configured roots may not be used together; empty when they may. Refused: an output
// root equal to, inside or containing an input root (a task could overwrite captures, or read
// other tasks' outputs as captures), and an output root equal to or containing one of
// `protected_paths` (the database file, the log directories: a task's output could replace
// them). Pure: compared lexically after normalisation, so pass canonical paths (canonical_dir;
// a file that may not exist yet: its canonical directory plus its name) lest a symbolic link
// hide an overlap.
std::string overlap_error(const std::vector<std::string>& input_roots,
                          const std::string& output_root,
                          const std::vector<std::string>& protected_paths = {});

}  // namespace ipfixweb::paths

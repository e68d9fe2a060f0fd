#include "ipfixweb/shared/paths.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace fs = std::filesystem;

namespace ipfixweb::paths {
namespace {

Resolved fail(std::string why) { return {false, {}, std::move(why)}; }

// Rejects what is never acceptable whatever the roots: empty, NUL, "..".
std::string lexical_problem(const std::string& p) {
  if (p.empty()) return "path is empty";
  if (p.find('\0') != std::string::npos) return "path contains a NUL byte";
  if (p.size() > 4096) return "path is too long";
  for (std::size_t start = 0; start <= p.size();) {
    std::size_t slash = std::min(p.find('/', start), p.size());
    if (slash - start == 2 && p[start] == '.' && p[start + 1] == '.')
      return "path must not contain '..'";
    start = slash + 1;
  }
  return {};
}

// Paths are stored as JSON text (task specs): refuse names that are not
// valid UTF-8 rather than fail later.
bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;  // continuation bytes that follow
    if (c < 0x80)
      n = 0;
    else if ((c >> 5) == 0x6)
      n = 1;
    else if ((c >> 4) == 0xE)
      n = 2;
    else if ((c >> 3) == 0x1E)
      n = 3;
    else
      return false;
    if (i + n >= s.size() && n > 0) return false;
    for (std::size_t k = 1; k <= n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n + 1;
  }
  return true;
}

// The part of user_path below root when it can be checked without resolving
// anything: relative (or absolute under root) and made only of plain
// components (no empty, "." or ".." ones). Empty: take the general path.
std::string_view plain_below(const std::string& root, const std::string& user_path) {
  std::string_view rel = user_path;
  if (!rel.empty() && rel.front() == '/') {
    std::string_view prefix = root;
    if (prefix.size() == 1) prefix = {};  // root "/"
    if (rel.size() <= prefix.size() + 1 || rel.compare(0, prefix.size(), prefix) != 0 ||
        rel[prefix.size()] != '/')
      return {};
    rel.remove_prefix(prefix.size() + 1);
  }
  if (rel.empty() || rel.back() == '/') return {};
  for (std::size_t start = 0;;) {
    std::size_t slash = rel.find('/', start);
    std::string_view part = rel.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return {};
    if (slash == std::string_view::npos) return rel;
    start = slash + 1;
  }
}

std::string join(const std::string& root, std::string_view rel) {
  std::string out = root;
  if (out.back() != '/') out.push_back('/');
  out.append(rel);
  return out;
}

// Walks root/rel one component at a time with lstat, following nothing.
// Each directory on the way that exists is checked; the walk stops at the
// first component that does not exist.
enum class Walk {
  Plain,    // every component exists, none is a symlink; *st is the last one's
  Missing,  // a component does not exist (*missing_at: offset in rel where it starts)
  Other     // a symlink, a non-directory in the middle, or an error: resolve the general way
};
Walk walk_plain(const std::string& root, std::string_view rel, struct stat* st,
                std::size_t* missing_at = nullptr) {
  std::string path = join(root, rel);
  std::size_t base = path.size() - rel.size();
  for (std::size_t start = 0;;) {
    std::size_t slash = rel.find('/', start);
    bool last = slash == std::string_view::npos;
    std::size_t end = last ? path.size() : base + slash;
    char saved = path[end];  // '\0' for the last component
    path[end] = '\0';
    int rc = ::lstat(path.c_str(), st);
    int err = errno;
    path[end] = saved;
    if (rc != 0) {
      if (err != ENOENT) return Walk::Other;
      if (missing_at) *missing_at = start;
      return Walk::Missing;
    }
    if (S_ISLNK(st->st_mode)) return Walk::Other;
    if (last) return Walk::Plain;
    if (!S_ISDIR(st->st_mode)) return Walk::Other;
    start = slash + 1;
  }
}

}  // namespace

bool is_within(const std::string& root, const std::string& path) {
  if (path == root) return true;
  if (root == "/") return !path.empty() && path[0] == '/';
  return path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
         path[root.size()] == '/';
}

std::string canonical_dir(const std::string& dir) {
  std::error_code ec;
  auto p = fs::canonical(dir, ec);
  if (ec) throw std::runtime_error("directory " + dir + ": " + ec.message());
  if (!fs::is_directory(p)) throw std::runtime_error(dir + " is not a directory");
  return p.string();
}

std::string overlap_error(const std::vector<std::string>& input_roots,
                          const std::string& output_root,
                          const std::vector<std::string>& protected_paths) {
  const auto normal = [](const std::string& p) {
    std::string n = fs::path(p).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
  };
  const std::string out = normal(output_root);
  for (const auto& in : input_roots) {
    const std::string i = normal(in);
    if (i == out) return "the output root " + out + " is also an input root";
    if (is_within(i, out)) return "the output root " + out + " is inside the input root " + i;
    if (is_within(out, i)) return "the output root " + out + " contains the input root " + i;
  }
  for (const auto& p : protected_paths) {
    if (p.empty()) continue;
    const std::string n = normal(p);
    if (is_within(out, n))
      return "the output root " + out + " contains " + n + " (a task's output could replace it)";
  }
  return {};
}

Resolved resolve_input(const std::vector<std::string>& roots, const std::string& user_path) {
  if (auto why = lexical_problem(user_path); !why.empty()) return fail(why);
  fs::path up(user_path);
  bool any_exists = false;
  for (const auto& root : roots) {
    // Fast path, the common case: no symlink anywhere below the (already
    // canonical) root, so the path is its own resolved form. A few lstat
    // calls instead of a readlink per component of the whole path.
    if (auto rel = plain_below(root, user_path); !rel.empty()) {
      struct stat st {};
      Walk w = walk_plain(root, rel, &st);
      if (w == Walk::Missing) continue;
      if (w == Walk::Plain) {
        std::string real = join(root, rel);
        if (!valid_utf8(real)) return fail(user_path + " resolves to a name that is not UTF-8");
        if (!S_ISREG(st.st_mode)) return fail(user_path + " is not a regular file");
        if (::access(real.c_str(), R_OK) != 0) return fail(user_path + " is not readable");
        return {true, std::move(real), {}};
      }
    }
    fs::path candidate = up.is_absolute() ? up : fs::path(root) / up;
    std::error_code ec;
    auto real = fs::canonical(candidate, ec);
    if (ec) continue;
    any_exists = true;
    if (!is_within(root, real.string())) continue;
    if (!valid_utf8(real.string()))
      return fail(user_path + " resolves to a name that is not UTF-8");
    struct stat st {};
    if (::stat(real.c_str(), &st) != 0) return fail(user_path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(user_path + " is not a regular file");
    if (::access(real.c_str(), R_OK) != 0) return fail(user_path + " is not readable");
    return {true, real.string(), {}};
  }
  if (any_exists) return fail(user_path + " is outside the input roots");
  return fail(user_path + " does not exist");
}

Resolved resolve_output(const std::string& root, const std::string& user_path) {
  if (auto why = lexical_problem(user_path); !why.empty()) return fail(why);
  // Fast path as for inputs: plain components below the root, every existing
  // one a real directory (the walk stops at the first missing one: the
  // worker creates the rest), the target itself no symlink or directory.
  if (auto rel = plain_below(root, user_path); !rel.empty()) {
    struct stat st {};
    Walk w = walk_plain(root, rel, &st);
    if (w != Walk::Other) {
      std::string final_path = join(root, rel);
      if (!valid_utf8(final_path)) return fail(user_path + " resolves to a name that is not UTF-8");
      if (w == Walk::Plain && S_ISDIR(st.st_mode)) return fail(user_path + " is a directory");
      return {true, std::move(final_path), {}};
    }
  }
  fs::path target =
      fs::path(user_path).is_absolute() ? fs::path(user_path) : root / fs::path(user_path);
  target = target.lexically_normal();
  if (!target.has_filename()) return fail(user_path + " names a directory, not a file");
  // Walk up to the nearest existing ancestor and resolve it.
  fs::path existing = target.parent_path();
  fs::path rest;
  std::error_code ec;
  while (!fs::exists(existing, ec)) {
    rest = existing.filename() / rest;
    existing = existing.parent_path();
  }
  auto real = fs::canonical(existing, ec);
  if (ec) return fail(user_path + ": " + ec.message());
  if (!fs::is_directory(real)) return fail(user_path + ": a parent is not a directory");
  fs::path final_path = (real / rest / target.filename()).lexically_normal();
  if (!is_within(root, final_path.string()) || final_path.string() == root)
    return fail(user_path + " is outside the output root");
  if (!valid_utf8(final_path.string()))
    return fail(user_path + " resolves to a name that is not UTF-8");
  auto st = fs::symlink_status(final_path, ec);
  if (!ec && fs::is_symlink(st)) return fail(user_path + " is a symbolic link");
  if (!ec && fs::is_directory(st)) return fail(user_path + " is a directory");
  return {true, final_path.string(), {}};
}

}  // namespace ipfixweb::paths

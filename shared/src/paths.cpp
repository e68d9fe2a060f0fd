#include "ipfixweb/shared/paths.hpp"

#include <sys/stat.h>
#include <unistd.h>

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
  for (const auto& part : fs::path(p)) {
    if (part == "..") return "path must not contain '..'";
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

Resolved resolve_input(const std::vector<std::string>& roots, const std::string& user_path) {
  if (auto why = lexical_problem(user_path); !why.empty()) return fail(why);
  fs::path up(user_path);
  bool any_exists = false;
  for (const auto& root : roots) {
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

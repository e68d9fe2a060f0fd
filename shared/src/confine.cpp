#include "ipfixweb/shared/confine.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "ipfixweb/shared/paths.hpp"

namespace ipfixweb::confine {
namespace {

constexpr std::uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

long sys_openat2(int dir_fd, const char* path, open_how* how) {
  return ::syscall(SYS_openat2, dir_fd, path, how, sizeof *how);
}

// openat2 works here: the kernel has it (5.6+) and no seccomp filter (containers) refuses it.
bool probe_openat2() {
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_MAGICLINKS;
  const long fd = sys_openat2(AT_FDCWD, "/", &how);
  if (fd < 0) return false;  // ENOSYS, EPERM or EACCES (seccomp), E2BIG/EINVAL (odd kernels)
  ::close(static_cast<int>(fd));
  return true;
}

std::atomic<bool>& walk_forced() {
  static std::atomic<bool> forced = [] {
    const char* env = std::getenv("IPFIXWEB_CONFINE_WALK");
    return env && *env && std::strcmp(env, "0") != 0;
  }();
  return forced;
}

// True when `rel` is made of plain components only.
bool plain_relative(std::string_view rel) {
  if (rel.empty() || rel.front() == '/') return false;
  for (std::size_t start = 0;;) {
    const std::size_t slash = rel.find('/', start);
    const std::string_view part = rel.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool is_symlink_at(int dir_fd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

int open_with_openat2(int dir_fd, std::string_view rel, int flags, mode_t mode) {
  const std::string path(rel);
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0;
  how.resolve = kResolve;
  for (int tries = 0;; ++tries) {
    const long fd = sys_openat2(dir_fd, path.c_str(), &how);
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: a rename or mount raced the lookup (RESOLVE_BENEATH is conservative); try again.
    if (errno == EINTR || (errno == EAGAIN && tries < 16)) continue;
    return -1;
  }
}

// One component at a time, each directory opened with O_NOFOLLOW beneath the previous one: no
// symbolic link is followed, and no component is "..", so the walk cannot leave `dir_fd`.
int open_with_walk(int dir_fd, std::string_view rel, int flags, mode_t mode) {
  Fd held;  // the directory the walk is in (none: dir_fd itself)
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = rel.find('/', start);
    const std::string name(rel.substr(start, slash - start));
    const int cur = held ? held.get() : dir_fd;
    if (slash == std::string_view::npos) {
      int fd;
      do {
        fd = ::openat(cur, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
      } while (fd < 0 && errno == EINTR);
      if (fd < 0) {
        if (errno == ENOTDIR && is_symlink_at(cur, name)) errno = ELOOP;
        return -1;
      }
      if (flags & O_PATH) {  // O_PATH | O_NOFOLLOW opens a symbolic link itself
        struct stat st {};
        if (::fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
          ::close(fd);
          errno = ELOOP;
          return -1;
        }
      }
      return fd;
    }
    const int next = ::openat(cur, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      if (errno == ENOTDIR && is_symlink_at(cur, name)) errno = ELOOP;
      return -1;
    }
    held.reset(next);
    start = slash + 1;
  }
}

// The reason an open beneath a root failed, for a message.
std::string reason(int err) {
  switch (err) {
    case ELOOP:
      return "is a symbolic link or passes through one (links below a root are not followed)";
    case EXDEV:
      return "leads outside its root";
    case ENOENT:
      return "does not exist";
    case ENOTDIR:
      return "a component on the way is not a directory";
    default:
      return std::strerror(err);
  }
}

// Throws "<what>: <the reason for errno>" (errno is read first: nothing is built before).
[[noreturn]] void throw_errno(const std::string& what) {
  const int err = errno;
  throw Error(what + ": " + reason(err));
}

std::string kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// A problem with `path` whatever the roots; empty when there is none.
std::string lexical_problem(const std::string& path) {
  if (path.empty()) return "is empty";
  if (path.find('\0') != std::string::npos) return "contains a NUL byte";
  if (path.find("://") != std::string::npos) return "is a network address, not a path";
  if (path.front() != '/') return "is not an absolute path";
  return {};
}

std::vector<std::string_view> components(std::string_view p) {
  std::vector<std::string_view> out;
  for (std::size_t start = 0; start <= p.size();) {
    std::size_t slash = p.find('/', start);
    if (slash == std::string_view::npos) slash = p.size();
    const std::string_view part = p.substr(start, slash - start);
    if (!part.empty() && part != ".") out.push_back(part);
    start = slash + 1;
  }
  return out;
}

std::string join_roots(const std::vector<Root>& roots) {
  std::string out;
  for (const auto& r : roots) out += (out.empty() ? "" : ", ") + r.path();
  return out;
}

}  // namespace

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

bool using_openat2() {
  static const bool available = probe_openat2();
  return available && !walk_forced().load();
}

void force_component_walk(bool on) { walk_forced().store(on); }

int open_beneath(int dir_fd, std::string_view rel, int flags, mode_t mode) {
  if (!plain_relative(rel)) {
    errno = EXDEV;
    return -1;
  }
  return using_openat2() ? open_with_openat2(dir_fd, rel, flags, mode)
                         : open_with_walk(dir_fd, rel, flags, mode);
}

std::string relative_below(const std::string& root, const std::string& path, std::string* why) {
  const auto set = [why](std::string w) {
    if (why) *why = std::move(w);
    return std::string();
  };
  if (auto problem = lexical_problem(path); !problem.empty()) return set(problem);
  const auto parts = components(path);
  for (const auto& part : parts)
    if (part == "..") return set("contains '..'");
  const auto root_parts = components(root);
  if (parts.size() < root_parts.size()) return set("is outside the root " + root);
  for (std::size_t i = 0; i < root_parts.size(); ++i)
    if (parts[i] != root_parts[i]) return set("is outside the root " + root);
  if (parts.size() == root_parts.size()) return set("is the root directory " + root + " itself");
  std::string rel;
  for (std::size_t i = root_parts.size(); i < parts.size(); ++i) {
    if (!rel.empty()) rel += '/';
    rel += parts[i];
  }
  return rel;
}

Root::Root(const std::string& dir) {
  try {
    path_ = paths::canonical_dir(dir);
  } catch (const std::exception& e) {
    throw Error(std::string("root ") + e.what());
  }
  fd_.reset(::open(path_.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd_) {
    const int err = errno;
    throw Error("root directory " + path_ + ": " + std::strerror(err));
  }
}

Roots::Roots(const std::vector<std::string>& input_roots, const std::string& output_root)
    : output_(output_root) {
  if (input_roots.empty()) throw Error("no input root given");
  for (const auto& r : input_roots) inputs_.emplace_back(r);
}

Fd Roots::open_input(const std::string& path) const {
  const std::string what = "input '" + path + "'";
  std::string why;
  const Root* root = nullptr;
  std::string rel;
  for (const auto& r : inputs_) {
    rel = relative_below(r.path(), path, &why);
    if (!rel.empty()) {
      root = &r;
      break;
    }
  }
  if (!root) {
    if (why.rfind("is outside", 0) == 0)
      throw Error(what + " is outside the input roots (" + join_roots(inputs_) + ")");
    throw Error(what + " " + why);
  }
  return open_regular(*root, rel, what);
}

Fd Roots::open_in_output(const std::string& path) const {
  const std::string what = "file '" + path + "'";
  return open_regular(output_, below_output(path, what), what);
}

std::string Roots::below_output(const std::string& path, const std::string& what) const {
  std::string why;
  const std::string rel = relative_below(output_.path(), path, &why);
  if (rel.empty()) {
    if (why.rfind("is outside", 0) == 0)
      throw Error(what + " is outside the output root (" + output_.path() + ")");
    throw Error(what + " " + why);
  }
  return rel;
}

Fd Roots::open_regular(const Root& root, const std::string& rel, const std::string& what) {
  // Looked at before it is opened for reading: a device, FIFO or socket is never opened.
  Fd probe(open_beneath(root.fd(), rel, O_PATH));
  if (!probe) throw_errno(what);
  struct stat before {};
  if (::fstat(probe.get(), &before) != 0) throw_errno(what);
  if (!S_ISREG(before.st_mode))
    throw Error(what + " is " + kind_of(before.st_mode) + ", not a regular file");
  // O_NONBLOCK: should it have become a FIFO since, the open does not wait for a writer.
  Fd fd(open_beneath(root.fd(), rel, O_RDONLY | O_NOCTTY | O_NONBLOCK));
  if (!fd) throw_errno(what);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(what);
  if (!S_ISREG(st.st_mode))
    throw Error(what + " is " + kind_of(st.st_mode) + ", not a regular file");
  if (st.st_dev != before.st_dev || st.st_ino != before.st_ino)
    throw Error(what + " was replaced while it was being opened");
  return fd;
}

std::string Roots::output_relative(const std::string& path) const {
  const std::string what = "output '" + path + "'";
  if (path.find("://") != std::string::npos)
    throw Error(what +
                " is a network destination: a worker writes a task's output only as a "
                "file beneath its output root (" +
                output_.path() + ") and sends nothing anywhere");
  return below_output(path, what);
}

OutputTarget Roots::output_target(const std::string& path, bool create) const {
  const std::string what = "output '" + path + "'";
  const std::string rel = output_relative(path);
  OutputTarget t;
  t.dir.reset(::fcntl(output_.fd(), F_DUPFD_CLOEXEC, 0));
  if (!t.dir) throw_errno(what);
  std::size_t start = 0;
  for (std::size_t slash; (slash = rel.find('/', start)) != std::string::npos; start = slash + 1) {
    const std::string name = rel.substr(start, slash - start);
    int fd = open_beneath(t.dir.get(), name, O_PATH | O_DIRECTORY);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(t.dir.get(), name.c_str(), 0777) != 0 && errno != EEXIST) {
        const int err = errno;
        throw Error(what + ": cannot create directory '" + rel.substr(0, slash) +
                    "': " + std::strerror(err));
      }
      fd = open_beneath(t.dir.get(), name, O_PATH | O_DIRECTORY);
    }
    if (fd < 0) {
      const int err = errno;
      throw Error(what + ": directory '" + rel.substr(0, slash) + "' " + reason(err));
    }
    t.dir.reset(fd);
  }
  t.name = rel.substr(start);
  struct stat st {};
  if (::fstatat(t.dir.get(), t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
    throw Error(what + " is a directory");
  return t;
}

bool remove_in(int dir_fd, const std::string& name) {
  return ::unlinkat(dir_fd, name.c_str(), 0) == 0;
}

std::vector<std::string> list_names(int dir_fd) {
  std::vector<std::string> out;
  const int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return out;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return out;
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string_view n = e->d_name;
    if (n != "." && n != "..") out.emplace_back(n);
  }
  ::closedir(d);
  return out;
}

}  // namespace ipfixweb::confine

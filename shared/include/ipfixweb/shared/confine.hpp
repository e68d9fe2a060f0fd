// Opening files beneath root directories, whatever the path says: the worker's defence in depth
// against task specs that name files outside its roots (a compromised broker, a rogue client).
//
// A spec carries absolute paths (the api resolved them). A path is matched lexically against the
// roots (normalised; "..", relative paths and network destinations are refused), the root's part
// is stripped, and the rest is opened beneath the root's descriptor (opened once at start):
// with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), or, where openat2
// is missing or refused (old kernel, seccomp filter), one component at a time with openat(...,
// O_NOFOLLOW). Both refuse every symbolic link below the root: the api sends resolved paths, so
// a link there is a swap after validation or an attack, and the two ways behave the same.
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ipfixweb::confine {

// A path that cannot be opened beneath its root; the message names the path and the reason.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An owned file descriptor (closed on destruction).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Whether openat2(2) is used: the kernel has it and no filter refuses it (probed once), and the
// walk was not forced.
bool using_openat2();
// Tests: true forces the component walk, false goes back to openat2 where it works. The
// environment variable IPFIXWEB_CONFINE_WALK=1 forces it for a whole process.
void force_component_walk(bool on);

// `rel` (plain components: no "", ".", ".." and no leading '/') beneath the directory `dir_fd`,
// following no symbolic link. -1 with errno set on failure (ELOOP: a symbolic link; ENOTDIR: a
// component in the middle is not a directory; EXDEV: it would leave the directory).
int open_beneath(int dir_fd, std::string_view rel, int flags, mode_t mode = 0);

// The part of `path` below `root` when `path` is absolute, lies strictly below `root` after
// normalisation (repeated slashes and "." components dropped) and has no ".." component; else
// empty with the reason in *why (when given). `root` must be absolute and normalised.
std::string relative_below(const std::string& root, const std::string& path,
                           std::string* why = nullptr);

// A root directory: its canonical path and an O_PATH descriptor, opened once.
class Root {
 public:
  // Throws Error when `dir` does not exist or is not a directory.
  explicit Root(const std::string& dir);
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }

 private:
  std::string path_;
  Fd fd_;
};

// Where an output goes: its directory (an O_PATH descriptor beneath the output root) and the
// file's name in it.
struct OutputTarget {
  Fd dir;
  std::string name;
};

// The worker's roots: where captures are read and where IPFIX files are written.
class Roots {
 public:
  // Opens every root; throws Error naming the first that cannot be opened.
  Roots(const std::vector<std::string>& input_roots, const std::string& output_root);

  // A capture, opened for reading (O_RDONLY | O_NONBLOCK: a FIFO cannot block; devices,
  // FIFOs, sockets and directories are refused before they are opened for reading). Throws
  // Error.
  Fd open_input(const std::string& path) const;
  // A regular file beneath the output root, opened for reading as open_input opens a capture
  // (a merge task reads the outputs of its parts). Throws Error.
  Fd open_in_output(const std::string& path) const;
  // An output file's directory beneath the output root, its missing directories created one
  // at a time beneath it when `create` (else a missing one is an Error), and its name, which
  // must not be a directory. A symbolic link at the name is fine: the file is renamed over it,
  // never written through it. Network destinations (tcp://, udp://) are refused. Throws Error.
  OutputTarget output_target(const std::string& path, bool create = true) const;
  // output_target's checks that need no file system (a network destination, a path not
  // beneath the output root): throws Error, touches nothing.
  void check_output(const std::string& path) const { output_relative(path); }

  const std::vector<Root>& inputs() const { return inputs_; }
  const Root& output() const { return output_; }

 private:
  std::string output_relative(const std::string& path) const;  // throws Error
  // `path` relative to the output root; Error (naming it `what`) when it is not beneath it.
  std::string below_output(const std::string& path, const std::string& what) const;
  // `rel` beneath `root`, a regular file, opened for reading; `what` names it in errors.
  static Fd open_regular(const Root& root, const std::string& rel, const std::string& what);
  std::vector<Root> inputs_;
  Root output_;
};

// Removes `name` from the directory `dir_fd` when it is there (not a directory); false when
// nothing was removed.
bool remove_in(int dir_fd, const std::string& name);

// The names in the directory `dir_fd` (no "." and ".."); empty when it cannot be read.
std::vector<std::string> list_names(int dir_fd);

}  // namespace ipfixweb::confine

#include "output_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {
namespace {

// linkat() of an O_TMPFILE file goes through /proc/self/fd (AT_EMPTY_PATH would need
// CAP_DAC_READ_SEARCH): without /proc, files are written under their temporary name.
bool proc_fd_links() {
  static const bool ok = ::access("/proc/self/fd", X_OK) == 0;
  return ok;
}

}  // namespace

void OutputFile::open_directory() {
  if (cfg_.dir_fd >= 0) {
    if (cfg_.name.empty() || cfg_.name == "." || cfg_.name == ".." ||
        cfg_.name.find('/') != std::string::npos) {
      throw EngineError("cannot write output '" + cfg_.path + "': bad file name '" + cfg_.name +
                        "'");
    }
    dir_fd_ = cfg_.dir_fd;
    name_ = cfg_.name;
    return;
  }
  const auto slash = cfg_.path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : cfg_.path.substr(0, slash);
  name_ = slash == std::string::npos ? cfg_.path : cfg_.path.substr(slash + 1);
  if (name_.empty() || name_ == "." || name_ == "..") {
    throw EngineError("cannot write output '" + cfg_.path + "': names a directory, not a file");
  }
  dir_fd_ = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) {
    throw EngineError("cannot write output '" + cfg_.path + "': " + std::strerror(errno));
  }
  dir_owned_ = true;
}

void OutputFile::check_unreplaced() const {
  if (guard_->replaced()) throw_replaced();
}

void OutputFile::throw_replaced() const {
  throw OutputReplaced("not publishing " + cfg_.what + " '" + cfg_.path +
                       "': another writer put a file under that name while this run went on "
                       "(a later run of the same task?); that file stays");
}

OutputFile::OutputFile(const OutputFileConfig& cfg) : cfg_(cfg) {
  if (cfg_.path.empty()) throw EngineError("no output file given");
  open_directory();
  guard_.emplace(dir_fd_, name_);
  int fd = -1;
  if (cfg_.unnamed_temporary && proc_fd_links()) {
    // Fails where the file system has no O_TMPFILE (EOPNOTSUPP, or EISDIR/EINVAL from old
    // kernels) as well as for real errors, which the named open below reports.
    fd = ::openat(dir_fd_, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    unnamed_ = fd >= 0;
  }
  if (fd < 0) {
    tmp_name_ = temporary_output_name(name_, ::getpid());
    // Created, never opened through whatever is there: a leftover of a dead process that had
    // our pid (or a link planted under the name) is removed, not written through.
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    fd = ::openat(dir_fd_, tmp_name_.c_str(), flags, 0666);
    if (fd < 0 && errno == EEXIST && ::unlinkat(dir_fd_, tmp_name_.c_str(), 0) == 0)
      fd = ::openat(dir_fd_, tmp_name_.c_str(), flags, 0666);
    if (fd < 0) {
      const int e = errno;
      tmp_name_.clear();
      if (dir_owned_) ::close(dir_fd_);
      throw EngineError("cannot write output '" + cfg_.path + "': " + std::strerror(e));
    }
  }
  file_.reset(::fdopen(fd, "wb"));
  if (!file_) {
    const int e = errno;
    ::close(fd);
    abort();  // the named temporary, if any (no destructor runs for a throwing constructor)
    if (dir_owned_) ::close(dir_fd_);
    throw EngineError("cannot write output '" + cfg_.path + "': " + std::strerror(e));
  }
}

OutputFile::~OutputFile() {
  if (!committed_) abort();
  if (dir_owned_ && dir_fd_ >= 0) ::close(dir_fd_);
}

void OutputFile::abort() noexcept {
  file_.reset();
  if (!tmp_name_.empty()) ::unlinkat(dir_fd_, tmp_name_.c_str(), 0);
  tmp_name_.clear();
}

void OutputFile::fail(const std::string& detail) const {
  throw EngineError("error writing " + cfg_.what + " '" + cfg_.path + "': " + detail);
}

void OutputFile::sync() {
  FILE* fp = file_.get();
  if (!fp) fail("the file is closed");
  if (std::fflush(fp) != 0 || std::ferror(fp) || ::fsync(fileno(fp)) != 0)
    fail(std::strerror(errno ? errno : EIO));
  synced_ = true;
}

void OutputFile::start_writeback() {
  FILE* fp = file_.get();
  if (!fp) return;
  // Errors show at sync(): a failed write leaves ferror set, and fsync reports the rest.
  if (std::fflush(fp) == 0) ::sync_file_range(fileno(fp), 0, 0, SYNC_FILE_RANGE_WRITE);
}

void OutputFile::publish() {
  if (!synced_) sync();
  FILE* fp = file_.get();
  const std::string self = "/proc/self/fd/" + std::to_string(fileno(fp));
  if (link_in_place(self)) return;
  // A file was there when the run began (an overwrite), or this file system has no hard links:
  // check, then rename over it.
  check_unreplaced();
  if (unnamed_) {
    // The data is on disk: give it the temporary name, then rename that over the output
    // (linkat cannot replace an existing file; rename does, atomically).
    const std::string tmp = temporary_output_name(name_, ::getpid());
    int rc = ::linkat(AT_FDCWD, self.c_str(), dir_fd_, tmp.c_str(), AT_SYMLINK_FOLLOW);
    if (rc != 0 && errno == EEXIST) {  // left by a dead process that had our pid: replace it
      ::unlinkat(dir_fd_, tmp.c_str(), 0);
      rc = ::linkat(AT_FDCWD, self.c_str(), dir_fd_, tmp.c_str(), AT_SYMLINK_FOLLOW);
    }
    if (rc != 0) {
      throw EngineError("cannot name output '" + cfg_.path + "': " + std::strerror(errno));
    }
    tmp_name_ = tmp;
  }
  if (std::fclose(file_.release()) != 0) fail(std::strerror(errno));
  // Within the directory descriptor: whatever is under the name (a file, a symbolic link) is
  // replaced, never followed; a directory there makes it fail.
  if (::renameat(dir_fd_, tmp_name_.c_str(), dir_fd_, name_.c_str()) != 0) {
    throw EngineError("cannot rename output into '" + cfg_.path + "': " + std::strerror(errno));
  }
  tmp_name_.clear();
  committed_ = true;
  sync_directory();
}

// When the name was free as the run began, the file gets it by a hard link (NameGuard).
// False when it did not (check, then rename).
bool OutputFile::link_in_place(const std::string& self) {
  const auto linked = unnamed_ ? guard_->link_if_free(AT_FDCWD, self, AT_SYMLINK_FOLLOW)
                               : guard_->link_if_free(dir_fd_, tmp_name_, 0);
  if (linked == NameGuard::Link::Taken) throw_replaced();
  if (linked == NameGuard::Link::NotLinked) return false;
  committed_ = true;
  if (!unnamed_) ::unlinkat(dir_fd_, tmp_name_.c_str(), 0);
  tmp_name_.clear();
  if (std::fclose(file_.release()) != 0) fail(std::strerror(errno));
  sync_directory();
  return true;
}

void OutputFile::sync_directory() {
  // The name is durable only once the directory is: a crash must not lose a reported output.
  const int d = ::openat(dir_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool synced = d >= 0 && ::fsync(d) == 0;
  const int e = errno;
  if (d >= 0) ::close(d);
  if (!synced) {
    throw EngineError("cannot sync the directory of output '" + cfg_.path +
                      "': " + std::strerror(e));
  }
}

}  // namespace ipfixweb::engine

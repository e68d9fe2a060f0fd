// Publishing a file under a name without replacing one that another writer put there while
// this one was written (a later run of the same task, say): the rule shared by the engine's
// outputs (worker/engine/src/output_file.cpp) and the flow store (shared/src/flows/writer.cpp).
// docs/engine.md, "Publishing outputs".
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace ipfixweb {

class NameGuard {
 public:
  // Notes what is under `name` in `dir_fd` now: no file, or this one (device and inode;
  // not followed).
  NameGuard(int dir_fd, std::string name) : dir_fd_(dir_fd), name_(std::move(name)) {
    at_start_ = held();
  }

  enum class Link { Linked, Taken, NotLinked };
  // When the name was free at the start, links `from` (relative to `from_dir`; `flags` as
  // linkat's) to it: atomic, and it fails when another writer got there first (Taken), also
  // on NFS, whose client may answer "no such file" from its cache for a while after another
  // host created one. NotLinked: the name held a file at the start (an overwrite), or this file
  // system has no hard links; the caller renames, after replaced() said no.
  Link link_if_free(int from_dir, const std::string& from, int flags) const {
    if (at_start_.ino != 0) return Link::NotLinked;
    if (::linkat(from_dir, from.c_str(), dir_fd_, name_.c_str(), flags) == 0) return Link::Linked;
    return errno == EEXIST ? Link::Taken : Link::NotLinked;
  }

  // Whether the name now holds a file other than the one it held at the start. A file removed
  // meanwhile is not a newer one. (Checked right before a rename: two steps, so a writer that
  // renames in between is not caught; link_if_free has no such gap.)
  bool replaced() const {
    const Held now = held();
    return now.ino != 0 && !(now.dev == at_start_.dev && now.ino == at_start_.ino);
  }

 private:
  struct Held {
    unsigned long long dev = 0, ino = 0;  // ino 0: no file
  };
  Held held() const {
    struct stat st {};
    if (::fstatat(dir_fd_, name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return {};
    return {static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino)};
  }

  int dir_fd_;
  std::string name_;
  Held at_start_;
};

}  // namespace ipfixweb

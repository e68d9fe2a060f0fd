#include "retention.hpp"

#include "ipfixweb/flows/schema.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::broker {

struct Retention::RootHandle {
  confine::Root root;
};

Retention::Retention(TaskStore& store, std::string output_root, double days,
                     std::shared_ptr<spdlog::logger> log)
    : store_(store), output_root_(std::move(output_root)), days_(days), log_(std::move(log)) {}

Retention::~Retention() = default;

Retention::Pass Retention::run(double now_unix, int batch) {
  Pass pass;
  if (!on()) return pass;
  if (!root_) {
    try {
      root_ = std::make_unique<RootHandle>(RootHandle{confine::Root(output_root_)});
    } catch (const std::exception& e) {
      log_->debug("retention: output root not visible here ({}); only rows are removed", e.what());
    }
  }
  const auto due = store_.finished_before(iso_time(now_unix - days_ * 86400), batch);
  for (const auto& t : due) {
    if (t.state == TaskState::Succeeded && remove_output(t)) ++pass.files;
    store_.remove(t.id);
    ++pass.tasks;
  }
  pass.more = static_cast<int>(due.size()) == batch;
  if (pass.tasks)
    log_->info("retention: removed {} tasks finished over {} days ago and {} output files",
               pass.tasks, days_, pass.files);
  return pass;
}

// The task's output, when it is still the file the task wrote and no newer task owns its
// path. Beneath the root's descriptor, following no link.
bool Retention::remove_output(const TaskRecord& t) {
  if (!root_ || !t.output_file || t.output_path.empty()) return false;
  if (auto owner = store_.output_owner(t.output_path); owner && owner->task_id != t.id)
    return false;
  const std::string rel = confine::relative_below(root_->root.path(), t.output_path);
  if (rel.empty()) return false;
  const auto slash = rel.rfind('/');
  const std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  confine::Fd dir;
  if (slash != std::string::npos) {
    dir = confine::Fd(confine::open_beneath(root_->root.fd(), rel.substr(0, slash),
                                            O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return false;
  }
  const int dir_fd = dir ? dir.get() : root_->root.fd();
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::int64_t>(st.st_ino) != t.output_file->inode ||
      static_cast<std::int64_t>(st.st_size) != t.output_file->size)
    return false;
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0) {
    log_->warn("retention: cannot remove {}: {}", t.output_path, std::strerror(errno));
    return false;
  }
  // Its flow store, written just before it, goes with it (a regular file, not followed).
  const std::string store = flows::store_name_for(name);
  if (::fstatat(dir_fd, store.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
      ::unlinkat(dir_fd, store.c_str(), 0) != 0)
    log_->warn("retention: cannot remove {}: {}", flows::store_name_for(t.output_path),
               std::strerror(errno));
  return true;
}

}  // namespace ipfixweb::broker

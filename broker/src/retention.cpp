#include "retention.hpp"

#include "ipfixweb/flows/schema.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/split.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::broker {

struct Retention::RootHandle {
  confine::Root root;
};

Retention::Retention(TaskStore& store, std::string output_root, double days,
                     std::shared_ptr<spdlog::logger> log)
    : store_(store), output_root_(std::move(output_root)), days_(days), log_(std::move(log)) {}

Retention::~Retention() = default;

void Retention::open_root() {
  if (root_) return;
  try {
    root_ = std::make_unique<RootHandle>(RootHandle{confine::Root(output_root_)});
  } catch (const std::exception& e) {
    log_->debug("retention: output root not visible here ({}); only rows are removed", e.what());
  }
}

namespace {

// A file beneath the output root: its directory (opened beneath the root, following no
// link) and its name.
struct Located {
  confine::Fd owned;
  int dir_fd = -1;
  std::string name;
};

std::optional<Located> locate(const confine::Root& root, const std::string& path) {
  const std::string rel = confine::relative_below(root.path(), path);
  if (rel.empty()) return std::nullopt;
  Located l;
  const auto slash = rel.rfind('/');
  l.name = slash == std::string::npos ? rel : rel.substr(slash + 1);
  l.dir_fd = root.fd();
  if (slash != std::string::npos) {
    l.owned = confine::Fd(
        confine::open_beneath(root.fd(), rel.substr(0, slash), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!l.owned) return std::nullopt;
    l.dir_fd = l.owned.get();
  }
  return l;
}

// A regular file's modification time in ms since the epoch, or -1.
std::int64_t mtime_ms(int dir_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
    return -1;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

// Whether `name` in `dir_fd` is a regular file with that inode and size (not followed).
bool is_file(int dir_fd, const std::string& name, const FileIdentity& file) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
         static_cast<std::int64_t>(st.st_ino) == file.inode &&
         static_cast<std::int64_t>(st.st_size) == file.size;
}

// The names published beside a task's output `name` (a flow partition's: its summary too).
std::vector<std::string> beside(const std::string& name, bool partition) {
  std::vector<std::string> names{flows::store_name_for(name)};
  if (partition) names.push_back(proto::part_summary_name(name));
  return names;
}

}  // namespace

bool Retention::remove_written_after(const std::string& task_id, std::int64_t made_ms, int dir_fd,
                                     const std::vector<std::string>& names) {
  bool removed = false;
  for (const std::string& name : names) {
    const std::int64_t t = mtime_ms(dir_fd, name);
    // None, or older than the task: not one of its runs'. File times come from the kernel's
    // coarse clock (a tick, up to 10 ms, behind the precise time the id was made with).
    if (t < 0 || t < made_ms - 10) continue;
    if (::unlinkat(dir_fd, name.c_str(), 0) == 0)
      removed = true;
    else
      log_->warn("cannot remove {} of task {}: {}", name, task_id, std::strerror(errno));
  }
  return removed;
}

bool Retention::remove_unrecorded_output(const std::string& task_id, const std::string& output_path,
                                         bool partition, bool quiet) {
  const auto made = uuid_v7_unix_ms(task_id);
  if (!made || output_path.empty()) return false;
  open_root();
  if (!root_) return false;
  auto at = locate(root_->root, output_path);
  if (!at) return false;
  std::vector<std::string> names = beside(at->name, partition);
  names.insert(names.begin(), at->name);
  const bool removed = remove_written_after(task_id, *made, at->dir_fd, names);
  if (removed && quiet)
    log_->debug("task {} ended; removed {}", task_id, output_path);
  else if (removed)
    log_->warn(
        "task {} ended without success; removed {}, published by a run whose result never "
        "arrived",
        task_id, output_path);
  return removed;
}

bool Retention::remove_late_part_output(const std::string& task_id, const std::string& output_path,
                                        const FileIdentity& file) {
  const auto made = uuid_v7_unix_ms(task_id);
  if (!made) return false;
  open_root();
  if (!root_) return false;
  auto at = locate(root_->root, output_path);
  if (!at || !is_file(at->dir_fd, at->name, file)) return false;
  if (::unlinkat(at->dir_fd, at->name.c_str(), 0) != 0) {
    log_->warn("cannot remove {} of task {}: {}", output_path, task_id, std::strerror(errno));
    return false;
  }
  remove_written_after(task_id, *made, at->dir_fd, beside(at->name, /*partition=*/true));
  log_->warn(
      "removed {}: a part of task {} published after the task had ended, by a run "
      "whose worker had been given up",
      output_path, task_id);
  return true;
}

void Retention::check_split_later(const std::string& split_id, double now_mono) {
  const double due = now_mono + kSplitCheckDelays[0];
  if (split_checks_.size() >= kMaxSplitChecks) {
    // Full: the check due last (an older task's later one) makes room for this task's first,
    // the one most likely to find something.
    const auto last = std::prev(split_checks_.end());
    if (last->first <= due) return;
    split_checks_.erase(last);
  }
  split_checks_.emplace(due, SplitCheck{split_id, 0, now_mono});
}

void Retention::check_recent_splits(double now_mono) {
  const auto ids = store_.splits_ended_last(kSplitStartWindow, static_cast<int>(kMaxSplitChecks));
  for (const auto& id : ids) {
    if (split_checks_.size() >= kMaxSplitChecks) break;
    // Checked now, and once more a while later: a run given up before the restart may still
    // publish.
    split_checks_.emplace(now_mono, SplitCheck{id, 0, now_mono - kSplitCheckDelays[0]});
  }
}

std::size_t Retention::run_split_checks(double now_mono, std::size_t batch, double budget_s) {
  std::size_t removed = 0;
  // (The common case, nothing due, reads no clock: this runs on every pass of the loop.)
  if (split_checks_.empty() || split_checks_.begin()->first > now_mono) return 0;
  const double until = ipfixweb::now_mono() + budget_s;
  for (std::size_t n = 0; n < batch && !split_checks_.empty(); ++n) {
    auto it = split_checks_.begin();
    if (it->first > now_mono || (n > 0 && ipfixweb::now_mono() > until)) break;
    SplitCheck c = std::move(it->second);
    split_checks_.erase(it);
    removed += sweep_split(c.split_id);
    if (++c.done < std::size(kSplitCheckDelays))
      split_checks_.emplace(c.ended + kSplitCheckDelays[c.done], std::move(c));
  }
  return removed;
}

std::size_t Retention::sweep_split(const std::string& split_id) {
  std::size_t removed = 0;
  const auto split = store_.get(split_id);
  if (!split || !is_terminal(split->state)) return 0;  // gone (retention), or not ended
  for (const auto& part : store_.parts_of(split_id))
    if (remove_part_leftover(split_id, part)) ++removed;
  return removed;
}

bool Retention::remove_part_leftover(const std::string& split_id, const TaskRecord& part) {
  if (part.output_path.empty()) return false;
  // A newer task writes or wrote that name (a split of the same output, say): its file.
  if (auto owner = store_.output_owner(part.output_path); owner && owner->task_id != part.id)
    return false;
  if (!remove_unrecorded_output(split_id, part.output_path, /*partition=*/true, /*quiet=*/true))
    return false;
  log_->warn("removed {}, a part of task {} left after the task had ended", part.output_path,
             split_id);
  return true;
}

Retention::Pass Retention::run(double now_unix, int batch) {
  Pass pass;
  if (!on()) return pass;
  open_root();
  const auto due = store_.finished_before(iso_time(now_unix - days_ * 86400), batch);
  for (const auto& t : due) {
    bool removed = t.state == TaskState::Succeeded && remove_output(t);
    // A split task's part: what a run published after the split task's last check, and the
    // summary beside a part's output, which remove_output leaves.
    if (!t.parent_id.empty()) removed = remove_part_leftover(t.parent_id, t) || removed;
    if (removed) ++pass.files;
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
  auto at = locate(root_->root, t.output_path);
  if (!at) return false;
  const int dir_fd = at->dir_fd;
  const std::string& name = at->name;
  if (!is_file(dir_fd, name, *t.output_file)) return false;
  struct stat st {};
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

// Retention (--retention-days): finished tasks older than the limit leave the database with
// their events, and the output files they wrote leave the output root, a batch at a time so
// the broker's loop never stalls on it. A file is removed only while it is still the one the
// task wrote (same inode and size) and no newer task owns its path; the broker reaches it
// beneath the output root's descriptor, following no link (confine.hpp). Where the output
// root is not visible (a broker on another host), only the rows go.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::broker {

class Retention {
 public:
  // `days` <= 0: off (run() does nothing).
  Retention(TaskStore& store, std::string output_root, double days,
            std::shared_ptr<spdlog::logger> log);
  ~Retention();
  bool on() const { return days_ > 0; }
  struct Pass {
    std::size_t tasks = 0, files = 0;
    bool more = false;  // the batch was full: run again soon
  };
  // One batch, in the caller's open transaction. `now_unix`: the wall clock in seconds. A
  // task's recorded output goes with it; a split task's part takes along the output a run
  // published after the split task had ended (remove_part_leftover).
  Pass run(double now_unix, int batch = 500);

  // The other clean-up beneath the output root, whether retention is on or not: the output of
  // a task that ended without success (write::Finish::unrecorded_output), when a run whose
  // result never arrived renamed it into place. Removed (with its flow store) only when it was
  // written after the task was made (the time in its version 7 id): while a task is queued or
  // running nobody else may write its output, so such a file is one of its runs' (an older
  // task's file, replaced only on success with "overwrite", is older; 10 ms of slack for the
  // coarse clock of file times). `partition`: a flow partition's output, whose summary beside
  // it goes too. Returns true if removed. `quiet`: an expected removal (a split task's parts),
  // logged at debug level.
  bool remove_unrecorded_output(const std::string& task_id, const std::string& output_path,
                                bool partition = false, bool quiet = false);
  // A split task's part output published late by a run the broker had given up
  // (core.hpp, LatePartOutput): removed while it is still `file`, with its flow store and
  // summary when they were written after the task was made.
  bool remove_late_part_output(const std::string& task_id, const std::string& output_path,
                               const FileIdentity& file);

  // Leftover parts of split tasks that ended. The broker removes a split task's part outputs
  // right after the commit that ends it; what is left after that (the broker died between the
  // commit and the removal, or a run the broker had given up published its part later and
  // its result never came) is removed here: each split task that ended is checked
  // kSplitCheckDelays.size() times (1 minute, 10 minutes, an hour and a day after its end);
  // at start, the split tasks that ended within kSplitStartWindow s of the last task's end are
  // checked at once and then at the later delays. A part's output (and its flow store and
  // summary) goes when it was written after the split task was made and no newer task owns
  // its path. A part published later than a day after its task ended, by a run that never
  // reports, goes when retention (run()) removes the part's task.
  static constexpr double kSplitCheckDelays[] = {60, 600, 3600, 86400};
  static constexpr double kSplitStartWindow = 900;
  void check_split_later(const std::string& split_id, double now_mono);
  void check_recent_splits(double now_mono);
  // The checks that are due, at most `batch` of them and for about `budget_s` (the broker's
  // loop runs them between messages); returns the files removed.
  std::size_t run_split_checks(double now_mono, std::size_t batch = 20, double budget_s = 0.005);
  // One split task's check; returns the part outputs removed.
  std::size_t sweep_split(const std::string& split_id);
  // A part's output left after its split task ended (sweep_split's rule for one part).
  bool remove_part_leftover(const std::string& split_id, const TaskRecord& part);
  std::size_t split_checks_pending() const { return split_checks_.size(); }
  std::size_t split_checks_due(double now_mono) const {
    return static_cast<std::size_t>(
        std::distance(split_checks_.begin(), split_checks_.upper_bound(now_mono)));
  }

 private:
  bool remove_output(const TaskRecord& t);
  // Of `names` in the directory `dir_fd`, removes each written after task `task_id` was made
  // (`made_ms`, the time in its id); true if any was.
  bool remove_written_after(const std::string& task_id, std::int64_t made_ms, int dir_fd,
                            const std::vector<std::string>& names);
  void open_root();

  TaskStore& store_;
  std::string output_root_;
  double days_;
  std::shared_ptr<spdlog::logger> log_;
  struct RootHandle;
  std::unique_ptr<RootHandle> root_;  // opened on first use; null while not visible
  struct SplitCheck {
    std::string split_id;
    std::size_t done = 0;  // checks made so far
    double ended = 0;      // monotonic time of its end (of the broker's start for old ones)
  };
  std::multimap<double, SplitCheck> split_checks_;  // by due time (monotonic)

 public:
  // At most this many checks wait (a day's worth of split tasks at more than one a second);
  // when full, a new task's first check replaces the check due last.
  static constexpr std::size_t kMaxSplitChecks = 100000;
};

}  // namespace ipfixweb::broker

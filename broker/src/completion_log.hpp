// successful_tasks.jsonl and failed_tasks.jsonl: one JSON line per finished task, as the
// original service kept them (cancelled tasks go to the latter with their state).
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "ipfixweb/broker/core.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::broker {

class CompletionLog {
 public:
  // `dir` "": no completion log.
  CompletionLog(std::string dir, std::shared_ptr<spdlog::logger> log);
  // Collects the line of a task finished in the open transaction: `row` is what the finish
  // read from the task's row.
  void add(const write::Finish& f, const TaskStore::Finished& row);
  // After the commit: appends the lines collected. A line never describes a state that is
  // not in the database.
  void write(double now);
  // Forgets the lines collected (their transaction was rolled back).
  void discard() {
    ok_.clear();
    failed_.clear();
  }

 private:
  // Kept open in append mode and reopened every second (so a log rotated by renaming is
  // followed without a reopen per write).
  struct AppendFile {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp{nullptr, &std::fclose};
    double opened = 0;
  };
  void append(std::string& lines, AppendFile& file, const char* name, double now);

  std::string dir_;
  std::shared_ptr<spdlog::logger> log_;
  std::string ok_, failed_;  // lines waiting for the commit
  AppendFile ok_file_, failed_file_;
};

}  // namespace ipfixweb::broker

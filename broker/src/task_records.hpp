// The core's Records on the TaskStore, and the writes the core asks for, all in the
// iteration's one transaction (opened by the first write, committed by the shell).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "ipfixweb/broker/core.hpp"
#include "ipfixweb/shared/sqlite.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::broker {

class TaskRecords final : public Records {
 public:
  TaskRecords(TaskStore& store, std::shared_ptr<spdlog::logger> log);

  // ---- Records ----
  std::optional<Keyed> find_by_key(const std::string& key) override;
  std::optional<TaskState> state_of(const std::string& task_id) override;
  Inserted insert(const proto::Submit& s) override;
  Inserted insert_split(const proto::Submit& s, const std::vector<proto::TaskSpec>& parts,
                        std::vector<Inserted>& part_rows) override;
  std::vector<PartRow> parts_of(const std::string& parent) override;
  std::optional<Owner> output_owner(const std::string& output) override;

  // The time stamp of the submissions inserted from now on (one for all read in an
  // iteration).
  void set_submission_time(std::string now) { submitted_at_ = std::move(now); }

  // Performs a write in the transaction (opening it). A Finish returns the row its
  // completion line needs; nullopt for every other write, and for a task not in the
  // database.
  std::optional<TaskStore::Finished> perform(const Write& w);

  // ---- the transaction ----
  void begin();  // opens it if none is open
  bool open() const { return tx_ != nullptr; }
  double opened_at() const { return tx_opened_; }  // monotonic seconds
  // Throws on failure: a broker that cannot persist must not acknowledge anything.
  void commit();
  // Rolls the open transaction back (after a failed commit or write); never throws.
  void abandon() { tx_.reset(); }

 private:
  TaskStore& store_;
  std::shared_ptr<spdlog::logger> log_;
  // Prepared once: a savepoint per submission costs a parse with exec().
  db::Statement sp_begin_, sp_release_, sp_rollback_;
  std::unique_ptr<db::Transaction> tx_;
  double tx_opened_ = 0;
  std::string submitted_at_;
};

}  // namespace ipfixweb::broker

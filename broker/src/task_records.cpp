#include "task_records.hpp"

#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::broker {

TaskRecords::TaskRecords(TaskStore& store, std::shared_ptr<spdlog::logger> log)
    : store_(store),
      log_(std::move(log)),
      sp_begin_(store_.db(), "SAVEPOINT submit"),
      sp_release_(store_.db(), "RELEASE submit"),
      sp_rollback_(store_.db(), "ROLLBACK TO submit") {}

std::optional<Records::Keyed> TaskRecords::find_by_key(const std::string& key) {
  auto rec = store_.find_by_key(key);
  if (!rec) return std::nullopt;
  return Keyed{std::move(rec->id), std::move(rec->fingerprint), rec->state};
}

std::optional<TaskState> TaskRecords::state_of(const std::string& task_id) {
  auto rec = store_.get(task_id);
  if (!rec) return std::nullopt;
  return rec->state;
}

// Inserts one submission inside the batch's transaction, in a savepoint of
// its own: a submission that cannot be stored (e.g. a path that is not valid
// UTF-8 for the JSON column) is refused alone instead of failing the batch.
Records::Inserted TaskRecords::insert(const proto::Submit& s) {
  begin();
  sp_begin_.run();
  try {
    TaskStore::NewTask t;
    t.id = new_uuid_v7();  // time-ordered: index inserts stay on the last pages
    t.request = s.request;
    t.spec = proto::spec_to_json_text(s.spec);
    t.idempotency_key = s.idempotency_key;
    t.fingerprint = s.fingerprint;
    t.output_path = s.spec.output;
    t.priority = s.priority;
    const std::int64_t seq = store_.insert(t, submitted_at_);
    sp_release_.run();
    return {std::move(t.id), seq, {}};
  } catch (const std::exception& e) {
    sp_rollback_.run();
    sp_release_.run();
    log_->error("could not record a submission: {}", e.what());
    return {{}, 0, e.what()};
  }
}

std::optional<Records::Owner> TaskRecords::output_owner(const std::string& output) {
  auto o = store_.output_owner(output);
  if (!o) return std::nullopt;
  return Owner{std::move(o->task_id), o->state};
}

std::optional<TaskStore::Finished> TaskRecords::perform(const Write& w) {
  begin();
  struct Perform {
    TaskStore& store;
    std::optional<TaskStore::Finished> operator()(const write::SetRunning& r) const {
      store.set_running(r.task_id, r.worker, r.attempt, now_iso(), r.reason);
      return std::nullopt;
    }
    std::optional<TaskStore::Finished> operator()(const write::SetProgress& p) const {
      store.set_progress(p.task_id, p.progress);
      return std::nullopt;
    }
    std::optional<TaskStore::Finished> operator()(const write::Finish& f) const {
      return store.finish(f.task_id, f.state, f.summary, f.error, f.reason, now_iso(), f.output);
    }
    std::optional<TaskStore::Finished> operator()(const write::Requeue& q) const {
      store.requeue(q.task_id, q.attempts, q.reason, now_iso());
      return std::nullopt;
    }
  };
  return std::visit(Perform{store_}, w);
}

void TaskRecords::begin() {
  if (tx_) return;
  tx_ = std::make_unique<db::Transaction>(store_.db());
  tx_opened_ = now_mono();
}

void TaskRecords::commit() {
  if (!tx_) return;
  tx_->commit();
  tx_.reset();
}

}  // namespace ipfixweb::broker

#include "task_records.hpp"

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/split.hpp"
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
  std::vector<Inserted> no_parts;
  return insert_split(s, {}, no_parts);
}

namespace {

// A part's request: the task's, for one partition (a request a user could have sent).
std::string part_request(const std::string& request, const proto::TaskSpec& part) {
  auto r = nlohmann::json::parse(request, nullptr, false);
  if (!r.is_object()) r = nlohmann::json::object();
  r.erase("parallelism");
  r["partition"] = part.partition;
  r["partitions"] = part.partitions;
  if (auto out = r.find("output_path"); out != r.end() && out->is_string())
    *out = proto::part_output(out->get<std::string>(), part.partition, part.partitions);
  return r.dump();
}

}  // namespace

// The task and its parts (if it is split) in one savepoint. A part has no idempotency key of
// its own (the task's stands for all).
Records::Inserted TaskRecords::insert_split(const proto::Submit& s,
                                            const std::vector<proto::TaskSpec>& parts,
                                            std::vector<Inserted>& part_rows) {
  begin();
  sp_begin_.run();
  part_rows.clear();
  try {
    TaskStore::NewTask t;
    t.id = new_uuid_v7();  // time-ordered: index inserts stay on the last pages
    t.request = s.request;
    t.spec = proto::spec_to_json_text(s.spec);
    t.idempotency_key = s.idempotency_key;
    t.fingerprint = s.fingerprint;
    t.output_path = s.spec.output;
    t.priority = s.priority;
    t.parts = static_cast<int>(parts.size());
    const std::int64_t seq = store_.insert(t, submitted_at_);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      TaskStore::NewTask p;
      p.id = new_uuid_v7();
      p.request = part_request(s.request, parts[i]);
      p.spec = proto::spec_to_json_text(parts[i]);
      p.output_path = parts[i].output;
      p.priority = s.priority;
      p.parent_id = t.id;
      const std::int64_t part_seq = store_.insert(p, submitted_at_);
      part_rows.push_back({std::move(p.id), part_seq, {}});
    }
    sp_release_.run();
    return {std::move(t.id), seq, {}};
  } catch (const std::exception& e) {
    sp_rollback_.run();
    sp_release_.run();
    part_rows.clear();
    log_->error("could not record a submission: {}", e.what());
    return {{}, 0, e.what()};
  }
}

std::vector<Records::PartRow> TaskRecords::parts_of(const std::string& parent) {
  std::vector<PartRow> out;
  for (auto& r : store_.parts_of(parent))
    out.push_back({std::move(r.id), r.state, r.progress, std::move(r.error)});
  return out;
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

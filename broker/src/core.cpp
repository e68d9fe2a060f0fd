#include "ipfixweb/broker/core.hpp"

#include <algorithm>
#include <cmath>

#include <spdlog/sinks/null_sink.h>
#include <nlohmann/json.hpp>

#include "ipfixweb/shared/grant.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/spec_check.hpp"
#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/split.hpp"

namespace ipfixweb::broker {

namespace {

// Text a peer sends that is spliced into answers and logs as it is: valid JSON, an object.
bool is_json_object(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{' && nlohmann::json::accept(text);
}

// A worker's report is stored and later spliced into answers and logs: the summary must be
// a JSON object (or absent) and the error a bounded text. Returns what was wrong ("" when
// nothing), after dropping the summary or cutting the error.
std::string clean_report(proto::Done& d) {
  constexpr std::size_t kMaxSummary = 4u << 20, kMaxError = 4096;
  std::string problem;
  if (!d.summary.empty()) {
    if (d.summary.size() > kMaxSummary || !is_json_object(d.summary)) {
      d.summary.clear();
      problem = "a summary that is not a JSON object (dropped)";
    }
  }
  if (d.error.size() > kMaxError) {
    std::size_t cut = kMaxError;
    while (cut > 0 && (static_cast<unsigned char>(d.error[cut]) & 0xC0) == 0x80) --cut;
    d.error.resize(cut);
    d.error += "...";
    if (problem.empty()) problem = "an error longer than 4096 bytes (cut)";
  }
  return problem;
}

// A split task's progress: its parts' mean makes the first 90 %, its merge the rest.
constexpr double kPartsShare = 0.9;

std::string part_name(std::uint32_t index, std::uint32_t parts) {
  return "part " + std::to_string(index) + " of " + std::to_string(parts);
}

}  // namespace

void Submissions::add(const std::string& client, proto::Submit s) {
  submits.push_back(std::move(s));
  identities.push_back(client);
  batch_of.push_back(kSingle);
}

void Submissions::add_batch(const std::string& client, proto::SubmitBatch b) {
  const std::size_t index = batches.size();
  proto::SubmitBatchReply reply;
  reply.req_id = b.req_id;
  reply.replies.reserve(b.submits.size());
  batches.push_back(std::move(reply));
  batch_identities.push_back(client);
  for (auto& s : b.submits) {
    submits.push_back(std::move(s));
    identities.push_back(client);
    batch_of.push_back(index);
  }
}

void Submissions::clear() {
  submits.clear();
  identities.clear();
  batch_of.clear();
  batches.clear();
  batch_identities.clear();
}

Core::Core(Settings settings, Records& records, std::shared_ptr<spdlog::logger> log)
    : settings_(settings), records_(records), log_(std::move(log)), signer_(settings_.grant_key) {
  if (!log_)
    log_ = std::make_shared<spdlog::logger>("broker-core",
                                            std::make_shared<spdlog::sinks::null_sink_st>());
  if (settings_.orphan_grace_s <= 0)
    settings_.orphan_grace_s = settings_.heartbeat_s * settings_.liveness * 2;
}

Core::~Core() = default;

// ---- start ------------------------------------------------------------------------------

void Core::recover(std::vector<TaskRecord> unfinished, double now, Effects& fx) {
  std::size_t queued = 0, orphaned = 0;
  std::vector<std::pair<const TaskRecord*, Pending>> split_tasks;
  std::unordered_set<std::string> unreadable;  // failed just now: their rows do not say so yet
  for (auto& rec : unfinished) {
    Pending p;
    p.id = rec.id;
    p.priority = rec.priority;
    p.seq = rec.seq;
    p.attempts = rec.attempts;
    p.counted_worker = rec.worker;
    // Runs that used no attempt leave no count, but a start time: it ran before.
    p.ran_before = !rec.started_at.empty();
    try {
      p.spec = proto::spec_from_json(nlohmann::json::parse(rec.spec));
    } catch (const std::exception& e) {
      // Like any finished task: counted and in the completion log.
      finish(rec.id, TaskState::Failed, "",
             std::string("unreadable task spec in database: ") + e.what(), e.what(), fx);
      unreadable.insert(rec.id);
      continue;
    }
    if (rec.parts > 1) {  // after its parts
      split_tasks.emplace_back(&rec, std::move(p));
      continue;
    }
    if (!rec.parent_id.empty()) part_of_[rec.id] = PartOf{rec.parent_id, p.spec.partition};
    if (rec.state == TaskState::Running) {
      hold_orphan(std::move(p), now);
      ++orphaned;
    } else {
      enqueue(std::move(p));
      ++queued;
    }
  }
  for (auto& [rec, whole] : split_tasks) recover_split(*rec, std::move(whole), unreadable, now, fx);
  // Parts whose split task ended (the broker stopped before they did): they end too.
  std::vector<std::string> stray;
  for (const auto& [id, part] : part_of_)
    if (!splits_.count(part.parent)) stray.push_back(id);
  for (const auto& id : stray) stop(id, "its split task ended", fx);
  if (queued || orphaned || !splits_.empty())
    log_->info("recovered {} queued and {} running tasks and {} split tasks from the database",
               queued, orphaned, splits_.size());
}

// A task recorded running when the broker started: its worker may still be running it, so it
// waits for the worker to re-register (claim) until the orphan grace is over (expire()).
void Core::hold_orphan(Pending p, double now) {
  Running r;
  r.since = now;
  r.orphan_deadline = now + settings_.orphan_grace_s;
  const std::string id = p.id;
  r.task = std::move(p);
  running_.emplace(id, std::move(r));
}

// A split task as the database holds it: waiting for parts (recovered above), or merging.
// `task` as recover() read it, with the whole conversion's spec. Its start time is its first
// part's, so it counts as having run (a merge's output newer than the task can only be one of
// its merge runs').
void Core::recover_split(const TaskRecord& rec, Pending task,
                         const std::unordered_set<std::string>& unreadable, double now,
                         Effects& fx) {
  const auto n = static_cast<std::uint32_t>(rec.parts);
  Split sp;
  sp.output = task.spec.output;
  sp.parts = n;
  sp.started = rec.state == TaskState::Running;
  task.spec = proto::merge_spec(task.spec, n);
  sp.merge = std::move(task);
  std::string failed;
  const auto rows = records_.parts_of(rec.id);
  for (std::uint32_t i = 0; i < rows.size(); ++i) {
    sp.part_ids.push_back(rows[i].task_id);
    split_parts_[rows[i].task_id] = rec.id;
    sp.progress.push_back(rows[i].progress);
    if (unreadable.count(rows[i].task_id) && failed.empty()) {
      failed = part_name(i, n) + " failed: its task spec in the database is unreadable";
    } else if (rows[i].state == TaskState::Succeeded) {
      ++sp.succeeded;
    } else if (is_terminal(rows[i].state) && failed.empty()) {
      failed = part_name(i, n) + " " + name_str(rows[i].state) +
               (rows[i].error.empty() ? "" : ": " + rows[i].error);
    }
  }
  if (rows.size() != n && failed.empty())
    failed = std::to_string(rows.size()) + " of its " + std::to_string(n) + " parts are recorded";
  const std::string id = rec.id;
  const bool merge_dispatched = rec.state == TaskState::Running && !rec.worker.empty();
  if (!failed.empty()) {
    // finish() ends the parts that are still live with it.
    Pending held = std::move(sp.merge);
    splits_.emplace(id, std::move(sp));
    end_unsuccessful(held, TaskState::Failed, "", failed, failed, fx);
  } else if (sp.succeeded < n) {
    splits_.emplace(id, std::move(sp));
  } else if (merge_dispatched) {  // its worker may still be merging: an orphan
    sp.merging = true;
    hold_orphan(std::move(sp.merge), now);
    splits_.emplace(id, std::move(sp));
  } else {
    sp.merging = true;
    enqueue(std::move(sp.merge));
    splits_.emplace(id, std::move(sp));
  }
}

// ---- clients ----------------------------------------------------------------------------

void Core::admit(Submissions& subs, Effects& fx) {
  batch_keys_.clear();
  batch_outputs_.clear();
  std::size_t in_system = queue_.size() + running_.size();
  const std::size_t capacity = this->capacity();
  // Single submissions are answered one message each; a batch's replies are collected in
  // order and sent as one message after the loop.
  for (std::size_t i = 0; i < subs.submits.size(); ++i) {
    proto::SubmitReply r = admit_one(subs.submits[i], in_system, capacity);
    const std::size_t b = subs.batch_of[i];
    if (b == Submissions::kSingle)
      fx.to_clients.push_back({subs.identities[i], std::move(r)});
    else
      subs.batches[b].replies.push_back(std::move(r));
  }
  for (std::size_t b = 0; b < subs.batches.size(); ++b)
    fx.to_clients.push_back({subs.batch_identities[b], std::move(subs.batches[b])});
}

// One submission, as if it had come alone: idempotency keys seen earlier in the same
// iteration count, and capacity is counted per submission.
proto::SubmitReply Core::admit_one(proto::Submit& s, std::size_t& in_system, std::size_t capacity) {
  proto::SubmitReply r;
  r.req_id = s.req_id;
  if (auto problem = invalid(s); !problem.empty()) {
    log_->warn("refused a submission: {}", problem);
    r.code = Refusal::Invalid;
    r.reason = "the task is not valid: " + problem;
    return r;
  }
  if (auto existing = idempotent_reply(s)) return std::move(*existing);
  if (auto taken = output_taken(s); !taken.empty()) {
    r.code = Refusal::Taken;
    r.reason = std::move(taken);
    return r;
  }
  if (draining_) {
    r.code = Refusal::Draining;
    r.reason = "broker is shutting down";
    r.retry_after = 1;
    return r;
  }
  if (!storage_short_.empty()) {
    r.code = Refusal::Storage;
    r.reason = storage_short_;
    r.retry_after = 30;
    return r;
  }
  // A split task takes a place for each of its parts (its merge comes after them).
  if (in_system + std::max<std::size_t>(1, s.parallelism) > capacity) {
    r.code = Refusal::Capacity;
    r.reason = "queue full: " + std::to_string(running_.size()) + " running, " +
               std::to_string(queue_.size()) + " queued, " + std::to_string(slots()) +
               " worker slots, max queue " + std::to_string(settings_.max_queue);
    r.retry_after = retry_after();
    return r;
  }
  record(s, r, in_system);
  return r;
}

// A split task's parts are recorded with it; the task then waits in splits_ and its parts go
// to the queue as ordinary tasks.
void Core::record(proto::Submit& s, proto::SubmitReply& r, std::size_t& in_system) {
  const std::uint32_t n = s.parallelism > 1 ? s.parallelism : 0;
  std::vector<proto::TaskSpec> specs;
  for (std::uint32_t i = 0; i < n; ++i) specs.push_back(proto::part_spec(s.spec, i, n));
  std::vector<Records::Inserted> rows;
  auto ins = n ? records_.insert_split(s, specs, rows) : records_.insert(s);
  if (!ins.error.empty() || rows.size() != n) {
    r.code = Refusal::Invalid;
    r.reason = "the task could not be recorded: " + ins.error;
    return;
  }
  r.accepted = true;
  r.task_id = ins.task_id;
  r.state = TaskState::Queued;
  if (!s.idempotency_key.empty()) batch_keys_[s.idempotency_key] = {ins.task_id, s.fingerprint};
  batch_outputs_[s.spec.output] = ins.task_id;
  Pending p;
  p.seq = ins.seq;
  p.id = std::move(ins.task_id);
  p.priority = s.priority;
  if (n == 0) {
    p.spec = std::move(s.spec);
    enqueue(std::move(p));
    ++in_system;
    return;
  }
  Split sp;
  sp.output = s.spec.output;
  sp.parts = n;
  sp.progress.assign(n, 0);
  for (std::uint32_t i = 0; i < n; ++i) {
    Pending part;
    part.seq = rows[i].seq;
    part.id = rows[i].task_id;
    part.priority = s.priority;
    part.spec = std::move(specs[i]);
    part_of_[part.id] = PartOf{p.id, i};
    split_parts_[part.id] = p.id;
    sp.part_ids.push_back(part.id);
    batch_outputs_[part.spec.output] = part.id;
    enqueue(std::move(part));
  }
  p.spec = proto::merge_spec(s.spec, n);
  sp.merge = std::move(p);
  splits_.emplace(sp.merge.id, std::move(sp));
  in_system += n;
}

// The api checks all of this already; the broker checks again because anything that reaches
// its frontend can submit (docs/security.md). The request text is spliced into answers and
// logs as it is, so it must be a JSON object.
std::string Core::invalid(const proto::Submit& s) const {
  constexpr std::size_t kMaxRequest = 1u << 20;
  if (s.request.size() > kMaxRequest) return "the request text is larger than 1 MiB";
  if (!is_json_object(s.request)) return "the request text is not a JSON object";
  if (s.idempotency_key.size() > 255) return "the idempotency key is longer than 255 bytes";
  if (s.fingerprint.size() > 128) return "the fingerprint is longer than 128 bytes";
  if (auto problem = proto::check_extras({s.priority, s.overwrite, s.parallelism});
      !problem.empty())
    return problem;
  if (auto k = proto::split_problem(s.spec, s.parallelism); !k.field.empty())
    return std::string(k.field) + " " + k.message;
  return proto::check_spec(s.spec, settings_.roots);
}

std::string Core::output_taken(const proto::Submit& s) {
  // The task that writes or wrote `path` (a batch's earlier submission: queued).
  const auto owner_of = [this](const std::string& path) -> std::optional<Records::Owner> {
    if (auto b = batch_outputs_.find(path); b != batch_outputs_.end())
      return Records::Owner{b->second, TaskState::Queued};
    return records_.output_owner(path);
  };
  // A split task's parts write beside its output: none of those may be being written either
  // (a succeeded task's, e.g. a part of an earlier split of the same output, is replaced).
  for (std::uint32_t i = 0; s.parallelism > 1 && i < s.parallelism; ++i) {
    const std::string part = proto::part_output(s.spec.output, i, s.parallelism);
    if (auto o = owner_of(part); o && o->state != TaskState::Succeeded)
      return "output_path's part " + std::to_string(i) + " (" + part +
             ") is being written by task " + o->task_id + " (" + name_str(o->state) + ")";
  }
  auto o = owner_of(s.spec.output);
  if (!o) return {};
  if (o->state != TaskState::Succeeded)
    return "output_path is being written by task " + o->task_id + " (" + name_str(o->state) + ")";
  if (auto split = split_parts_.find(o->task_id); split != split_parts_.end())
    return "output_path is the output of task " + o->task_id + ", a part of task " + split->second +
           " which is not finished (its merge reads it)";
  if (s.overwrite) return {};
  return "output_path is the output of task " + o->task_id +
         " (succeeded); send \"overwrite\": true to replace it";
}

std::optional<proto::SubmitReply> Core::idempotent_reply(const proto::Submit& s) {
  if (s.idempotency_key.empty()) return std::nullopt;
  std::string id, fp;
  TaskState st = TaskState::Queued;
  if (auto b = batch_keys_.find(s.idempotency_key); b != batch_keys_.end()) {
    id = b->second.first;
    fp = b->second.second;
  } else if (auto rec = records_.find_by_key(s.idempotency_key)) {
    id = std::move(rec->task_id);
    fp = std::move(rec->fingerprint);
    st = rec->state;
  } else {
    return std::nullopt;
  }
  proto::SubmitReply r;
  r.req_id = s.req_id;
  if (fp == s.fingerprint) {
    r.accepted = true;
    r.existing = true;
    r.task_id = std::move(id);
    r.state = st;
  } else {
    r.code = Refusal::Conflict;
    r.reason = "Idempotency-Key was already used with a different request";
  }
  return r;
}

void Core::cancel(const std::string& client, const proto::Cancel& c, Effects& fx) {
  proto::CancelReply reply;
  reply.req_id = c.req_id;
  std::string id = c.task_id;
  // A part is cancelled with the task it is part of, also once it has ended itself.
  if (auto part = split_parts_.find(id); part != split_parts_.end()) id = part->second;
  auto split = splits_.find(id);
  if (split != splits_.end() && !split->second.merging) {
    // Waiting for its parts: it ends now, and its parts with it (finish()).
    Pending task = std::move(split->second.merge);
    end_unsuccessful(task, TaskState::Cancelled, "", "", "cancelled by user", fx);
    reply.result = CancelResult::Cancelled;
    reply.state = TaskState::Cancelled;
  } else if (auto stopped = stop(id, "cancelled by user", fx); stopped == Stopped::Ended) {
    reply.result = CancelResult::Cancelled;
    reply.state = TaskState::Cancelled;
  } else if (stopped == Stopped::Stopping) {
    reply.result = CancelResult::Cancelling;
    reply.state = TaskState::Running;
  } else if (auto st = records_.state_of(id)) {
    reply.result = CancelResult::Finished;
    reply.state = *st;
  } else {
    reply.result = CancelResult::NotFound;
  }
  fx.to_clients.push_back({client, reply});
}

Core::Stopped Core::stop(const std::string& id, const std::string& reason, Effects& fx) {
  if (auto q = take_queued(id)) {
    end_unsuccessful(*q, TaskState::Cancelled, "", "", reason + " while queued", fx);
    return Stopped::Ended;
  }
  auto rit = running_.find(id);
  if (rit == running_.end()) return Stopped::NotHeld;
  if (rit->second.worker.empty()) {  // an orphan
    Pending orphan = std::move(rit->second.task);
    running_.erase(rit);
    end_unsuccessful(orphan, TaskState::Cancelled, "", "", reason, fx);
    return Stopped::Ended;
  }
  // Its worker is told to stop; the task ends when the worker reports it.
  rit->second.cancel_requested = true;
  rit->second.cancel_reason = reason;
  fx.to_workers.push_back({rit->second.worker, proto::Abort{id, reason}});
  return Stopped::Stopping;
}

void Core::ping(const std::string& client, const proto::Ping& p, double now, Effects& fx) {
  proto::Pong pong;
  pong.req_id = p.req_id;
  pong.workers = static_cast<std::uint32_t>(workers_.size());
  pong.slots = slots();
  pong.credit = credit();
  pong.running = static_cast<std::uint32_t>(running_.size());
  pong.queued = static_cast<std::uint32_t>(queue_.size());
  pong.max_queue = settings_.max_queue;
  pong.draining = draining_;
  pong.accepting =
      !draining_ && storage_short_.empty() && queue_.size() + running_.size() < capacity();
  stats_.fill(pong);
  pong.worker_list.reserve(workers_.size());
  for (auto& [id, w] : workers_)
    pong.worker_list.push_back({id, w.host, w.pid, w.slots,
                                static_cast<std::uint32_t>(w.running.size()),
                                std::max(0.0, now - w.last_seen)});
  std::sort(pong.worker_list.begin(), pong.worker_list.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  fx.to_clients.push_back({client, std::move(pong)});
}

// ---- workers ----------------------------------------------------------------------------

bool Core::seen(const std::string& worker, double now, Effects& fx) {
  return known(worker, now, fx) != nullptr;
}

Core::Worker* Core::known(const std::string& worker, double now, Effects& fx) {
  auto wit = workers_.find(worker);
  if (wit == workers_.end()) {
    // Unknown peer (e.g. we restarted): ask it to register again.
    fx.to_workers.push_back({worker, Reregister{}});
    return nullptr;
  }
  wit->second.last_seen = now;
  clock_ = std::max(clock_, now);
  return &wit->second;
}

void Core::ready(const std::string& identity, const proto::Ready& r, double now, Effects& fx) {
  const bool known = workers_.count(identity) > 0;
  Worker& w = workers_[identity];
  const bool restarted = known && w.incarnation != r.incarnation;
  // Same process, a fresh socket: what was sent to the old one and is not claimed was lost
  // with it (the worker drops tasks addressed to an earlier connection, so none runs late).
  // Both readies numbered (0: a peer older than connection numbers) and from the same life.
  const bool same_life = known && !restarted && r.connection != 0 && w.connection != 0;
  const bool reconnected = same_life && r.connection > w.connection;
  if (same_life && r.connection < w.connection) {
    log_->info("worker {}: ignored a ready from its earlier connection {} (now {})", identity,
               r.connection, w.connection);
    w.last_seen = now;
    return;
  }
  w.identity = identity;
  w.slots = std::min(r.slots, settings_.max_worker_slots);  // 0: draining, takes no new work
  if (r.slots > settings_.max_worker_slots)
    log_->warn("worker {} offered {} slots; taking {}", identity, r.slots, w.slots);
  w.last_seen = now;
  w.host = r.host;
  w.pid = r.pid;
  w.incarnation = r.incarnation;
  w.connection = r.connection;
  // Each claimed task with the grant that came with it (none: "").
  std::map<std::string, std::string> claimed;
  for (std::size_t i = 0; i < r.running.size(); ++i)
    claimed.emplace(r.running[i], i < r.grants.size() ? r.grants[i] : std::string());
  // A new incarnation of the worker lost whatever its previous life ran, a new connection what
  // was sent to the old one. A ready of the same connection loses nothing: it may simply
  // predate a task we sent it since, and it reports every task it got.
  if (restarted) drop_unclaimed(w, claimed, "worker " + identity + " restarted without it", fx);
  if (reconnected)
    drop_unclaimed(w, claimed, "lost with worker " + identity + "'s earlier connection", fx);
  for (const auto& [id, grant] : claimed) take_claimed(w, id, grant, now, fx);
  log_->info("worker {} {} ({} slots, {} running, host {} pid {}, connection {})", identity,
             known ? "re-registered" : "registered", w.slots, w.running.size(), w.host, w.pid,
             w.connection);
}

// The worker's tasks it does not claim go back to the queue, using no attempt: they were lost
// with its process or its socket, not by their own fault.
void Core::drop_unclaimed(Worker& w, const std::map<std::string, std::string>& claimed,
                          const std::string& why, Effects& fx) {
  for (const auto& id : std::vector<std::string>(w.running.begin(), w.running.end())) {
    if (claimed.count(id)) continue;
    w.running.erase(id);
    auto rit = running_.find(id);
    if (rit == running_.end()) continue;
    Running lost = std::move(rit->second);
    running_.erase(rit);
    lost.task.uncount_run();
    retry_or_fail(std::move(lost), why, fx);
  }
}

// A task a worker says it runs (ready.running), with the grant it was given.
void Core::take_claimed(Worker& w, const std::string& id, const std::string& grant, double now,
                        Effects& fx) {
  if (!granted(id, w.identity, grant)) {
    fx.to_workers.push_back({w.identity, proto::Abort{id, "not granted to this worker"}});
    return;
  }
  auto rit = running_.find(id);
  if (rit != running_.end() && (rit->second.worker.empty() || rit->second.worker == w.identity)) {
    // Its own task, or an orphan recovered after a restart. The orphan may have been sent
    // to this worker by the previous broker after the dispatch the database records.
    if (rit->second.worker.empty()) claim(rit->second.task, w.identity, fx);
    rit->second.worker = w.identity;
    w.running.insert(id);
  } else if (auto q = take_queued(id)) {
    // Dispatched to it by a broker that died before recording the dispatch (or queued
    // again after the worker was presumed lost): the run goes on and its result counts.
    claim(*q, w.identity, fx);
    w.running.insert(id);
    Running adopted;
    adopted.task = std::move(*q);
    adopted.worker = w.identity;
    adopted.since = now;
    running_.emplace(id, std::move(adopted));
  } else {
    // Finished, cancelled or handed to someone else meanwhile: stop it.
    fx.to_workers.push_back({w.identity, proto::Abort{id, "no longer assigned"}});
  }
}

void Core::claim(Pending& p, const std::string& worker, Effects& fx) {
  if (p.counted_worker == worker) return;  // the run the database counts already
  p.count_run(worker);
  fx.writes.push_back(write::SetRunning{
      p.id, worker, p.attempts,
      "claimed by worker " + worker + " (attempt " + std::to_string(p.attempts) + ")"});
  part_started(p.id, fx);
}

void Core::part_started(const std::string& part_id, Effects& fx) {
  auto part = part_of_.find(part_id);
  if (part == part_of_.end()) return;
  auto split = splits_.find(part->second.parent);
  if (split == splits_.end() || split->second.started) return;
  split->second.started = true;
  fx.writes.push_back(write::SetRunning{
      part->second.parent, "", 0,
      "split into " + std::to_string(split->second.parts) + " parts; the first is running"});
}

bool Core::granted(const std::string& id, const std::string& worker, const std::string& presented) {
  if (signer_.valid(id, worker, presented)) return true;
  log_->warn("worker {} named task {} without its grant; ignored", worker, id.substr(0, 64));
  return false;
}

void Core::progress(const std::string& worker, const proto::ProgressMsg& p, double now,
                    Effects& fx) {
  Worker* w = known(worker, now, fx);
  if (!w || !w->running.count(p.task_id)) return;
  // A peer's number is not trusted: NaN (which clamp passes through) would fail the NOT NULL
  // progress column, and with it the commit and the broker.
  if (!std::isfinite(p.progress)) return;
  const double v = std::clamp(p.progress, 0.0, 1.0);
  auto part = part_of_.find(p.task_id);
  auto split = splits_.find(part != part_of_.end() ? part->second.parent : p.task_id);
  if (split == splits_.end()) {
    fx.writes.push_back(write::SetProgress{p.task_id, v});
  } else if (part != part_of_.end()) {  // a part: the task's progress is its parts' mean
    fx.writes.push_back(write::SetProgress{p.task_id, v});
    split->second.progress.at(part->second.index) = v;
    split_progress(split->first, split->second, fx);
  } else {  // the split task's merge
    fx.writes.push_back(write::SetProgress{p.task_id, kPartsShare + (1 - kPartsShare) * v});
  }
}

void Core::done(const std::string& worker, proto::Done d, double now, Effects& fx) {
  Worker* w = known(worker, now, fx);
  if (!w || !granted(d.task_id, worker, d.grant)) return;
  w->running.erase(d.task_id);
  auto rit = running_.find(d.task_id);
  // An orphan (recovered after a restart, not yet claimed) may be reported
  // by the worker that ran it: its result counts.
  if (rit == running_.end() || (rit->second.worker != worker && !rit->second.worker.empty())) {
    log_->debug("worker {} reported task {} it does not own (repeat or stale); ignored", worker,
                d.task_id);
    // A part of an ended split task that succeeded after all: its output is nobody's.
    if (auto ended = ended_parts_.find(d.task_id);
        ended != ended_parts_.end() && d.state == Outcome::Succeeded && d.output_inode != 0)
      fx.late_part_outputs.push_back({ended->second.task_id, ended->second.output,
                                      FileIdentity{static_cast<std::int64_t>(d.output_inode),
                                                   static_cast<std::int64_t>(d.output_size)}});
    return;
  }
  Running r = std::move(rit->second);
  running_.erase(rit);
  if (r.worker.empty()) claim(r.task, worker, fx);  // an orphan's result: record who ran it
  if (auto problem = clean_report(d); !problem.empty())
    log_->warn("worker {} reported task {} with {}", worker, d.task_id, problem);
  stats_.ran(now - r.since);
  settle(std::move(r), d, worker, fx);
}

// What a reported outcome does to its task.
void Core::settle(Running r, proto::Done& d, const std::string& worker, Effects& fx) {
  const std::string& id = r.task.id;
  auto part = part_of_.find(id);
  const bool stray_part = part != part_of_.end() && !splits_.count(part->second.parent);
  if (r.cancel_requested && (d.state != Outcome::Succeeded || stray_part)) {
    // A part that finished after its split task ended is no use: its output goes.
    end_unsuccessful(r.task, TaskState::Cancelled, std::move(d.summary), "", r.cancel_reason, fx);
  } else if (d.state == Outcome::Succeeded) {
    std::optional<FileIdentity> file;
    if (d.output_inode != 0)
      file = FileIdentity{static_cast<std::int64_t>(d.output_inode),
                          static_cast<std::int64_t>(d.output_size)};
    finish(id, TaskState::Succeeded, std::move(d.summary), std::move(d.error),
           "finished on " + worker, fx, write::Finish::Totals{d.packets, d.bytes, d.flows}, file);
  } else if (d.state == Outcome::Failed && !d.retryable) {
    end_unsuccessful(r.task, TaskState::Failed, std::move(d.summary), d.error, d.error, fx);
  } else if (d.state == Outcome::Aborted || d.state == Outcome::Cancelled) {
    // Not the task's fault: the worker shut down, or killed a child the
    // broker had told it to stop (e.g. after it was presumed lost and came
    // back) while nobody asked for a cancel. Run it again; no attempt used.
    r.task.uncount_run();
    retry_or_fail(std::move(r), "aborted by worker " + worker + ": " + d.error, fx);
  } else {
    retry_or_fail(std::move(r), d.error.empty() ? "failed on " + worker : d.error, fx);
  }
}

void Core::bye(const std::string& worker, double now, Effects& fx) {
  if (!seen(worker, now, fx)) return;
  // A worker says goodbye after reporting every task it ran (aborted ones included), so
  // anything still assigned to it is a task message that crossed its shutdown.
  lose_worker(worker, "worker said goodbye", fx);
}

void Core::unreachable(const std::string& worker, Effects& fx) {
  lose_worker(worker, "unreachable", fx);
}

// ---- time -------------------------------------------------------------------------------

void Core::expire(double now, Effects& fx) {
  clock_ = std::max(clock_, now);
  const double limit = settings_.heartbeat_s * settings_.liveness;
  std::vector<std::string> dead;
  for (auto& [id, w] : workers_)
    if (now - w.last_seen > limit) dead.push_back(id);
  for (auto& id : dead) lose_worker(id, "missed heartbeats", fx);
  std::vector<std::string> orphans;
  for (auto& [id, r] : running_)
    if (r.worker.empty() && now > r.orphan_deadline) orphans.push_back(id);
  for (auto& id : orphans) {
    // An earlier orphan's end may have ended this one (a part of the same split task).
    auto rit = running_.find(id);
    if (rit == running_.end()) continue;
    Running r = std::move(rit->second);
    running_.erase(rit);
    r.task.uncount_run();  // its worker went away with the old broker: not the task's fault
    retry_or_fail(std::move(r), "no worker reclaimed it after a broker restart", fx);
  }
  expire_overdue(now, fx);
}

// A worker enforces the time limit itself and reports the run. A task still running well
// past it lost its messages on the way (e.g. a `task` dropped while its worker reconnected,
// which a `ready` of the same incarnation cannot reveal): it runs again elsewhere.
void Core::expire_overdue(double now, Effects& fx) {
  if (settings_.task_timeout_s <= 0) return;
  const double limit = settings_.task_timeout_s + overdue_slack();
  std::vector<std::string> overdue;
  for (auto& [id, r] : running_)
    if (!r.worker.empty() && now - r.since > limit) overdue.push_back(id);
  for (auto& id : overdue) {
    auto rit = running_.find(id);
    if (rit == running_.end()) continue;  // ended by an earlier one's consequences
    Running r = std::move(rit->second);
    running_.erase(rit);
    if (auto w = workers_.find(r.worker); w != workers_.end()) w->second.running.erase(id);
    fx.to_workers.push_back({r.worker, proto::Abort{id, "no result within the time limit"}});
    retry_or_fail(std::move(r), "no result from worker within the time limit", fx);
  }
}

double Core::overdue_slack() const {
  if (settings_.overdue_grace_s > 0) return settings_.overdue_grace_s;
  return std::max(30.0, 4 * settings_.heartbeat_s * settings_.liveness);
}

void Core::dispatch(double now, Effects& fx) {
  clock_ = std::max(clock_, now);
  if (draining_) return;
  order_.clear();
  for (auto& [id, w] : workers_) order_.push_back(&w);
  while (!queue_.empty()) {
    // The first in order whose backoff is over.
    auto it = queue_.begin();
    while (it != queue_.end() && it->second.not_before > now) ++it;
    if (it == queue_.end()) return;
    Worker* best = least_loaded();
    if (!best) return;
    ++rr_;
    Pending p = std::move(it->second);
    queue_.erase(it);
    const bool rerun = p.ran_before;
    p.count_run(best->identity);
    if (auto split = splits_.find(p.id); split != splits_.end()) {
      fx.writes.push_back(write::SetRunning{p.id, best->identity, p.attempts,
                                            "merging its " + std::to_string(split->second.parts) +
                                                " parts (attempt " + std::to_string(p.attempts) +
                                                ")"});
      fx.writes.push_back(write::SetProgress{p.id, kPartsShare});
    } else {
      fx.writes.push_back(write::SetRunning{p.id, best->identity, p.attempts, ""});
      part_started(p.id, fx);
    }
    fx.to_workers.push_back(
        {best->identity,
         proto::Task{p.id, static_cast<std::uint32_t>(p.attempts), p.spec, settings_.task_timeout_s,
                     signer_.make(p.id, best->identity), rerun, best->connection}});
    best->running.insert(p.id);
    Running r;
    r.task = std::move(p);
    r.worker = best->identity;
    r.since = now;
    running_.emplace(r.task.id, std::move(r));
  }
}

// The worker with credit and the most free slots; ties go round robin.
Core::Worker* Core::least_loaded() {
  Worker* best = nullptr;
  const std::size_t n = order_.size();
  const std::size_t start = n ? rr_ % n : 0;
  for (std::size_t i = 0; i < n; ++i) {
    Worker* w = order_[(start + i) % n];
    if (w->credit() == 0) continue;
    if (!best || w->credit() > best->credit()) best = w;
  }
  return best;
}

void Core::heartbeat(Effects& fx) {
  ++hb_seq_;
  for (auto& [id, w] : workers_) fx.to_workers.push_back({id, proto::Heartbeat{hb_seq_}});
}

// ---- tasks ------------------------------------------------------------------------------

void Core::enqueue(Pending p) {
  auto key = std::make_pair(-p.priority, p.seq);
  queue_.emplace(key, std::move(p));
}

std::optional<Core::Pending> Core::take_queued(const std::string& id) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->second.id != id) continue;
    Pending p = std::move(it->second);
    queue_.erase(it);
    return p;
  }
  return std::nullopt;
}

void Core::finish(const std::string& id, TaskState st, std::string summary, std::string error,
                  std::string reason, Effects& fx, std::optional<write::Finish::Totals> totals,
                  std::optional<FileIdentity> output, std::string unrecorded_output,
                  bool unrecorded_partition) {
  stats_.finished(st);
  auto part = part_of_.find(id);
  // A part's end is its split task's business: what it says, before the texts move.
  const std::string why = part == part_of_.end() ? std::string() : error.empty() ? reason : error;
  write::Finish f{
      id,     st,     std::move(summary),           std::move(error),     std::move(reason),
      totals, output, std::move(unrecorded_output), unrecorded_partition, {}};
  if (auto split = splits_.find(id); split != splits_.end()) {
    // A split task ended: its parts' outputs go, and the parts still live end with it.
    Split sp = std::move(split->second);
    splits_.erase(split);
    for (std::uint32_t i = 0; i < sp.parts; ++i) {
      f.part_outputs.push_back(proto::part_output(sp.output, i, sp.parts));
      if (i >= sp.part_ids.size()) continue;  // not recorded (recover_split fails such a task)
      const std::string& part_id = sp.part_ids[i];
      split_parts_.erase(part_id);
      if (ended_parts_.size() >= kEndedPartsKept) {
        ended_parts_.erase(ended_order_.front());
        ended_order_.pop_front();
      }
      ended_parts_[part_id] = EndedPart{id, f.part_outputs.back()};
      ended_order_.push_back(part_id);
    }
    fx.writes.push_back(std::move(f));
    for (const auto& part_id : sp.part_ids)
      if (part_of_.count(part_id)) stop(part_id, "its split task ended", fx);
  } else {
    fx.writes.push_back(std::move(f));
  }
  // stop() above ends other tasks only (their own finish() erases their entries): `part` holds.
  if (part != part_of_.end()) {
    const PartOf of = part->second;
    part_of_.erase(part);
    part_ended(of, st, why, fx);
  }
}

void Core::split_progress(const std::string& id, const Split& sp, Effects& fx) {
  if (sp.merging) return;  // the merge's reports take over
  double sum = 0;
  for (double x : sp.progress) sum += x;
  fx.writes.push_back(write::SetProgress{id, kPartsShare * sum / sp.parts});
}

void Core::part_ended(const PartOf& part, TaskState st, const std::string& why, Effects& fx) {
  auto split = splits_.find(part.parent);
  if (split == splits_.end()) return;  // it ended first
  Split& sp = split->second;
  if (st == TaskState::Succeeded) {
    sp.progress.at(part.index) = 1;
    if (++sp.succeeded == sp.parts) {
      sp.merging = true;
      enqueue(std::move(sp.merge));
    }
    split_progress(part.parent, sp, fx);
    return;
  }
  // Retried under the usual rules and failed for good: the task fails, and its other parts
  // stop (docs/broker.md, Split tasks).
  const std::string error =
      part_name(part.index, sp.parts) + " " + name_str(st) + (why.empty() ? "" : ": " + why);
  Pending task = std::move(sp.merge);
  end_unsuccessful(task, TaskState::Failed, "", error, error, fx);
}

void Core::end_unsuccessful(const Pending& p, TaskState st, std::string summary, std::string error,
                            std::string reason, Effects& fx) {
  finish(p.id, st, std::move(summary), std::move(error), std::move(reason), fx, {}, {},
         p.ran_before ? p.spec.output : std::string(), p.spec.partitions > 1);
}

void Core::retry_or_fail(Running r, const std::string& why, Effects& fx) {
  const std::string& id = r.task.id;
  if (r.cancel_requested) {
    end_unsuccessful(r.task, TaskState::Cancelled, "", "", r.cancel_reason + "; " + why, fx);
  } else if (r.task.free_runs > settings_.max_free_runs) {
    end_unsuccessful(r.task, TaskState::Failed, "",
                     "gave up after " + std::to_string(r.task.free_runs) +
                         " runs that ended without a result; last: " + why,
                     why, fx);
  } else if (r.task.attempts >= settings_.max_attempts) {
    end_unsuccessful(r.task, TaskState::Failed, "",
                     "gave up after " + std::to_string(r.task.attempts) + " attempts; last: " + why,
                     why, fx);
  } else {
    fx.writes.push_back(write::Requeue{id, r.task.attempts, why});
    stats_.requeued();
    if (auto part = part_of_.find(id); part != part_of_.end())
      if (auto split = splits_.find(part->second.parent); split != splits_.end()) {
        split->second.progress.at(part->second.index) = 0;  // it starts over
        split_progress(split->first, split->second, fx);
      }
    r.task.not_before = 0;
    if (r.task.last_run_free && r.task.free_runs > 1) {
      // Lost runs in a row: the first goes again at once, then 1, 2, 4 … 30 s later.
      const double wait =
          std::min(settings_.free_run_backoff_max_s,
                   settings_.free_run_backoff_s * std::ldexp(1.0, r.task.free_runs - 2));
      r.task.not_before = clock_ + wait;
      log_->warn("task {} re-queued (in {:.1f} s): {}", id, wait, why);
    } else {
      log_->warn("task {} re-queued: {}", id, why);
    }
    enqueue(std::move(r.task));
  }
}

void Core::lose_worker(const std::string& identity, const std::string& why, Effects& fx) {
  auto wit = workers_.find(identity);
  if (wit == workers_.end()) return;
  std::set<std::string> tasks = std::move(wit->second.running);
  workers_.erase(wit);
  log_->warn("worker {} lost ({}); {} tasks to re-queue", identity, why, tasks.size());
  for (auto& id : tasks) {
    auto rit = running_.find(id);
    if (rit == running_.end()) continue;
    Running r = std::move(rit->second);
    running_.erase(rit);
    r.task.uncount_run();
    retry_or_fail(std::move(r), "worker " + identity + " lost: " + why, fx);
  }
}

// ---- capacity ---------------------------------------------------------------------------

std::uint32_t Core::slots() const {
  std::uint32_t n = 0;
  for (auto& [id, w] : workers_) n += w.slots;
  return n;
}

std::uint32_t Core::credit() const {
  std::uint32_t n = 0;
  for (auto& [id, w] : workers_) n += w.credit();
  return n;
}

std::size_t Core::capacity() const {
  return static_cast<std::size_t>(slots()) + settings_.max_queue;
}

double Core::retry_after() const {
  double total = std::max<std::uint32_t>(1, slots());
  double est = std::ceil(static_cast<double>(queue_.size() + 1) / total * stats_.average_run_s());
  return std::clamp(est, 1.0, 300.0);
}

}  // namespace ipfixweb::broker

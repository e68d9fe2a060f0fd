#include "ipfixweb/broker/broker.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <tuple>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"

namespace ipfixweb::broker {

namespace {
constexpr std::size_t kMaxBatch = 1024;  // messages read per socket per iteration
}

Broker::Broker(Config cfg, zmq::context_t& ctx)
    : cfg_(std::move(cfg)),
      log_(logger("broker")),
      store_(TaskStore::open_writer(cfg_.db_path, TaskStore::parse_sync(cfg_.synchronous))),
      front_(ctx, zmq::socket_type::router),
      back_(ctx, zmq::socket_type::router) {
  if (cfg_.orphan_grace_s <= 0) cfg_.orphan_grace_s = cfg_.heartbeat_s * cfg_.liveness * 2;
  for (auto* s : {&front_, &back_}) {
    s->set(zmq::sockopt::router_mandatory, 1);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 100000);
    s->set(zmq::sockopt::rcvhwm, 100000);
  }
  // A worker that reconnects with a fresh socket keeps its routing id.
  back_.set(zmq::sockopt::router_handover, 1);
  if (!cfg_.curve_secret_key.empty()) {
    if (cfg_.curve_authorized.empty())
      throw std::runtime_error("CURVE needs --curve-authorized (the clients' public keys)");
    auto keys = curve::load_secret(cfg_.curve_secret_key);
    auth_ = std::make_unique<curve::Authenticator>(
        ctx, curve::load_authorized(cfg_.curve_authorized), log_);
    curve::make_server(front_, keys);
    curve::make_server(back_, keys);
    log_->info("CURVE on: broker public key {}", keys.public_key);
  }
  front_.bind(cfg_.frontend);
  back_.bind(cfg_.backend);
  sp_begin_ = db::Statement(store_.db(), "SAVEPOINT submit");
  sp_release_ = db::Statement(store_.db(), "RELEASE submit");
  sp_rollback_ = db::Statement(store_.db(), "ROLLBACK TO submit");
  recover();
  log_->info("broker listening: frontend {} backend {} db {} (synchronous={}, max_queue={})",
             cfg_.frontend, cfg_.backend, cfg_.db_path, cfg_.synchronous, cfg_.max_queue);
}

Broker::~Broker() = default;

void Broker::recover() {
  double now = now_mono();
  std::size_t queued = 0, orphaned = 0;
  for (auto& rec : store_.unfinished()) {
    Pending p;
    p.id = rec.id;
    p.priority = rec.priority;
    p.seq = rec.seq;
    p.attempts = rec.attempts;
    p.counted_worker = rec.worker;
    try {
      p.spec = proto::spec_from_json(nlohmann::json::parse(rec.spec));
    } catch (const std::exception& e) {
      finish(rec.id, TaskState::Failed, "",
             std::string("unreadable task spec in database: ") + e.what(),
             e.what());  // like any finished task: counted and in the completion log
      continue;
    }
    if (rec.state == TaskState::Running) {
      // Its worker may still be running it: wait for it to re-register.
      Running r;
      r.task = std::move(p);
      r.since = now;
      r.orphan_deadline = now + cfg_.orphan_grace_s;
      running_.emplace(rec.id, std::move(r));
      ++orphaned;
    } else {
      enqueue(std::move(p));
      ++queued;
    }
  }
  flush(true);
  if (queued || orphaned)
    log_->info("recovered {} queued and {} running tasks from the database", queued, orphaned);
}

void Broker::enqueue(Pending p) {
  auto key = std::make_pair(-p.priority, p.seq);
  queue_.emplace(key, std::move(p));
}

void Broker::claim(Pending& p, const std::string& identity) {
  if (p.counted_worker == identity) return;  // the run the database counts already
  ++p.attempts;
  p.counted_worker = identity;
  write_tx();
  store_.set_running(
      p.id, identity, p.attempts, now_iso(),
      "claimed by worker " + identity + " (attempt " + std::to_string(p.attempts) + ")");
}

std::optional<Broker::Pending> Broker::take_queued(const std::string& id) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->second.id != id) continue;
    Pending p = std::move(it->second);
    queue_.erase(it);
    return p;
  }
  return std::nullopt;
}

void Broker::write_tx() {
  if (tx_) return;
  tx_ = std::make_unique<db::Transaction>(store_.db());
  tx_opened_ = now_mono();
}

// Group commit. Messages to workers (tasks, aborts, heartbeats) go out at once; the changes
// they stand for (a task now running, a result recorded) may wait up to commit_interval_s in
// the open transaction for more to commit together, which is what lets a busy broker spend
// one disk flush on many tasks. That acknowledges nothing to anyone: a broker that dies
// before the commit restarts with such a task queued or running as it was recorded, runs it
// again and ignores reports of the unrecorded dispatch (at least once; the output is written
// under the same name, and the task finishes once). Replies to clients (a 202 above all) and
// completion log lines go out only after the commit that holds what they report.
void Broker::flush(bool force) {
  bool replies = false;
  for (auto& o : out_) replies |= o.sock != &back_;
  // Committing now (a reply waits, or the interval is up): commit first, then send
  // everything. Otherwise only worker messages are waiting and go out ahead of the commit.
  // Never a task whose INSERT is not committed yet: its submission's reply forces the commit.
  if (tx_ && (force || replies || now_mono() - tx_opened_ >= cfg_.commit_interval_s)) {
    // A broker that cannot persist must not acknowledge anything: on failure
    // this throws, nothing below is sent, and main exits non-zero.
    tx_->commit();
    tx_.reset();
    write_completions();
  }
  for (auto& o : out_) {
    if (o.sock != &back_) continue;
    if (!zmqu::send_to(*o.sock, o.identity, o.payload)) {
      log_->warn("cannot reach worker {}: treating it as gone", o.identity);
      lose_worker(o.identity, "unreachable");  // writes a new transaction, committed when due
    }
  }
  for (auto& o : out_) {
    if (o.sock == &back_) continue;
    if (!zmqu::send_to(*o.sock, o.identity, o.payload))
      log_->debug("client {} went away before its reply", o.identity.size());
  }
  out_.clear();
}

std::uint32_t Broker::total_slots() const {
  std::uint32_t n = 0;
  for (auto& [id, w] : workers_) n += w.slots;
  return n;
}

std::uint32_t Broker::total_credit() const {
  std::uint32_t n = 0;
  for (auto& [id, w] : workers_) n += w.credit();
  return n;
}

double Broker::retry_after() const {
  double slots = std::max<std::uint32_t>(1, total_slots());
  double est = std::ceil(static_cast<double>(queue_.size() + 1) / slots * avg_task_s_);
  return std::clamp(est, 1.0, 300.0);
}

void Broker::run(const std::atomic<bool>& stop) {
  next_heartbeat_ = now_mono() + cfg_.heartbeat_s;
  while (!stop.load()) iteration(stop);
  flush(true);
  draining_ = true;
  // Tell workers we are going away is not needed: they detect silence and
  // reconnect; running tasks stay 'running' and are reconciled on restart.
  log_->info("broker stopping: {} queued, {} running", queue_.size(), running_.size());
}

void Broker::iteration(const std::atomic<bool>& stop) {
  std::vector<zmq::pollitem_t> items = {{front_.handle(), 0, ZMQ_POLLIN, 0},
                                        {back_.handle(), 0, ZMQ_POLLIN, 0}};
  double wait = std::max(0.0, next_heartbeat_ - now_mono());
  long wait_ms = std::min<long>(static_cast<long>(wait * 1000) + 1, 100);
  if (tx_) {  // an open transaction: wake up in time to commit it
    const double due = std::max(0.0, tx_opened_ + cfg_.commit_interval_s - now_mono());
    wait_ms = std::min<long>(wait_ms, static_cast<long>(std::ceil(due * 1000)));
  }
  zmqu::poll(items, wait_ms);
  if (stop.load()) return;

  subs_.clear();
  // Reads up to kMaxBatch [identity, payload] messages; anything else is
  // logged and dropped.
  // Returns false when it stopped at the cap with messages possibly left.
  auto drain = [this](zmq::socket_t& sock, const char* side, auto&& handle) {
    std::string err;
    for (std::size_t n = 0; n < kMaxBatch; ++n) {
      auto parts = zmqu::recv_multipart(sock);
      if (!parts) return true;
      if (parts->size() != 2) {
        log_->warn("{}: dropped message with {} frames", side, parts->size());
        continue;
      }
      std::string identity = (*parts)[0].to_string();
      auto env = proto::decode((*parts)[1].data(), (*parts)[1].size(), &err);
      if (!env) {
        log_->warn("{}: dropped malformed message: {}", side, err);
        continue;
      }
      handle(identity, *env);
    }
    return false;
  };
  // Backend first: finished tasks free credit for this iteration's dispatch.
  bool backend_drained =
      drain(back_, "backend",
            [this](const std::string& id, const proto::Envelope& env) { handle_backend(id, env); });
  drain(front_, "frontend", [&](const std::string& id, const proto::Envelope& env) {
    handle_frontend(id, env, subs_);
  });
  if (!subs_.submits.empty()) process_submits(subs_);
  // With backend messages still unread, a heartbeat may be among them: do not
  // declare anyone dead on a backlog.
  if (backend_drained) check_liveness();
  dispatch();
  if (now_mono() >= next_heartbeat_) {
    std::string hb = proto::encode(proto::type::kHeartbeat, proto::Heartbeat{++hb_seq_});
    for (auto& [id, w] : workers_) out_.push_back({&back_, id, hb, {}});
    next_heartbeat_ = now_mono() + cfg_.heartbeat_s;
  }
  flush();
}

void Broker::Submissions::clear() {
  submits.clear();
  identities.clear();
  batch_of.clear();
  batches.clear();
  batch_identities.clear();
}

void Broker::handle_frontend(const std::string& identity, const proto::Envelope& env,
                             Submissions& subs) {
  std::string err;
  if (env.type == proto::type::kSubmit) {
    auto s = env.as<proto::Submit>(&err);
    if (!s) {
      log_->warn("frontend: {}", err);
      return;
    }
    subs.submits.push_back(std::move(*s));
    subs.identities.push_back(identity);
    subs.batch_of.push_back(Submissions::kSingle);
  } else if (env.type == proto::type::kSubmitBatch) {
    auto b = env.as<proto::SubmitBatch>(&err);
    if (!b) {
      log_->warn("frontend: {}", err);
      return;
    }
    if (b->submits.size() > proto::kMaxSubmitBatch) {
      log_->warn("frontend: dropped a batch of {} submissions (at most {})", b->submits.size(),
                 proto::kMaxSubmitBatch);
      return;
    }
    std::size_t index = subs.batches.size();
    proto::SubmitBatchReply reply;
    reply.req_id = b->req_id;
    reply.replies.reserve(b->submits.size());
    subs.batches.push_back(std::move(reply));
    subs.batch_identities.push_back(identity);
    for (auto& s : b->submits) {
      subs.submits.push_back(std::move(s));
      subs.identities.push_back(identity);
      subs.batch_of.push_back(index);
    }
  } else if (env.type == proto::type::kPing) {
    auto p = env.as<proto::Ping>(&err);
    if (!p) return;
    proto::Pong pong;
    pong.req_id = p->req_id;
    pong.workers = static_cast<std::uint32_t>(workers_.size());
    pong.slots = total_slots();
    pong.credit = total_credit();
    pong.running = static_cast<std::uint32_t>(running_.size());
    pong.queued = static_cast<std::uint32_t>(queue_.size());
    pong.max_queue = cfg_.max_queue;
    pong.draining = draining_;
    pong.succeeded = n_succeeded_;
    pong.failed = n_failed_;
    pong.cancelled = n_cancelled_;
    pong.requeued = n_requeued_;
    pong.duration_counts = durations_;
    pong.duration_sum = duration_sum_;
    out_.push_back({&front_, identity, proto::encode(proto::type::kPong, pong), {}});
  } else if (env.type == proto::type::kCancel) {
    auto c = env.as<proto::Cancel>(&err);
    if (!c) return;
    proto::CancelReply reply;
    reply.req_id = c->req_id;
    auto qit = std::find_if(queue_.begin(), queue_.end(),
                            [&](auto& kv) { return kv.second.id == c->task_id; });
    auto rit = running_.find(c->task_id);
    if (qit != queue_.end()) {
      queue_.erase(qit);
      finish(c->task_id, TaskState::Cancelled, "", "", "cancelled by user while queued");
      reply.result = CancelResult::Cancelled;
      reply.state = TaskState::Cancelled;
    } else if (rit != running_.end() && rit->second.worker.empty()) {
      running_.erase(rit);
      finish(c->task_id, TaskState::Cancelled, "", "", "cancelled by user");
      reply.result = CancelResult::Cancelled;
      reply.state = TaskState::Cancelled;
    } else if (rit != running_.end()) {
      rit->second.cancel_requested = true;
      out_.push_back(
          {&back_,
           rit->second.worker,
           proto::encode(proto::type::kAbort, proto::Abort{c->task_id, "cancelled by user"}),
           {}});
      reply.result = CancelResult::Cancelling;
      reply.state = TaskState::Running;
    } else if (auto rec = store_.get(c->task_id)) {
      reply.result = CancelResult::Finished;
      reply.state = rec->state;
    } else {
      reply.result = CancelResult::NotFound;
    }
    out_.push_back({&front_, identity, proto::encode(proto::type::kCancelReply, reply), {}});
  } else {
    log_->warn("frontend: dropped message of unknown type '{}'", env.type);
  }
}

void Broker::process_submits(Submissions& subs) {
  // Single submissions are answered one message each; a batch's replies are
  // collected in order and sent as one message after the loop.
  auto answer = [&](std::size_t i, proto::SubmitReply& r) {
    std::size_t b = subs.batch_of[i];
    if (b == Submissions::kSingle)
      out_.push_back(
          {&front_, subs.identities[i], proto::encode(proto::type::kSubmitReply, r), {}});
    else
      subs.batches[b].replies.push_back(std::move(r));
  };
  auto& submits = subs.submits;
  write_tx();
  std::string now = now_iso();
  std::unordered_map<std::string, std::pair<std::string, std::string>> batch_keys;  // key ->
                                                                                    // (id, fp)
  std::size_t in_system = queue_.size() + running_.size();
  std::size_t capacity = static_cast<std::size_t>(total_slots()) + cfg_.max_queue;
  for (std::size_t i = 0; i < submits.size(); ++i) {
    auto& s = submits[i];
    proto::SubmitReply r;
    r.req_id = s.req_id;
    if (!s.idempotency_key.empty()) {
      std::string id, fp;
      TaskState st = TaskState::Queued;
      if (auto b = batch_keys.find(s.idempotency_key); b != batch_keys.end()) {
        id = b->second.first;
        fp = b->second.second;
        st = TaskState::Queued;
      } else if (auto rec = store_.find_by_key(s.idempotency_key)) {
        id = rec->id;
        fp = rec->fingerprint;
        st = rec->state;
      }
      if (!id.empty()) {
        if (fp == s.fingerprint) {
          r.accepted = true;
          r.existing = true;
          r.task_id = id;
          r.state = st;
        } else {
          r.code = Refusal::Conflict;
          r.reason = "Idempotency-Key was already used with a different request";
        }
        answer(i, r);
        continue;
      }
    }
    if (draining_) {
      r.code = Refusal::Draining;
      r.reason = "broker is shutting down";
      r.retry_after = 1;
    } else if (in_system >= capacity) {
      r.code = Refusal::Capacity;
      r.reason = "queue full: " + std::to_string(running_.size()) + " running, " +
                 std::to_string(queue_.size()) + " queued, " + std::to_string(total_slots()) +
                 " worker slots, max queue " + std::to_string(cfg_.max_queue);
      r.retry_after = retry_after();
    } else if (auto seq = record_submission(s, now, r)) {
      Pending p;
      p.seq = *seq;
      p.id = r.task_id;
      p.priority = s.priority;
      p.spec = std::move(s.spec);
      enqueue(std::move(p));
      ++in_system;
      if (!s.idempotency_key.empty()) batch_keys[s.idempotency_key] = {r.task_id, s.fingerprint};
    }
    answer(i, r);
  }
  for (std::size_t b = 0; b < subs.batches.size(); ++b)
    out_.push_back({&front_,
                    subs.batch_identities[b],
                    proto::encode(proto::type::kSubmitBatchReply, subs.batches[b]),
                    {}});
}

// Inserts one submission inside the batch's transaction, in a savepoint of
// its own: a submission that cannot be stored (e.g. a path that is not valid
// UTF-8 for the JSON column) is refused alone instead of failing the batch.
std::optional<std::int64_t> Broker::record_submission(const proto::Submit& s,
                                                      const std::string& now,
                                                      proto::SubmitReply& r) {
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
    std::int64_t seq = store_.insert(t, now);
    sp_release_.run();
    r.accepted = true;
    r.task_id = t.id;
    r.state = TaskState::Queued;
    return seq;
  } catch (const std::exception& e) {
    sp_rollback_.run();
    sp_release_.run();
    log_->error("could not record a submission: {}", e.what());
    r.code = Refusal::Invalid;
    r.reason = std::string("the task could not be recorded: ") + e.what();
    return std::nullopt;
  }
}

void Broker::dispatch() {
  if (draining_) return;
  while (!queue_.empty()) {
    // Least-loaded worker with credit: most free slots; ties round-robin.
    Worker* best = nullptr;
    std::size_t i = 0, n = workers_.size();
    std::size_t start = n ? rr_ % n : 0;
    std::vector<Worker*> order;
    order.reserve(n);
    for (auto& [id, w] : workers_) order.push_back(&w);
    for (i = 0; i < n; ++i) {
      Worker* w = order[(start + i) % n];
      if (w->credit() == 0) continue;
      if (!best || w->credit() > best->credit()) best = w;
    }
    if (!best) return;
    ++rr_;
    auto it = queue_.begin();
    Pending p = std::move(it->second);
    queue_.erase(it);
    write_tx();
    ++p.attempts;
    p.counted_worker = best->identity;
    store_.set_running(p.id, best->identity, p.attempts, now_iso());
    proto::Task msg{p.id, static_cast<std::uint32_t>(p.attempts), p.spec, cfg_.task_timeout_s};
    out_.push_back({&back_, best->identity, proto::encode(proto::type::kTask, msg), p.id});
    best->running.insert(p.id);
    Running r;
    r.task = std::move(p);
    r.worker = best->identity;
    r.since = now_mono();
    running_.emplace(r.task.id, std::move(r));
  }
}

void Broker::handle_backend(const std::string& identity, const proto::Envelope& env) {
  std::string err;
  double now = now_mono();
  auto wit = workers_.find(identity);
  if (env.type == proto::type::kReady) {
    auto r = env.as<proto::Ready>(&err);
    if (!r) {
      log_->warn("backend: {}", err);
      return;
    }
    bool known = wit != workers_.end();
    Worker& w = workers_[identity];
    bool restarted = known && w.incarnation != r->incarnation;
    w.identity = identity;
    w.slots = r->slots;  // 0: draining, takes no new work
    w.last_seen = now;
    w.host = r->host;
    w.pid = r->pid;
    w.incarnation = r->incarnation;
    std::set<std::string> claimed(r->running.begin(), r->running.end());
    // A new incarnation of the worker lost whatever its previous life ran.
    // The same incarnation loses nothing: its ready may simply predate a task
    // we sent it since, and it reports every task it got.
    for (auto id : std::vector<std::string>(w.running.begin(), w.running.end())) {
      if (!restarted || claimed.count(id)) continue;
      w.running.erase(id);
      auto rit = running_.find(id);
      if (rit != running_.end()) {
        Running lost = std::move(rit->second);
        running_.erase(rit);
        retry_or_fail(std::move(lost), "worker " + identity + " restarted without it");
      }
    }
    for (auto& id : claimed) {
      auto rit = running_.find(id);
      if (rit != running_.end() && (rit->second.worker.empty() || rit->second.worker == identity)) {
        // Its own task, or an orphan recovered after a restart. The orphan may have been sent
        // to this worker by the previous broker after the dispatch the database records.
        if (rit->second.worker.empty()) claim(rit->second.task, identity);
        rit->second.worker = identity;
        w.running.insert(id);
      } else if (auto q = take_queued(id)) {
        // Dispatched to it by a broker that died before recording the dispatch (or queued
        // again after the worker was presumed lost): the run goes on and its result counts.
        claim(*q, identity);
        w.running.insert(id);
        Running adopted;
        adopted.task = std::move(*q);
        adopted.worker = identity;
        adopted.since = now;
        running_.emplace(id, std::move(adopted));
      } else {
        // Finished, cancelled or handed to someone else meanwhile: stop it.
        out_.push_back({&back_,
                        identity,
                        proto::encode(proto::type::kAbort, proto::Abort{id, "no longer assigned"}),
                        {}});
      }
    }
    log_->info("worker {} {} ({} slots, {} running, host {} pid {})", identity,
               known ? "re-registered" : "registered", w.slots, w.running.size(), w.host, w.pid);
    return;
  }
  if (wit == workers_.end()) {
    // Unknown peer (e.g. we restarted): ask it to register again.
    out_.push_back({&back_, identity, proto::encode(proto::type::kReregister, proto::Bye{}), {}});
    return;
  }
  Worker& w = wit->second;
  w.last_seen = now;
  if (env.type == proto::type::kHeartbeat || env.type == proto::type::kStarted) return;
  if (env.type == proto::type::kProgress) {
    auto p = env.as<proto::ProgressMsg>(&err);
    if (!p || !w.running.count(p->task_id)) return;
    write_tx();
    store_.set_progress(p->task_id, std::clamp(p->progress, 0.0, 1.0));
  } else if (env.type == proto::type::kDone) {
    auto d = env.as<proto::Done>(&err);
    if (!d) {
      log_->warn("backend: {}", err);
      return;
    }
    w.running.erase(d->task_id);
    auto rit = running_.find(d->task_id);
    // An orphan (recovered after a restart, not yet claimed) may be reported
    // by the worker that ran it: its result counts.
    if (rit == running_.end() || (rit->second.worker != identity && !rit->second.worker.empty())) {
      log_->debug("worker {} reported task {} it does not own (repeat or stale); ignored", identity,
                  d->task_id);
      return;
    }
    Running r = std::move(rit->second);
    running_.erase(rit);
    if (r.worker.empty()) claim(r.task, identity);  // an orphan's result: record who ran it
    double took = now - r.since;
    avg_task_s_ = 0.8 * avg_task_s_ + 0.2 * std::max(0.001, took);
    std::size_t b = 0;
    while (b < std::size(proto::kDurationBuckets) && took > proto::kDurationBuckets[b]) ++b;
    ++durations_[b];
    duration_sum_ += took;
    if (r.cancel_requested && d->state != Outcome::Succeeded) {
      finish(d->task_id, TaskState::Cancelled, d->summary, "", "cancelled by user");
    } else if (d->state == Outcome::Succeeded || (d->state == Outcome::Failed && !d->retryable)) {
      finish(d->task_id, *final_state(d->state), d->summary, d->error,
             d->state == Outcome::Failed ? d->error : "finished on " + identity, &*d);
    } else if (d->state == Outcome::Aborted || d->state == Outcome::Cancelled) {
      // Not the task's fault: the worker shut down, or killed a child the
      // broker had told it to stop (e.g. after it was presumed lost and came
      // back) while nobody asked for a cancel. Run it again; no attempt used.
      --r.task.attempts;
      r.task.counted_worker.clear();
      retry_or_fail(std::move(r), "aborted by worker " + identity + ": " + d->error);
    } else {
      retry_or_fail(std::move(r), d->error.empty() ? "failed on " + identity : d->error);
    }
  } else if (env.type == proto::type::kBye) {
    // A worker says goodbye after reporting every task it ran (aborted ones included), so
    // anything still assigned to it is a task message that crossed its shutdown.
    lose_worker(identity, "worker said goodbye", false);
  } else {
    log_->warn("backend: dropped message of unknown type '{}' from {}", env.type, identity);
  }
}

void Broker::finish(const std::string& id, TaskState st, const std::string& summary,
                    const std::string& error, const std::string& reason, const proto::Done* done) {
  write_tx();
  auto row = store_.finish(id, st, summary, error, reason, now_iso());
  if (!row) {
    log_->warn("task {} to finish as {} is not in the database", id, name(st));
    return;
  }
  log_->info("task {} {}{}{}", id, name(st), error.empty() ? "" : ": ", error);
  (st == TaskState::Succeeded ? n_succeeded_
   : st == TaskState::Failed  ? n_failed_
                              : n_cancelled_)++;
  log_completion(id, st, error, done, *row);
}

// One JSON line per finished task, as the original service kept them:
// successful_tasks.jsonl and failed_tasks.jsonl (cancelled tasks go to the
// latter with their state). Lines are collected while the iteration's
// transaction is open and appended right after it commits: a line never
// describes a state that is not in the database.
void Broker::log_completion(const std::string& id, TaskState st, const std::string& error,
                            const proto::Done* done, const TaskStore::Finished& rec) {
  if (cfg_.task_log_dir.empty()) return;
  nlohmann::json line = {{"time", now_iso()},
                         {"task_id", id},
                         {"state", name(st)},
                         {"created_at", rec.created_at},
                         {"started_at", rec.started_at},
                         {"attempts", rec.attempts},
                         {"worker", rec.worker},
                         {"output_path", rec.output_path}};
  if (!error.empty()) line["error"] = error;
  if (done && st == TaskState::Succeeded)
    line["summary"] = {{"packets", done->packets}, {"bytes", done->bytes}, {"flows", done->flows}};
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // The request is stored as the api's normalised JSON text: spliced in as it is.
  if (!rec.request.empty()) {
    text.pop_back();
    text += ",\"request\":" + rec.request + "}";
  }
  (st == TaskState::Succeeded ? completed_ok_ : completed_failed_) += text + '\n';
}

void Broker::write_completions() {
  const double now = now_mono();
  for (auto [lines, file, name] :
       {std::tuple{&completed_ok_, &completed_ok_file_, "successful_tasks.jsonl"},
        std::tuple{&completed_failed_, &completed_failed_file_, "failed_tasks.jsonl"}}) {
    if (lines->empty()) continue;
    const std::string path = cfg_.task_log_dir + "/" + name;
    if (!file->fp || now - file->opened > 1.0) {
      file->fp.reset(std::fopen(path.c_str(), "ae"));
      file->opened = now;
    }
    if (!file->fp ||
        std::fwrite(lines->data(), 1, lines->size(), file->fp.get()) != lines->size() ||
        std::fflush(file->fp.get()) != 0) {
      log_->warn("cannot append to {}: {}", path, std::strerror(errno));
      file->fp.reset();
    }
    lines->clear();
  }
}

void Broker::retry_or_fail(Running r, const std::string& why) {
  const std::string& id = r.task.id;
  if (r.cancel_requested) {
    finish(id, TaskState::Cancelled, "", "", "cancelled by user; " + why);
  } else if (r.task.attempts >= cfg_.max_attempts) {
    finish(id, TaskState::Failed, "",
           "gave up after " + std::to_string(r.task.attempts) + " attempts; last: " + why, why);
  } else {
    write_tx();
    store_.requeue(id, r.task.attempts, why, now_iso());
    ++n_requeued_;
    log_->warn("task {} re-queued: {}", id, why);
    enqueue(std::move(r.task));
  }
}

void Broker::lose_worker(const std::string& identity, const std::string& why, bool count_attempts) {
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
    if (!count_attempts) {
      --r.task.attempts;
      r.task.counted_worker.clear();
    }
    retry_or_fail(std::move(r), "worker " + identity + " lost: " + why);
  }
}

void Broker::check_liveness() {
  double now = now_mono();
  double limit = cfg_.heartbeat_s * cfg_.liveness;
  std::vector<std::string> dead;
  for (auto& [id, w] : workers_)
    if (now - w.last_seen > limit) dead.push_back(id);
  for (auto& id : dead) lose_worker(id, "missed heartbeats");
  std::vector<std::string> orphans;
  for (auto& [id, r] : running_)
    if (r.worker.empty() && now > r.orphan_deadline) orphans.push_back(id);
  for (auto& id : orphans) {
    Running r = std::move(running_.at(id));
    running_.erase(id);
    retry_or_fail(std::move(r), "no worker reclaimed it after a broker restart");
  }
}

}  // namespace ipfixweb::broker

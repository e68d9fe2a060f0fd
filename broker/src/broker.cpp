// The broker's shell: sockets, the database transaction, the completion log and logging
// around the Core, which makes every decision (core.hpp). One iteration: read what the
// sockets hold (backend first), hand each message to the core, perform the writes it asks
// for at once and queue its messages; then commit_then_send().
#include "ipfixweb/broker/broker.hpp"

#include <sqlite3.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "completion_log.hpp"
#include "ipfixweb/broker/core.hpp"
#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/grant.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"
#include "retention.hpp"
#include "task_records.hpp"

namespace ipfixweb::broker {

namespace {

constexpr std::size_t kMaxBatch = 1024;  // messages read per socket per iteration
constexpr double kStorageBackoff = 10;   // seconds new tasks are refused after a failed commit

// The database could not persist (full disk, I/O error, file size limit): the shell starts
// over from what is committed.
struct StorageFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A write refused for its values (a constraint, a type) costs that write; anything else
// means the database cannot persist.
bool refused_for_its_values(const db::Error& e) {
  const int primary = e.code() & 0xff;
  return primary == SQLITE_CONSTRAINT || primary == SQLITE_MISMATCH || primary == SQLITE_TOOBIG ||
         primary == SQLITE_RANGE;
}

// Free megabytes of the file system holding `path` (or its nearest existing parent); -1
// when unknown.
double free_mb(std::filesystem::path path) {
  std::error_code ec;
  while (!path.empty() && !std::filesystem::exists(path, ec)) path = path.parent_path();
  if (path.empty()) path = ".";
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return -1;
  return static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize) / (1024.0 * 1024.0);
}

// The wire type of each message the core asks for.
std::string_view wire_type(const proto::Task&) { return proto::type::kTask; }
std::string_view wire_type(const proto::Abort&) { return proto::type::kAbort; }
std::string_view wire_type(const proto::Heartbeat&) { return proto::type::kHeartbeat; }
std::string_view wire_type(const Reregister&) { return proto::type::kReregister; }
std::string_view wire_type(const proto::SubmitReply&) { return proto::type::kSubmitReply; }
std::string_view wire_type(const proto::SubmitBatchReply&) {
  return proto::type::kSubmitBatchReply;
}
std::string_view wire_type(const proto::Pong&) { return proto::type::kPong; }
std::string_view wire_type(const proto::CancelReply&) { return proto::type::kCancelReply; }

std::string task_of(const Write& w) {
  return std::visit([](const auto& x) { return x.task_id; }, w);
}

template <class... Message>
std::string encode(const std::variant<Message...>& message) {
  return std::visit(
      [](const auto& m) {
        if constexpr (std::is_same_v<std::decay_t<decltype(m)>, Reregister>)
          return proto::encode(wire_type(m), proto::Bye{});  // its body: an empty bye
        else
          return proto::encode(wire_type(m), m);
      },
      message);
}

}  // namespace

class Broker::Impl {
 public:
  Impl(Config cfg, zmq::context_t& ctx);
  void run(const std::atomic<bool>& stop);

 private:
  struct Outgoing {
    std::string identity;
    std::string payload;
  };
  using Handler = void (Impl::*)(const std::string& identity, const proto::Envelope& env);
  struct Route {  // one message type and what handles it
    std::string_view type;
    Handler handle;
  };
  static const std::array<Route, 4> kFrontend;
  static const std::array<Route, 6> kBackend;

  void iteration(const std::atomic<bool>& stop);
  curve::Authenticator::Authorized authorized_keys() const;
  // With CURVE: a worker's routing id belongs to the key that registered it while the core
  // knows that worker; a peer with another key cannot speak in its name.
  bool key_holds(const std::string& identity, zmq::message_t& frame);
  void handle_events();          // one iteration's messages, timers and their effects
  void expire_old_tasks();       // retention, a batch when due
  void check_split_leftovers();  // Retention::run_split_checks
  long poll_timeout_ms() const;
  // Reads up to kMaxBatch messages; false when it stopped at the cap with messages possibly
  // left.
  template <std::size_t N>
  bool drain(zmq::socket_t& sock, const char* side, const std::array<Route, N>& routes,
             Handler otherwise);
  void admit();
  void perform();
  void commit_then_send(bool force = false);
  // Free space: below --min-free-mb, or shortly after a failed commit, new tasks are refused.
  void check_storage(double now);
  void check_wal();  // says so when a long reader keeps the WAL from being checkpointed
  // The database refused to persist: forget what was not committed and carry on from what
  // is in the database, as a restart would, without the restart (no crash loop on a full
  // disk).
  void start_over(const std::string& why);

  template <class T>
  std::optional<T> body(const proto::Envelope& env, const char* side);
  // ---- frontend: api clients ----
  void on_submit(const std::string& client, const proto::Envelope& env);
  void on_submit_batch(const std::string& client, const proto::Envelope& env);
  void on_ping(const std::string& client, const proto::Envelope& env);
  void on_cancel(const std::string& client, const proto::Envelope& env);
  void on_unknown_request(const std::string& client, const proto::Envelope& env);
  // ---- backend: workers ----
  void on_ready(const std::string& worker, const proto::Envelope& env);
  void on_seen(const std::string& worker, const proto::Envelope& env);
  void on_progress(const std::string& worker, const proto::Envelope& env);
  void on_done(const std::string& worker, const proto::Envelope& env);
  void on_bye(const std::string& worker, const proto::Envelope& env);

  Config cfg_;
  std::shared_ptr<spdlog::logger> log_;
  TaskStore store_;
  std::unique_ptr<curve::Authenticator> auth_;
  zmq::socket_t front_, back_;
  TaskRecords records_;
  std::unique_ptr<Core> core_;  // replaced when the database refuses to persist
  CompletionLog completions_;
  Retention retention_;
  double next_retention_ = 0;
  Effects fx_;        // what the core asked for in the current event
  Submissions subs_;  // reused every iteration (keeps its capacity)
  std::vector<Outgoing> to_workers_, to_clients_, sending_;
  // The outputs of the parts of split tasks that ended (write::Finish::part_outputs), with the
  // task: removed once the finish is committed.
  std::vector<std::pair<std::string, std::string>> part_removals_;
  std::vector<zmq::pollitem_t> poll_items_;
  double next_heartbeat_ = 0;
  double next_storage_check_ = 0;
  double storage_failed_until_ = 0;  // monotonic: refuse new tasks until then
  long long wal_warned_at_ = 0;      // WAL size of the last warning (0: none outstanding)
  bool must_start_over_ = false;     // a start_over() could not read the database
  std::unordered_map<std::string, std::string> worker_keys_;  // routing id -> CURVE key
};

const std::array<Broker::Impl::Route, 4> Broker::Impl::kFrontend = {{
    {proto::type::kSubmit, &Impl::on_submit},
    {proto::type::kSubmitBatch, &Impl::on_submit_batch},
    {proto::type::kPing, &Impl::on_ping},
    {proto::type::kCancel, &Impl::on_cancel},
}};

const std::array<Broker::Impl::Route, 6> Broker::Impl::kBackend = {{
    {proto::type::kReady, &Impl::on_ready},
    {proto::type::kHeartbeat, &Impl::on_seen},
    {proto::type::kStarted, &Impl::on_seen},  // obsolete: accepted and ignored
    {proto::type::kProgress, &Impl::on_progress},
    {proto::type::kDone, &Impl::on_done},
    {proto::type::kBye, &Impl::on_bye},
}};

namespace {

// What the core needs before it can decide anything safely: the roots specs are checked
// against, and the key of dispatch grants.
Config checked(Config cfg) {
  if (cfg.roots.inputs.empty() || cfg.roots.output.empty())
    throw std::runtime_error(
        "the broker needs the input and output roots (--input-root, "
        "--output-root) to check task specs");
  // A task's output must never replace the database, the logs, the grant key or a capture.
  auto file = [](const std::string& path) {
    const std::filesystem::path p(path);
    return proto::normal_root(p.parent_path().empty() ? "." : p.parent_path().string()) + "/" +
           p.filename().string();
  };
  std::vector<std::string> guarded = {file(cfg.db_path)};
  if (!cfg.grant_key_file.empty()) guarded.push_back(file(cfg.grant_key_file));
  if (!cfg.task_log_dir.empty()) guarded.push_back(proto::normal_root(cfg.task_log_dir));
  if (auto why = paths::overlap_error(cfg.roots.inputs, cfg.roots.output, guarded); !why.empty())
    throw std::runtime_error(why);
  if (cfg.grant_key.empty()) {
    if (cfg.grant_key_file.empty())
      throw std::runtime_error("the broker needs a grant key file (--grant-key)");
    cfg.grant_key = grant::load_or_create_key(cfg.grant_key_file);
  }
  return cfg;
}

}  // namespace

Broker::Broker(Config cfg, zmq::context_t& ctx)
    : impl_(std::make_unique<Impl>(checked(std::move(cfg)), ctx)) {}
Broker::~Broker() = default;
void Broker::run(const std::atomic<bool>& stop) { impl_->run(stop); }

Broker::Impl::Impl(Config cfg, zmq::context_t& ctx)
    : cfg_(std::move(cfg)),
      log_(logger("broker")),
      store_(TaskStore::open_writer(cfg_.db_path, TaskStore::parse_sync(cfg_.synchronous))),
      front_(ctx, zmq::socket_type::router),
      back_(ctx, zmq::socket_type::router),
      records_(store_, log_),
      core_(std::make_unique<Core>(cfg_, records_, log_)),
      completions_(cfg_.task_log_dir, log_),
      retention_(store_, cfg_.roots.output, cfg_.retention_days, log_) {
  for (auto* s : {&front_, &back_}) {
    s->set(zmq::sockopt::router_mandatory, 1);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, 100000);
    s->set(zmq::sockopt::rcvhwm, 100000);
    zmqu::limit_message_size(*s, proto::kMaxFrame);
  }
  // A worker that reconnects with a fresh socket keeps its routing id.
  back_.set(zmq::sockopt::router_handover, 1);
  if (!cfg_.curve_secret_key.empty()) {
    auto keys = curve::load_secret(cfg_.curve_secret_key);
    auth_ = std::make_unique<curve::Authenticator>(ctx, authorized_keys(), log_);
    curve::make_server(front_, keys, "frontend");
    curve::make_server(back_, keys, "backend");
    log_->info("CURVE on: broker public key {}", keys.public_key);
  }
  front_.bind(cfg_.frontend);
  back_.bind(cfg_.backend);
  poll_items_ = {{front_.handle(), 0, ZMQ_POLLIN, 0}, {back_.handle(), 0, ZMQ_POLLIN, 0}};
  core_->recover(store_.unfinished(), now_mono(), fx_);
  perform();
  commit_then_send(true);
  // Parts of split tasks that ended before a crash may have been left (Retention).
  retention_.check_recent_splits(now_mono());
  log_->info("broker listening: frontend {} backend {} db {} (synchronous={}, max_queue={})",
             cfg_.frontend, cfg_.backend, cfg_.db_path, cfg_.synchronous, cfg_.max_queue);
}

// The keys each socket admits. One list for both (--curve-authorized) lets a worker's key
// submit tasks: allowed for older setups, with a warning.
curve::Authenticator::Authorized Broker::Impl::authorized_keys() const {
  const std::string& front = cfg_.curve_authorized_frontend.empty()
                                 ? cfg_.curve_authorized
                                 : cfg_.curve_authorized_frontend;
  const std::string& back =
      cfg_.curve_authorized_backend.empty() ? cfg_.curve_authorized : cfg_.curve_authorized_backend;
  if (front.empty() || back.empty())
    throw std::runtime_error(
        "CURVE needs the public keys of the api (--curve-authorized-frontend) and of the "
        "workers (--curve-authorized-backend)");
  if (front == back)
    log_->warn(
        "CURVE: the api and the workers share one list of keys ({}): a worker's key can "
        "submit and cancel tasks; give each side its own list "
        "(--curve-authorized-frontend, --curve-authorized-backend)",
        front);
  return {{"frontend", curve::load_authorized(front)}, {"backend", curve::load_authorized(back)}};
}

bool Broker::Impl::key_holds(const std::string& identity, zmq::message_t& frame) {
  std::string key;
  try {
    if (const char* k = frame.gets("User-Id")) key = k;
  } catch (const zmq::error_t&) {
  }
  auto [it, added] = worker_keys_.try_emplace(identity, key);
  if (added || it->second == key) return true;
  if (!core_->knows(identity)) {  // the worker it belonged to is gone: the id is free
    it->second = key;
    return true;
  }
  log_->warn("backend: dropped a message for worker {} from another CURVE key ({})", identity, key);
  return false;
}

void Broker::Impl::run(const std::atomic<bool>& stop) {
  next_heartbeat_ = now_mono() + cfg_.heartbeat_s;
  while (!stop.load()) iteration(stop);
  commit_then_send(true);
  core_->set_draining(true);
  // Tell workers we are going away is not needed: they detect silence and
  // reconnect; running tasks stay 'running' and are reconciled on restart.
  log_->info("broker stopping: {} queued, {} running", core_->queued(), core_->running());
}

void Broker::Impl::iteration(const std::atomic<bool>& stop) {
  zmqu::poll(poll_items_, poll_timeout_ms());
  if (stop.load()) return;
  try {
    if (must_start_over_ && now_mono() >= storage_failed_until_)
      start_over("the database was not readable");
    check_storage(now_mono());
    handle_events();
  } catch (const StorageFailure& e) {
    start_over(e.what());
  }
}

void Broker::Impl::handle_events() {
  subs_.clear();
  // Backend first: finished tasks free credit for this iteration's dispatch.
  const bool backend_drained = drain(back_, "backend", kBackend, &Impl::on_seen);
  drain(front_, "frontend", kFrontend, &Impl::on_unknown_request);
  if (!subs_.empty()) admit();
  // With backend messages still unread, a heartbeat may be among them: do not
  // declare anyone dead on a backlog.
  if (backend_drained) core_->expire(now_mono(), fx_);
  core_->dispatch(now_mono(), fx_);
  expire_old_tasks();
  check_split_leftovers();
  if (now_mono() >= next_heartbeat_) {
    core_->heartbeat(fx_);
    next_heartbeat_ = now_mono() + cfg_.heartbeat_s;
  }
  perform();
  commit_then_send();
}

long Broker::Impl::poll_timeout_ms() const {
  const double wait = std::max(0.0, next_heartbeat_ - now_mono());
  long wait_ms = std::min<long>(static_cast<long>(wait * 1000) + 1, 100);
  if (records_.open()) {  // an open transaction: wake up in time to commit it
    const double due = std::max(0.0, records_.opened_at() + cfg_.commit_interval_s - now_mono());
    wait_ms = std::min<long>(wait_ms, static_cast<long>(std::ceil(due * 1000)));
  }
  return wait_ms;
}

// Messages of [identity, payload] frames go to the route of their type (`otherwise` when
// none has it); anything else is logged and dropped. The effects of each message are
// performed before the next is handled.
template <std::size_t N>
bool Broker::Impl::drain(zmq::socket_t& sock, const char* side, const std::array<Route, N>& routes,
                         Handler otherwise) {
  std::string err;
  for (std::size_t n = 0; n < kMaxBatch; ++n) {
    auto parts = zmqu::recv_multipart(sock);
    if (!parts) return true;
    if (parts->size() != 2) {
      log_->warn("{}: dropped message with {} frames", side, parts->size());
      continue;
    }
    const std::string identity = (*parts)[0].to_string();
    if (&sock == &back_ && auth_ && !key_holds(identity, (*parts)[1])) continue;
    auto env = proto::decode((*parts)[1].data(), (*parts)[1].size(), &err);
    if (!env) {
      log_->warn("{}: dropped malformed message: {}", side, err);
      continue;
    }
    auto route = std::find_if(routes.begin(), routes.end(),
                              [&](const Route& r) { return r.type == env->type; });
    (this->*(route != routes.end() ? route->handle : otherwise))(identity, *env);
    perform();
  }
  return false;
}

// The submissions read in this iteration, in one transaction (opened even when all are
// refused: their replies wait for its commit like any other).
void Broker::Impl::admit() {
  records_.begin();
  records_.set_submission_time(now_iso());
  core_->admit(subs_, fx_);
  perform();
}

// The writes of the core's last event, at once and in order (the core's next event may read
// them); its messages wait in the outboxes for commit_then_send().
void Broker::Impl::perform() {
  for (const auto& w : fx_.writes) {
    std::optional<TaskStore::Finished> row;
    try {
      row = records_.perform(w);
    } catch (const db::Error& e) {
      // One message's write that the database refuses for its values (something a peer made
      // up that the checks missed) costs that write, not the broker.
      if (!refused_for_its_values(e)) throw StorageFailure(e.what());
      log_->error("a write for task {} failed and was dropped: {}", task_of(w), e.what());
      continue;
    }
    const auto* f = std::get_if<write::Finish>(&w);
    if (!f) continue;
    if (!row) {
      log_->warn("task {} to finish as {} is not in the database", f->task_id, name(f->state));
      continue;
    }
    log_->info("task {} {}{}{}", f->task_id, name(f->state), f->error.empty() ? "" : ": ",
               f->error);
    completions_.add(*f, *row);
    if (!f->unrecorded_output.empty())
      retention_.remove_unrecorded_output(f->task_id, f->unrecorded_output,
                                          f->unrecorded_partition);
    for (const auto& part : f->part_outputs) part_removals_.emplace_back(f->task_id, part);
  }
  // The split task ended in an earlier commit: nothing waits for one here.
  for (const auto& late : fx_.late_part_outputs)
    retention_.remove_late_part_output(late.task_id, late.path, late.file);
  for (const auto& m : fx_.to_workers) to_workers_.push_back({m.to, encode(m.message)});
  for (const auto& m : fx_.to_clients) to_clients_.push_back({m.to, encode(m.message)});
  fx_.clear();
}

// Group commit: the one place that decides what is committed before what is sent.
// Messages to workers (tasks, aborts, heartbeats) go out at once; the changes they stand
// for (a task now running, a result recorded) may wait up to commit_interval_s in the open
// transaction for more to commit together, which is what lets a busy broker spend one disk
// flush on many tasks. That acknowledges nothing to anyone: a broker that dies before the
// commit restarts with such a task queued or running as it was recorded, runs it again and
// ignores reports of the unrecorded dispatch (at least once; the output is written under
// the same name, and the task finishes once). Replies to clients (a 202 above all) and
// completion log lines go out only after the commit that holds what they report.
void Broker::Impl::commit_then_send(bool force) {
  // Committing now (a reply waits, or the interval is up): commit first, then send
  // everything. Otherwise only worker messages are waiting and go out ahead of the commit.
  // Never a task whose INSERT is not committed yet: its submission's reply forces the commit.
  if (records_.open() && (force || !to_clients_.empty() ||
                          now_mono() - records_.opened_at() >= cfg_.commit_interval_s)) {
    // A broker that cannot persist must not acknowledge anything: on failure nothing below
    // is sent, and the broker starts over from the database (start_over).
    try {
      records_.commit();
    } catch (const db::Error& e) {
      throw StorageFailure(std::string("commit failed: ") + e.what());
    }
    completions_.write(now_mono());
    // Written after the task they belong to was made, so no other task's (Retention).
    const std::string* last = nullptr;
    for (const auto& [task, output] : part_removals_) {
      retention_.remove_unrecorded_output(task, output, /*partition=*/true, /*quiet=*/true);
      // Checked again later: a run given up may still publish its part (Retention).
      if (!last || *last != task) retention_.check_split_later(task, now_mono());
      last = &task;
    }
    part_removals_.clear();
  }
  // A worker that cannot be reached is lost; what that writes goes into a new transaction,
  // committed when due.
  sending_.swap(to_workers_);
  for (auto& o : sending_) {
    if (zmqu::send_to(back_, o.identity, o.payload)) continue;
    log_->warn("cannot reach worker {}: treating it as gone", o.identity);
    core_->unreachable(o.identity, fx_);
    perform();
  }
  sending_.clear();
  for (auto& o : to_clients_)
    if (!zmqu::send_to(front_, o.identity, o.payload))
      log_->debug("client {} went away before its reply", o.identity.size());
  to_clients_.clear();
}

// Every tenth of the retention period (1 s to 60 s), or again at once while batches are full.
void Broker::Impl::expire_old_tasks() {
  if (!retention_.on() || now_mono() < next_retention_) return;
  records_.begin();
  Retention::Pass pass;
  try {
    pass = retention_.run(now_unix());
  } catch (const db::Error& e) {
    throw StorageFailure(std::string("retention: ") + e.what());
  }
  const double period = std::clamp(cfg_.retention_days * 86400 / 10, 1.0, 60.0);
  next_retention_ = now_mono() + (pass.more ? 0.0 : period);
}

void Broker::Impl::check_split_leftovers() {
  try {
    retention_.run_split_checks(now_mono());
  } catch (const db::Error& e) {
    throw StorageFailure(std::string("split clean-up: ") + e.what());
  }
}

void Broker::Impl::check_storage(double now) {
  if (now < next_storage_check_) return;
  next_storage_check_ = now + 1;
  std::string why;
  if (now < storage_failed_until_) {
    why = "the database could not persist a moment ago (full disk?); try again later";
  } else {
    for (const auto& dir :
         {std::filesystem::path(cfg_.db_path).parent_path().string(), cfg_.roots.output}) {
      const double mb = free_mb(dir.empty() ? "." : dir);
      if (mb >= 0 && mb < cfg_.min_free_mb) {
        why = "not enough free disk space: " + std::to_string(static_cast<long>(mb)) +
              " MiB free under " + dir + ", " +
              std::to_string(static_cast<long>(cfg_.min_free_mb)) + " MiB needed";
        break;
      }
    }
  }
  core_->set_storage_short(why);
  check_wal();
}

// A reader that holds a transaction open (a `sqlite3` shell left in BEGIN, say) stops nothing,
// but checkpoints cannot pass its snapshot, so the WAL grows until it ends; then the next
// complete checkpoint starts the WAL over and SQLite cuts the file back to
// TaskStore::kWalSizeLimit. Said once per doubling, and once when it is back.
void Broker::Impl::check_wal() {
  std::error_code ec;
  const auto size = std::filesystem::file_size(cfg_.db_path + "-wal", ec);
  if (ec) return;
  const auto bytes = static_cast<long long>(size);
  constexpr long long kWarnAt = 4 * TaskStore::kWalSizeLimit;
  if (bytes >= kWarnAt && bytes >= 2 * wal_warned_at_) {
    log_->warn(
        "the database's WAL is {} MiB: a reader holds a transaction open, so checkpoints cannot "
        "finish (nothing waits for it; the WAL shrinks to {} MiB once it ends)",
        bytes >> 20, TaskStore::kWalSizeLimit >> 20);
    wal_warned_at_ = bytes;
  } else if (wal_warned_at_ && bytes <= TaskStore::kWalSizeLimit) {
    log_->info("the database's WAL is back to {} MiB", bytes >> 20);
    wal_warned_at_ = 0;
  }
}

void Broker::Impl::start_over(const std::string& why) {
  log_->critical(
      "the database refused to persist ({}): dropping what was not committed and "
      "carrying on from the database; new tasks are refused for {} s",
      why, kStorageBackoff);
  records_.abandon();
  completions_.discard();
  fx_.clear();
  subs_.clear();
  to_workers_.clear();     // they stand for changes that were rolled back
  to_clients_.clear();     // their submissions were not recorded: the api answers 503
  part_removals_.clear();  // their tasks did not end
  storage_failed_until_ = now_mono() + kStorageBackoff;
  next_storage_check_ = 0;
  must_start_over_ = false;
  core_ = std::make_unique<Core>(cfg_, records_, log_);
  check_storage(now_mono());
  try {
    core_->recover(store_.unfinished(), now_mono(), fx_);
    perform();
  } catch (const std::exception& e) {
    log_->error("cannot read the database to start over ({}); trying again", e.what());
    fx_.clear();
    records_.abandon();
    must_start_over_ = true;
  }
}

// ---- frontend ---------------------------------------------------------------------------

// The body as a T; nullopt (logged) when it has the wrong shape.
template <class T>
std::optional<T> Broker::Impl::body(const proto::Envelope& env, const char* side) {
  std::string err;
  auto out = env.as<T>(&err);
  if (!out) log_->warn("{}: {}", side, err);
  return out;
}

void Broker::Impl::on_submit(const std::string& client, const proto::Envelope& env) {
  if (auto s = body<proto::Submit>(env, "frontend")) subs_.add(client, std::move(*s));
}

void Broker::Impl::on_submit_batch(const std::string& client, const proto::Envelope& env) {
  auto b = body<proto::SubmitBatch>(env, "frontend");
  if (!b) return;
  if (b->submits.size() > proto::kMaxSubmitBatch) {
    log_->warn("frontend: dropped a batch of {} submissions (at most {})", b->submits.size(),
               proto::kMaxSubmitBatch);
    return;
  }
  subs_.add_batch(client, std::move(*b));
}

void Broker::Impl::on_ping(const std::string& client, const proto::Envelope& env) {
  if (auto p = env.as<proto::Ping>()) core_->ping(client, *p, now_mono(), fx_);
}

void Broker::Impl::on_cancel(const std::string& client, const proto::Envelope& env) {
  if (auto c = env.as<proto::Cancel>()) core_->cancel(client, *c, fx_);
}

void Broker::Impl::on_unknown_request(const std::string&, const proto::Envelope& env) {
  log_->warn("frontend: dropped message of unknown type '{}'", env.type);
}

// ---- backend ----------------------------------------------------------------------------

void Broker::Impl::on_ready(const std::string& worker, const proto::Envelope& env) {
  if (auto r = body<proto::Ready>(env, "backend")) core_->ready(worker, *r, now_mono(), fx_);
}

// Heartbeats (and messages of any unknown type, which are logged) only show that the worker
// is alive; an unknown worker is asked to register again. A message with a malformed body
// counts the same way.
void Broker::Impl::on_seen(const std::string& worker, const proto::Envelope& env) {
  if (!core_->seen(worker, now_mono(), fx_)) return;
  if (env.type != proto::type::kHeartbeat && env.type != proto::type::kStarted)
    log_->warn("backend: dropped message of unknown type '{}' from {}", env.type, worker);
}

void Broker::Impl::on_progress(const std::string& worker, const proto::Envelope& env) {
  if (auto p = env.as<proto::ProgressMsg>())
    core_->progress(worker, *p, now_mono(), fx_);
  else
    core_->seen(worker, now_mono(), fx_);
}

void Broker::Impl::on_done(const std::string& worker, const proto::Envelope& env) {
  std::string err;
  if (auto d = env.as<proto::Done>(&err)) {
    core_->done(worker, std::move(*d), now_mono(), fx_);
  } else if (core_->seen(worker, now_mono(), fx_)) {
    log_->warn("backend: {}", err);
  }
}

void Broker::Impl::on_bye(const std::string& worker, const proto::Envelope&) {
  core_->bye(worker, now_mono(), fx_);
}

}  // namespace ipfixweb::broker

#include "ipfixweb/worker/worker.hpp"

#include <algorithm>
#include <iterator>
#include <thread>
#include <utility>
#include <vector>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"
#include "ipfixweb/worker/runner_pool.hpp"
#include "ipfixweb/worker/session.hpp"
#include "runner.hpp"

namespace ipfixweb::worker {

namespace {

Config with_defaults(Config cfg) {
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  if (cfg.slots == 0) cfg.slots = cpus;
  if (cfg.max_task_threads == 0) cfg.max_task_threads = cpus;
  return cfg;
}

// The roots, opened once (runners inherit the descriptors). Roots that overlap are refused: a
// task could overwrite captures, or read other tasks' outputs as captures.
confine::Roots open_roots(const Config& cfg) {
  confine::Roots roots(cfg.input_roots, cfg.output_root);
  std::vector<std::string> inputs;
  for (const auto& r : roots.inputs()) inputs.push_back(r.path());
  if (auto why = paths::overlap_error(inputs, roots.output().path()); !why.empty())
    throw std::runtime_error("roots overlap: " + why);
  return roots;
}

}  // namespace

struct Worker::Impl {
  Impl(Config config, zmq::context_t& ctx);
  void run(const std::atomic<bool>& stop);

  // The broker's messages, one handler each (the session handles its own).
  void dispatch(const proto::Envelope& msg, std::string_view bytes);
  void on_task(const proto::Envelope& msg, std::string_view bytes);
  void on_abort(const proto::Envelope& msg, std::string_view bytes);

  Registration registration() const;
  void start_draining();
  void poll_once();

  Config cfg;
  std::shared_ptr<spdlog::logger> log = logger("worker");
  confine::Roots roots;   // where tasks may read and write
  engine::Engine engine;  // nDPI set up once; runners inherit it
  bool draining = false;
  double drain_deadline = 0;
  RunnerPool pool;
  Session session;  // last: it registers at once, with what the pool runs
};

Worker::Impl::Impl(Config config, zmq::context_t& ctx)
    : cfg(with_defaults(std::move(config))),
      roots(open_roots(cfg)),
      pool(cfg, engine, roots,
           {[this](std::string done) { session.send_result(std::move(done)); },
            [this](const std::string& progress) {
              session.send(proto::type::kProgress, progress);
            }}),
      session(cfg, ctx, [this] { return registration(); }) {
  std::string inputs;
  for (const auto& r : roots.inputs()) inputs += (inputs.empty() ? "" : ":") + r.path();
  log->info("worker {} connecting to {} with {} slots; input roots {}, output root {}{}",
            session.worker_id(), cfg.broker, cfg.slots, inputs, roots.output().path(),
            confine::using_openat2() ? "" : " (files opened by component walk, without openat2)");
  if (cfg.memory_limit_mb && !detail::memory_limit_supported())
    log->warn(
        "--memory-limit-mb {} not applied: built with AddressSanitizer, which needs far "
        "more address space than any limit",
        cfg.memory_limit_mb);
}

Registration Worker::Impl::registration() const {
  Registration reg;
  reg.slots = draining ? 0 : cfg.slots;
  for (auto& held : pool.running()) {
    reg.running.push_back(std::move(held.task_id));
    reg.grants.push_back(std::move(held.grant));
  }
  return reg;
}

void Worker::Impl::dispatch(const proto::Envelope& msg, std::string_view bytes) {
  using Handler = void (Impl::*)(const proto::Envelope&, std::string_view);
  static constexpr std::pair<std::string_view, Handler> kHandlers[] = {
      {proto::type::kTask, &Impl::on_task},
      {proto::type::kAbort, &Impl::on_abort},
  };
  const auto h = std::find_if(std::begin(kHandlers), std::end(kHandlers),
                              [&](const auto& e) { return e.first == msg.type; });
  if (h == std::end(kHandlers)) {
    log->warn("dropped message of unknown type '{}'", msg.type);
    return;
  }
  (this->*h->second)(msg, bytes);
}

void Worker::Impl::on_task(const proto::Envelope& msg, std::string_view bytes) {
  std::string err;
  auto t = msg.as<proto::Task>(&err);
  if (!t) {
    log->warn("{}", err);
    return;
  }
  if (t->connection != 0 && t->connection != session.connection()) {
    // Sent before the broker heard this connection's ready: it re-queues the task when it does
    // (docs/protocol.md, "Re-registration"), so running it here would run it twice.
    log->info("task {} was sent to our earlier connection {}; left to the broker", t->task_id,
              t->connection);
    return;
  }
  if (draining) {
    proto::Done d;
    d.task_id = t->task_id;
    d.state = Outcome::Aborted;
    d.error = "worker is shutting down";
    d.grant = t->grant;
    session.send(proto::type::kDone, proto::encode(proto::type::kDone, d));
    return;
  }
  if (auto pid = pool.runner_of(t->task_id)) {
    // Never run one task twice at once (two runners would race for one output); the
    // running one reports for it.
    log->warn("task {} is already running in runner {}; duplicate ignored", t->task_id, *pid);
    return;
  }
  // No `started` message: the broker recorded the task as running when it sent it, and
  // ignores `started` (older workers send it); one message less per task.
  if (pool.start(*t, bytes)) return;
  proto::Done d;
  d.task_id = t->task_id;
  d.error = "could not start a task runner (see the worker's log)";
  d.retryable = true;
  d.grant = t->grant;
  session.send(proto::type::kDone, proto::encode(proto::type::kDone, d));
}

void Worker::Impl::on_abort(const proto::Envelope& msg, std::string_view) {
  if (auto a = msg.as<proto::Abort>()) pool.kill(a->task_id, KillReason::Cancelled);
}

void Worker::Impl::start_draining() {
  draining = true;
  drain_deadline = now_mono() + cfg.grace_s;
  log->info("draining: {} tasks running, grace {} s", pool.busy(), cfg.grace_s);
  session.register_now();  // zero slots: the broker sends nothing more
}

void Worker::Impl::poll_once() {
  std::vector<zmq::pollitem_t> items{session.poll_item()};
  pool.add_poll_items(items);
  const double wait = std::clamp(session.next_heartbeat() - now_mono(), 0.0, 0.1);
  zmqu::poll(items, static_cast<long>(wait * 1000) + 1);
  session.receive(
      [this](const proto::Envelope& msg, std::string_view bytes) { dispatch(msg, bytes); });
  pool.read_polled(items);
  const double now = now_mono();
  pool.kill_overdue(now);
  session.tick(now);
}

void Worker::Impl::run(const std::atomic<bool>& stop) {
  while (true) {
    if (stop.load() && !draining) start_draining();
    if (draining && pool.busy() == 0) break;
    if (draining && now_mono() >= drain_deadline) pool.kill_all(KillReason::Shutdown);
    poll_once();
  }
  pool.close();  // idle runners exit when their channel closes
  session.bye();
  log->info("worker stopped");
}

Worker::Worker(Config cfg, zmq::context_t& ctx)
    : impl_(std::make_unique<Impl>(std::move(cfg), ctx)) {}

Worker::~Worker() = default;

void Worker::run(const std::atomic<bool>& stop) { impl_->run(stop); }

}  // namespace ipfixweb::worker

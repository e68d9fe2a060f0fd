#include "ipfixweb/worker/worker.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"
#include "runner.hpp"

namespace ipfixweb::worker {

namespace {

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

Worker::Worker(Config cfg, zmq::context_t& ctx)
    : cfg_(std::move(cfg)), log_(logger("worker")), ctx_(ctx) {
  if (cfg_.slots == 0) cfg_.slots = std::max(1u, std::thread::hardware_concurrency());
  incarnation_ = new_uuid();
  if (cfg_.worker_id.empty())
    cfg_.worker_id = hostname() + "-" + std::to_string(::getpid()) + "-" + new_uuid().substr(0, 4);
  if (!cfg_.curve_server_key.empty() || !cfg_.curve_secret_key.empty()) {
    if (cfg_.curve_server_key.empty() || cfg_.curve_secret_key.empty())
      throw std::runtime_error("CURVE needs both --curve-server-key and --curve-secret-key");
    curve_keys_ = curve::load_secret(cfg_.curve_secret_key);
    curve_server_ = curve::load_public(cfg_.curve_server_key);
  }
  connect();
  log_->info("worker {} connecting to {} with {} slots", cfg_.worker_id, cfg_.broker, cfg_.slots);
}

void Worker::connect() {
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  sock_->set(zmq::sockopt::routing_id, cfg_.worker_id);
  sock_->set(zmq::sockopt::linger, 0);
  if (curve_keys_) curve::make_client(*sock_, *curve_keys_, curve_server_);
  sock_->connect(cfg_.broker);
  last_heard_ = now_mono();
  next_heartbeat_ = last_heard_ + cfg_.heartbeat_s;
  send_ready();
}

void Worker::send(std::string_view type, const std::string& payload) {
  (void)type;
  if (!zmqu::send_frame(*sock_, payload))
    log_->debug("could not queue {} for the broker", std::string(type));
}

void Worker::send_ready() {
  proto::Ready r;
  r.worker_id = cfg_.worker_id;
  r.slots = draining_ ? 0 : cfg_.slots;
  for (auto& [pid, runner] : runners_)
    if (runner.job) r.running.push_back(runner.job->task_id);
  r.host = hostname();
  r.pid = ::getpid();
  r.incarnation = incarnation_;
  send(proto::type::kReady, proto::encode(proto::type::kReady, r));
  for (auto& [when, payload] : recent_done_) send(proto::type::kDone, payload);
}

Worker::~Worker() {
  for (auto& [pid, r] : runners_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    if (r.fd >= 0) ::close(r.fd);
  }
}

std::size_t Worker::busy() const {
  std::size_t n = 0;
  for (auto& [pid, r] : runners_) n += r.job.has_value();
  return n;
}

void Worker::run(const std::atomic<bool>& stop) {
  double drain_deadline = 0;
  while (true) {
    if (stop.load() && !draining_) {
      draining_ = true;
      drain_deadline = now_mono() + cfg_.grace_s;
      log_->info("draining: {} tasks running, grace {} s", busy(), cfg_.grace_s);
      send_ready();  // zero slots: the broker sends nothing more
    }
    if (draining_ && busy() == 0) break;
    if (draining_ && now_mono() >= drain_deadline) {
      for (auto& [pid, r] : runners_)
        if (r.job && r.job->kill_reason.empty()) kill_runner(r, "shutdown");
    }

    std::vector<zmq::pollitem_t> items;
    std::vector<pid_t> polled;  // polled[i] owns items[i + 1]
    items.push_back({sock_->handle(), 0, ZMQ_POLLIN, 0});
    for (auto& [pid, r] : runners_) {
      if (r.fd < 0) continue;
      items.push_back({nullptr, r.fd, ZMQ_POLLIN, 0});
      polled.push_back(pid);
    }
    double now = now_mono();
    double wait = std::clamp(next_heartbeat_ - now, 0.0, 0.1);
    zmqu::poll(items, static_cast<long>(wait * 1000) + 1);

    while (auto parts = zmqu::recv_multipart(*sock_)) {
      if (parts->size() != 1) continue;
      std::string err;
      auto env = proto::decode((*parts)[0].data(), (*parts)[0].size(), &err);
      last_heard_ = now_mono();
      reconnect_delay_ = 1.0;
      if (!env) {
        log_->warn("dropped malformed message from broker: {}", err);
        continue;
      }
      handle(*env,
             std::string_view(static_cast<const char*>((*parts)[0].data()), (*parts)[0].size()));
    }
    // (Handling the broker's messages may have started or replaced runners since the poll.)
    for (std::size_t i = 0; i < polled.size(); ++i)
      if (items[i + 1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) read_runner(polled[i]);
    now = now_mono();
    for (auto& [pid, r] : runners_)
      if (r.job && r.job->deadline > 0 && now > r.job->deadline && r.job->kill_reason.empty())
        kill_runner(r, "timeout");

    if (now >= next_heartbeat_) {
      send(proto::type::kHeartbeat,
           proto::encode(proto::type::kHeartbeat, proto::Heartbeat{++hb_seq_}));
      next_heartbeat_ = now + cfg_.heartbeat_s;
    }
    if (now - last_heard_ > cfg_.heartbeat_s * cfg_.liveness) {
      // Broker silent: fresh socket, exponential backoff (1 s .. 32 s).
      log_->warn("broker silent for {:.1f} s; reconnecting (next wait {:.0f} s)", now - last_heard_,
                 reconnect_delay_);
      connect();
      last_heard_ = now_mono() + reconnect_delay_ - cfg_.heartbeat_s * cfg_.liveness;
      reconnect_delay_ = std::min(reconnect_delay_ * 2, 32.0);
    }
  }
  // Idle runners exit when their channel closes.
  for (auto& [pid, r] : runners_) {
    ::close(r.fd);
    r.fd = -1;
  }
  for (auto& [pid, r] : runners_) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  runners_.clear();
  send(proto::type::kBye, proto::encode(proto::type::kBye, proto::Bye{"shutdown"}));
  // Give the goodbye a moment to leave; it is a courtesy (the broker also
  // notices missed heartbeats), so a broker that is gone too costs at most
  // this much of the shutdown.
  sock_->set(zmq::sockopt::linger, 50);
  log_->info("worker stopped");
}

void Worker::handle(const proto::Envelope& env, std::string_view bytes) {
  std::string err;
  if (env.type == proto::type::kHeartbeat) return;
  if (env.type == proto::type::kReregister) {
    log_->info("broker asked us to register again");
    send_ready();
  } else if (env.type == proto::type::kTask) {
    auto t = env.as<proto::Task>(&err);
    if (!t) {
      log_->warn("{}", err);
      return;
    }
    if (draining_) {
      proto::Done d{t->task_id, Outcome::Aborted, "", "worker is shutting down", false};
      send(proto::type::kDone, proto::encode(proto::type::kDone, d));
      return;
    }
    for (auto& [pid, r] : runners_) {
      if (r.job && r.job->task_id == t->task_id) {
        // Never run one task twice at once (two runners would race for one
        // output); the running one reports for it.
        log_->warn("task {} is already running in runner {}; duplicate ignored", t->task_id, pid);
        return;
      }
    }
    start_task(*t, bytes);
  } else if (env.type == proto::type::kAbort) {
    auto a = env.as<proto::Abort>(&err);
    if (!a) return;
    for (auto& [pid, r] : runners_)
      if (r.job && r.job->task_id == a->task_id && r.job->kill_reason.empty())
        kill_runner(r, "cancelled");
  } else {
    log_->warn("dropped message of unknown type '{}'", env.type);
  }
}

Worker::Runner* Worker::idle_runner() {
  for (auto& [pid, r] : runners_) {
    // A runner that has served its quota exits after its last result: handing it another
    // task would race its exit (and cost the task an attempt).
    const bool retiring = cfg_.runner_max_tasks && r.tasks >= cfg_.runner_max_tasks;
    if (!r.job && !r.killed && !retiring && r.fd >= 0) return &r;
  }
  return nullptr;
}

Worker::Runner* Worker::spawn_runner() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    log_->error("socketpair: {}", std::strerror(errno));
    return nullptr;
  }
  spdlog::default_logger()->flush();
  log_->flush();
  pid_t pid = ::fork();
  if (pid < 0) {
    log_->error("fork: {}", std::strerror(errno));
    ::close(fds[0]);
    ::close(fds[1]);
    return nullptr;
  }
  if (pid == 0) {
    ::close(fds[0]);
    detail::RunnerLimits limits{cfg_.memory_limit_mb, cfg_.cpu_limit_s, cfg_.runner_max_tasks};
    detail::runner_main(engine_, fds[1], limits);  // never returns
  }
  ::close(fds[1]);
  Runner r;
  r.pid = pid;
  r.fd = fds[0];
  log_->debug("runner {} started", pid);
  return &runners_.emplace(pid, std::move(r)).first->second;
}

void Worker::start_task(const proto::Task& t, std::string_view bytes) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    Runner* r = idle_runner();
    if (!r) r = spawn_runner();
    if (!r) break;
    if (!channel::write_frame(r->fd, channel::Kind::Task, bytes)) {
      // The idle runner died (e.g. killed from outside): replace it once.
      const pid_t gone = r->pid;
      runner_gone(gone);
      continue;
    }
    Job job;
    job.task_id = t.task_id;
    job.spec = t.spec;
    job.started = now_mono();
    job.deadline = t.timeout > 0 ? job.started + t.timeout : 0;
    r->job = std::move(job);
    ++r->tasks;
    log_->info("task {} started in runner {} (attempt {})", t.task_id, r->pid, t.attempt);
    // No `started` message: the broker recorded the task as running when it sent it, and
    // ignores `started` (older workers send it); one message less per task.
    return;
  }
  proto::Done d{t.task_id, Outcome::Failed, "",
                "could not start a task runner (see the worker's log)", true};
  send(proto::type::kDone, proto::encode(proto::type::kDone, d));
}

void Worker::read_runner(pid_t pid) {
  auto it = runners_.find(pid);
  if (it == runners_.end()) return;
  Runner& r = it->second;
  char buf[65536];
  bool eof = false;
  while (true) {
    ssize_t n = ::recv(r.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      r.in.append(buf, static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < sizeof buf) break;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    eof = true;  // EOF or error: the runner is gone
    break;
  }
  std::string latest_progress;  // a `progress` message, sent on as it is
  while (auto frame = r.in.next()) {
    if (frame->kind == channel::Kind::Progress) {
      latest_progress = std::move(frame->payload);
    } else if (frame->kind == channel::Kind::Done && r.job) {
      latest_progress.clear();
      finish_job(r, frame->payload);
    }
  }
  if (!latest_progress.empty() && r.job &&
      now_mono() - r.job->last_progress_sent >= channel::kProgressInterval) {
    send(proto::type::kProgress, latest_progress);
    r.job->last_progress_sent = now_mono();
  }
  if (eof) runner_gone(pid);
}

void Worker::finish_job(Runner& r, const std::string& result) {
  Job job = std::move(*r.job);
  r.job.reset();
  std::string err;
  std::optional<proto::Done> d;
  if (auto env = proto::decode(result.data(), result.size(), &err))
    if (env->type == proto::type::kDone) d = env->as<proto::Done>(&err);
  if (!d || d->task_id != job.task_id) {
    proto::Done bad{job.task_id, Outcome::Failed, "", "unreadable result from task runner: " + err,
                    false};
    report(job, std::move(bad));
    return;
  }
  // A result that raced a kill is still the truth: the task did finish.
  report(job, std::move(*d), result);
}

void Worker::runner_gone(pid_t pid) {
  auto it = runners_.find(pid);
  if (it == runners_.end()) return;
  Runner r = std::move(it->second);
  runners_.erase(it);
  if (r.fd >= 0) ::close(r.fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!r.job) {
    log_->debug("runner {} exited", pid);
    return;
  }
  const Job& job = *r.job;
  proto::Done d;
  d.task_id = job.task_id;
  const double took = now_mono() - job.started;
  if (job.kill_reason == "cancelled") {
    d.state = Outcome::Cancelled;
    d.error = "cancelled";
  } else if (job.kill_reason == "timeout") {
    d.state = Outcome::Failed;
    d.error = "timed out after " + std::to_string(static_cast<long>(took)) + " s";
  } else if (!job.kill_reason.empty()) {
    d.state = Outcome::Aborted;
    d.error = "worker shutting down";
  } else if (WIFSIGNALED(status)) {
    d.state = Outcome::Failed;
    d.error = "crashed with " + signal_name(WTERMSIG(status));
    d.retryable = true;  // the broker retries up to its max attempts
  } else {
    d.state = Outcome::Failed;
    d.error = "task runner exited with status " + std::to_string(WEXITSTATUS(status)) +
              " without a result";
    d.retryable = true;
  }
  // The engine removes its temporary file itself, unless its process was killed.
  std::error_code ec;
  std::filesystem::remove(engine::temporary_output_name(job.spec.output, pid), ec);
  report(job, std::move(d));
}

void Worker::report(const Job& job, const proto::Done& d, std::string payload) {
  log_->info("task {} {} in {:.3f} s{}{}", job.task_id, d.state, now_mono() - job.started,
             d.error.empty() ? "" : ": ", d.error);
  if (payload.empty()) payload = proto::encode(proto::type::kDone, d);
  send(proto::type::kDone, payload);
  double now = now_mono();
  recent_done_.emplace_back(now, std::move(payload));
  const double keep = cfg_.heartbeat_s * cfg_.liveness * 4 + 5;
  while (!recent_done_.empty() &&
         (recent_done_.front().first < now - keep || recent_done_.size() > 1024))
    recent_done_.pop_front();
}

void Worker::kill_runner(Runner& r, const std::string& reason) {
  if (r.job) r.job->kill_reason = reason;
  r.killed = true;
  ::kill(r.pid, SIGKILL);
  log_->info("task {}: killing runner {} ({})", r.job ? r.job->task_id : "-", r.pid, reason);
}

}  // namespace ipfixweb::worker

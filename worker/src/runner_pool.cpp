#include "ipfixweb/worker/runner_pool.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"
#include "runner.hpp"

namespace ipfixweb::worker {

namespace {

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

void wait_for(pid_t pid, int* status = nullptr) {
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

proto::Done result_of_lost_runner(const std::string& task_id, std::optional<KillReason> killed,
                                  int wait_status, double ran_s) {
  proto::Done d;
  d.task_id = task_id;
  d.state = Outcome::Failed;
  if (killed == KillReason::Cancelled) {
    d.state = Outcome::Cancelled;
    d.error = "cancelled";
  } else if (killed == KillReason::Timeout) {
    d.error = "timed out after " + std::to_string(static_cast<long>(ran_s)) + " s";
  } else if (killed == KillReason::Shutdown) {
    d.state = Outcome::Aborted;
    d.error = "worker shutting down";
  } else if (WIFSIGNALED(wait_status)) {
    d.error = "crashed with " + signal_name(WTERMSIG(wait_status));
    d.retryable = true;  // the broker retries up to its max attempts
  } else {
    d.error = "task runner exited with status " + std::to_string(WEXITSTATUS(wait_status)) +
              " without a result";
    d.retryable = true;
  }
  return d;
}

bool is_out_of_space(std::string_view error) {
  for (std::string_view words :
       {std::string_view("No space left on device"), std::string_view("Disk quota exceeded"),
        std::string_view("database or disk is full")})
    if (error.find(words) != std::string_view::npos) return true;
  return false;
}

proto::Done result_of_failed_run(const std::string& task_id, std::string error) {
  proto::Done d;
  d.task_id = task_id;
  d.state = Outcome::Failed;
  if (is_out_of_space(error)) {
    d.state = Outcome::Aborted;
    error = "the output's file system is full (the task will run again): " + error;
  }
  d.error = std::move(error);
  return d;
}

std::optional<proto::Done> read_result(std::string_view message, const std::string& task_id,
                                       std::string* error) {
  std::optional<proto::Done> d;
  if (auto env = proto::decode(message.data(), message.size(), error))
    if (env->type == proto::type::kDone) d = env->as<proto::Done>(error);
  if (d && d->task_id != task_id) d.reset();
  return d;
}

bool ProgressThrottle::pass(double now) {
  if (last_ && now - *last_ < interval_) return false;
  last_ = now;
  return true;
}

RunnerPool::RunnerPool(const Config& cfg, engine::Engine& engine, const confine::Roots& roots,
                       Reports reports)
    : cfg_(cfg),
      engine_(engine),
      roots_(roots),
      reports_(std::move(reports)),
      log_(logger("worker")) {}

RunnerPool::~RunnerPool() {
  for (auto& [pid, r] : runners_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    if (r.fd >= 0) ::close(r.fd);
  }
}

bool RunnerPool::start(const proto::Task& task, std::string_view message) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    Runner* r = idle_runner();
    if (!r) r = spawn_runner();
    if (!r) return false;
    if (!channel::write_frame(r->fd, channel::Kind::Task, message)) {
      // The idle runner died (e.g. killed from outside): replace it once.
      runner_gone(r->pid);
      continue;
    }
    Job job;
    job.task_id = task.task_id;
    job.grant = task.grant;
    job.output = task.spec.output;
    job.started = now_mono();
    job.deadline = task.timeout > 0 ? job.started + task.timeout : 0;
    r->job = std::move(job);
    ++r->tasks;
    log_->info("task {} started in runner {} (attempt {})", task.task_id, r->pid, task.attempt);
    return true;
  }
  return false;
}

std::optional<pid_t> RunnerPool::runner_of(std::string_view task_id) const {
  for (auto& [pid, r] : runners_)
    if (r.job && r.job->task_id == task_id) return pid;
  return std::nullopt;
}

void RunnerPool::kill(std::string_view task_id, KillReason why) {
  for (auto& [pid, r] : runners_)
    if (r.job && r.job->task_id == task_id && !r.job->killed) kill_runner(r, why);
}

void RunnerPool::kill_all(KillReason why) {
  for (auto& [pid, r] : runners_)
    if (r.job && !r.job->killed) kill_runner(r, why);
}

void RunnerPool::kill_overdue(double now) {
  for (auto& [pid, r] : runners_)
    if (r.job && r.job->deadline > 0 && now > r.job->deadline && !r.job->killed)
      kill_runner(r, KillReason::Timeout);
}

std::size_t RunnerPool::busy() const {
  std::size_t n = 0;
  for (auto& [pid, r] : runners_) n += r.job.has_value();
  return n;
}

std::vector<RunnerPool::Held> RunnerPool::running() const {
  std::vector<Held> out;
  for (auto& [pid, r] : runners_)
    if (r.job) out.push_back({r.job->task_id, r.job->grant});
  return out;
}

void RunnerPool::add_poll_items(std::vector<zmq::pollitem_t>& items) {
  first_polled_ = items.size();
  polled_.clear();
  for (auto& [pid, r] : runners_) {
    if (r.fd < 0) continue;
    items.push_back({nullptr, r.fd, ZMQ_POLLIN, 0});
    polled_.push_back(pid);
  }
}

void RunnerPool::read_polled(const std::vector<zmq::pollitem_t>& items) {
  // (Runners may have been started or replaced since the poll: they are found by pid.)
  for (std::size_t i = 0; i < polled_.size(); ++i)
    if (items[first_polled_ + i].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) read_channel(polled_[i]);
}

void RunnerPool::close() {
  for (auto& [pid, r] : runners_) {
    ::close(r.fd);
    r.fd = -1;
  }
  for (auto& [pid, r] : runners_) wait_for(pid);
  runners_.clear();
}

RunnerPool::Runner* RunnerPool::idle_runner() {
  for (auto& [pid, r] : runners_) {
    // A runner that has served its quota exits after its last result: handing it another
    // task would race its exit (and cost the task an attempt).
    const bool retiring = cfg_.runner_max_tasks && r.tasks >= cfg_.runner_max_tasks;
    if (!r.job && !r.killed && !retiring && r.fd >= 0) return &r;
  }
  return nullptr;
}

RunnerPool::Runner* RunnerPool::spawn_runner() {
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
    detail::RunnerLimits limits{cfg_.memory_limit_mb, cfg_.cpu_limit_s, cfg_.runner_max_tasks,
                                cfg_.max_task_threads};
    detail::runner_main(engine_, roots_, fds[1], limits);  // never returns
  }
  ::close(fds[1]);
  Runner r;
  r.pid = pid;
  r.fd = fds[0];
  log_->debug("runner {} started", pid);
  return &runners_.emplace(pid, std::move(r)).first->second;
}

void RunnerPool::kill_runner(Runner& r, KillReason why) {
  if (r.job) r.job->killed = why;
  r.killed = true;
  ::kill(r.pid, SIGKILL);
  log_->info("task {}: killing runner {} ({})", r.job ? r.job->task_id : "-", r.pid, why);
}

void RunnerPool::read_channel(pid_t pid) {
  auto it = runners_.find(pid);
  if (it == runners_.end()) return;
  Runner& r = it->second;
  const bool open = receive(r);
  std::string progress;  // only the latest of what arrived at once is worth sending
  while (auto frame = r.in.next()) {
    if (frame->kind == channel::Kind::Progress) {
      progress = std::move(frame->payload);
    } else if (frame->kind == channel::Kind::Done && r.job) {
      progress.clear();
      on_done(r, frame->payload);
    }
  }
  if (!progress.empty() && r.job && r.job->progress.pass(now_mono())) reports_.progress(progress);
  if (!open) runner_gone(pid);
}

bool RunnerPool::receive(Runner& r) {
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(r.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      r.in.append(buf, static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < sizeof buf) return true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;  // EOF or error: the runner is gone
  }
}

void RunnerPool::on_done(Runner& r, const std::string& message) {
  Job job = std::move(*r.job);
  r.job.reset();
  std::string err;
  if (auto d = read_result(message, job.task_id, &err)) {
    // A result that raced a kill is still the truth: the task did finish.
    report(job, *d, message);
    return;
  }
  proto::Done d;
  d.task_id = job.task_id;
  d.error = "unreadable result from task runner: " + err;
  report(job, d);
}

void RunnerPool::runner_gone(pid_t pid) {
  auto it = runners_.find(pid);
  if (it == runners_.end()) return;
  Runner r = std::move(it->second);
  runners_.erase(it);
  if (r.fd >= 0) ::close(r.fd);
  int status = 0;
  wait_for(pid, &status);
  if (!r.job) {
    log_->debug("runner {} exited", pid);
    return;
  }
  const Job& job = *r.job;
  // The engine removes its temporary file itself, unless its process was killed. Removed
  // beneath the output root only (an output outside it was never written).
  try {
    const confine::OutputTarget out = roots_.output_target(job.output, false);
    for (const std::string& name : detail::task_temporaries(out.name, pid))
      confine::remove_in(out.dir.get(), name);
  } catch (const confine::Error&) {
  }
  report(job, result_of_lost_runner(job.task_id, job.killed, status, now_mono() - job.started));
}

void RunnerPool::report(const Job& job, const proto::Done& d, std::string message) {
  log_->info("task {} {} in {:.3f} s{}{}", job.task_id, d.state, now_mono() - job.started,
             d.error.empty() ? "" : ": ", d.error);
  // The runner's own message carries neither the grant (the runner need not know it) nor
  // the identity of the file it wrote, which downloads check (docs/security.md).
  proto::Done full = d;
  full.grant = job.grant;
  // Looked at beneath the output root, following no link (confine.hpp), like every other
  // access to a task's files.
  if (d.state == Outcome::Succeeded) {
    try {
      const confine::OutputTarget out = roots_.output_target(job.output, false);
      struct stat st {};
      if (::fstatat(out.dir.get(), out.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISREG(st.st_mode)) {
        full.output_inode = st.st_ino;
        full.output_size = static_cast<std::uint64_t>(st.st_size);
      }
    } catch (const confine::Error&) {
    }
  }
  if (message.empty() || full.grant != d.grant || full.output_inode != d.output_inode)
    message = proto::encode(proto::type::kDone, full);
  reports_.result(std::move(message));
}

}  // namespace ipfixweb::worker

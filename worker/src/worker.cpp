#include "ipfixweb/worker/worker.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"

namespace ipfixweb::worker {

namespace {

constexpr double kProgressInterval = 0.5;  // seconds between progress reports

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// Writes all of `s` to fd, retrying on EINTR; false on failure.
bool write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// True while a process exists and is not a zombie. (A child killed with its
// supervisor may stay a zombie until something reaps it; it writes no more.)
bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  char state = line[close + 2];
  return state != 'Z' && state != 'X';
}

// An earlier attempt of this task may have died (with its worker) while
// writing: its temporary file, <output>.tmp.<pid>, is garbage now if that
// process no longer exists.
void remove_stale_temporaries(const std::filesystem::path& output) {
  std::error_code ec;
  const std::string prefix = output.filename().string() + ".tmp.";
  for (auto it = std::filesystem::directory_iterator(output.parent_path(), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // Only a writer that is gone: another live task may write the same path.
    char* end = nullptr;
    long pid = std::strtol(name.c_str() + prefix.size(), &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (process_alive(static_cast<pid_t>(pid))) continue;
    std::error_code rm;
    std::filesystem::remove(it->path(), rm);
  }
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

Worker::~Worker() {
  for (auto& [pid, c] : children_) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    if (c.fd >= 0) ::close(c.fd);
  }
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
  for (auto& [pid, c] : children_) r.running.push_back(c.task_id);
  r.host = hostname();
  r.pid = ::getpid();
  r.incarnation = incarnation_;
  send(proto::type::kReady, proto::encode(proto::type::kReady, r));
  for (auto& [when, payload] : recent_done_) send(proto::type::kDone, payload);
}

void Worker::run(const std::atomic<bool>& stop) {
  double drain_deadline = 0;
  while (true) {
    if (stop.load() && !draining_) {
      draining_ = true;
      drain_deadline = now_mono() + cfg_.grace_s;
      log_->info("draining: {} tasks running, grace {} s", children_.size(), cfg_.grace_s);
      send_ready();  // zero slots: the broker sends nothing more
    }
    if (draining_ && children_.empty()) break;
    if (draining_ && now_mono() >= drain_deadline) {
      for (auto& [pid, c] : children_)
        if (c.kill_reason.empty()) kill_child(c, "shutdown");
    }

    std::vector<zmq::pollitem_t> items;
    items.push_back({sock_->handle(), 0, ZMQ_POLLIN, 0});
    for (auto& [pid, c] : children_) items.push_back({nullptr, c.fd, ZMQ_POLLIN, 0});
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
      handle(*env);
    }
    std::vector<pid_t> pids;
    for (auto& [pid, c] : children_) pids.push_back(pid);
    for (pid_t pid : pids) {
      auto it = children_.find(pid);
      if (it == children_.end()) continue;
      read_child(it->second);
    }
    now = now_mono();
    for (auto& [pid, c] : children_)
      if (c.deadline > 0 && now > c.deadline && c.kill_reason.empty()) kill_child(c, "timeout");

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
  send(proto::type::kBye, proto::encode(proto::type::kBye, proto::Bye{"shutdown"}));
  // Give the goodbye a moment to leave; it is a courtesy (the broker also
  // notices missed heartbeats), so a broker that is gone too costs at most
  // this much of the shutdown.
  sock_->set(zmq::sockopt::linger, 50);
  log_->info("worker stopped");
}

void Worker::handle(const proto::Envelope& env) {
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
      proto::Done d{t->task_id, "aborted", "", "worker is shutting down", false};
      send(proto::type::kDone, proto::encode(proto::type::kDone, d));
      return;
    }
    for (auto& [pid, c] : children_) {
      if (c.task_id == t->task_id) {
        // Never run one task twice at once (two children would race for one
        // output); the running child reports for it.
        log_->warn("task {} is already running in child {}; duplicate ignored", t->task_id, pid);
        return;
      }
    }
    start_task(*t);
  } else if (env.type == proto::type::kAbort) {
    auto a = env.as<proto::Abort>(&err);
    if (!a) return;
    for (auto& [pid, c] : children_)
      if (c.task_id == a->task_id && c.kill_reason.empty()) kill_child(c, "cancelled");
  } else {
    log_->warn("dropped message of unknown type '{}'", env.type);
  }
}

void Worker::start_task(const proto::Task& t) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    proto::Done d{t.task_id, "failed", "", std::string("pipe: ") + std::strerror(errno), true};
    send(proto::type::kDone, proto::encode(proto::type::kDone, d));
    return;
  }
  spdlog::default_logger()->flush();
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    proto::Done d{t.task_id, "failed", "", std::string("fork: ") + std::strerror(errno), true};
    send(proto::type::kDone, proto::encode(proto::type::kDone, d));
    return;
  }
  if (pid == 0) {
    ::close(fds[0]);
    run_child(t, fds[1]);  // never returns
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  Child c;
  c.pid = pid;
  c.fd = fds[0];
  c.task_id = t.task_id;
  c.spec = t.spec;
  c.started = now_mono();
  c.deadline = t.timeout > 0 ? c.started + t.timeout : 0;
  children_.emplace(pid, std::move(c));
  log_->info("task {} started in child {} (attempt {})", t.task_id, pid, t.attempt);
  send(proto::type::kStarted, proto::encode(proto::type::kStarted, proto::Started{t.task_id}));
}

void Worker::run_child(const proto::Task& t, int fd) {
  // The child never touches the ZeroMQ context or the parent's sockets, and
  // dies with its supervisor: a task whose worker is gone is re-run elsewhere.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(3);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C goes to the supervisor, which decides
  if (cfg_.memory_limit_mb) {
    rlimit rl{cfg_.memory_limit_mb << 20, cfg_.memory_limit_mb << 20};
    ::setrlimit(RLIMIT_AS, &rl);
  }
  if (cfg_.cpu_limit_s) {
    rlimit rl{cfg_.cpu_limit_s, cfg_.cpu_limit_s + 1};
    ::setrlimit(RLIMIT_CPU, &rl);
  }
  nlohmann::json report;
  int code = 0;
  try {
    engine::Options o;
    o.inputs = t.spec.inputs;
    o.output = t.spec.output;
    o.dpi = t.spec.dpi;
    o.analysis = t.spec.analysis;
    o.idle_timeout_s = t.spec.idle_timeout;
    o.active_timeout_s = t.spec.active_timeout;
    o.bpf_filter = t.spec.filter;
    std::error_code ec;
    std::filesystem::path out(o.output);
    std::filesystem::create_directories(out.parent_path(), ec);
    if (ec) throw engine::EngineError("cannot create output directory: " + ec.message());
    if (t.attempt > 1) remove_stale_temporaries(out);
    double last = 0;
    auto progress = [&](const engine::Progress& p) {
      double now = now_mono();
      if (now - last < kProgressInterval) return;
      last = now;
      double frac = p.bytes_total ? static_cast<double>(p.bytes_read) / p.bytes_total : 0.0;
      write_all(fd,
                "P " + nlohmann::json{{"progress", frac}, {"packets", p.packets}}.dump() + "\n");
    };
    auto summary = engine_.convert(o, progress);
    report = {{"state", "succeeded"}, {"summary", summary}};
  } catch (const std::exception& e) {
    report = {{"state", "failed"}, {"error", e.what()}};
    code = 2;
  }
  write_all(fd, "D " + report.dump() + "\n");
  ::close(fd);
  ::_exit(code);  // no destructors, no atexit handlers of the parent
}

void Worker::read_child(Child& c) {
  char buf[65536];
  while (true) {
    ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.buffer.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    // EOF (or error): the child has finished writing; collect it.
    std::size_t pos;
    while ((pos = c.buffer.find('\n')) != std::string::npos) {
      std::string line = c.buffer.substr(0, pos);
      c.buffer.erase(0, pos + 1);
      if (line.rfind("D ", 0) == 0) c.result = line.substr(2);
    }
    reap(c.pid);
    return;
  }
  // Progress lines: forward the newest, throttled.
  std::size_t pos;
  std::string latest;
  while ((pos = c.buffer.find('\n')) != std::string::npos) {
    std::string line = c.buffer.substr(0, pos);
    c.buffer.erase(0, pos + 1);
    if (line.rfind("P ", 0) == 0) latest = line.substr(2);
    if (line.rfind("D ", 0) == 0) c.result = line.substr(2);
  }
  if (!latest.empty() && now_mono() - c.last_progress_sent >= kProgressInterval) {
    try {
      auto j = nlohmann::json::parse(latest);
      proto::ProgressMsg p{c.task_id, j.value("progress", 0.0), j.value("packets", 0ull)};
      send(proto::type::kProgress, proto::encode(proto::type::kProgress, p));
      c.last_progress_sent = now_mono();
    } catch (const std::exception&) {
    }
  }
}

void Worker::kill_child(Child& c, const std::string& reason) {
  c.kill_reason = reason;
  ::kill(c.pid, SIGKILL);
  log_->info("task {}: killing child {} ({})", c.task_id, c.pid, reason);
}

void Worker::reap(pid_t pid) {
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  Child c = std::move(it->second);
  children_.erase(it);
  ::close(c.fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  proto::Done d;
  d.task_id = c.task_id;
  double took = now_mono() - c.started;
  if (!c.kill_reason.empty()) {
    if (c.kill_reason == "cancelled") {
      d.state = "cancelled";
      d.error = "cancelled";
    } else if (c.kill_reason == "timeout") {
      d.state = "failed";
      d.error = "timed out after " + std::to_string(static_cast<long>(took)) + " s";
    } else {
      d.state = "aborted";
      d.error = "worker shutting down";
    }
  } else if (WIFSIGNALED(status)) {
    d.state = "failed";
    d.error = "crashed with " + signal_name(WTERMSIG(status));
    d.retryable = true;  // the broker retries up to its max attempts
  } else if (!c.result.empty()) {
    try {
      auto j = nlohmann::json::parse(c.result);
      d.state = j.value("state", "failed");
      d.error = j.value("error", "");
      if (j.contains("summary")) d.summary = j["summary"].dump();
    } catch (const std::exception& e) {
      d.state = "failed";
      d.error = std::string("unreadable result from child: ") + e.what();
    }
  } else {
    d.state = "failed";
    d.error =
        "child exited with status " + std::to_string(WEXITSTATUS(status)) + " without a result";
    d.retryable = true;
  }
  if (d.state != "succeeded") {
    // The engine removes its temporary file itself, unless it was killed.
    std::error_code ec;
    std::filesystem::remove(c.spec.output + ".tmp." + std::to_string(pid), ec);
  }
  log_->info("task {} {} in {:.3f} s{}{}", c.task_id, d.state, took, d.error.empty() ? "" : ": ",
             d.error);
  std::string payload = proto::encode(proto::type::kDone, d);
  send(proto::type::kDone, payload);
  double now = now_mono();
  recent_done_.emplace_back(now, std::move(payload));
  const double keep = cfg_.heartbeat_s * cfg_.liveness * 4 + 5;
  while (!recent_done_.empty() &&
         (recent_done_.front().first < now - keep || recent_done_.size() > 1024))
    recent_done_.pop_front();
}

}  // namespace ipfixweb::worker

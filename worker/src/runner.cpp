#include "runner.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "engine_options.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::worker::detail {
namespace {

bool write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);  // a gone peer is an error, not SIGPIPE
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, char* p, std::size_t n) {
  while (n) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool read_frame(int fd, char& kind, std::string& payload) {
  unsigned char head[5];  // length, kind
  if (!read_all(fd, reinterpret_cast<char*>(head), 5)) return false;
  const std::uint32_t n =
      head[0] | (head[1] << 8) | (head[2] << 16) | (std::uint32_t{head[3]} << 24);
  if (n == 0 || n > (64u << 20)) return false;
  kind = static_cast<char>(head[4]);
  payload.resize(n - 1);
  return read_all(fd, payload.data(), n - 1);
}

// True while a process exists and is not a zombie. (A runner killed with its
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

// An earlier attempt of this task may have died (with its worker) while writing: its
// temporary file, <output>.tmp.<host>.<pid>, is garbage now if it was written on this host
// by a process that no longer exists. Temporaries of other hosts (workers elsewhere, or in
// other containers, sharing the output storage) are left alone: their pids mean nothing
// here, and a live writer's file must never be deleted.
void remove_stale_temporaries(const std::filesystem::path& output) {
  std::error_code ec;
  const std::string prefix = output.filename().string() + ".tmp.";
  const std::string& host = engine::temporary_host_name();
  for (auto it = std::filesystem::directory_iterator(output.parent_path(), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());  // "<host>.<pid>"
    const auto dot = rest.rfind('.');
    if (dot == std::string::npos || rest.compare(0, dot, host) != 0 || dot != host.size()) continue;
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str() + dot + 1, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (process_alive(static_cast<pid_t>(pid))) continue;
    std::error_code rm;
    std::filesystem::remove(it->path(), rm);
  }
}

// The runner inherits the supervisor's ZeroMQ sockets, its poller and the channels of the
// other runners. It uses none of them; holding them would keep connections the supervisor
// closes (a reconnect to the broker) open for as long as the runner lives. Files (logs) and
// the standard streams stay.
void close_inherited_descriptors(int keep) {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return;
  const int self = ::dirfd(d);
  std::vector<int> doomed;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || fd <= 2 || fd == keep || fd == self) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0) continue;
    if (S_ISSOCK(st.st_mode)) {
      doomed.push_back(static_cast<int>(fd));
      continue;
    }
    char target[64] = {};
    const std::string link = "/proc/self/fd/" + std::string(e->d_name);
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
        std::strncmp(target, "anon_inode:", 11) == 0)
      doomed.push_back(static_cast<int>(fd));  // eventfd, epoll
  }
  ::closedir(d);
  for (int fd : doomed) ::close(fd);
}

// Re-arms the CPU limit for the next task: the soft limit counts the runner's whole life,
// so it is set to what was used so far plus the task's allowance (whole seconds, so a task
// gets between `allowance` and `allowance`+1 s). SIGXCPU then kills the runner.
void arm_cpu_limit(std::uint64_t allowance) {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const double used = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                      (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  rlimit rl{};
  ::getrlimit(RLIMIT_CPU, &rl);
  rl.rlim_cur = static_cast<rlim_t>(std::ceil(used)) + allowance;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_CPU, &rl);
}

proto::Done run_task(engine::Engine& engine, const proto::Task& t, int fd) {
  proto::Done d;
  d.task_id = t.task_id;
  try {
    const engine::Options o = to_engine_options(t.spec);
    std::error_code ec;
    std::filesystem::path out(o.output);
    std::filesystem::create_directories(out.parent_path(), ec);
    if (ec) throw engine::EngineError("cannot create output directory: " + ec.message());
    if (t.attempt > 1) remove_stale_temporaries(out);
    // Progress goes out every kProgressInterval, the first one a whole interval after the
    // start: a task shorter than that (most are) reports none, and its Done follows at once.
    double last = now_mono();
    auto progress = [&](const engine::Progress& p) {
      double now = now_mono();
      if (now - last < kProgressInterval) return;
      last = now;
      double frac = p.bytes_total ? static_cast<double>(p.bytes_read) / p.bytes_total : 0.0;
      write_frame(fd, 'P', nlohmann::json{{"progress", frac}, {"packets", p.packets}}.dump());
    };
    // On a retry, sweep once more when done: the previous attempt's writer may still have
    // been dying (its worker was killed a moment ago, it was in the middle of a write) when
    // the sweep above looked, and it is certainly gone by now.
    struct SweepAgain {
      const std::filesystem::path& out;
      bool on;
      ~SweepAgain() {
        if (on) remove_stale_temporaries(out);
      }
    } sweep_again{out, t.attempt > 1};
    auto result = engine.convert_text(o, progress);
    d.state = Outcome::Succeeded;
    d.packets = result.packets;
    d.bytes = result.bytes;
    d.flows = result.flows;
    d.summary = std::move(result.summary);
  } catch (const std::exception& e) {
    d.state = Outcome::Failed;
    d.error = e.what();
  }
  return d;
}

}  // namespace

bool write_frame(int fd, char kind, std::string_view payload) {
  const auto n = static_cast<std::uint32_t>(payload.size() + 1);
  std::string frame;
  frame.reserve(payload.size() + 5);
  for (int i = 0; i < 4; ++i) frame.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  frame.push_back(kind);
  frame.append(payload);
  return write_all(fd, frame.data(), frame.size());
}

std::optional<std::pair<char, std::string>> next_frame(std::string& buf, std::size_t& off) {
  if (buf.size() - off < 5) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(buf.data() + off);
  const std::uint32_t n = p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t{p[3]} << 24);
  if (n == 0) {  // cannot happen with write_frame; skip rather than loop
    off += 4;
    return std::nullopt;
  }
  if (buf.size() - off < 4 + std::size_t{n}) return std::nullopt;
  std::pair<char, std::string> frame{static_cast<char>(p[4]), buf.substr(off + 5, n - 1)};
  off += 4 + n;
  if (off == buf.size()) {
    buf.clear();
    off = 0;
  } else if (off > 65536) {
    buf.erase(0, off);
    off = 0;
  }
  return frame;
}

void runner_main(engine::Engine& engine, int fd, const RunnerLimits& limits) {
  // The runner dies with its supervisor (a task whose worker is gone is re-run elsewhere)
  // and never touches the supervisor's ZeroMQ context.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(3);
  // Named apart from its supervisor in ps/top (and for tools that pick "the worker" by name).
  ::prctl(PR_SET_NAME, "ipfixweb-runner");
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C goes to the supervisor, which decides
  // An output past a file size limit fails the task with "File too large" (EFBIG) instead
  // of killing the runner (which would read as a crash and be retried).
  ::signal(SIGXFSZ, SIG_IGN);
  close_inherited_descriptors(fd);
  if (limits.memory_limit_mb) {
    rlimit rl{limits.memory_limit_mb << 20, limits.memory_limit_mb << 20};
    ::setrlimit(RLIMIT_AS, &rl);
  }
  std::uint32_t done = 0;
  char kind = 0;
  std::string payload;
  while (read_frame(fd, kind, payload)) {
    if (kind != 'T') continue;
    std::string err;
    auto env = proto::decode(payload.data(), payload.size(), &err);
    std::optional<proto::Task> task;
    if (env) task = env->as<proto::Task>(&err);
    proto::Done report;
    if (!task) {
      report.state = Outcome::Failed;
      report.error = "runner could not read the task: " + err;
    } else {
      if (limits.cpu_limit_s) arm_cpu_limit(limits.cpu_limit_s);
      report = run_task(engine, *task, fd);
    }
    // Sent as the worker sends it to the broker: the supervisor forwards it unchanged.
    if (!write_frame(fd, 'D', proto::encode(proto::type::kDone, report))) break;
    if (limits.max_tasks && ++done >= limits.max_tasks) break;
  }
  spdlog::default_logger()->flush();
  ::_exit(0);  // no destructors, no atexit handlers of the parent
}

}  // namespace ipfixweb::worker::detail

#include "runner.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <spdlog/spdlog.h>

#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/split.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/worker/channel.hpp"
#include "ipfixweb/worker/engine_options.hpp"
#include "ipfixweb/worker/runner_pool.hpp"

namespace ipfixweb::worker::detail {
namespace {

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
// here, and a live writer's file must never be deleted. Looked for in the output's directory
// (a descriptor beneath the output root) only.
// The temporaries of the flow store and summary (published_names) likewise.
void remove_stale_temporaries(const confine::OutputTarget& out) {
  auto prefixes = published_names(out.name);
  for (auto& p : prefixes) p += ".tmp.";
  const std::string& host = engine::temporary_host_name();
  for (const std::string& name : confine::list_names(out.dir.get())) {
    const std::string* prefix = nullptr;
    for (const auto& p : prefixes)
      if (name.compare(0, p.size(), p) == 0) prefix = &p;
    if (!prefix) continue;
    const std::string rest = name.substr(prefix->size());  // "<host>.<pid>"
    const auto dot = rest.rfind('.');
    if (dot == std::string::npos || rest.compare(0, dot, host) != 0 || dot != host.size()) continue;
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str() + dot + 1, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (process_alive(static_cast<pid_t>(pid))) continue;
    confine::remove_in(out.dir.get(), name);
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

// Reports a task's progress to the supervisor every kProgressInterval, the first report a
// whole interval after the start: a task shorter than that (most are) reports none, and its
// Done follows at once. What it writes is the `progress` message for the broker.
class ProgressReporter {
 public:
  ProgressReporter(int fd, const std::string& task_id) : fd_(fd), task_id_(task_id) {}
  void operator()(const engine::Progress& p) {
    const double now = now_mono();
    if (now - last_ < channel::kProgressInterval) return;
    last_ = now;
    const double frac = p.bytes_total ? static_cast<double>(p.bytes_read) / p.bytes_total : 0.0;
    channel::write_frame(
        fd_, channel::Kind::Progress,
        proto::encode(proto::type::kProgress, proto::ProgressMsg{task_id_, frac, p.packets}));
  }

 private:
  int fd_;
  const std::string& task_id_;
  double last_ = now_mono();
};

// On a retry, sweeps once more when the task is done: the previous attempt's writer may
// still have been dying (its worker was killed a moment ago, it was in the middle of a
// write) when the first sweep looked, and it is certainly gone by now.
struct SweepAgain {
  const confine::OutputTarget& out;
  bool on;
  ~SweepAgain() {
    if (on) remove_stale_temporaries(out);
  }
};

// A task's files, opened beneath the roots (the spec's paths only name them from here on):
// the output is checked first, before anything is opened, then the inputs are opened, then
// the output's missing directories are created. Throws confine::Error.
struct TaskFiles {
  std::vector<confine::Fd> inputs;
  std::vector<confine::Fd> part_stores;  // a merge's: the parts' flow stores
  confine::OutputTarget output;
};

// The whole of a small regular file (a part's summary; at most 16 MiB).
std::string read_small(int fd, const std::string& name) {
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw engine::EngineError("cannot read '" + name + "': " + std::strerror(errno));
    if (n == 0) return text;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > (16u << 20)) throw engine::EngineError("'" + name + "' is too large");
  }
}

// A merge's parts beside their outputs (beneath the output root): each one's summary, and its
// flow store when the merge writes one (handed to SQLite as /proc/self/fd/N, so that the name
// cannot be swapped for a link elsewhere once checked). Throws confine::Error.
void open_parts(const confine::Roots& roots, engine::Options& o, TaskFiles& f) {
  for (const auto& in : o.inputs) {
    const std::string summary = proto::part_summary_name(in);
    o.part_summaries.push_back(read_small(roots.open_in_output(summary).get(), summary));
    if (o.flows_db.empty()) continue;
    f.part_stores.push_back(roots.open_in_output(flows::store_name_for(in)));
    o.part_stores.push_back("/proc/self/fd/" + std::to_string(f.part_stores.back().get()));
  }
}
TaskFiles open_task_files(const confine::Roots& roots, engine::Options& o) {
  TaskFiles f;
  roots.check_output(o.output);
  const bool merge = o.mode == engine::Mode::Merge;
  for (const auto& in : o.inputs) {
    f.inputs.push_back(merge ? roots.open_in_output(in) : roots.open_input(in));
    o.input_fds.push_back(f.inputs.back().get());
  }
  if (merge) open_parts(roots, o, f);
  f.output = roots.output_target(o.output);
  o.output_dir_fd = f.output.dir.get();
  o.output_name = f.output.name;
  if (!o.flows_db.empty()) o.flows_db = flows::store_name_for(f.output.name);
  if (o.partitions > 1) o.summary_file = proto::part_summary_name(f.output.name);  // for the merge
  return f;
}

// The temporaries the task in hand may have under their names, for the signal that comes when
// the supervisor dies (PR_SET_PDEATHSIG): the runner removes them on its way out. Otherwise a
// worker killed mid-task leaves its runners' temporaries behind for good when no rerun of the
// task comes to this host (the task was cancelled meanwhile, say). Found by scripts/chaos.
volatile sig_atomic_t g_temporaries_armed = 0;
int g_output_dir = -1;
char g_temporaries[3][PATH_MAX];

void remove_temporaries_and_exit(int) {
  if (g_temporaries_armed)
    for (const char* name : g_temporaries)
      if (name[0]) ::unlinkat(g_output_dir, name, 0);
  ::_exit(128 + SIGTERM);
}

// Arms the clean-up for the task's output (disarmed when it goes out of scope).
struct TemporariesOnDeath {
  explicit TemporariesOnDeath(const confine::OutputTarget& out) {
    const auto names = task_temporaries(out.name, ::getpid());
    for (std::size_t i = 0; i < names.size(); ++i) {
      const bool fits = names[i].size() < sizeof g_temporaries[i];
      std::memcpy(g_temporaries[i], names[i].c_str(), fits ? names[i].size() + 1 : 1);
      if (!fits) g_temporaries[i][0] = '\0';
    }
    g_output_dir = out.dir.get();
    g_temporaries_armed = 1;
  }
  ~TemporariesOnDeath() { g_temporaries_armed = 0; }
  TemporariesOnDeath(const TemporariesOnDeath&) = delete;
  TemporariesOnDeath& operator=(const TemporariesOnDeath&) = delete;
};

proto::Done run_task(engine::Engine& engine, const confine::Roots& roots, const proto::Task& t,
                     const RunnerLimits& limits, int fd) {
  proto::Done d;
  d.task_id = t.task_id;
  try {
    engine::Options o = to_engine_options(t.spec);
    o.threads = std::clamp(o.threads, 1u, std::max(1u, limits.max_threads));
    if (o.inputs.empty()) throw engine::EngineError("no input file given");
    const TaskFiles files = open_task_files(roots, o);
    const bool rerun = t.rerun || t.attempt > 1;
    if (rerun) remove_stale_temporaries(files.output);
    SweepAgain sweep_again{files.output, rerun};
    TemporariesOnDeath on_death(files.output);
    auto result = engine.convert_text(o, ProgressReporter(fd, t.task_id));
    d.state = Outcome::Succeeded;
    d.packets = result.packets;
    d.bytes = result.bytes;
    d.flows = result.flows;
    d.summary = std::move(result.summary);
  } catch (const engine::OutputReplaced& e) {
    // Not the task's doing: a later run of it published while this one went on (this run's
    // worker was given up for lost). Normally nobody is listening any more; if this is the
    // live run after all, the task runs again without using an attempt.
    d.state = Outcome::Aborted;
    d.error = e.what();
  } catch (const std::exception& e) {
    d = result_of_failed_run(t.task_id, e.what());
  }
  return d;
}

// Runs the task of a 'T' frame; the result is the `done` message for the broker.
proto::Done serve(engine::Engine& engine, const confine::Roots& roots, const channel::Frame& frame,
                  const RunnerLimits& limits, int fd) {
  std::string err;
  auto env = proto::decode(frame.payload.data(), frame.payload.size(), &err);
  std::optional<proto::Task> task;
  if (env) task = env->as<proto::Task>(&err);
  if (!task) {
    proto::Done report;
    report.state = Outcome::Failed;
    report.error = "runner could not read the task: " + err;
    return report;
  }
  if (limits.cpu_limit_s) arm_cpu_limit(limits.cpu_limit_s);
  return run_task(engine, roots, *task, limits, fd);
}

// Turns the freshly forked process into a runner.
void become_runner(int fd, const RunnerLimits& limits) {
  // The runner dies with its supervisor (a task whose worker is gone is re-run elsewhere),
  // removing the temporaries of its task on the way, and never touches the supervisor's
  // ZeroMQ context.
  struct sigaction sa {};
  sa.sa_handler = remove_temporaries_and_exit;
  sigfillset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() == 1) ::_exit(3);
  // Named apart from its supervisor in ps/top (and for tools that pick "the worker" by name).
  ::prctl(PR_SET_NAME, "ipfixweb-runner");
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C goes to the supervisor, which decides
  // An output past a file size limit fails the task with "File too large" (EFBIG) instead
  // of killing the runner (which would read as a crash and be retried).
  ::signal(SIGXFSZ, SIG_IGN);
  close_inherited_descriptors(fd);
  if (limits.memory_limit_mb && memory_limit_supported()) {
    rlimit rl{limits.memory_limit_mb << 20, limits.memory_limit_mb << 20};
    ::setrlimit(RLIMIT_AS, &rl);
  }
}

}  // namespace

std::array<std::string, 3> published_names(const std::string& output_name) {
  return {output_name, flows::store_name_for(output_name), proto::part_summary_name(output_name)};
}

std::array<std::string, 3> task_temporaries(const std::string& output_name, pid_t pid) {
  auto names = published_names(output_name);
  for (auto& name : names) name = engine::temporary_output_name(name, pid);
  return names;
}

bool memory_limit_supported() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return false;
#else
  return true;
#endif
#else
  return true;
#endif
}

void runner_main(engine::Engine& engine, const confine::Roots& roots, int fd,
                 const RunnerLimits& limits) {
  become_runner(fd, limits);
  std::uint32_t done = 0;
  channel::Frame frame;
  while (channel::read_frame(fd, frame)) {
    if (frame.kind != channel::Kind::Task) continue;
    const proto::Done report = serve(engine, roots, frame, limits, fd);
    // The message the supervisor sends on to the broker as it is.
    if (!channel::write_frame(fd, channel::Kind::Done, proto::encode(proto::type::kDone, report)))
      break;
    if (limits.max_tasks && ++done >= limits.max_tasks) break;
  }
  spdlog::default_logger()->flush();
  ::_exit(0);  // no destructors, no atexit handlers of the parent
}

}  // namespace ipfixweb::worker::detail

// ipfixweb-broker: thin entry point over ipfixweb_broker_lib.
#include <malloc.h>

#include <CLI/CLI.hpp>

#include <csignal>
#include <filesystem>

#include "ipfixweb/broker/broker.hpp"
#include "ipfixweb/shared/config.hpp"
#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/signals.hpp"
#include "ipfixweb/shared/spec_check.hpp"

namespace {

using namespace ipfixweb;

struct Options {
  broker::Config cfg;
  LogOptions log;
  RootOptions roots;   // and the data directory
  std::string keygen;  // --curve-keygen PREFIX
};

// The command line (each option also from its environment variable).
void add_options(CLI::App& app, Options& o) {
  add_root_options(app, o.roots);
  o.cfg.db_path.clear();
  app.add_option("--db", o.cfg.db_path, "SQLite database file (default <data-dir>/ipfixweb.db)")
      ->envname("IPFIXWEB_DB");
  app.add_option("--frontend", o.cfg.frontend, "ZeroMQ endpoint for api clients")
      ->envname("IPFIXWEB_BROKER_FRONTEND")
      ->capture_default_str();
  app.add_option("--backend", o.cfg.backend, "ZeroMQ endpoint for workers")
      ->envname("IPFIXWEB_BROKER_BACKEND")
      ->capture_default_str();
  app.add_option("--max-queue", o.cfg.max_queue, "Tasks accepted beyond granted worker credit")
      ->envname("IPFIXWEB_MAX_QUEUE")
      ->capture_default_str();
  app.add_option("--max-attempts", o.cfg.max_attempts, "Dispatches per task before it fails")
      ->envname("IPFIXWEB_MAX_ATTEMPTS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--max-free-runs", o.cfg.max_free_runs,
                 "Runs of a task lost without its own fault (worker lost, aborted, not reclaimed "
                 "after a restart) before it fails; they use no attempt and back off")
      ->envname("IPFIXWEB_MAX_FREE_RUNS")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--max-worker-slots", o.cfg.max_worker_slots,
                 "Most task slots one worker may grant (a larger offer is cut to this)")
      ->envname("IPFIXWEB_MAX_WORKER_SLOTS")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--overdue-grace", o.cfg.overdue_grace_s,
                 "Seconds past --task-timeout a run may go unreported before it is given up "
                 "and run again (0: max(30, 4 x heartbeat x liveness))")
      ->envname("IPFIXWEB_OVERDUE_GRACE")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--task-timeout", o.cfg.task_timeout_s, "Seconds a task may run (0: no limit)")
      ->envname("IPFIXWEB_TASK_TIMEOUT")
      ->capture_default_str();
  add_heartbeat_options(app, o.cfg.heartbeat_s, o.cfg.liveness,
                        "Missed heartbeats before a worker is dead");
  app.add_option("--synchronous", o.cfg.synchronous,
                 "SQLite synchronous mode: OFF NORMAL FULL EXTRA")
      ->envname("IPFIXWEB_DB_SYNCHRONOUS")
      ->check(CLI::IsMember({"OFF", "NORMAL", "FULL", "EXTRA"}, CLI::ignore_case))
      ->capture_default_str();
  app.add_option("--commit-interval", o.cfg.commit_interval_s,
                 "Seconds worker-side changes (dispatches, results) may wait to be committed "
                 "with others; replies to clients always wait for their commit")
      ->envname("IPFIXWEB_COMMIT_INTERVAL")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--task-log-dir", o.cfg.task_log_dir,
                 "Where successful_tasks.jsonl / failed_tasks.jsonl are appended "
                 "(default <data-dir>/logs; 'none' to disable)")
      ->envname("IPFIXWEB_TASK_LOG_DIR");
  app.add_option("--curve-secret-key", o.cfg.curve_secret_key,
                 "CURVE: the broker's secret key file (enables encryption and authentication)")
      ->envname("IPFIXWEB_BROKER_SECRET_KEY");
  app.add_option("--curve-authorized-frontend", o.cfg.curve_authorized_frontend,
                 "CURVE: the api's public keys (a file, or a directory of *.pub files)")
      ->envname("IPFIXWEB_CURVE_AUTHORIZED_FRONTEND");
  app.add_option("--curve-authorized-backend", o.cfg.curve_authorized_backend,
                 "CURVE: the workers' public keys (a file, or a directory of *.pub files)")
      ->envname("IPFIXWEB_CURVE_AUTHORIZED_BACKEND");
  app.add_option("--curve-authorized", o.cfg.curve_authorized,
                 "CURVE: one list of keys for both sides (older setups: a worker key can then "
                 "submit tasks)")
      ->envname("IPFIXWEB_CURVE_AUTHORIZED");
  app.add_option("--min-free-mb", o.cfg.min_free_mb,
                 "Refuse new tasks (507) while the database's or the output root's file system "
                 "has less free space than this")
      ->envname("IPFIXWEB_MIN_FREE_MB")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_option("--retention-days", o.cfg.retention_days,
                 "Remove finished tasks, and the output files they wrote, this many days after "
                 "they finished (0: keep them)")
      ->envname("IPFIXWEB_RETENTION_DAYS")
      ->check(CLI::Range(0.0, 36500.0))
      ->capture_default_str();
  app.add_option("--grant-key", o.cfg.grant_key_file,
                 "File of the key that signs dispatch grants (created when missing; default "
                 "<data-dir>/grant.key)")
      ->envname("IPFIXWEB_GRANT_KEY");
  app.add_option("--curve-keygen", o.keygen,
                 "Write a new CURVE key pair to PREFIX.key and PREFIX.pub, then exit");
  add_log_options(app, o.log);
  add_print_config(app);
}

// --curve-keygen: writes a key pair and prints its public key.
int keygen(const std::string& prefix) {
  try {
    auto kp = curve::generate(prefix);
    std::cout << kp.public_key << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ipfixweb-broker: " << e.what() << "\n";
    return 1;
  }
}

int serve(const broker::Config& cfg, const LogOptions& log_opts) {
  auto log = setup_logging("broker", log_opts);
  const auto& stop = install_stop_handlers();
  try {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cfg.db_path).parent_path(), ec);
    if (!cfg.task_log_dir.empty()) std::filesystem::create_directories(cfg.task_log_dir, ec);
    zmq::context_t ctx(1);
    broker::Broker b(cfg, ctx);
    b.run(stop);
  } catch (const std::exception& e) {
    log->critical("broker failed: {}", e.what());
    return 1;
  }
  log->info("broker stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A file size limit (RLIMIT_FSIZE) reached by the database is an error to report (the
  // commit fails with EFBIG, the broker says so and exits), not a signal that kills it.
  std::signal(SIGXFSZ, SIG_IGN);
  // SQLite opens a temporary b-tree (with its own page cache) for the CHECK
  // on tasks.state at every task insert and frees it again. With glibc's
  // default trim threshold every free shrank the heap and the next insert
  // grew it again: brk calls and page faults per submission. Keep the memory.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  Options o;
  CLI::App app{"ipfixweb broker: durable task queue and credit-based dispatcher"};
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  auto& cfg = o.cfg;
  if (cfg.db_path.empty()) cfg.db_path = o.roots.data_dir + "/ipfixweb.db";
  if (cfg.task_log_dir.empty()) cfg.task_log_dir = o.roots.data_dir + "/logs";
  if (cfg.grant_key_file.empty()) cfg.grant_key_file = o.roots.data_dir + "/grant.key";
  finish_root_options(app, o.roots);
  for (const auto& r : o.roots.input_roots) cfg.roots.inputs.push_back(proto::normal_root(r));
  cfg.roots.output = proto::normal_root(o.roots.output_root);
  if (cfg.task_log_dir == "none") cfg.task_log_dir.clear();
  show_effective(app, "--db", cfg.db_path);
  show_effective(app, "--task-log-dir", cfg.task_log_dir);
  show_effective(app, "--grant-key", cfg.grant_key_file);
  if (handle_print_config(app)) return 0;
  if (!o.keygen.empty()) return keygen(o.keygen);
  return serve(cfg, o.log);
}

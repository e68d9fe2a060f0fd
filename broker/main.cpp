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

int main(int argc, char** argv) {
  using namespace ipfixweb;
  // A file size limit (RLIMIT_FSIZE) reached by the database is an error to report (the
  // commit fails with EFBIG, the broker says so and exits), not a signal that kills it.
  std::signal(SIGXFSZ, SIG_IGN);
  // SQLite opens a temporary b-tree (with its own page cache) for the CHECK
  // on tasks.state at every task insert and frees it again. With glibc's
  // default trim threshold every free shrank the heap and the next insert
  // grew it again: brk calls and page faults per submission. Keep the memory.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  broker::Config cfg;
  LogOptions log_opts;
  std::string data_dir = "var";
  CLI::App app{"ipfixweb broker: durable task queue and credit-based dispatcher"};
  app.add_option("--data-dir", data_dir, "Data directory (database default inside it)")
      ->envname("IPFIXWEB_DATA_DIR")
      ->capture_default_str();
  cfg.db_path.clear();
  app.add_option("--db", cfg.db_path, "SQLite database file (default <data-dir>/ipfixweb.db)")
      ->envname("IPFIXWEB_DB");
  app.add_option("--frontend", cfg.frontend, "ZeroMQ endpoint for api clients")
      ->envname("IPFIXWEB_BROKER_FRONTEND")
      ->capture_default_str();
  app.add_option("--backend", cfg.backend, "ZeroMQ endpoint for workers")
      ->envname("IPFIXWEB_BROKER_BACKEND")
      ->capture_default_str();
  app.add_option("--max-queue", cfg.max_queue, "Tasks accepted beyond granted worker credit")
      ->envname("IPFIXWEB_MAX_QUEUE")
      ->capture_default_str();
  app.add_option("--max-attempts", cfg.max_attempts, "Dispatches per task before it fails")
      ->envname("IPFIXWEB_MAX_ATTEMPTS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--task-timeout", cfg.task_timeout_s, "Seconds a task may run (0: no limit)")
      ->envname("IPFIXWEB_TASK_TIMEOUT")
      ->capture_default_str();
  add_heartbeat_options(app, cfg.heartbeat_s, cfg.liveness,
                        "Missed heartbeats before a worker is dead");
  app.add_option("--synchronous", cfg.synchronous, "SQLite synchronous mode: OFF NORMAL FULL EXTRA")
      ->envname("IPFIXWEB_DB_SYNCHRONOUS")
      ->check(CLI::IsMember({"OFF", "NORMAL", "FULL", "EXTRA"}, CLI::ignore_case))
      ->capture_default_str();
  app.add_option("--commit-interval", cfg.commit_interval_s,
                 "Seconds worker-side changes (dispatches, results) may wait to be committed "
                 "with others; replies to clients always wait for their commit")
      ->envname("IPFIXWEB_COMMIT_INTERVAL")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--task-log-dir", cfg.task_log_dir,
                 "Where successful_tasks.jsonl / failed_tasks.jsonl are appended "
                 "(default <data-dir>/logs; 'none' to disable)")
      ->envname("IPFIXWEB_TASK_LOG_DIR");
  app.add_option("--curve-secret-key", cfg.curve_secret_key,
                 "CURVE: the broker's secret key file (enables encryption and authentication)")
      ->envname("IPFIXWEB_BROKER_SECRET_KEY");
  app.add_option("--curve-authorized", cfg.curve_authorized,
                 "CURVE: file of authorised client public keys, or a directory of *.pub files")
      ->envname("IPFIXWEB_CURVE_AUTHORIZED");
  std::string keygen;
  app.add_option("--curve-keygen", keygen,
                 "Write a new CURVE key pair to PREFIX.key and PREFIX.pub, then exit");
  add_log_options(app, log_opts);
  add_print_config(app);
  CLI11_PARSE(app, argc, argv);
  if (cfg.db_path.empty()) cfg.db_path = data_dir + "/ipfixweb.db";
  if (cfg.task_log_dir.empty()) cfg.task_log_dir = data_dir + "/logs";
  if (cfg.task_log_dir == "none") cfg.task_log_dir.clear();
  show_effective(app, "--db", cfg.db_path);
  show_effective(app, "--task-log-dir", cfg.task_log_dir);
  if (handle_print_config(app)) return 0;
  if (!keygen.empty()) {
    try {
      auto kp = curve::generate(keygen);
      std::cout << kp.public_key << "\n";
      return 0;
    } catch (const std::exception& e) {
      std::cerr << "ipfixweb-broker: " << e.what() << "\n";
      return 1;
    }
  }

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

// ipfixweb-worker: thin entry point over ipfixweb_worker_lib.

#include <filesystem>

#include "ipfixweb/shared/config.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/signals.hpp"
#include "ipfixweb/worker/worker.hpp"

int main(int argc, char** argv) {
  using namespace ipfixweb;
  worker::Config cfg;
  LogOptions log_opts;
  RootOptions roots;
  CLI::App app{"ipfixweb worker: converts captures to IPFIX for the broker"};
  add_root_options(app, roots);
  app.add_option("--broker", cfg.broker, "Broker backend endpoint")
      ->envname("IPFIXWEB_BROKER_BACKEND")
      ->capture_default_str();
  app.add_option("--id", cfg.worker_id, "Stable worker id (default: host-pid-random)")
      ->envname("IPFIXWEB_WORKER_ID");
  app.add_option("--slots", cfg.slots, "Concurrent tasks (0: number of CPUs)")
      ->envname("IPFIXWEB_WORKER_SLOTS")
      ->capture_default_str();
  add_heartbeat_options(app, cfg.heartbeat_s, cfg.liveness,
                        "Missed heartbeats before the broker is presumed gone");
  app.add_option("--grace", cfg.grace_s, "Seconds to let running tasks finish on SIGTERM")
      ->envname("IPFIXWEB_WORKER_GRACE")
      ->capture_default_str();
  app.add_option("--memory-limit-mb", cfg.memory_limit_mb,
                 "Address-space limit of a task runner in MiB (0: none)")
      ->envname("IPFIXWEB_TASK_MEMORY_MB")
      ->capture_default_str();
  app.add_option("--cpu-limit", cfg.cpu_limit_s, "CPU seconds per task (0: none)")
      ->envname("IPFIXWEB_TASK_CPU_SECONDS")
      ->capture_default_str();
  app.add_option("--runner-max-tasks", cfg.runner_max_tasks,
                 "Tasks a runner process serves before it is replaced (0: no limit)")
      ->envname("IPFIXWEB_RUNNER_MAX_TASKS")
      ->capture_default_str();
  app.add_option("--max-task-threads", cfg.max_task_threads,
                 "Cap on a task's \"threads\" (metering threads; 0: number of CPUs)")
      ->envname("IPFIXWEB_MAX_TASK_THREADS")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--curve-server-key", cfg.curve_server_key, "CURVE: the broker's public key file")
      ->envname("IPFIXWEB_CURVE_SERVER_KEY");
  app.add_option("--curve-secret-key", cfg.curve_secret_key, "CURVE: this worker's secret key file")
      ->envname("IPFIXWEB_WORKER_SECRET_KEY");
  add_log_options(app, log_opts);
  add_print_config(app);
  CLI11_PARSE(app, argc, argv);
  finish_root_options(app, roots);
  cfg.input_roots = roots.input_roots;
  cfg.output_root = roots.output_root;
  if (handle_print_config(app)) return 0;

  auto log = setup_logging("worker", log_opts);
  const auto& stop = install_stop_handlers();
  try {
    // As the api does: missing roots are created; the worker then opens them (or fails).
    std::error_code ec;
    for (auto& r : cfg.input_roots) std::filesystem::create_directories(r, ec);
    std::filesystem::create_directories(cfg.output_root, ec);
    zmq::context_t ctx(1);
    worker::Worker w(cfg, ctx);
    w.run(stop);
  } catch (const std::exception& e) {
    log->critical("worker failed: {}", e.what());
    return 1;
  }
  return 0;
}

// The worker's settings (command line and environment, see worker/main.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ipfixweb::worker {

struct Config {
  std::string broker = "tcp://127.0.0.1:5562";
  std::string worker_id;    // stable id; default host-pid
  std::uint32_t slots = 0;  // concurrent tasks; 0 = number of CPUs
  double heartbeat_s = 1.0;
  int liveness = 3;
  double grace_s = 10;                    // SIGTERM: let running tasks finish this long
  std::uint64_t memory_limit_mb = 4096;   // per task runner (RLIMIT_AS); 0 = none
  std::uint64_t cpu_limit_s = 0;          // per task (RLIMIT_CPU re-armed per task); 0 = none
  std::uint32_t runner_max_tasks = 1000;  // a runner is replaced after this many tasks (0: never)
  std::uint32_t max_task_threads = 0;     // cap on a task's "threads"; 0 = number of CPUs
  std::string curve_server_key;           // CURVE: broker's public key file ("" = plain TCP)
  std::string curve_secret_key;           // CURVE: this worker's secret key file
  // Where tasks may read and write (the api's roots, at the same paths): a task naming a file
  // anywhere else fails without it being opened (shared/confine.hpp).
  std::vector<std::string> input_roots = {"var/input"};
  std::string output_root = "var/output";
};

}  // namespace ipfixweb::worker

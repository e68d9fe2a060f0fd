// The broker: the only writer of the task database, the admission controller
// and the credit-based dispatcher between api clients and workers.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "ipfixweb/broker/settings.hpp"

namespace ipfixweb::broker {

// Settings holds what the rules depend on; the rest is the shell's.
struct Config : Settings {
  std::string frontend = "tcp://127.0.0.1:5561";  // api clients (ROUTER bind)
  std::string backend = "tcp://127.0.0.1:5562";   // workers (ROUTER bind)
  std::string db_path = "var/ipfixweb.db";
  std::string synchronous = "FULL";
  // How long worker-side changes (dispatches, results) may wait in an open transaction for
  // more to commit with them. Replies to clients never wait: they go out after a commit.
  double commit_interval_s = 0.005;
  std::string task_log_dir;    // successful_tasks.jsonl / failed_tasks.jsonl; "" = none
  std::string grant_key_file;  // Settings::grant_key is read from it (created when missing)
  // Below this much free space on the database's or the output root's file system, new
  // tasks are refused (`storage`, the api's 507) while everything else goes on.
  double min_free_mb = 64;
  // Finished tasks older than this many days leave the database, and their output files the
  // output root (retention.hpp); 0: kept for ever.
  double retention_days = 0;
  std::string curve_secret_key;  // CURVE: the broker's secret key file ("" = plain TCP)
  // CURVE: authorised public keys (a file, or a directory of *.pub) of the api (frontend)
  // and of the workers (backend); `curve_authorized` alone serves both (older setups).
  std::string curve_authorized, curve_authorized_frontend, curve_authorized_backend;
};

// The shell around the broker's Core (core.hpp): reads the sockets, hands the core each
// message, performs the effects it returns (writes in one transaction, then messages), and
// commits before anything that reports a write is sent.
class Broker {
 public:
  // Opens the database, binds both sockets and recovers the unfinished tasks.
  Broker(Config cfg, zmq::context_t& ctx);
  ~Broker();
  // Runs until `stop` becomes true. Never throws for peer misbehaviour; throws when the
  // database cannot commit (nothing uncommitted has been acknowledged then).
  void run(const std::atomic<bool>& stop);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::broker

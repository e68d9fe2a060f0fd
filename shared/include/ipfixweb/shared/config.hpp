// Command-line/environment configuration helpers shared by the executables.
// Every setting is a flag and an IPFIXWEB_* environment variable (CLI11's
// envname); --print-config shows the effective values.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ipfixweb/shared/logging.hpp"

namespace ipfixweb {

inline void add_log_options(CLI::App& app, LogOptions& opts) {
  app.add_option("--log-level", opts.level, "trace, debug, info, warn, error, critical, off")
      ->envname("IPFIXWEB_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_flag("--log-json", opts.json, "Log JSON lines instead of text")
      ->envname("IPFIXWEB_LOG_JSON");
  app.add_option("--log-dir", opts.dir, "Also write rotating log files into this directory")
      ->envname("IPFIXWEB_LOG_DIR");
}

// Heartbeat interval and liveness, shared by broker and worker (same env vars,
// so one setting keeps both sides in step).
inline void add_heartbeat_options(CLI::App& app, double& heartbeat_s, int& liveness,
                                  const std::string& liveness_help) {
  app.add_option("--heartbeat", heartbeat_s, "Heartbeat interval in seconds")
      ->envname("IPFIXWEB_HEARTBEAT")
      ->check(CLI::Range(0.01, 60.0))
      ->capture_default_str();
  app.add_option("--liveness", liveness, liveness_help)
      ->envname("IPFIXWEB_LIVENESS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
}

// The directories task paths are confined to. The api, the broker and every worker take the
// same settings (same env vars), so one setting keeps them in step; each process checks
// paths against its own copy (defence in depth: a peer that skips the api still meets the
// broker's and the worker's checks).
struct RootOptions {
  std::string data_dir = "var";
  std::vector<std::string> input_roots;  // default <data-dir>/input
  std::string output_root;               // default <data-dir>/output
};

// Adds --data-dir unless `with_data_dir` is false (the caller already has one bound to
// opts.data_dir), then --input-root and --output-root.
inline void add_root_options(CLI::App& app, RootOptions& opts, bool with_data_dir = true) {
  if (with_data_dir)
    app.add_option("--data-dir", opts.data_dir, "Data directory (defaults below live inside it)")
        ->envname("IPFIXWEB_DATA_DIR")
        ->capture_default_str();
  app.add_option("--input-root", opts.input_roots,
                 "Directory captures are read from (repeatable; default <data-dir>/input)")
      ->envname("IPFIXWEB_INPUT_ROOTS")
      ->delimiter(':');
  app.add_option("--output-root", opts.output_root,
                 "Directory IPFIX files are written under (default <data-dir>/output)")
      ->envname("IPFIXWEB_OUTPUT_ROOT");
}

// Fills the defaults from the data directory (after parsing) and shows them in --print-config.
inline void finish_root_options(CLI::App& app, RootOptions& opts) {
  if (opts.input_roots.empty()) opts.input_roots = {opts.data_dir + "/input"};
  if (opts.output_root.empty()) opts.output_root = opts.data_dir + "/output";
  auto* in = app.get_option_no_throw("--input-root");
  if (in && in->count() == 0) in->default_str(opts.input_roots.front());
  auto* out = app.get_option_no_throw("--output-root");
  if (out && out->count() == 0) out->default_str(opts.output_root);
}

inline void add_print_config(CLI::App& app) {
  app.add_flag("--print-config")->description("Print the effective configuration and exit");
}

// Records a value derived after parsing (e.g. a path inside --data-dir) as
// the option's default, so --print-config shows what will really be used.
inline void show_effective(CLI::App& app, const std::string& name, const std::string& value) {
  auto* opt = app.get_option_no_throw(name);
  if (opt && opt->count() == 0) opt->default_str(value);
}

// True (after printing) when --print-config was given.
inline bool handle_print_config(const CLI::App& app) {
  if (app.count("--print-config") == 0) return false;
  std::cout << app.config_to_str(true, true);
  return true;
}

}  // namespace ipfixweb

// ipfixctl's commands, each over the public HTTP API (docs/cli.md). app.cpp parses the command
// line into these structures; each command returns its exit code or throws a Failure.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ipfixweb/cli/client.hpp"
#include "ipfixweb/cli/config.hpp"

namespace ipfixweb::cli {

struct Global {
  std::optional<std::string> url, token;
  std::string config;  // --config ("" for the default file)
  bool json = false;
  bool no_progress = false;
  double timeout_s = 60;
};

class Context {
 public:
  explicit Context(Global g) : g_(std::move(g)) {}
  const Global& global() const { return g_; }
  bool json() const { return g_.json; }
  // A progress bar is drawn when stderr is a terminal (and not --no-progress).
  bool progress() const;
  // The resolved settings (flags, environment, file); warnings printed once.
  const Settings& settings();
  Api& api();
  // A line on stderr for the user.
  void note(const std::string& line) const;

 private:
  Global g_;
  std::optional<Settings> settings_;
  std::unique_ptr<Api> api_;
};

struct UploadArgs {
  std::vector<std::string> files;
  std::string limit_rate;  // "500k", "2M": bytes per second (K, M, G: powers of 1024)
  std::string chunk_size = "32M";
  int retries = 5;
  std::string state_dir;  // "" for the default
  bool no_reuse = false;
};

struct SubmitArgs {
  std::vector<std::string> inputs;
  std::string output;
  bool no_dpi = false, uniflow = false, no_flow_store = false, overwrite = false;
  bool server_path = false, wait = false;
  std::string filter, kind, idempotency_key;
  std::vector<std::string> analysis;
  std::optional<int> priority;
  std::optional<double> idle_timeout, active_timeout;
  std::optional<long long> max_flows;
  std::optional<std::pair<unsigned, unsigned>> partition;  // --partition I/N
  std::optional<int> parallelism;                          // --parallelism N
  UploadArgs upload;                                       // how local files are uploaded
};

struct ListArgs {
  std::string state, input, parent;
  int limit = 50;
  bool quiet = false;
};

struct FlowsArgs {
  std::string id, filter, sort, fields, format = "table";
  std::optional<long long> limit;
};

struct TopArgs {
  std::string id, by = "app", metric, filter;
  std::optional<int> n;
};

struct DownloadArgs {
  std::string id, what = "ipfix", output;
};

int cmd_upload(Context& ctx, const UploadArgs& a);
int cmd_submit(Context& ctx, const SubmitArgs& a);
int cmd_status(Context& ctx, const std::string& id);
int cmd_list(Context& ctx, const ListArgs& a);
int cmd_watch(Context& ctx, const std::string& id);  // "" watches every task
int cmd_cancel(Context& ctx, const std::string& id);
int cmd_flows(Context& ctx, const FlowsArgs& a);
int cmd_top(Context& ctx, const TopArgs& a);
int cmd_download(Context& ctx, const DownloadArgs& a);
int cmd_workers(Context& ctx);
int cmd_config(Context& ctx);

// "500k" -> 512000, "2M", "1G", "123" (K, M, G: powers of 1024, as curl's --limit-rate);
// Failure(kExitUsage) when it is not such a size.
std::uint64_t parse_size(const std::string& text, const std::string& what);

// The file name a download's Content-Disposition offers (RFC 6266): filename*=UTF-8''… when
// given, else the quoted filename (backslash escapes undone); only its last path component,
// and "" when there is none or it is "." or "..".
std::string disposition_filename(const std::string& content_disposition);

// SIGPIPE ignored; SIGINT and SIGTERM remove a download's temporary file and exit 128 + signal.
void install_signal_handlers();

// Entry point of the executable: parses argv, runs the command, prints errors; the exit code.
int run(int argc, char** argv);

}  // namespace ipfixweb::cli

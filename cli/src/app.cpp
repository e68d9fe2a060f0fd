// ipfixctl's command line (CLI11): global options, one subcommand per command, the bash
// completion generated from the same definitions, errors and exit codes.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <sstream>

#include "ipfixweb/cli/client.hpp"
#include "ipfixweb/cli/commands.hpp"
#include "ipfixweb/cli/completion.hpp"
#include "ipfixweb/cli/output.hpp"

namespace ipfixweb::cli {

namespace {

constexpr const char* kStates = "queued running succeeded failed cancelled";

struct Definition {
  Global g;
  std::string url, token;
  UploadArgs upload;
  SubmitArgs submit;
  std::string id;
  ListArgs list;
  FlowsArgs flows;
  TopArgs top;
  DownloadArgs download;
  std::string shell = "bash";
  std::function<int(Context&)> action;
};

void add_upload_options(CLI::App* c, UploadArgs& u) {
  c->add_option("--limit-rate", u.limit_rate,
                "Send at most this many bytes per second (500k, 2M; K, M, G are powers of 1024)");
  c->add_option("--chunk-size", u.chunk_size, "Bytes per PATCH request (default 32M)");
  c->add_option("--retries", u.retries,
                "Failed attempts in a row before giving up (each waits twice as long)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  c->add_option("--state-dir", u.state_dir,
                "Where unfinished uploads are remembered for a later resume "
                "(default $XDG_STATE_HOME/ipfixweb or ~/.local/state/ipfixweb)");
  c->add_flag("--no-reuse", u.no_reuse,
              "Upload even when the server already has a capture with this SHA-256");
}

void build(CLI::App& app, Definition& d) {
  app.fallthrough();
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Every command's options");
  app.add_option("--url", d.url,
                 "Server address (env IPFIXWEB_URL, config file; default http://127.0.0.1:8000)");
  app.add_option("--token", d.token, "Bearer token (env IPFIXWEB_TOKEN, config file)");
  app.add_option("--config", d.g.config,
                 "Config file (default $XDG_CONFIG_HOME/ipfixweb/ipfixctl.conf or "
                 "~/.config/ipfixweb/ipfixctl.conf)");
  app.add_flag("--json", d.g.json, "Machine-readable JSON: one document, or NDJSON for streams");
  app.add_flag("--no-progress", d.g.no_progress, "No progress bar (drawn only on a terminal)");
  app.add_option("--timeout", d.g.timeout_s, "Seconds to wait for a connection or an answer")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();

  auto* up = app.add_subcommand(
      "upload", "Upload captures (resumable; prints each capture's sha256:<hex> reference)");
  up->add_option("FILE", d.upload.files, "Captures to upload")
      ->required()
      ->check(CLI::ExistingPath);  // a directory is refused by the upload itself (exit 5)
  add_upload_options(up, d.upload);
  up->callback([&d] { d.action = [&d](Context& c) { return cmd_upload(c, d.upload); }; });

  auto* sub =
      app.add_subcommand("submit", "Submit a conversion task (local files are uploaded first)");
  auto& s = d.submit;
  sub->add_option("FILE", s.inputs,
                  "Captures: local files (uploaded), sha256:<hex> or upload:<id> references, or "
                  "paths on the server")
      ->required();
  sub->add_option("-o,--output", s.output,
                  "output_path on the server (default: the first input's name with .ipfix; "
                  ".merged.ipfix for a merge)");
  sub->add_flag("--no-dpi", s.no_dpi, "No nDPI labels (DPI false)");
  sub->add_option("--filter", s.filter, "BPF filter applied to the packets");
  sub->add_flag("--uniflow", s.uniflow, "One record per direction instead of biflows");
  sub->add_option("--analysis", s.analysis,
                  "Protocol families of the summary (tcp,udp,icmp,dns,tls,http,quic,other), "
                  "comma-separated or repeated")
      ->delimiter(',')
      ->expected(1)  // one argument each time: FILE after it is not taken for a family
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--priority", s.priority, "Priority -100..100 (higher runs first)")
      ->check(CLI::Range(-100, 100));
  sub->add_option("--idle-timeout", s.idle_timeout, "Seconds without packets that end a flow");
  sub->add_option("--active-timeout", s.active_timeout, "Seconds after which a flow is split");
  sub->add_option("--max-flows", s.max_flows, "Flows kept in memory at once");
  sub->add_flag("--no-flow-store", s.no_flow_store,
                "Do not write the flow store (no flows/top for this task)");
  sub->add_option("--kind", s.kind,
                  "Task kind: convert (default), ingest (IPFIX files in), merge (the FILEs are "
                  "the outputs of a conversion's partitions 0..N-1 on the server, under its "
                  "output root)")
      ->check(CLI::IsMember({"convert", "ingest", "merge"}));
  sub->add_option_function<std::string>(
         "--partition",
         [&s](const std::string& v) {
           unsigned i = 0, n = 0;
           char slash = 0, extra = 0;
           std::istringstream in(v);
           if (!(in >> i >> slash >> n) || slash != '/' || (in >> extra) || n < 1 || i >= n)
             throw CLI::ValidationError("--partition", "expected I/N with 0 <= I < N");
           s.partition = std::pair{i, n};
         },
         "Convert only flow partition I of N (I/N); a --kind merge task of the N outputs makes "
         "the whole conversion")
      ->type_name("I/N");
  sub->add_option("--parallelism", s.parallelism,
                  "Split the conversion into N parts that run on different workers, then merge "
                  "them (2..64; 1: never split, also not above the server's --split-above; "
                  "the server does both)")
      ->check(CLI::Range(1, 64));
  sub->add_flag("--overwrite", s.overwrite, "May replace the output of an earlier succeeded task");
  sub->add_option("--idempotency-key", s.idempotency_key,
                  "Idempotency-Key: the same key and request return the existing task");
  sub->add_flag("--server-path", s.server_path,
                "The FILE names are paths on the server (under its input roots), never uploaded");
  sub->add_flag("--wait", s.wait,
                "Follow the task to its end; exit 1 when it fails or is cancelled");
  add_upload_options(sub, s.upload);
  sub->callback([&d] { d.action = [&d](Context& c) { return cmd_submit(c, d.submit); }; });

  auto* st = app.add_subcommand("status", "Show one task");
  st->add_option("ID", d.id, "Task id")->required();
  st->callback([&d] { d.action = [&d](Context& c) { return cmd_status(c, d.id); }; });

  auto* ls = app.add_subcommand("list", "List tasks, newest first");
  ls->add_option("--state", d.list.state, "Only tasks in this state")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"}));
  ls->add_option("--input", d.list.input, "Only tasks with an input path containing this text");
  ls->add_option("--parent", d.list.parent,
                 "The parts of this split task (submit --parallelism) instead");
  ls->add_option("--limit", d.list.limit, "At most this many tasks")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  ls->add_flag("-q,--quiet", d.list.quiet, "Only the task ids, one a line");
  ls->callback([&d] { d.action = [&d](Context& c) { return cmd_list(c, d.list); }; });

  auto* wa = app.add_subcommand(
      "watch", "Live task state changes (every task until Ctrl-C, or one task until its end)");
  wa->add_option("ID", d.id, "Follow only this task (exit 1 when it fails or is cancelled)");
  wa->callback([&d] { d.action = [&d](Context& c) { return cmd_watch(c, d.id); }; });

  auto* ca = app.add_subcommand("cancel", "Cancel a queued or running task");
  ca->add_option("ID", d.id, "Task id")->required();
  ca->callback([&d] { d.action = [&d](Context& c) { return cmd_cancel(c, d.id); }; });

  auto* fl = app.add_subcommand("flows", "A task's flow records (docs/flow-filter.md)");
  fl->add_option("ID", d.flows.id, "Task id")->required();
  fl->add_option("--filter", d.flows.filter, "Flow filter, e.g. 'app ~ TLS and bytes > 1M'");
  fl->add_option("--sort", d.flows.sort, "Sort columns, e.g. -bytes,start_ms");
  fl->add_option("--fields", d.flows.fields, "Columns, comma-separated (default: all)");
  fl->add_option("--limit", d.flows.limit,
                 "At most this many records (table: 20; ndjson, csv: every match)")
      ->check(CLI::PositiveNumber);
  fl->add_option("--format", d.flows.format,
                 "table, or ndjson / csv streamed to stdout in constant memory")
      ->check(CLI::IsMember({"table", "ndjson", "csv"}))
      ->capture_default_str();
  fl->callback([&d] { d.action = [&d](Context& c) { return cmd_flows(c, d.flows); }; });

  auto* tp = app.add_subcommand("top", "A task's top groups by bytes, packets or flows");
  tp->add_option("ID", d.top.id, "Task id")->required();
  tp->add_option("--by", d.top.by, "Group by app, src, dst, pair, server_name, ja3, port, proto")
      ->check(CLI::IsMember({"app", "src", "dst", "pair", "server_name", "ja3", "port", "proto"}))
      ->capture_default_str();
  tp->add_option("--metric", d.top.metric, "Order by bytes (default), packets or flows")
      ->check(CLI::IsMember({"bytes", "packets", "flows"}));
  tp->add_option("-n,--count", d.top.n, "Groups shown, 1..1000 (default 20)")
      ->check(CLI::Range(1, 1000));
  tp->add_option("--filter", d.top.filter, "Flow filter applied before grouping");
  tp->callback([&d] { d.action = [&d](Context& c) { return cmd_top(c, d.top); }; });

  auto* dl = app.add_subcommand("download", "Download a task's output (streamed, then renamed)");
  dl->add_option("ID", d.download.id, "Task id")->required();
  dl->add_option("--what", d.download.what,
                 "ipfix (the output file), flows (the flow store, SQLite), ndjson or csv")
      ->check(CLI::IsMember({"ipfix", "flows", "ndjson", "csv"}))
      ->capture_default_str();
  dl->add_option("-o,--output", d.download.output,
                 "File or directory to write (default: the server's file name here; - for stdout)");
  dl->callback([&d] { d.action = [&d](Context& c) { return cmd_download(c, d.download); }; });

  auto* wk = app.add_subcommand("workers", "The broker, its workers and the task counts");
  wk->callback([&d] { d.action = [](Context& c) { return cmd_workers(c); }; });

  auto* cf = app.add_subcommand("config", "Show the server address and token in effect, and why");
  cf->callback([&d] { d.action = [](Context& c) { return cmd_config(c); }; });

  auto* co = app.add_subcommand("completion", "Print the shell completion script");
  co->add_option("SHELL", d.shell, "Only bash")
      ->check(CLI::IsMember({"bash"}))
      ->capture_default_str();
  // Filled in by run(): it needs the whole app.
}

CompletionSpec completion_spec(CLI::App& app) {
  CompletionSpec spec;
  auto names = [](CLI::Option* o) {
    std::vector<std::string> out;
    for (const auto& l : o->get_lnames()) out.push_back("--" + l);
    for (const auto& s : o->get_snames()) out.push_back("-" + s);
    return out;
  };
  for (auto* o : app.get_options()) {
    if (o->get_positional()) continue;
    auto n = names(o);
    auto& to = o->get_expected_max() == 0 ? spec.global_flags : spec.global_valued;
    to.insert(to.end(), n.begin(), n.end());
  }
  for (auto* c : app.get_subcommands({})) {
    CompletionCommand cc;
    cc.name = c->get_name();
    for (auto* o : c->get_options()) {
      if (o->get_positional()) continue;
      auto n = names(o);
      if (std::find(n.begin(), n.end(), "--help") != n.end() ||
          std::find(n.begin(), n.end(), "--help-all") != n.end())
        continue;  // the global ones
      auto& to = o->get_expected_max() == 0 ? cc.flags : cc.valued;
      to.insert(to.end(), n.begin(), n.end());
    }
    if (cc.name == "upload" || cc.name == "submit")
      cc.positional = "files";
    else if (cc.name == "completion")
      cc.positional = "words:bash";
    else if (cc.name == "workers" || cc.name == "config" || cc.name == "list")
      cc.positional = "none";
    else
      cc.positional = "task";
    spec.commands.push_back(std::move(cc));
  }
  spec.values = {{"--format", "table ndjson csv"},
                 {"--what", "ipfix flows ndjson csv"},
                 {"--by", "app src dst pair server_name ja3 port proto"},
                 {"--metric", "bytes packets flows"},
                 {"--state", kStates},
                 {"--kind", "convert ingest merge"},
                 {"--analysis", "tcp udp icmp dns tls http quic other"}};
  spec.file_options = {"-o", "--output", "--config", "--state-dir"};
  return spec;
}

}  // namespace

int run(int argc, char** argv) {
  install_signal_handlers();
  CLI::App app{"ipfixctl: the command-line client of ipfixweb (docs/cli.md)", "ipfixctl"};
  app.footer(
      "Exit codes: 0 ok; 1 the task failed or was cancelled (--wait, watch ID); 2 usage error; "
      "3 the server refused the request (4xx); 4 cannot reach the server, or it failed (5xx); "
      "5 a local file could not be read or written, or a digest differed; 130 interrupted.");
  Definition d;
  build(app, d);
  app.get_subcommand("completion")->callback([&] {
    d.action = [&app](Context&) {
      write_stdout(bash_completion(completion_spec(app)));
      return int{kExitOk};
    };
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (app.count("--url")) d.g.url = d.url;
  if (app.count("--token")) d.g.token = d.token;
  Context ctx(d.g);
  try {
    return d.action ? d.action(ctx) : kExitUsage;
  } catch (const Failure& f) {
    if (f.code() == kExitStdoutClosed) return f.code();
    for (const auto& l : failure_lines(f)) std::fprintf(stderr, "ipfixctl: %s\n", l.c_str());
    return f.code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ipfixctl: %s\n", e.what());
    return kExitLocal;
  }
}

}  // namespace ipfixweb::cli

// pcap2ipfix: convert pcap/pcapng captures (plain, or compressed with gzip, zstd, xz or bzip2) to
// an IPFIX file (or live collector) with nDPI labels;
// with --ingest, read IPFIX files of any exporter instead (docs/ipfix-ingest.md).
// Exit status: 0 success, 1 conversion error (one line on stderr), 2 usage error, 130 interrupted.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/flows/export.hpp"

namespace {

std::atomic<bool> g_cancel{false};

extern "C" void on_signal(int) { g_cancel.store(true); }

// --partition I/N: true, with i and n set, when `v` is exactly that with 0 <= I < N <= the most.
bool parse_partition(const std::string& v, unsigned& i, unsigned& n) {
  char slash = 0, extra = 0;
  return std::sscanf(v.c_str(), "%u%c%u%c", &i, &slash, &n, &extra) == 3 && slash == '/' &&
         n >= 1 && n <= ipfixweb::engine::Options::kMaxPartitions && i < n;
}

// Writes every record of the flow store to `path` ('-' = stdout) as NDJSON or CSV: the
// api's export of the whole listing, by the same code.
void export_store(const std::string& store_path, const std::string& path,
                  ipfixweb::flows::Format format) {
  namespace fl = ipfixweb::flows;
  fl::Store store(store_path);
  auto listing = fl::build_list({.unbounded = true});
  if (auto* e = std::get_if<fl::ParamError>(&listing)) throw fl::Error(e->message);
  fl::RowExport rows(store.handle(), std::move(std::get<fl::ListQuery>(listing)), format);
  std::ofstream file;
  std::ostream* out = &std::cout;
  if (path != "-") {
    file.open(path, std::ios::binary | std::ios::trunc);
    if (!file) throw fl::Error("cannot write '" + path + "'");
    out = &file;
  }
  std::string buf;
  for (bool more = true; more;) {
    more = rows.fill(buf, 1u << 16);
    out->write(buf.data(), static_cast<std::streamsize>(buf.size()));
    buf.clear();
  }
  if (!out->flush()) throw fl::Error("cannot write '" + path + "'");
}

}  // namespace

int main(int argc, char** argv) {
  namespace eng = ipfixweb::engine;
  eng::Options opts;
  std::string summary_path;
  bool quiet = false;
  bool show_progress = false;
  bool no_dpi = false;
  bool uniflow = false;
  bool no_decap = false;
  bool ingest = false;

  CLI::App app{
      "Convert pcap/pcapng captures into IPFIX (RFC 7011/5655) flow records labelled by nDPI"};
  app.footer(
      "Captures may be compressed with gzip, zstd, xz or bzip2: told by their content, not by "
      "their name, and decompressed in one streaming pass (--progress then counts compressed "
      "bytes). A corrupt stream is an error; one cut short is read up to the cut, with a "
      "warning, like a cut-short capture.");
  app.add_option("inputs", opts.inputs,
                 "capture files, pcap or pcapng, plain or compressed (read as one stream in "
                 "timestamp order); with --ingest, IPFIX files (read one after another)")
      ->required();
  app.add_flag("--ingest", ingest,
               "the inputs are IPFIX files of any exporter: carry their records over into the "
               "output, the flow store and the summary (no metering, no DPI; capture options "
               "do not apply; --no-dpi drops their labels)");
  bool merge = false;
  app.add_flag("--merge", merge,
               "the inputs are the IPFIX outputs of flow partitions 0..N-1 of one conversion "
               "(--partition I/N), each with its summary beside it as INPUT.summary.json "
               "(--summary-json) and, for --flows-db, its flow store as INPUT.flows.sqlite: "
               "write the output of the whole conversion (docs/engine.md, Partitions)");
  app.add_option("--extract", opts.flow,
                 "write the packets of one flow to the output, a pcap file, instead of IPFIX: "
                 "a flow selector such as 'tcp 10.0.0.1:51234 <-> 10.0.0.2:443 ms FIRST-LAST' "
                 "(docs/api.md, Flow selectors; --filter and --no-decap apply as when the flow "
                 "was metered)");
  app.add_option("-o,--output", opts.output,
                 "IPFIX file, or tcp://HOST:PORT / udp://HOST:PORT (with --extract: a pcap file)")
      ->required();
  app.add_flag("--no-dpi", no_dpi, "do not run nDPI (no application labels)");
  app.add_option("--idle-timeout", opts.idle_timeout_s, "idle timeout in seconds (packet time)")
      ->capture_default_str();
  app.add_option("--active-timeout", opts.active_timeout_s, "active timeout in seconds")
      ->capture_default_str();
  app.add_option("--filter", opts.bpf_filter, "BPF filter applied to the input packets");
  app.add_flag("--uniflow", uniflow, "one record per direction instead of RFC 5103 biflows");
  app.add_option("--max-flows", opts.max_flows, "flow table size; the oldest flow is evicted")
      ->capture_default_str();
  app.add_option("--threads", opts.threads,
                 "flow metering threads: 1 = one thread does everything; N > 1 = one thread "
                 "reads and decodes, N threads meter and label (same records, another order; "
                 "--max-flows is shared out among them)")
      ->check(CLI::Range(1u, ipfixweb::engine::Options::kMaxThreads))
      ->capture_default_str();
  std::string partition;
  app.add_option("--partition", partition,
                 "I/N: meter only flow partition I (0..N-1) of N, by a symmetric hash of the flow "
                 "key; every packet is still read and counted (parts 0..N-1 together hold every "
                 "record)")
      ->check([](const std::string& v) -> std::string {
        unsigned i = 0, n = 0;
        return parse_partition(v, i, n)
                   ? ""
                   : "expected I/N with 0 <= I < N <= " +
                         std::to_string(ipfixweb::engine::Options::kMaxPartitions);
      });
  app.add_option("--observation-domain", opts.observation_domain, "IPFIX observation domain id")
      ->capture_default_str();
  app.add_option("--analysis", opts.analysis,
                 "label families to break down in the summary (dns, tls, ...)");
  app.add_flag("--no-decap", no_decap,
               "meter tunnels (GRE, VXLAN, IP-in-IP, Teredo) as outer flows");
  app.add_option("--summary-json", summary_path,
                 "write the run summary as JSON to FILE ('-' = stdout)");
  std::string ndjson_path, csv_path;
  app.add_option("--flows-db", opts.flows_db,
                 "also write the flow store: an SQLite file with every record and the time "
                 "series (docs/flow-store.md)");
  app.add_option("--ndjson", ndjson_path,
                 "also write every record as NDJSON to FILE ('-' = stdout)");
  app.add_option("--csv", csv_path, "also write every record as CSV to FILE ('-' = stdout)");
  app.add_option("--max-decompressed-size", opts.max_decompressed_bytes,
                 "compressed inputs: stop with an error when one decompresses to more than "
                 "BYTES (0 = no bound)")
      ->capture_default_str();
  app.add_option("--max-decompression-ratio", opts.max_decompression_ratio,
                 "compressed inputs: stop with an error when one's output, once past 64 MiB, "
                 "is more than R times the compressed bytes read: a decompression bomb "
                 "(0 = no bound)")
      ->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "no log output");
  app.add_flag("--progress", show_progress, "print progress to stderr");
  unsigned repeat = 1;
  app.add_option("--repeat", repeat,
                 "benchmark: convert N times in this process (as a worker's task runner does) and "
                 "print the mean time per conversion")
      ->check(CLI::Range(1u, 100000000u));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "pcap2ipfix: " << e.what() << " (see --help)\n";
    return 2;
  }
  opts.dpi = !no_dpi;
  opts.biflow = !uniflow;
  if (!partition.empty()) parse_partition(partition, opts.partition, opts.partitions);
  if (ingest) opts.mode = eng::Mode::Ingest;
  if (merge) {
    if (ingest || !opts.flow.empty() || !partition.empty()) {
      std::cerr << "pcap2ipfix: --merge takes no --ingest, --extract or --partition\n";
      return 2;
    }
    opts.mode = eng::Mode::Merge;
    for (const auto& part : opts.inputs) {
      std::ifstream in(part + ".summary.json");
      std::stringstream text;
      text << in.rdbuf();
      if (!in) {
        std::cerr << "pcap2ipfix: part '" << part << "' has no summary beside it: " << part
                  << ".summary.json (write it with --summary-json)\n";
        return 1;
      }
      opts.part_summaries.push_back(text.str());
      opts.part_stores.push_back(part + ".flows.sqlite");
    }
  }
  if (!opts.flow.empty()) {
    if (ingest || !opts.flows_db.empty() || !ndjson_path.empty() || !csv_path.empty()) {
      std::cerr << "pcap2ipfix: --extract writes a pcap only (no --ingest, --flows-db, --ndjson "
                   "or --csv)\n";
      return 2;
    }
    opts.mode = eng::Mode::Extract;
  }
  if ((ndjson_path == "-") + (csv_path == "-") + (summary_path == "-") > 1) {
    std::cerr << "pcap2ipfix: only one of --ndjson, --csv and --summary-json can go to stdout\n";
    return 2;
  }
  // NDJSON/CSV are read back from the flow store: a temporary one when none was asked for.
  std::string temp_store;
  if (opts.flows_db.empty() && (!ndjson_path.empty() || !csv_path.empty())) {
    const char* tmp = std::getenv("TMPDIR");
    temp_store = std::string(tmp && *tmp ? tmp : "/tmp") + "/pcap2ipfix." +
                 std::to_string(::getpid()) + ".flows.sqlite";
    opts.flows_db = temp_store;
  }
  struct RemoveTemp {
    const std::string& path;
    ~RemoveTemp() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  } remove_temp{temp_store};
  opts.decapsulate_tunnels = !no_decap;
  spdlog::set_level(quiet ? spdlog::level::warn : spdlog::level::info);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  eng::ProgressFn progress;
  if (show_progress) {
    progress = [](const eng::Progress& p) {
      const double pct = p.bytes_total ? 100.0 * static_cast<double>(p.bytes_read) /
                                             static_cast<double>(p.bytes_total)
                                       : 0.0;
      std::fprintf(stderr, "\rpcap2ipfix: %llu packets, %5.1f%%",
                   static_cast<unsigned long long>(p.packets), pct);
      std::fflush(stderr);
    };
  }

  try {
    // An ingest sets nDPI up only if a label needs a protocol name; an extract never does.
    eng::Engine engine(opts.dpi && opts.mode == eng::Mode::Convert, opts.threads);
    eng::Conversion result;
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned i = 0; i < repeat; ++i) result = engine.convert_text(opts, progress, &g_cancel);
    if (repeat > 1) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr,
                   "pcap2ipfix: %u conversions in %.3f s: %.1f us each, nDPI set up %llu times\n",
                   repeat, s, s / repeat * 1e6,
                   static_cast<unsigned long long>(engine.dpi_initialisations()));
    }
    if (show_progress) std::fputc('\n', stderr);
    if (!ndjson_path.empty())
      export_store(opts.flows_db, ndjson_path, ipfixweb::flows::Format::Ndjson);
    if (!csv_path.empty()) export_store(opts.flows_db, csv_path, ipfixweb::flows::Format::Csv);
    if (!summary_path.empty()) {
      const auto summary = nlohmann::json::parse(result.summary);
      if (summary_path == "-") {
        std::cout << summary.dump(2) << '\n';
      } else {
        std::ofstream out(summary_path);
        out << summary.dump(2) << '\n';
        if (!out.flush()) {
          std::cerr << "pcap2ipfix: cannot write summary '" << summary_path << "'\n";
          return 1;
        }
      }
    }
    return 0;
  } catch (const eng::Cancelled&) {
    if (show_progress) std::fputc('\n', stderr);
    std::cerr << "pcap2ipfix: interrupted, no output written\n";
    return 130;
  } catch (const std::exception& e) {
    if (show_progress) std::fputc('\n', stderr);
    std::cerr << "pcap2ipfix: error: " << e.what() << '\n';
    return 1;
  }
}

#include "ipfixweb/engine/engine.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <thread>

#include "community_id.hpp"
#include "decoder.hpp"
#include "dpi.hpp"
#include "export_sink.hpp"
#include "exporter.hpp"
#include "extract.hpp"
#include "flow_table.hpp"
#include "ipfix_ingest.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "merge.hpp"
#include "outputs.hpp"
#include "packet_source.hpp"
#include "pcap_reader.hpp"
#include "summary.hpp"
#include "threaded.hpp"

namespace ipfixweb::engine {
namespace {

std::shared_ptr<spdlog::logger> logger() {
  auto lg = spdlog::get("engine");
  if (lg) return lg;
  lg = spdlog::default_logger()->clone("engine");
  try {
    spdlog::register_logger(lg);
  } catch (const spdlog::spdlog_ex&) {  // registered concurrently
    if (auto existing = spdlog::get("engine")) return existing;
  }
  return lg;
}

std::uint64_t seconds_to_ms(double s, const char* what) {
  if (!(s > 0) || !std::isfinite(s) || s > 1e9) {
    throw EngineError(std::string("invalid ") + what + " (must be a positive number of seconds)");
  }
  return static_cast<std::uint64_t>(std::llround(s * 1000.0));
}

FlowTableConfig table_config(const Options& opts) {
  if (opts.max_flows == 0) throw EngineError("invalid max_flows (must be at least 1)");
  FlowTableConfig tcfg;
  tcfg.idle_timeout_ms = seconds_to_ms(opts.idle_timeout_s, "idle timeout");
  tcfg.active_timeout_ms = seconds_to_ms(opts.active_timeout_s, "active timeout");
  tcfg.max_flows = opts.max_flows;
  return tcfg;
}

// What the summary says of each input before reading it.
void describe_inputs(const MergedReader& reader, Summary& summary) {
  for (const auto& r : reader.readers()) {
    InputInfo info;
    info.path = r->path();
    info.link_type = r->dlt();
    const char* n = pcap_datalink_val_to_name(r->dlt());
    info.link_name = n ? n : "";
    info.file_bytes = r->file_size();
    if (r->compression() != capture::Compression::None)
      info.compression = std::string(capture::name(r->compression()));
    summary.inputs.push_back(info);
  }
}

// What the summary says of each input after reading it, and the warnings of the whole run.
void account_inputs(const MergedReader& reader, Summary& summary) {
  for (std::size_t i = 0; i < reader.readers().size(); ++i) {
    const auto& r = *reader.readers()[i];
    summary.inputs[i].packets = r.packets();
    summary.inputs[i].truncated = r.truncated();
    if (r.truncated()) {
      summary.warn("input '" + r.path() + "': last record cut short after " +
                   std::to_string(r.packets()) + " packets (" + r.truncation_message() + ")");
    }
  }
  if (summary.out_of_order_packets) {
    summary.warn(std::to_string(summary.out_of_order_packets) +
                 " packets had timestamps earlier than a previous packet");
  }
  if (summary.packets_read == 0) summary.warn("the input contains no packets");
}

Summary::Extras summary_extras(const Options& opts, const DpiStats* dpi) {
  Summary::Extras x;
  x.output = opts.output;
  x.dpi = opts.dpi;
  x.biflow = opts.biflow;
  x.partition = opts.partition;
  x.partitions = opts.partitions;
  if (dpi) {
    x.has_dpi_stats = true;
    x.classified = dpi->flows_classified;
    x.guessed = dpi->flows_guessed;
    x.unknown = dpi->flows_unknown;
    x.packets_inspected = dpi->packets_inspected;
  }
  return x;
}

unsigned thread_count(const Options& opts) {
  if (opts.threads == 0 || opts.threads > Options::kMaxThreads) {
    throw EngineError("invalid threads (must be 1 to " + std::to_string(Options::kMaxThreads) +
                      ")");
  }
  return opts.threads;
}

void check_partition(const Options& opts) {
  if (opts.partitions == 0 || opts.partitions > Options::kMaxPartitions ||
      opts.partition >= opts.partitions) {
    throw EngineError("invalid partition " + std::to_string(opts.partition) + " of " +
                      std::to_string(opts.partitions) + " (partitions: 1 to " +
                      std::to_string(Options::kMaxPartitions) + ", partition: 0 to partitions-1)");
  }
}

// The single-threaded metering loop: every packet through one table, DPI and the store's series.
MeterResult meter_single(PacketSource& source, const FlowTableConfig& tcfg, IpfixExporter& exporter,
                         Summary& summary, flows::Writer* store, Dpi* dpi, bool biflow) {
  ExportSink sink(exporter, dpi, summary, store, biflow);
  FlowTable table(tcfg, sink);
  const bool live = exporter.is_network();
  DecodedPacket pkt;
  std::uint64_t ts_ms = 0;
  while (source.next(pkt, ts_ms)) {
    sink.set_now(std::max(ts_ms, table.now_ms()));
    if (source.foreign()) {  // another partition's flow: only its packet time counts here
      table.advance(ts_ms);
      if (live) exporter.tick(table.now_ms());
      if (store) store->series().include_time(ts_ms);
      continue;
    }
    const FlowTable::Hit hit = table.update(pkt, ts_ms);
    if (live) exporter.tick(table.now_ms());
    if (dpi) dpi->process(*hit.flow, pkt, ts_ms);
    if (store) store->series().on_packet(hit.flow->buckets, ts_ms, pkt.ip_octets);
  }
  MeterResult r;
  r.peak_flows = table.peak_size();
  table.flush(EndReason::kForcedEnd);
  if (dpi) r.dpi = dpi->stats();
  return r;
}

}  // namespace

struct Engine::Impl {
  // One nDPI module per metering thread, reused across conversions (NdpiSlot::fresh); slot 0
  // is the single-threaded conversions' one and names the labels of an IPFIX ingest.
  std::vector<NdpiSlot> ndpi = std::vector<NdpiSlot>(1);
  // Sets up modules 0..n-1: 0 on this thread (with nDPI's process-wide libgcrypt set-up) while
  // the others are set up in parallel without it.
  void prepare(unsigned n) {
    if (ndpi.size() < n) ndpi.resize(n);
    std::vector<std::exception_ptr> errors(n);
    std::vector<std::thread> helpers;
    for (unsigned i = 1; i < n; ++i) {
      if (ndpi[i].module) continue;
      helpers.emplace_back([this, i, &errors] {
        try {
          ndpi[i].make(false);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      });
    }
    try {
      if (!ndpi[0].module) ndpi[0].make();
    } catch (...) {
      errors[0] = std::current_exception();
    }
    for (auto& t : helpers) t.join();
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  std::uint64_t inits() const {
    std::uint64_t n = 0;
    for (const auto& s : ndpi) n += s.inits;
    return n;
  }
};

const std::string& temporary_host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return std::string();
    std::string h(buf);
    for (char& c : h)  // keep it one plain path component
      if (c == '/' || c == '\0') c = '_';
    return h;
  }();
  return name;
}

std::string temporary_output_name(const std::string& output, long pid) {
  return output + ".tmp." + temporary_host_name() + "." + std::to_string(pid);
}

Engine::Engine() : Engine(true) {}
Engine::Engine(bool init_dpi, unsigned dpi_threads) : impl_(std::make_unique<Impl>()) {
  if (init_dpi) impl_->prepare(std::clamp(dpi_threads, 1u, Options::kMaxThreads));
  IpfixExporter::prepare_model();
  prepare_community_id();
}
Engine::~Engine() = default;

std::uint64_t Engine::dpi_initialisations() const { return impl_->inits(); }

nlohmann::json Engine::convert(const Options& opts, const ProgressFn& progress,
                               const std::atomic<bool>* cancel) {
  return nlohmann::json::parse(convert_text(opts, progress, cancel).summary);
}

Conversion Engine::convert_text(const Options& opts, const ProgressFn& progress,
                                const std::atomic<bool>* cancel) {
  Conversion c = run(opts, progress, cancel);
  if (!opts.summary_file.empty()) publish_summary(opts, c.summary);
  return c;
}

Conversion Engine::run(const Options& opts, const ProgressFn& progress,
                       const std::atomic<bool>* cancel) {
  if (opts.mode == Mode::Ingest) {
    // Labels that come as an nDPI protocol id only are named by nDPI (set up on first use).
    return ingest_ipfix(opts, progress, cancel, [this](std::uint16_t id) {
      NdpiSlot& slot = impl_->ndpi[0];
      if (!slot.module) slot.make();
      return Dpi(*slot.module).name(0, id);
    });
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto cancelled = [cancel] { return cancel && cancel->load(std::memory_order_relaxed); };
  if (opts.mode == Mode::Extract) return extract_flow(opts, progress, cancel);
  if (opts.mode == Mode::Merge) return merge_partitions(opts, progress, cancel);
  if (cancelled()) throw Cancelled();
  if (opts.inputs.empty()) throw EngineError("no input file given");
  if (opts.output.empty()) throw EngineError("no output given");
  const FlowTableConfig tcfg = table_config(opts);
  const unsigned threads = thread_count(opts);
  check_partition(opts);
  if (!opts.input_fds.empty() && opts.input_fds.size() != opts.inputs.size())
    throw EngineError("internal error: open inputs and input names do not match");
  // Input errors before touching the output.
  MergedReader reader(opts.inputs, opts.bpf_filter, opts.input_fds, read_options(opts));
  Summary summary(opts.analysis, opts.dpi);
  describe_inputs(reader, summary);
  IpfixExporter exporter(exporter_config(opts));  // removes its temporary file unless committed
  const bool live = exporter.is_network();
  std::unique_ptr<flows::Writer> store = open_store(opts, live, "pcap", opts.dpi);  // likewise
  PacketSource source(reader, summary, opts, progress, cancel);
  MeterResult metered;
  if (threads > 1) {
    metered = meter_threaded(source, opts, tcfg, {exporter, summary, store.get()},
                             opts.dpi ? &impl_->ndpi : nullptr);
  } else {
    std::unique_ptr<Dpi> dpi = opts.dpi ? std::make_unique<Dpi>(impl_->ndpi[0].fresh()) : nullptr;
    metered = meter_single(source, tcfg, exporter, summary, store.get(), dpi.get(), opts.biflow);
  }
  account_inputs(reader, summary);
  summary.peak_flows = metered.peak_flows;
  publish_outputs(exporter, store.get());  // the store, then the IPFIX file
  source.report_end();
  summary.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Conversion c;
  c.summary.reserve(4096);
  summary.write_json(c.summary, summary_extras(opts, opts.dpi ? &metered.dpi : nullptr));
  c.packets = summary.packets();
  c.bytes = summary.bytes();
  c.flows = summary.records();
  logger()->info("converted {} packets into {} IPFIX records ({} flows) in {:.3f} s{}{}",
                 summary.packets_read, summary.records(), summary.biflows(), summary.elapsed_s,
                 opts.threads > 1 ? fmt::format(" with {} metering threads", opts.threads) : "",
                 opts.partitions > 1
                     ? fmt::format(" (flow partition {} of {})", opts.partition, opts.partitions)
                     : "");
  return c;
}

}  // namespace ipfixweb::engine

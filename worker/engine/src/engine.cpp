#include "ipfixweb/engine/engine.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "community_id.hpp"
#include "decoder.hpp"
#include "dpi.hpp"
#include "exporter.hpp"
#include "extract.hpp"
#include "flow_table.hpp"
#include "ipfix_ingest.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "outputs.hpp"
#include "pcap_reader.hpp"
#include "summary.hpp"

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

// The flow store rows of one finished flow: the same records, in the same order, with the
// same values as IpfixExporter::write puts in the IPFIX file.
void store_records(const Flow& f, EndReason reason, const FlowLabel& label, bool biflow,
                   flows::Writer& store) {
  flows::FlowRow r;
  r.ip_version = f.key.ip_version;
  r.proto = f.key.proto;
  r.vlan = f.key.vlan;
  r.end_reason = static_cast<std::uint8_t>(reason);
  r.community_id = label.community_id;
  if (label.name) {
    r.has_app = true;
    r.app_id = label.id;
    r.app = *label.name;
    if (label.server) r.server_name = *label.server;
    if (label.ja3c) r.ja3c = *label.ja3c;
    r.risk = label.risk;
    r.risk_score = label.risk_score;
    if (label.risks) r.risks = *label.risks;
  }
  const bool icmp = f.key.proto == 1 || f.key.proto == 58;
  const auto endpoints = [&](const FlowKey& k) {
    if (k.ip_version == 4) {
      r.src = flows::v4_key(k.src.data());
      r.dst = flows::v4_key(k.dst.data());
    } else {
      r.src = k.src;
      r.dst = k.dst;
    }
    r.sport = k.sport;
    r.dport = k.dport;
  };
  const auto forward = [&](const DirectionStats& d) {
    r.fwd_packets = d.packets;
    r.fwd_bytes = d.octets;
    r.tcp_flags = d.tcp_flags;
    r.tos = d.tos;
    r.icmp_type_code = icmp ? d.icmp_type_code : 0;
  };
  if (biflow) {
    endpoints(f.key);
    forward(f.fwd);
    r.start_ms = f.start_ms;
    r.end_ms = f.end_ms;
    r.has_rev = true;
    r.rev_packets = f.rev.packets;
    r.rev_bytes = f.rev.octets;
    r.rev_tcp_flags = f.rev.tcp_flags;
    r.rev_tos = f.rev.tos;
    r.rev_icmp_type_code = icmp ? f.rev.icmp_type_code : 0;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
    return;
  }
  if (f.fwd.packets) {
    endpoints(f.key);
    forward(f.fwd);
    r.start_ms = f.fwd.first_ms;
    r.end_ms = f.fwd.last_ms;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
  }
  if (f.rev.packets) {
    endpoints(f.key.reversed());
    forward(f.rev);
    r.start_ms = f.rev.first_ms;
    r.end_ms = f.rev.last_ms;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
  }
}

// Receives finished flows from the table: completes DPI, writes IPFIX (and the flow store),
// updates the summary.
class ExportSink final : public FlowSink {
 public:
  ExportSink(IpfixExporter& exporter, Dpi* dpi, Summary& summary, flows::Writer* store, bool biflow)
      : exporter_(exporter), dpi_(dpi), summary_(summary), store_(store), biflow_(biflow) {}
  void set_now(std::uint64_t ms) { now_ms_ = ms; }

  void on_flow_end(Flow& f, EndReason reason) override {
    FlowLabel label;
    label.community_id = community_id(f);
    const std::string* name = nullptr;
    if (dpi_) {
      dpi_->finish(f);
      name = &dpi_->name(f.master_proto, f.app_proto);
      label.name = name;
      label.id = Dpi::label_id(f);
      label.server = &f.host;
      label.server_kind = static_cast<FlowLabel::ServerKind>(Dpi::server_kind(f));
      ja3_ = Dpi::ja3c_hex(f);
      label.ja3c = &ja3_;
      label.risk = f.risk;
      label.risk_score = f.risk_score;
      label.risks = &dpi_->risk_names(f.risk);
    }
    const unsigned n = exporter_.write(f, reason, label, std::max(now_ms_, f.end_ms));
    summary_.on_record(f, reason, n, name);
    if (store_) {
      store_records(f, reason, label, biflow_, *store_);
      store_->series().on_flow(f.buckets, name ? std::string_view(*name) : std::string_view(),
                               f.key.proto);
    }
  }

 private:
  IpfixExporter& exporter_;
  Dpi* dpi_;
  Summary& summary_;
  flows::Writer* store_;
  bool biflow_;
  std::uint64_t now_ms_ = 0;
  std::string ja3_;
};

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

Summary::Extras summary_extras(const Options& opts, const Dpi* dpi) {
  Summary::Extras x;
  x.output = opts.output;
  x.dpi = opts.dpi;
  x.biflow = opts.biflow;
  if (dpi) {
    x.has_dpi_stats = true;
    x.classified = dpi->stats().flows_classified;
    x.guessed = dpi->stats().flows_guessed;
    x.unknown = dpi->stats().flows_unknown;
    x.packets_inspected = dpi->stats().packets_inspected;
  }
  return x;
}

}  // namespace

struct Engine::Impl {
  std::unique_ptr<NdpiModule> ndpi;
  bool ndpi_used = false;  // the module's caches hold state from a previous convert()
  std::uint64_t ndpi_inits = 0;
  void make_ndpi() {
    ndpi = std::make_unique<NdpiModule>();
    ndpi_used = false;
    ++ndpi_inits;
  }
  // A classifier over the module, in the state of a fresh process. nDPI keeps per-module LRU
  // caches (BitTorrent, STUN, Ookla, TLS certificates, ...) that change later
  // classifications. Before a second conversion the module is put back into its freshly
  // initialised state (or replaced when that is not possible), so every convert() labels
  // exactly like the first one in a fresh process.
  std::unique_ptr<Dpi> fresh_dpi() {
    if (ndpi && ndpi_used && !ndpi->reset()) {
      logger()->debug("nDPI module state could not be reset; initialising a new one");
      ndpi.reset();
    }
    if (!ndpi) make_ndpi();
    ndpi_used = true;
    return std::make_unique<Dpi>(*ndpi);
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
Engine::Engine(bool init_dpi) : impl_(std::make_unique<Impl>()) {
  if (init_dpi) impl_->make_ndpi();
  IpfixExporter::prepare_model();
  prepare_community_id();
}
Engine::~Engine() = default;

std::uint64_t Engine::dpi_initialisations() const { return impl_->ndpi_inits; }

nlohmann::json Engine::convert(const Options& opts, const ProgressFn& progress,
                               const std::atomic<bool>* cancel) {
  return nlohmann::json::parse(convert_text(opts, progress, cancel).summary);
}

Conversion Engine::convert_text(const Options& opts, const ProgressFn& progress,
                                const std::atomic<bool>* cancel) {
  if (opts.mode == Mode::Ingest) {
    // Labels that come as an nDPI protocol id only are named by nDPI (set up on first use).
    return ingest_ipfix(opts, progress, cancel, [this](std::uint16_t id) {
      if (!impl_->ndpi) impl_->make_ndpi();
      return Dpi(*impl_->ndpi).name(0, id);
    });
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto cancelled = [cancel] { return cancel && cancel->load(std::memory_order_relaxed); };
  if (opts.mode == Mode::Extract) return extract_flow(opts, progress, cancel);
  if (cancelled()) throw Cancelled();
  if (opts.inputs.empty()) throw EngineError("no input file given");
  if (opts.output.empty()) throw EngineError("no output given");
  const FlowTableConfig tcfg = table_config(opts);
  if (!opts.input_fds.empty() && opts.input_fds.size() != opts.inputs.size())
    throw EngineError("internal error: open inputs and input names do not match");
  // Input errors before touching the output.
  MergedReader reader(opts.inputs, opts.bpf_filter, opts.input_fds, read_options(opts));
  Summary summary(opts.analysis, opts.dpi);
  describe_inputs(reader, summary);
  IpfixExporter exporter(exporter_config(opts));  // removes its temporary file unless committed
  const bool live = exporter.is_network();
  std::unique_ptr<flows::Writer> store = open_store(opts, live, "pcap", opts.dpi);  // likewise
  std::unique_ptr<Dpi> dpi = opts.dpi ? impl_->fresh_dpi() : nullptr;
  ExportSink sink(exporter, dpi.get(), summary, store.get(), opts.biflow);
  FlowTable table(tcfg, sink);
  FragmentTracker fragments;
  DecodeOptions dopts;
  dopts.decapsulate_tunnels = opts.decapsulate_tunnels;

  Progress prog;
  prog.bytes_total = reader.bytes_total();
  const std::uint64_t every = std::max<std::uint64_t>(opts.progress_every_packets, 1);
  std::uint64_t next_progress = every;

  RawPacket raw;
  DecodedPacket pkt;
  std::uint64_t max_ts_us = 0;
  while (reader.next(raw)) {
    const std::uint64_t n = ++summary.packets_read;
    if ((n & 1023) == 0 && cancelled()) throw Cancelled();
    if (progress && n >= next_progress) {
      next_progress += every;
      prog.packets = n;
      prog.bytes_read = reader.bytes_read();
      progress(prog);
    }
    if (raw.ts_us < max_ts_us) ++summary.out_of_order_packets;
    max_ts_us = std::max(max_ts_us, raw.ts_us);

    const DecodeStatus st = decode_packet(raw.dlt, raw.data, raw.caplen, dopts, pkt, raw.wirelen);
    if (st != DecodeStatus::kOk) {
      summary.on_not_metered(st);
      continue;
    }
    const std::uint64_t ts_ms = raw.ts_us / 1000;
    if (pkt.fragment) {
      if (pkt.first_fragment) {
        fragments.remember(pkt, ts_ms);
      } else if (!fragments.resolve(pkt, ts_ms)) {
        ++summary.fragments_unmatched;
      }
    }
    if (pkt.tunnels) ++summary.tunnelled_packets;
    sink.set_now(std::max(ts_ms, table.now_ms()));
    const FlowTable::Hit hit = table.update(pkt, ts_ms);
    if (live) exporter.tick(table.now_ms());
    if (dpi) dpi->process(*hit.flow, pkt, ts_ms);
    if (store) store->series().on_packet(hit.flow->buckets, ts_ms, pkt.ip_octets);
    summary.on_packet(raw.ts_us, pkt.ip_octets);
  }
  if (cancelled()) throw Cancelled();

  account_inputs(reader, summary);
  summary.peak_flows = table.peak_size();
  table.flush(EndReason::kForcedEnd);
  publish_outputs(exporter, store.get());  // the store, then the IPFIX file

  if (progress) {
    prog.packets = summary.packets_read;
    prog.bytes_read = prog.bytes_total;
    progress(prog);
  }
  summary.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Conversion c;
  c.summary.reserve(4096);
  summary.write_json(c.summary, summary_extras(opts, dpi.get()));
  c.packets = summary.packets();
  c.bytes = summary.bytes();
  c.flows = summary.records();
  logger()->info("converted {} packets into {} IPFIX records ({} flows) in {:.3f} s",
                 summary.packets_read, summary.records(), summary.biflows(), summary.elapsed_s);
  return c;
}

}  // namespace ipfixweb::engine

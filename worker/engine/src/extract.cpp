#include "extract.hpp"

#include <pcap/pcap.h>

#include <chrono>
#include <memory>

#include "decoder.hpp"
#include "exporter.hpp"
#include "flow_table.hpp"
#include "ipfixweb/flows/selector.hpp"
#include "ipfixweb/shared/json_writer.hpp"
#include "output_file.hpp"
#include "pcap_reader.hpp"

namespace ipfixweb::engine {
namespace {

struct PcapCloser {
  void operator()(pcap_t* p) const noexcept { pcap_close(p); }
};

flows::Selector selector_of(const Options& opts) {
  const auto parsed = flows::parse_selector(opts.flow);
  if (const auto* e = std::get_if<flows::SelectorError>(&parsed))
    throw EngineError("not a flow selector: '" + opts.flow + "' (at " +
                      std::to_string(e->position) + ": " + e->message + ")");
  return std::get<flows::Selector>(parsed);
}

const char* link_name(int dlt) {
  const char* n = pcap_datalink_val_to_name(dlt);
  return n ? n : "unknown";
}

// The pcap being written: its header goes out with the first packet's link type.
class PcapOut {
 public:
  explicit PcapOut(OutputFile& file) : file_(file) {}
  void open(int dlt, int snaplen) {
    dead_.reset(pcap_open_dead_with_tstamp_precision(dlt, snaplen, PCAP_TSTAMP_PRECISION_MICRO));
    if (!dead_) file_.fail("cannot set up a pcap writer");
    // The dumper is the FILE itself (libpcap's pcap_dumper_t): it is flushed and closed by
    // OutputFile::commit, never by pcap_dump_close.
    dumper_ = pcap_dump_fopen(dead_.get(), file_.file());
    if (!dumper_) file_.fail(pcap_geterr(dead_.get()));
    dlt_ = dlt;
  }
  bool is_open() const { return dumper_ != nullptr; }
  int dlt() const { return dlt_; }
  void write(const RawPacket& raw) {
    pcap_pkthdr h{};
    h.ts.tv_sec = static_cast<time_t>(raw.ts_us / 1'000'000);
    h.ts.tv_usec = static_cast<suseconds_t>(raw.ts_us % 1'000'000);
    h.caplen = raw.caplen;
    h.len = raw.wirelen ? raw.wirelen : raw.caplen;
    pcap_dump(reinterpret_cast<u_char*>(dumper_), &h, raw.data);
  }

 private:
  OutputFile& file_;
  std::unique_ptr<pcap_t, PcapCloser> dead_;
  pcap_dumper_t* dumper_ = nullptr;
  int dlt_ = 0;
};

}  // namespace

Conversion extract_flow(const Options& opts, const ProgressFn& progress,
                        const std::atomic<bool>* cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  auto cancelled = [cancel] { return cancel && cancel->load(std::memory_order_relaxed); };
  if (cancelled()) throw Cancelled();
  if (opts.inputs.empty()) throw EngineError("no input file given");
  if (opts.output.empty()) throw EngineError("no output given");
  if (opts.output_dir_fd < 0 && IpfixExporter::is_network_target(opts.output))
    throw EngineError("an extract writes a pcap file, not to a collector");
  const flows::Selector sel = selector_of(opts);
  if (!opts.input_fds.empty() && opts.input_fds.size() != opts.inputs.size())
    throw EngineError("internal error: open inputs and input names do not match");
  MergedReader reader(opts.inputs, opts.bpf_filter, opts.input_fds,
                      read_options(opts));  // input errors first

  OutputFileConfig ocfg;
  ocfg.path = opts.output;
  ocfg.dir_fd = opts.output_dir_fd;
  ocfg.name = opts.output_name;
  ocfg.what = "pcap output";
  OutputFile file(ocfg);
  PcapOut out(file);

  DecodeOptions dopts;
  dopts.decapsulate_tunnels = opts.decapsulate_tunnels;
  FragmentTracker fragments;
  Progress prog;
  prog.bytes_total = reader.bytes_total();
  const std::uint64_t every = std::max<std::uint64_t>(opts.progress_every_packets, 1);
  std::uint64_t next_progress = every;
  std::uint64_t read = 0, written = 0, bytes = 0;
  RawPacket raw;
  DecodedPacket pkt;
  while (reader.next(raw)) {
    ++read;
    if ((read & 1023) == 0 && cancelled()) throw Cancelled();
    if (progress && read >= next_progress) {
      next_progress += every;
      prog.packets = read;
      prog.bytes_read = reader.bytes_read();
      progress(prog);
    }
    if (decode_packet(raw.dlt, raw.data, raw.caplen, dopts, pkt, raw.wirelen) != DecodeStatus::kOk)
      continue;
    const std::uint64_t ts_ms = raw.ts_us / 1000;
    if (pkt.fragment) {
      if (pkt.first_fragment)
        fragments.remember(pkt, ts_ms);
      else if (!fragments.resolve(pkt, ts_ms))
        continue;  // not metered by the conversion either
    }
    const FlowKey& k = pkt.key;
    if (!flows::selector_matches(sel, k.ip_version, k.proto, k.src, k.dst, k.sport, k.dport, k.vlan,
                                 ts_ms))
      continue;
    if (!out.is_open()) {
      out.open(raw.dlt, reader.readers()[raw.input]->snaplen());
    } else if (raw.dlt != out.dlt()) {
      throw EngineError("the flow's packets come from captures of different link types (" +
                        std::string(link_name(out.dlt())) + ", " + link_name(raw.dlt) +
                        "): one pcap file cannot hold both");
    }
    out.write(raw);
    ++written;
    bytes += pkt.ip_octets;
  }
  if (cancelled()) throw Cancelled();
  if (!out.is_open()) {  // no packet matched: still a valid (empty) capture
    const auto& first = *reader.readers().front();
    out.open(first.dlt(), first.snaplen());
  }
  file.commit();
  if (progress) {
    prog.packets = read;
    prog.bytes_read = prog.bytes_total;
    progress(prog);
  }

  Conversion c;
  c.packets = written;
  c.bytes = bytes;
  c.flows = written ? 1 : 0;
  JsonWriter w(c.summary);
  w.begin_object();
  w.key("kind").value("extract");
  w.key("flow").value(flows::format_selector(sel));
  w.key("packets").value(written);
  w.key("bytes").value(bytes);
  w.key("flows").value(c.flows);
  w.key("packets_read").value(read);
  w.key("link_type").value(link_name(out.dlt()));
  w.key("output").value(opts.output);
  w.key("inputs").begin_array();
  for (const auto& r : reader.readers()) {
    w.begin_object();
    w.key("path").value(r->path());
    w.key("packets").value(r->packets());
    w.key("truncated").value(r->truncated());
    w.end_object();
  }
  w.end_array();
  w.key("warnings").begin_array();
  if (!written) w.value("no packet of the flow was found in the captures");
  w.end_array();
  w.key("elapsed_s")
      .value(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  w.end_object();
  return c;
}

}  // namespace ipfixweb::engine

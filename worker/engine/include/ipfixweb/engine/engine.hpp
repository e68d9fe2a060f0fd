// Public interface of the conversion engine (pcap/pcapng -> IPFIX with nDPI).
// Used by the worker (inside a forked child per task) and by pcap2ipfix.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ipfixweb::engine {

// What convert() reads and what it writes.
enum class Mode : std::uint8_t {
  Convert,  // captures -> IPFIX (and the flow store): meters flows, labels them with nDPI
  Ingest,   // IPFIX files of any exporter -> IPFIX in our templates (and the flow store): the
            // records are carried over, not re-metered; capture options do not apply
  Extract,  // captures -> a pcap file with the packets of one flow (`flow`)
  Merge,    // the outputs of a conversion's flow partitions -> the output of the whole
            // conversion: one IPFIX file, flow store and summary (`parts`)
};

struct Options {
  Mode mode = Mode::Convert;
  // Capture files, read as one stream in timestamp order: pcap or pcapng, plain or compressed
  // with gzip, zstd, xz or bzip2 (told by content; docs/engine.md, Compressed input).
  std::vector<std::string> inputs;
  std::string output;  // IPFIX file path, or tcp://HOST:PORT / udp://HOST:PORT
  bool dpi = true;
  double idle_timeout_s = 300;
  double active_timeout_s = 1800;
  std::string bpf_filter;
  bool biflow = true;                // false: one record per direction (--uniflow)
  std::size_t max_flows = 1u << 20;  // memory bound of the flow table
  std::uint32_t observation_domain = 1;
  std::vector<std::string> analysis;  // protocol families broken down in the summary
  // Added by the engine: meter the inner packet of IP-in-IP, 6in4, GRE, ERSPAN, VXLAN, Geneve
  // and Teredo (as ndpiReader does for IP-in-IP/Teredo) instead of the outer one.
  bool decapsulate_tunnels = true;
  // Flow metering threads (Mode::Convert). 1: the calling thread does everything. N > 1: the
  // calling thread reads and decodes, N threads meter and label disjoint sets of flows (both
  // directions of a flow in one set); the same records in another order (docs/engine.md,
  // Threads). At most kMaxThreads.
  unsigned threads = 1;
  static constexpr unsigned kMaxThreads = 64;
  // Flow partition (Mode::Convert), for one capture converted in parts (on several workers, say):
  // with partitions = N > 1 the conversion meters only the flows whose key falls in partition
  // `partition` (0..N-1) of a symmetric hash of the flow key (both directions in one part), and
  // every packet is still read and counted in the summary and moves the flow table's packet-time
  // clock. Parts 0..N-1 together write the records of the whole conversion (docs/engine.md,
  // Partitions). At most kMaxPartitions.
  unsigned partition = 0;
  unsigned partitions = 1;
  static constexpr unsigned kMaxPartitions = 256;
  // Progress callback period in packets (the callback also runs once at the end).
  std::uint64_t progress_every_packets = 100000;
  // Bounds on each compressed input's decompressed output, against decompression bombs: its
  // size (bytes, 0 = none; default 1 TiB) and, once it passes 64 MiB, its ratio to the
  // compressed bytes read (0 = none). Exceeded: EngineError naming the bound.
  std::uint64_t max_decompressed_bytes = std::uint64_t{1} << 40;
  double max_decompression_ratio = 1000;

  // Files already opened by the caller (the worker opens them confined beneath its roots); the
  // paths above then only name them (summary, errors). The engine reads and writes through its
  // own duplicates and never closes these descriptors.
  // input_fds: empty, or one readable regular file per entry of `inputs`, in the same order.
  std::vector<int> input_fds;
  // >= 0: the output is the file `output_name` in this directory (which may be an O_PATH
  // descriptor). The temporary is created in it, renamed over `output_name` in it (a symbolic
  // link there is replaced, not followed) and the directory is synced after the rename. A
  // network output is refused.
  int output_dir_fd = -1;
  std::string output_name;

  // The flow store (docs/flow-store.md): an SQLite file with every record and the time
  // series, written in the same pass and published just before the IPFIX file, under a
  // temporary name then renamed. "" = none. With output_dir_fd >= 0 a name in that directory
  // (conventionally output_name + ".flows.sqlite"), else a path.
  std::string flows_db;
  // The summary's JSON text (the Conversion's), also published as a file once the outputs are
  // published, the same way (temporary, fsync, rename, directory fsync); "" = none. With
  // output_dir_fd >= 0 a name in that directory, else a path. A flow partition's summary is
  // what a merge reads (Mode::Merge).
  std::string summary_file;

  // Mode::Extract: the flow whose packets are written, as a flow selector
  // (ipfixweb/shared/flow_selector.hpp), e.g. "tcp 10.0.0.1:1234 <-> 10.0.0.2:80 vlan 5
  // ms 1700000000123-1700000000456".
  std::string flow;

  // Mode::Merge: `inputs` (and `input_fds`) are the IPFIX files of partitions 0..N-1 of one
  // conversion, in any order; per input, its summary (the JSON text its conversion returned,
  // which names its partition) and, when a flow store is asked for, the path of its flow store
  // (whose series are summed). The records are carried over as an ingest carries them; the
  // summary is the whole conversion's (docs/engine.md, Partitions).
  std::vector<std::string> part_summaries;
  std::vector<std::string> part_stores;
};

struct Progress {
  std::uint64_t packets = 0;
  std::uint64_t bytes_read = 0;   // bytes of input consumed so far
  std::uint64_t bytes_total = 0;  // total input size (0 if unknown)
};
using ProgressFn = std::function<void(const Progress&)>;

// The temporary name a conversion in process `pid` on this host writes before renaming it to
// `output`: "<output>.tmp.<host>.<pid>". The host part keeps workers on other hosts (or in
// other containers) sharing the output storage from mistaking each other's live files for
// leftovers of a dead process.
std::string temporary_output_name(const std::string& output, long pid);
// This host's name as used in temporary_output_name ("" when unknown).
const std::string& temporary_host_name();

// Bad input or an unusable output: a clear one-line message. The engine never
// leaves a partial file under the output name when it throws.
class EngineError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown at publication when another writer put a different file under the output's name
// while this run went on: typically a later run of the same task, after this run's worker was
// given up for lost and the task ran again elsewhere. This run publishes nothing (IPFIX file,
// flow store, summary), so the newer output, and what the broker recorded of it, stay as they
// are. A file that was there before the run (overwrite) is replaced as usual.
class OutputReplaced : public EngineError {
 public:
  using EngineError::EngineError;
};

// Thrown when the cancel flag was raised; no output is left behind.
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("cancelled") {}
};

// A conversion's result: the summary as JSON text (what convert() parses) and its totals.
struct Conversion {
  std::string summary;
  std::uint64_t packets = 0;  // metered packets
  std::uint64_t bytes = 0;    // their IP bytes
  std::uint64_t flows = 0;    // IPFIX records exported
};

class Engine {
 public:
  Engine();  // initialises nDPI once; cheap to fork after construction
  // `init_dpi` false: nDPI is initialised on the first convert() with Options::dpi (saves its
  // ~50 ms setup for --no-dpi runs).
  // `dpi_threads` > 1 (with init_dpi): the nDPI modules of a later convert() with
  // Options::threads = dpi_threads are set up now, in parallel, instead of by its threads.
  explicit Engine(bool init_dpi, unsigned dpi_threads = 1);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs one conversion. Returns the run summary (see docs): at least
  // "packets", "bytes", "flows" (records exported) as unsigned integers.
  nlohmann::json convert(const Options& opts, const ProgressFn& progress = {},
                         const std::atomic<bool>* cancel = nullptr);
  // The same conversion with the summary left as text (no JSON document built: what a task
  // runner sends on as it is).
  Conversion convert_text(const Options& opts, const ProgressFn& progress = {},
                          const std::atomic<bool>* cancel = nullptr);

  // How many times nDPI was initialised by this engine (1 for a whole run of conversions
  // when the module could be reset between them every time).
  std::uint64_t dpi_initialisations() const;

 private:
  Conversion run(const Options& opts, const ProgressFn& progress,
                 const std::atomic<bool>* cancel);  // convert_text without the summary file
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::engine

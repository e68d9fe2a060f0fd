// IPFIX ingest (Mode::Ingest): IPFIX files written by any exporter (YAF, nProbe, ipfixprobe,
// softflowd, this engine) are read with libfixbuf and written again as a conversion writes
// its output: an IPFIX file in the engine's own templates, the flow store and the summary.
// The records are carried over, not re-metered. The rules (which elements are read, times,
// labels, biflow/uniflow) are in docs/ipfix-ingest.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::flows {
class Writer;
}

namespace ipfixweb::engine {

// The name nDPI gives a protocol id ("QUIC"), for labels that come as a number only
// (applicationId, ntop L7_PROTO). May be empty: such labels are then written as
// "PANA-L7-PEN:35632:188" and the like.
using ProtocolNameFn = std::function<std::string(std::uint16_t)>;

// What an ingest is for. A plain ingest (the defaults) derives the flow store's series from
// the records; a merge of partition outputs (merge.hpp) sums its parts' series instead.
struct IngestRole {
  bool series_from_records = true;          // false: the records add nothing to the series
  std::string_view store_source = "ipfix";  // the flow store's meta 'source'
  bool store_dpi = false;                   // its meta 'dpi'
  bool store_indexes_last = false;          // flows::WriterConfig::indexes_last
  // Runs once every record is in, before the outputs are published.
  std::function<void(flows::Writer*)> before_publish;
};

// Engine::convert_text for Mode::Ingest.
Conversion ingest_ipfix(const Options& opts, const ProgressFn& progress,
                        const std::atomic<bool>* cancel, const ProtocolNameFn& ndpi_name,
                        const IngestRole& role = {});

// How many libfixbuf information models ingests have built in this process (tests: a model is
// reused by the next ingest unless reading added elements to it).
std::uint64_t ingest_models_made();

}  // namespace ipfixweb::engine

// The metering half of a conversion on Options::threads shards (sharded.hpp): one DPI module,
// flow table and time-bucket builder per shard; finished flows go to the one set of outputs
// under a lock.
#pragma once

#include <cstddef>
#include <vector>

#include "dpi.hpp"
#include "exporter.hpp"
#include "flow_table.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "packet_source.hpp"
#include "summary.hpp"

namespace ipfixweb::engine {

struct ThreadedOutputs {
  IpfixExporter& exporter;
  Summary& summary;
  flows::Writer* store;  // null: none
};

struct MeterResult {
  std::size_t peak_flows = 0;  // sum of the shards' peaks
  DpiStats dpi;
};

// Meters every packet of `source` on opts.threads shards and flushes their tables into
// `outputs`. `dpi_slots` (null: no DPI) is grown to one module per shard; shard i labels with
// slot i's module, reset or initialised on the shard's own thread.
MeterResult meter_threaded(PacketSource& source, const Options& opts, const FlowTableConfig& tcfg,
                           const ThreadedOutputs& outputs, std::vector<NdpiSlot>* dpi_slots);

}  // namespace ipfixweb::engine

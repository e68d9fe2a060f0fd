// Where finished flows go: DPI is completed, then the record is written to the IPFIX file, the
// flow store and the summary.
#pragma once

#include <cstdint>
#include <string>

#include "dpi.hpp"
#include "exporter.hpp"
#include "flow_table.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "spin_mutex.hpp"
#include "summary.hpp"

namespace ipfixweb::engine {

// A store row's addresses and ports: those of `k` (IPv4 addresses in the store's IPv4 form).
void store_endpoints(const FlowKey& k, flows::FlowRow& r);

// The flow store rows of one finished flow: the same records, in the same order, with the
// same values as IpfixExporter::write puts in the IPFIX file.
void store_records(const Flow& f, EndReason reason, const FlowLabel& label, bool biflow,
                   flows::Writer& store);

// Receives finished flows from a table: completes DPI, writes IPFIX (and the flow store),
// updates the summary. With `outputs_lock` (a threaded conversion: one sink per shard, one set
// of outputs) the label is made without the lock and the outputs are written under it.
class ExportSink final : public FlowSink {
 public:
  ExportSink(IpfixExporter& exporter, Dpi* dpi, Summary& summary, flows::Writer* store, bool biflow,
             SpinMutex* outputs_lock = nullptr)
      : exporter_(exporter),
        dpi_(dpi),
        summary_(summary),
        store_(store),
        biflow_(biflow),
        lock_(outputs_lock) {}
  void set_now(std::uint64_t ms) { now_ms_ = ms; }
  void on_flow_end(Flow& f, EndReason reason) override;

 private:
  void write(Flow& f, EndReason reason, const FlowLabel& label, const std::string* name);
  IpfixExporter& exporter_;
  Dpi* dpi_;
  Summary& summary_;
  flows::Writer* store_;
  bool biflow_;
  SpinMutex* lock_;
  std::uint64_t now_ms_ = 0;
  std::string ja3_;
};

}  // namespace ipfixweb::engine

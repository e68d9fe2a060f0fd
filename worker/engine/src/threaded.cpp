#include "threaded.hpp"

#include <memory>
#include <mutex>

#include "export_sink.hpp"
#include "sharded.hpp"

namespace ipfixweb::engine {
namespace {

// One shard's DPI, time buckets and sink of finished flows.
class MeterShard final : public ShardWork {
 public:
  MeterShard(NdpiSlot* slot, const ThreadedOutputs& out, bool biflow, SpinMutex& lock)
      : dpi_(slot ? std::make_unique<Dpi>(slot->fresh(false)) : nullptr),
        sink_(out.exporter, dpi_.get(), out.summary, out.store, biflow, &lock),
        buckets_(out.store != nullptr) {}
  FlowSink& sink() override { return sink_; }
  void set_now(std::uint64_t now_ms) override { sink_.set_now(now_ms); }
  void on_packet(Flow& f, const DecodedPacket& p, std::uint64_t ts_ms) override {
    if (dpi_) dpi_->process(f, p, ts_ms);
    // The flow's buckets at this shard's bucket size; the store's series sums them at its own
    // final size, which is never finer (flows::SeriesBuilder).
    if (buckets_) series_.on_packet(f.buckets, ts_ms, p.ip_octets);
  }
  const Dpi* dpi() const { return dpi_.get(); }

 private:
  std::unique_ptr<Dpi> dpi_;
  ExportSink sink_;
  bool buckets_;
  flows::SeriesBuilder series_;
};

}  // namespace

MeterResult meter_threaded(PacketSource& source, const Options& opts, const FlowTableConfig& tcfg,
                           const ThreadedOutputs& outputs, std::vector<NdpiSlot>* dpi_slots) {
  const unsigned n = opts.threads;
  if (dpi_slots && dpi_slots->size() < n) dpi_slots->resize(n);
  // nDPI's process-wide set-up (libgcrypt's initialisation) runs with the first module: on this
  // thread, before any shard thread initialises a module of its own.
  if (dpi_slots && !(*dpi_slots)[0].module) (*dpi_slots)[0].make();
  SpinMutex lock;  // the outputs: exporter, flow store, the summary's record counts
  const bool biflow = opts.biflow;
  ShardWorkFactory make = [&](unsigned i) -> std::unique_ptr<ShardWork> {
    return std::make_unique<MeterShard>(dpi_slots ? &(*dpi_slots)[i] : nullptr, outputs, biflow,
                                        lock);
  };
  const bool live = outputs.exporter.is_network();
  ShardedMeter meter(n, tcfg, std::move(make), dpi_slots != nullptr);
  DecodedPacket pkt;
  std::uint64_t ts_ms = 0;
  std::uint64_t packets = 0;
  while (source.next(pkt, ts_ms)) {
    if (source.foreign())
      meter.tick(ts_ms);
    else
      meter.add(pkt, ts_ms, source.payload_stable());
    if (live && (++packets & 255) == 0) {
      const std::lock_guard<SpinMutex> guard(lock);
      outputs.exporter.tick(meter.now_ms());
    }
  }
  meter.finish();
  if (outputs.store && meter.min_ms() != UINT64_MAX) {
    outputs.store->series().include_time(meter.min_ms());
    outputs.store->series().include_time(meter.now_ms());
  }
  MeterResult r;
  r.peak_flows = meter.peak_flows();
  for (unsigned i = 0; i < n; ++i) {
    const Dpi* d = static_cast<const MeterShard&>(meter.work(i)).dpi();
    if (d) r.dpi += d->stats();
  }
  return r;
}

}  // namespace ipfixweb::engine

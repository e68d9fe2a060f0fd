// The reading half of a conversion: captures in timestamp order -> decoded packets with their
// fragments resolved, counted in the summary; the cancel flag and the progress callback. Shared
// by the single-threaded loop and the threaded one (sharded.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "decoder.hpp"
#include "flow_table.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "pcap_reader.hpp"
#include "summary.hpp"

namespace ipfixweb::engine {

class PacketSource {
 public:
  PacketSource(MergedReader& reader, Summary& summary, const Options& opts,
               const ProgressFn& progress, const std::atomic<bool>* cancel)
      : reader_(reader), summary_(summary), progress_(progress), cancel_(cancel) {
    dopts_.decapsulate_tunnels = opts.decapsulate_tunnels;
    prog_.bytes_total = reader.bytes_total();
    every_ = std::max<std::uint64_t>(opts.progress_every_packets, 1);
    next_progress_ = every_;
    for (const auto& r : reader.readers()) mapped_.push_back(r->memory_mapped());
    partition_ = opts.partition;
    partitions_ = opts.partitions;
  }

  // The flow partition (0..partitions-1) of a flow key hash (FlowTable::hash_key). Its high bits
  // choose a thread's shard and its low bits a table slot, so the partition is taken from the
  // hash multiplied by an odd constant: every bit of the key's hash decides it, and a part's
  // flows still spread over all shards and slots.
  static unsigned partition_of(std::uint64_t hash, unsigned partitions) {
    const std::uint64_t mixed = hash * 0x9E3779B97F4A7C15ULL;
    return static_cast<unsigned>(((mixed >> 32) * partitions) >> 32);
  }
  // The packet last returned by next() belongs to a flow of another partition: the caller only
  // moves its packet-time clock to ts_ms (it is counted in the summary already).
  bool foreign() const { return foreign_; }

  // The next packet to meter, counted in the summary (packets that are not metered are counted
  // and skipped). false at the end of the input. Throws Cancelled.
  bool next(DecodedPacket& pkt, std::uint64_t& ts_ms) {
    while (reader_.next(raw_)) {
      const std::uint64_t n = ++summary_.packets_read;
      if ((n & 1023) == 0 && cancelled()) throw Cancelled();
      if (progress_ && n >= next_progress_) report(n);
      if (raw_.ts_us < max_ts_us_) ++summary_.out_of_order_packets;
      max_ts_us_ = std::max(max_ts_us_, raw_.ts_us);
      const DecodeStatus st =
          decode_packet(raw_.dlt, raw_.data, raw_.caplen, dopts_, pkt, raw_.wirelen);
      if (st != DecodeStatus::kOk) {
        summary_.on_not_metered(st);
        continue;
      }
      ts_ms = raw_.ts_us / 1000;
      if (pkt.fragment) {
        if (pkt.first_fragment) {
          fragments_.remember(pkt, ts_ms);
        } else if (!fragments_.resolve(pkt, ts_ms)) {
          ++summary_.fragments_unmatched;
        }
      }
      if (pkt.tunnels) ++summary_.tunnelled_packets;
      summary_.on_packet(raw_.ts_us, pkt.ip_octets);
      foreign_ =
          partitions_ > 1 && partition_of(FlowTable::hash_key(pkt.key), partitions_) != partition_;
      return true;
    }
    if (cancelled()) throw Cancelled();
    return false;
  }
  // The bytes of the last packet stay where they are until the reader is destroyed (a memory
  // mapped capture), rather than until the next read.
  bool payload_stable() const { return mapped_[raw_.input]; }
  // The callback's last call, at the end.
  void report_end() {
    if (!progress_) return;
    prog_.packets = summary_.packets_read;
    prog_.bytes_read = prog_.bytes_total;
    progress_(prog_);
  }

 private:
  bool cancelled() const { return cancel_ && cancel_->load(std::memory_order_relaxed); }
  void report(std::uint64_t n) {
    next_progress_ += every_;
    prog_.packets = n;
    prog_.bytes_read = reader_.bytes_read();
    progress_(prog_);
  }

  MergedReader& reader_;
  Summary& summary_;
  const ProgressFn& progress_;
  const std::atomic<bool>* cancel_;
  DecodeOptions dopts_;
  FragmentTracker fragments_;
  RawPacket raw_;
  Progress prog_;
  std::uint64_t every_ = 1;
  std::uint64_t next_progress_ = 1;
  std::uint64_t max_ts_us_ = 0;
  std::vector<bool> mapped_;
  unsigned partition_ = 0;
  unsigned partitions_ = 1;
  bool foreign_ = false;
};

}  // namespace ipfixweb::engine

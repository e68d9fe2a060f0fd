// Run statistics collected while converting and their JSON form (the convert() result).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "decoder.hpp"
#include "flow_table.hpp"

namespace ipfixweb {
class JsonWriter;
}

namespace ipfixweb::engine {

struct Counter {
  std::uint64_t flows = 0;  // records
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
  void add(std::uint64_t p, std::uint64_t b) {
    ++flows;
    packets += p;
    bytes += b;
  }
};

struct InputInfo {
  std::string path;
  int link_type = 0;
  std::string link_name;
  std::uint64_t packets = 0;
  std::uint64_t file_bytes = 0;  // compressed bytes for a compressed file
  std::string compression;       // "gzip", "zstd", "xz", "bzip2"; "" when not compressed
  bool truncated = false;
  // IPFIX ingest: the input is an IPFIX file (link_name "IPFIX", link_type 0); `packets` is
  // then the sum of its records' packet counters.
  bool ipfix = false;
  std::uint64_t messages = 0;  // IPFIX messages read
  std::uint64_t records = 0;   // data records read (options records included)
};

// What an IPFIX ingest adds to the summary (key "ipfix"; docs/ipfix-ingest.md).
struct IpfixIngestStats {
  std::uint64_t messages = 0;
  std::uint64_t templates = 0;          // template records received (options ones included)
  std::uint64_t options_templates = 0;  // of which options templates
  std::uint64_t data_records = 0;       // records of (non-options) templates
  std::uint64_t options_records = 0;    // options records: read for their times, not stored
  std::uint64_t biflow_records = 0;     // data records with reverse counters (RFC 5103)
  std::uint64_t uniflow_records = 0;
  std::uint64_t labelled_records = 0;  // with an application label carried over
  std::uint64_t skipped_no_address = 0;
  // Packet or octet counts above kMaxIngestCount: not plausible, and beyond what JSON readers
  // and the flow store's signed sums represent exactly.
  std::uint64_t skipped_implausible_counts = 0;
  std::uint64_t not_exported = 0;  // uniflow output: records with no packet in either direction
  std::uint64_t times_from_export_time = 0;      // no time element: start = end = export time
  std::uint64_t sysuptime_from_export_time = 0;  // sysUpTime times without an init time
  std::uint64_t observation_domains = 0;
};

class Summary {
 public:
  // `dpi`: whether flows carry nDPI labels; without them the dns/tls/http/quic families are
  // matched by well-known ports (see analysis_family_match()).
  Summary(std::vector<std::string> analysis_families, bool dpi);

  void on_packet(std::uint64_t ts_us, std::uint32_t ip_octets);
  // IPFIX ingest: one record's packets and bytes over [first_us, last_us], counted at once.
  void on_traffic(std::uint64_t first_us, std::uint64_t last_us, std::uint64_t packets,
                  std::uint64_t bytes);
  void on_not_metered(DecodeStatus s) { ++not_metered_[static_cast<int>(s)]; }
  void on_record(const Flow& f, EndReason reason, unsigned records, const std::string* app);
  void warn(std::string w) { warnings_.push_back(std::move(w)); }

  std::uint64_t packets_read = 0;
  std::uint64_t fragments_unmatched = 0;
  std::uint64_t tunnelled_packets = 0;
  std::uint64_t out_of_order_packets = 0;
  std::uint64_t peak_flows = 0;
  double elapsed_s = 0;
  std::vector<InputInfo> inputs;
  // Set by an IPFIX ingest: written under "ipfix", and "source": "ipfix".
  std::unique_ptr<IpfixIngestStats> ipfix;

  std::uint64_t packets() const { return packets_; }
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t records() const { return records_; }
  std::uint64_t biflows() const { return biflows_; }

  // What the engine adds to the summary besides its own statistics.
  struct Extras {
    std::string output;
    bool dpi = false;
    bool biflow = false;
    unsigned partition = 0, partitions = 1;  // "partition" present when partitions > 1
    bool has_dpi_stats = false;              // "dpi_stats" present (DPI ran)
    std::uint64_t classified = 0, guessed = 0, unknown = 0, packets_inspected = 0;
  };
  // The summary as JSON text, written directly (no document in between): the text nlohmann's
  // dump() makes of the same summary, keys in byte order, invalid UTF-8 replaced by U+FFFD.
  void write_json(std::string& out, const Extras& x) const;

 private:
  // Parts of write_json, each one key's value.
  void write_analysis(JsonWriter& o) const;
  void write_inputs(JsonWriter& o) const;
  void write_ipfix(JsonWriter& o) const;
  void write_not_metered(JsonWriter& o) const;
  void write_protocols(JsonWriter& o) const;
  // Host address as the flow key stores it: 16 address bytes + IP version.
  using HostKey = std::array<std::uint8_t, 17>;
  struct HostKeyHash {
    std::size_t operator()(const HostKey& k) const noexcept;
  };
  struct Family {
    Counter total;
    std::unordered_map<HostKey, Counter, HostKeyHash> hosts;  // both endpoints of each flow
    std::unordered_map<std::string, Counter> server_names;    // DPI server name (SNI, Host, query)
    std::unordered_map<std::string, Counter> apps;            // DPI label
  };
  void add_to_family(Family& fs, const Flow& f, const std::string* app, std::uint64_t p,
                     std::uint64_t b);
  std::uint64_t packets_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t records_ = 0;
  std::uint64_t biflows_ = 0;
  std::uint64_t first_us_ = 0;
  std::uint64_t last_us_ = 0;
  bool seen_traffic_ = false;  // on_traffic() was called (first_us_/last_us_ set)
  std::array<std::uint64_t, kDecodeStatusCount> not_metered_{};
  std::array<std::uint64_t, 6> reasons_{};
  std::map<std::uint8_t, Counter> protocols_;
  std::unordered_map<std::string, Counter> apps_;
  std::vector<std::string> families_;  // lower case, duplicates dropped, in request order
  std::vector<Family> family_stats_;   // parallel to families_
  bool dpi_ = true;
  std::vector<std::string> warnings_;
};

std::string iso8601_ms(std::uint64_t ts_us);

// Whether a flow belongs to analysis family `family` (lower case), `other` excluded:
// tcp / udp / icmp (ICMP and ICMPv6) by IP protocol; dns / tls / http / quic by a dot-separated
// part of the nDPI label (`TLS.YouTube` is tls; http also takes HTTP_Proxy / HTTP_Connect) or,
// when `label` is null (DPI off), by well-known ports; any other name by label part.
bool analysis_family_match(const std::string& family, const FlowKey& key, const std::string* label);

}  // namespace ipfixweb::engine

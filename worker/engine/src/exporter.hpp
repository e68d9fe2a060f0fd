// IPFIX writer on top of libfixbuf: one internal template (the IpfixRecord struct) transcoded to
// up to four external templates (IPv4/IPv6 x biflow/uniflow). Files are written to
// "<output>.tmp.<host>.<pid>" and renamed into place on commit(), within one directory
// descriptor (the directory is synced after the rename); live export goes to tcp:// or udp://.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "flow_table.hpp"

struct fbInfoModel_st;  // libfixbuf's fbInfoModel_t

namespace ipfixweb::engine {

// Adds the enterprise elements our records carry (ntop's numbering for names and risk, the
// Community ID: docs/ipfix-elements.md) to a libfixbuf information model: the exporter's, and
// the one an IPFIX ingest reads with.
void add_enterprise_elements(fbInfoModel_st* model);

// External template ids (stable so tests and collectors can rely on them).
inline constexpr std::uint16_t kTidIpv4Biflow = 256;
inline constexpr std::uint16_t kTidIpv6Biflow = 257;
inline constexpr std::uint16_t kTidIpv4Uniflow = 258;
inline constexpr std::uint16_t kTidIpv6Uniflow = 259;

struct ExporterConfig {
  std::string output;  // path, or tcp://HOST:PORT / udp://HOST:PORT
  // >= 0: the file is `name` in this directory (borrowed, may be O_PATH); `output` only names
  // it in messages and is never a network target. < 0: `output`'s directory is opened here.
  int dir_fd = -1;
  std::string name;
  bool dpi = true;  // include the DPI elements (labels, server names, JA3, risk)
  bool biflow = true;
  std::uint32_t observation_domain = 1;
  // Files: write into an unnamed file (O_TMPFILE) that gets a name only once its data is on
  // disk (linked as temporary_output_name(), then renamed over `output`). Where the file
  // system cannot (or false), the file is written under the temporary name from the start.
  bool unnamed_temporary = true;
};

struct FlowLabel {
  const std::string* name = nullptr;    // applicationName; null when DPI is off
  std::uint16_t id = 0;                 // nDPI protocol id for applicationId
  const std::string* server = nullptr;  // TLS SNI / HTTP host / DNS query, may be empty
  enum ServerKind : std::uint8_t { kOther, kHttp, kTls, kDns } server_kind = kOther;
  const std::string* ja3c = nullptr;  // JA3 client hash (32 hex digits), TLS/QUIC/DTLS only
  // Community ID v1 of the flow ("1:" + base64, community_id.hpp), the same for both uniflow
  // records; computed once per record, with or without DPI (empty: exported as an empty string).
  std::string community_id;
  // nDPI flow risk: bitmap (bit n = ndpi_risk_enum n), score (client + server) and the names
  // joined with "," (null or empty: none). Zero / null when DPI is off.
  std::uint64_t risk = 0;
  std::uint16_t risk_score = 0;
  const std::string* risks = nullptr;
};

class IpfixExporter {
 public:
  explicit IpfixExporter(const ExporterConfig& cfg);
  ~IpfixExporter();  // without commit(): removes the temporary file
  IpfixExporter(const IpfixExporter&) = delete;
  IpfixExporter& operator=(const IpfixExporter&) = delete;

  // Writes one flow (one biflow record, or one or two uniflow records). Returns records written.
  unsigned write(const Flow& f, EndReason reason, const FlowLabel& label, std::uint64_t now_ms);
  // Live export: called with the packet time of every packet. Emits the pending records at least
  // every kLiveFlushMs of packet time, and over UDP resends the templates every
  // kTemplateRefreshMs of packet time or kTemplateRefreshWallMs of wall time (RFC 7011 8.4).
  void tick(std::uint64_t now_ms);
  static constexpr std::uint64_t kLiveFlushMs = 1000;
  static constexpr std::uint64_t kTemplateRefreshMs = 60'000;
  static constexpr std::uint64_t kTemplateRefreshWallMs = 5'000;
  std::uint64_t template_resends() const { return template_resends_; }
  // Emits the last message; for files: flush, fsync, rename into place.
  void commit();
  // commit() in two steps: finish() writes the last message and, for files, flushes and
  // fsyncs the data (it touches nothing but this exporter: another thread may run it while the
  // caller does other work); publish() finishes if that was not done, then renames the file
  // into place and syncs its directory.
  void finish();
  void publish();
  // Files: throws OutputReplaced when another writer put a file under the output's name since
  // this exporter was made (OutputFile::check_unreplaced). publish() checks it itself.
  void check_unreplaced() const;
  std::uint64_t records() const { return records_; }
  std::uint64_t messages_hint() const { return appended_; }
  bool is_network() const { return network_; }
  static bool is_network_target(const std::string& output);
  // Builds the process-wide information model (libfixbuf's default elements
  // plus ours) now, so that forked children inherit it instead of building
  // it for every task (its glib hash tables were a visible per-task cost).
  static void prepare_model();

 private:
  struct Impl;
  void abort() noexcept;
  std::unique_ptr<Impl> impl_;
  std::uint64_t records_ = 0;
  std::uint64_t appended_ = 0;
  std::uint64_t template_resends_ = 0;
  bool network_ = false;
  bool committed_ = false;
};

}  // namespace ipfixweb::engine

// nDPI 4.2 integration. Packets are fed to nDPI the way ndpiReader (example/reader_util.c)
// does: the IP header and captured length, until a protocol is found and no extra dissection
// is possible, or until 80 TCP / 24 UDP packets; then undetected flows are given up with
// guessing on. The per-flow nDPI state is freed as soon as the flow is classified.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "decoder.hpp"
#include "flow_table.hpp"

struct ndpi_detection_module_struct;

namespace ipfixweb::engine {

// Owner of the nDPI detection module (initialised once per Engine, inherited across fork).
class NdpiModule {
 public:
  // `init_libgcrypt` false: the process-wide libgcrypt initialisation, which nDPI runs with a
  // module, is left out (it was done by a module set up before; it must not run concurrently).
  explicit NdpiModule(bool init_libgcrypt = true);
  ~NdpiModule();
  NdpiModule(const NdpiModule&) = delete;
  NdpiModule& operator=(const NdpiModule&) = delete;
  ndpi_detection_module_struct* get() const { return mod_; }
  unsigned protocol_count() const;

  // Puts the module back into the state it had right after initialisation, so the next
  // conversion labels exactly like one in a fresh process: empties nDPI's LRU caches
  // (BitTorrent, STUN, Zoom, Ookla, TLS certificates, mining, Teams) in place and restores the
  // per-packet scratch state. Returns false when that cannot be guaranteed (the TINC cache,
  // whose type is private, was created, or any other field of the module changed); the caller
  // must then make a new module. Costs a few microseconds instead of nDPI's ~50 ms set-up.
  bool reset();

 private:
  ndpi_detection_module_struct* mod_ = nullptr;
  std::unique_ptr<unsigned char[]> pristine_;  // byte image of *mod_ after initialisation
};

// A reusable module (Engine::Impl keeps one per metering thread): fresh() gives it in the state
// of a fresh process. nDPI keeps per-module LRU caches (BitTorrent, STUN, Ookla, TLS
// certificates, ...) that change later classifications; before a second conversion the module
// is put back into its freshly initialised state (or replaced when that is not possible), so
// every conversion labels exactly like the first one in a fresh process.
struct NdpiSlot {
  std::unique_ptr<NdpiModule> module;
  bool used = false;        // the module's caches hold state from a previous conversion
  std::uint64_t inits = 0;  // modules initialised in this slot
  NdpiModule& make(bool init_libgcrypt = true) {
    module = std::make_unique<NdpiModule>(init_libgcrypt);
    used = false;
    ++inits;
    return *module;
  }
  NdpiModule& fresh(bool init_libgcrypt = true) {
    if (module && used && !module->reset()) module.reset();
    if (!module) make(init_libgcrypt);
    used = true;
    return *module;
  }
};

struct DpiStats {
  std::uint64_t flows_classified = 0;  // found by DPI (app protocol set before giving up)
  std::uint64_t flows_guessed = 0;     // labelled by ndpi_detection_giveup's guess
  std::uint64_t flows_unknown = 0;
  std::uint64_t alloc_failures = 0;
  std::uint64_t packets_inspected = 0;  // packets given to ndpi_detection_process_packet
  DpiStats& operator+=(const DpiStats& o) {
    flows_classified += o.flows_classified;
    flows_guessed += o.flows_guessed;
    flows_unknown += o.flows_unknown;
    alloc_failures += o.alloc_failures;
    packets_inspected += o.packets_inspected;
    return *this;
  }
};

class Dpi {
 public:
  static constexpr std::uint8_t kClassificationEngineId = 22;  // RFC 6759 first octet (brief)
  static constexpr std::uint16_t kMaxTcpPackets = 80;
  static constexpr std::uint16_t kMaxUdpPackets = 24;

  explicit Dpi(const NdpiModule& module) : mod_(module.get()) {}

  void process(Flow& f, const DecodedPacket& p, std::uint64_t ts_ms);
  // Ends classification (gives up with guessing when nothing was found) and keeps what the flow
  // record needs from the nDPI flow (labels, server name, JA3, risk and score) before freeing
  // it. Idempotent.
  void finish(Flow& f);
  // nDPI's display name: "TLS.YouTube", "DNS", "Unknown" (ndpi_protocol2name).
  const std::string& name(std::uint16_t master, std::uint16_t app);
  static std::uint16_t label_id(const Flow& f) {
    return f.app_proto ? f.app_proto : f.master_proto;
  }
  // Which metadata field the server name belongs to: 0 other, 1 HTTP host, 2 TLS/QUIC SNI, 3 DNS.
  static std::uint8_t server_kind(const Flow& f);
  // JA3 client hash as 32 lower-case hex digits ("" when nDPI gave none).
  static std::string ja3c_hex(const Flow& f);
  // nDPI risk names (ndpi_risk2str of every set bit, lowest first) joined with ",", e.g.
  // "Known Protocol on Non Standard Port,Unsafe Protocol"; "" for no risk. Cached per bitmap.
  const std::string& risk_names(std::uint64_t risk);
  static std::string join_risk_names(std::uint64_t risk);
  const DpiStats& stats() const { return stats_; }

 private:
  void complete(Flow& f);
  static void take_risk(Flow& f);
  ndpi_detection_module_struct* mod_;
  std::unordered_map<std::uint32_t, std::string> names_;
  std::unordered_map<std::uint64_t, std::string> risk_names_;
  DpiStats stats_;
};

}  // namespace ipfixweb::engine

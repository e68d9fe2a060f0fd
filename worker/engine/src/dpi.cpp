#include "dpi.hpp"

#include <ndpi/ndpi_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "ipfixweb/engine/engine.hpp"
#include "ndpi_state.hpp"

namespace ipfixweb::engine {

void NdpiFlowDeleter::operator()(ndpi_flow_struct* f) const noexcept {
  if (f) ndpi_flow_free(f);
}

NdpiModule::NdpiModule(bool init_libgcrypt) {
  mod_ = ndpi_init_detection_module(init_libgcrypt ? ndpi_no_prefs : ndpi_dont_init_libgcrypt);
  if (!mod_) throw EngineError("nDPI initialisation failed");
  NDPI_PROTOCOL_BITMASK all;
  NDPI_BITMASK_SET_ALL(all);
  ndpi_set_protocol_detection_bitmask2(mod_, &all);
  ndpi_finalize_initialization(mod_);
  pristine_ = snapshot_module(mod_);
}

NdpiModule::~NdpiModule() {
  if (mod_) ndpi_exit_detection_module(mod_);
}

bool NdpiModule::reset() { return pristine_ && restore_module(mod_, pristine_.get()); }

unsigned NdpiModule::protocol_count() const { return ndpi_get_num_supported_protocols(mod_); }

void Dpi::process(Flow& f, const DecodedPacket& p, std::uint64_t ts_ms) {
  if (f.dpi_done) return;
  if (p.fragment && !p.first_fragment) return;  // nDPI ignores non-first fragments anyway
  if (!f.ndpi) {
    void* mem = ndpi_flow_malloc(SIZEOF_FLOW_STRUCT);
    if (!mem) {
      ++stats_.alloc_failures;
      f.dpi_done = true;
      return;
    }
    std::memset(mem, 0, SIZEOF_FLOW_STRUCT);
    f.ndpi.reset(static_cast<ndpi_flow_struct*>(mem));
  }
  ++f.dpi_packets;
  const std::uint8_t proto = p.key.proto;
  const bool enough = (proto == 17 && f.dpi_packets > kMaxUdpPackets) ||
                      (proto != 17 && f.dpi_packets > kMaxTcpPackets);
  const auto len = static_cast<unsigned short>(std::min<std::uint32_t>(p.l3_caplen, 0xffff));
  ++stats_.packets_inspected;
  const ndpi_protocol r = ndpi_detection_process_packet(mod_, f.ndpi.get(), p.l3, len, ts_ms);
  f.master_proto = r.master_protocol;
  f.app_proto = r.app_protocol;
  if (enough || r.app_protocol != NDPI_PROTOCOL_UNKNOWN) {
    if (!enough && ndpi_extra_dissection_possible(mod_, f.ndpi.get())) return;  // e.g. certs
    complete(f);
  }
}

void Dpi::complete(Flow& f) {
  if (f.dpi_done) return;
  f.dpi_done = true;
  if (!f.ndpi) {
    ++stats_.flows_unknown;
    return;
  }
  if (f.app_proto != NDPI_PROTOCOL_UNKNOWN) {
    ++stats_.flows_classified;
  } else {
    std::uint8_t guessed = 0;
    const ndpi_protocol r = ndpi_detection_giveup(mod_, f.ndpi.get(), 1, &guessed);
    f.master_proto = r.master_protocol;
    f.app_proto = r.app_protocol;
    if (f.app_proto == NDPI_PROTOCOL_UNKNOWN && f.master_proto == NDPI_PROTOCOL_UNKNOWN) {
      ++stats_.flows_unknown;
    } else {
      ++stats_.flows_guessed;
    }
  }
  if (server_kind(f) == 2) {  // the tls_quic union member is the live one
    const char* ja3 = f.ndpi->protos.tls_quic.ja3_client;
    if (strnlen(ja3, sizeof(f.ndpi->protos.tls_quic.ja3_client)) == 32) {
      bool ok = true;
      for (int i = 0; i < 16 && ok; ++i) {
        const auto nib = [&](char c) -> int {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          ok = false;
          return 0;
        };
        f.ja3c[static_cast<std::size_t>(i)] =
            static_cast<std::uint8_t>((nib(ja3[2 * i]) << 4) | nib(ja3[2 * i + 1]));
      }
      f.has_ja3c = ok;
    }
  }
  const char* host = f.ndpi->host_server_name;
  const std::size_t n = strnlen(host, sizeof(f.ndpi->host_server_name));
  if (n) f.host.assign(host, n);
  take_risk(f);
  f.ndpi.reset();
}

// nDPI 4.2 sets risk bits while it dissects (and in ndpi_detection_giveup); nothing changes them
// once the nDPI flow is freed, so the bitmap is read here, when DPI ends. ndpiReader 4.2 adds one
// check of its own when it prints a flow: the URL of an HTTP flow goes through
// ndpi_validate_url() (XSS, SQL injection, "HTTP Suspicious URL"), which the 4.2 library's HTTP
// dissector does not do; it is done here the same way (same protocol test, URL cut to 255
// characters like ndpiReader's buffer) so the risks match ndpiReader's "[Risk: ...]".
void Dpi::take_risk(Flow& f) {
  ndpi_risk risk = f.ndpi->risk;
  const auto is = [&](std::uint16_t id) { return f.master_proto == id || f.app_proto == id; };
  // The branches of ndpiReader's process_ndpi_collected_info() that come before its HTTP one.
  const bool http_branch = is(NDPI_PROTOCOL_HTTP) && !is(NDPI_PROTOCOL_DHCP) &&
                           !(is(NDPI_PROTOCOL_BITTORRENT) && !is(NDPI_PROTOCOL_TLS)) &&
                           !is(NDPI_PROTOCOL_DNS) && !is(NDPI_PROTOCOL_MDNS) &&
                           !is(NDPI_PROTOCOL_UBNTAC2) && !is(NDPI_PROTOCOL_FTP_CONTROL) &&
                           !is(NDPI_PROTOCOL_MAIL_IMAP) && !is(NDPI_PROTOCOL_MAIL_POP) &&
                           !is(NDPI_PROTOCOL_MAIL_SMTP) && !is(NDPI_PROTOCOL_KERBEROS);
  if (http_branch && f.ndpi->http.url && f.ndpi->http.url[0] != '\0') {
    char url[256];
    std::snprintf(url, sizeof url, "%s", f.ndpi->http.url);
    const ndpi_risk_enum r = ndpi_validate_url(url);
    if (r != NDPI_NO_RISK) NDPI_SET_BIT(risk, r);
  }
  f.risk = risk;
  std::uint16_t client = 0;
  std::uint16_t server = 0;
  f.risk_score = ndpi_risk2score(risk, &client, &server);
}

void Dpi::finish(Flow& f) { complete(f); }

std::string Dpi::ja3c_hex(const Flow& f) {
  if (!f.has_ja3c) return {};
  static const char* const kHex = "0123456789abcdef";
  std::string s(32, '0');
  for (std::size_t i = 0; i < 16; ++i) {
    s[2 * i] = kHex[f.ja3c[i] >> 4];
    s[2 * i + 1] = kHex[f.ja3c[i] & 15];
  }
  return s;
}

std::uint8_t Dpi::server_kind(const Flow& f) {
  for (const std::uint16_t id : {f.master_proto, f.app_proto}) {
    switch (id) {
      case NDPI_PROTOCOL_HTTP:
        return 1;
      case NDPI_PROTOCOL_TLS:
      case NDPI_PROTOCOL_QUIC:
      case NDPI_PROTOCOL_DTLS:
        return 2;
      case NDPI_PROTOCOL_DNS:
        return 3;
      default:
        break;
    }
  }
  return 0;
}

const std::string& Dpi::risk_names(std::uint64_t risk) {
  if (risk == 0) {
    static const std::string kNone;
    return kNone;
  }
  auto it = risk_names_.find(risk);
  if (it != risk_names_.end()) return it->second;
  return risk_names_.emplace(risk, join_risk_names(risk)).first->second;
}

std::string Dpi::join_risk_names(std::uint64_t risk) {
  std::string s;
  for (int i = 0; i < static_cast<int>(NDPI_MAX_RISK) && i < 64; ++i) {
    if (!(risk & (std::uint64_t{1} << i))) continue;
    if (!s.empty()) s += ',';
    s += ndpi_risk2str(static_cast<ndpi_risk_enum>(i));
  }
  return s;
}

const std::string& Dpi::name(std::uint16_t master, std::uint16_t app) {
  const std::uint32_t key = (std::uint32_t{master} << 16) | app;
  auto it = names_.find(key);
  if (it != names_.end()) return it->second;
  char buf[128] = {};
  ndpi_protocol p{};
  p.master_protocol = master;
  p.app_protocol = app;
  ndpi_protocol2name(mod_, p, buf, sizeof buf);
  return names_.emplace(key, std::string(buf)).first->second;
}

}  // namespace ipfixweb::engine

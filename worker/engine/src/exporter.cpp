#include "exporter.hpp"

#include <chrono>

#include <fcntl.h>
#include <fixbuf/public.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <string_view>

#include "fixbuf_util.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "output_file.hpp"

namespace ipfixweb::engine {
namespace {

using fixbuf::kCommunityIdNum;
using fixbuf::kCommunityIdPen;
using fixbuf::kNtopPen;
using fixbuf::take_error;
using FbufPtr = std::unique_ptr<fBuf_t, fixbuf::FbufDeleter>;

// Spec flags: an element is in an external template when all its flags are selected.
constexpr std::uint32_t kFDpi = 1;
constexpr std::uint32_t kFRev = 2;
constexpr std::uint32_t kFV4 = 4;
constexpr std::uint32_t kFV6 = 8;
constexpr std::uint32_t kFAll = kFDpi | kFRev | kFV4 | kFV6;

// The internal record. Field order and sizes match kSpec exactly; no implicit padding.
struct IpfixRecord {
  fbVarfield_t applicationId;
  fbVarfield_t applicationName;
  fbVarfield_t flowServerName;
  fbVarfield_t httpHost;
  fbVarfield_t sslServerName;
  fbVarfield_t dnsQuery;
  fbVarfield_t ja3cHash;
  fbVarfield_t l7ProtoRiskName;
  fbVarfield_t communityId;
  std::uint64_t l7ProtoRisk;
  std::uint64_t flowStartMilliseconds;
  std::uint64_t flowEndMilliseconds;
  std::uint64_t octetDeltaCount;
  std::uint64_t packetDeltaCount;
  std::uint64_t reverseOctetDeltaCount;
  std::uint64_t reversePacketDeltaCount;
  std::uint8_t sourceIPv6Address[16];
  std::uint8_t destinationIPv6Address[16];
  std::uint32_t sourceIPv4Address;
  std::uint32_t destinationIPv4Address;
  std::uint16_t sourceTransportPort;
  std::uint16_t destinationTransportPort;
  std::uint16_t vlanId;
  std::uint16_t tcpControlBits;
  std::uint16_t reverseTcpControlBits;
  std::uint16_t icmpTypeCodeIPv4;
  std::uint16_t reverseIcmpTypeCodeIPv4;
  std::uint16_t icmpTypeCodeIPv6;
  std::uint16_t reverseIcmpTypeCodeIPv6;
  std::uint16_t l7RiskScore;
  std::uint8_t protocolIdentifier;
  std::uint8_t ipVersion;
  std::uint8_t ipClassOfService;
  std::uint8_t reverseIpClassOfService;
  std::uint8_t flowEndReason;
  std::uint8_t paddingOctets[7];
};
static_assert(sizeof(IpfixRecord) == 9 * sizeof(fbVarfield_t) + 56 + 32 + 8 + 20 + 12);

#define IE(name, len, flags) \
  { const_cast<char*>(name), len, flags }
fbInfoElementSpec_t kSpec[] = {
    IE("applicationId", FB_IE_VARLEN, kFDpi),
    IE("applicationName", FB_IE_VARLEN, kFDpi),
    IE("ntopFlowServerName", FB_IE_VARLEN, kFDpi),
    IE("ntopHttpHost", FB_IE_VARLEN, kFDpi),
    IE("ntopSslServerName", FB_IE_VARLEN, kFDpi),
    IE("ntopDnsQuery", FB_IE_VARLEN, kFDpi),
    IE("ntopJa3cHash", FB_IE_VARLEN, kFDpi),
    IE("ntopL7ProtoRiskName", FB_IE_VARLEN, kFDpi),
    IE("communityId", FB_IE_VARLEN, 0),
    IE("ntopL7ProtoRisk", 8, kFDpi),
    IE("flowStartMilliseconds", 8, 0),
    IE("flowEndMilliseconds", 8, 0),
    IE("octetDeltaCount", 8, 0),
    IE("packetDeltaCount", 8, 0),
    IE("reverseOctetDeltaCount", 8, kFRev),
    IE("reversePacketDeltaCount", 8, kFRev),
    IE("sourceIPv6Address", 16, kFV6),
    IE("destinationIPv6Address", 16, kFV6),
    IE("sourceIPv4Address", 4, kFV4),
    IE("destinationIPv4Address", 4, kFV4),
    IE("sourceTransportPort", 2, 0),
    IE("destinationTransportPort", 2, 0),
    IE("vlanId", 2, 0),
    IE("tcpControlBits", 2, 0),
    IE("reverseTcpControlBits", 2, kFRev),
    IE("icmpTypeCodeIPv4", 2, kFV4),
    IE("reverseIcmpTypeCodeIPv4", 2, kFV4 | kFRev),
    IE("icmpTypeCodeIPv6", 2, kFV6),
    IE("reverseIcmpTypeCodeIPv6", 2, kFV6 | kFRev),
    IE("ntopL7RiskScore", 2, kFDpi),
    IE("protocolIdentifier", 1, 0),
    IE("ipVersion", 1, 0),
    IE("ipClassOfService", 1, 0),
    IE("reverseIpClassOfService", 1, kFRev),
    IE("flowEndReason", 1, 0),
    IE("paddingOctets", 7, kFAll + 16),  // internal only: never selected for export
    FB_IESPEC_NULL};
#undef IE

// The variable-length fields of IpfixRecord, in kSpec order (they come first in both).
constexpr fbVarfield_t IpfixRecord::*kVarfields[] = {
    &IpfixRecord::applicationId, &IpfixRecord::applicationName, &IpfixRecord::flowServerName,
    &IpfixRecord::httpHost,      &IpfixRecord::sslServerName,   &IpfixRecord::dnsQuery,
    &IpfixRecord::ja3cHash,      &IpfixRecord::l7ProtoRiskName, &IpfixRecord::communityId};
constexpr std::size_t kVarfieldCount = std::size(kVarfields);

// The size of a record on the wire in one external template, worked out from kSpec the way
// fbTemplateAppendSpecArray selects elements: a spec is in when all its flags are selected.
struct ExternalLayout {
  std::uint32_t fixed = 0;      // sum of the fixed-length elements
  std::uint32_t varfields = 0;  // bit i: kVarfields[i] is in the template
};
ExternalLayout external_layout(std::uint32_t flags) {
  ExternalLayout l;
  std::size_t var = 0;
  for (const fbInfoElementSpec_t* s = kSpec; s->name; ++s) {
    const bool in = s->flags == 0 || (s->flags & flags) == s->flags;
    if (s->len_override == FB_IE_VARLEN) {
      if (in) l.varfields |= 1u << var;
      ++var;
    } else if (in) {
      l.fixed += s->len_override;
    }
  }
  if (var != kVarfieldCount) throw EngineError("IPFIX template setup: kVarfields out of date");
  return l;
}
// A variable-length field is encoded with a 1-byte length below 255, else 255 and 2 bytes.
std::uint32_t encoded_length(const IpfixRecord& r, const ExternalLayout& l) {
  std::uint32_t n = l.fixed;
  for (std::size_t i = 0; i < kVarfieldCount; ++i) {
    if (l.varfields & (1u << i)) {
      const std::size_t len = (r.*kVarfields[i]).len;
      n += static_cast<std::uint32_t>(len + (len < 255 ? 1 : 3));
    }
  }
  return n;
}
constexpr std::uint32_t kMessageHeaderLen = 16;
constexpr std::uint32_t kSetHeaderLen = 4;
// A file output's writeback starts every this many bytes (OutputFile::start_writeback): its
// fsync at the end then waits for the last few MiB only (a 15 MB output's took 10 ms).
constexpr std::uint64_t kWritebackBytes = 4u << 20;

struct EnterpriseElement {
  const char* name;
  std::uint32_t pen;
  std::uint16_t num;
  std::uint16_t len;  // FB_IE_VARLEN for strings
  std::uint8_t type;
  const char* description;
};
// ntop numbers as nProbe defines them ("nprobe -H": [IPFIX 35632.N]).
constexpr EnterpriseElement kEnterpriseElements[] = {
    {"ntopFlowServerName", kNtopPen, 122, FB_IE_VARLEN, FB_STRING,
     "FLOW_SERVER_NAME: server name nDPI found (SNI, Host, query)"},
    {"ntopHttpHost", kNtopPen, 187, FB_IE_VARLEN, FB_STRING, "HTTP_HOST"},
    {"ntopSslServerName", kNtopPen, 188, FB_IE_VARLEN, FB_STRING, "SSL_SERVER_NAME: TLS/QUIC SNI"},
    {"ntopDnsQuery", kNtopPen, 205, FB_IE_VARLEN, FB_STRING, "DNS_QUERY"},
    {"ntopJa3cHash", kNtopPen, 489, FB_IE_VARLEN, FB_STRING,
     "JA3C_HASH: JA3 client fingerprint (MD5, 32 hex digits)"},
    {"ntopL7ProtoRisk", kNtopPen, 509, 8, FB_UINT_64,
     "L7_PROTO_RISK: nDPI flow risk bitmap (bit n = ndpi_risk_enum n)"},
    {"ntopL7ProtoRiskName", kNtopPen, 510, FB_IE_VARLEN, FB_STRING,
     "L7_PROTO_RISK_NAME: nDPI risk names, comma-separated"},
    {"ntopL7RiskScore", kNtopPen, 527, 2, FB_UINT_16,
     "L7_RISK_SCORE: nDPI risk score (client + server)"},
    {"communityId", kCommunityIdPen, kCommunityIdNum, FB_IE_VARLEN, FB_STRING,
     "Community ID v1 of the flow (corelight community-id-spec, seed 0)"},
};

}  // namespace

// libfixbuf's exporters' message size limit (fbexporter.c: 65496 for files, 8192 over TCP, 1420
// over UDP). Exported by libfixbuf but declared only in <fixbuf/private.h>.
extern "C" uint16_t fbExporterGetMTU(fbExporter_t* exporter);

void add_enterprise_elements(fbInfoModel_t* model) {
  for (const auto& e : kEnterpriseElements) {
    fbInfoElement_t ie{};
    ie.ref.name = e.name;
    ie.ent = e.pen;
    ie.num = e.num;
    ie.len = e.len;
    ie.type = e.type;
    if (e.type != FB_STRING) ie.flags = FB_IE_F_ENDIAN;  // integers: network byte order
    ie.description = e.description;
    fbInfoModelAddElement(model, &ie);
  }
}

// One information model per process, built once and never modified after:
// sessions and templates only read it. It lives until the process exits.
static fbInfoModel_t* shared_model() {
  static fbInfoModel_t* const model = [] {
    fbInfoModel_t* m = fbInfoModelAlloc();
    add_enterprise_elements(m);
    return m;
  }();
  return model;
}

struct IpfixExporter::Impl {
  ExporterConfig cfg;
  fbInfoModel_t* model = nullptr;                                // shared_model(): not owned
  std::unique_ptr<fbSession_t, fixbuf::SessionDeleter> session;  // until the fBuf owns it
  FbufPtr fbuf;                                                  // owns session and exporter
  std::unique_ptr<OutputFile> file;                              // files (not live export)
  std::uint16_t int_tid = 0;
  std::uint16_t current_ext = 0;
  // libfixbuf before 2.5.2 writes an empty data set (a set header and no record) when a record
  // opens a set near the end of a message and then does not fit: it emits the message with the
  // header alone. So the data message being built is measured here, and emitted before a record
  // that would not fit (docs/engine.md, "Empty data sets").
  ExternalLayout layouts[4];   // by external template id - kTidIpv4Biflow
  std::uint32_t mtu = 0;       // largest message the exporter takes
  std::uint32_t msg_len = 0;   // bytes in the data message in the buffer; 0: none
  std::uint64_t unsynced = 0;  // bytes emitted to the file since its last start_writeback()
  std::uint32_t last_export_time = 0;
  bool error = false;
  bool udp = false;
  std::uint64_t pending = 0;        // records appended since the last emitted message
  std::uint64_t last_flush_ms = 0;  // packet time of the last flush
  std::uint64_t last_templates_ms = 0;
  std::chrono::steady_clock::time_point last_templates_wall{};

  // Marks the output broken and throws the one-line error for `what`.
  [[noreturn]] void fail(const char* what, GError*& err) {
    error = true;
    throw EngineError(std::string("error writing IPFIX output '") + cfg.output + "' (" + what +
                      "): " + take_error(err));
  }
};

void IpfixExporter::prepare_model() { shared_model(); }

bool IpfixExporter::is_network_target(const std::string& output) {
  return output.rfind("tcp://", 0) == 0 || output.rfind("udp://", 0) == 0;
}

IpfixExporter::IpfixExporter(const ExporterConfig& cfg) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = cfg;
  network_ = cfg.dir_fd < 0 && is_network_target(cfg.output);
  GError* err = nullptr;

  m.model = shared_model();
  m.session.reset(fbSessionAlloc(m.model));
  fbSessionSetDomain(m.session.get(), cfg.observation_domain);

  auto add_template = [&](std::uint32_t flags, bool internal, std::uint16_t tid) {
    if (!internal) m.layouts[tid - kTidIpv4Biflow] = external_layout(flags);
    std::unique_ptr<fbTemplate_t, fixbuf::TemplateDeleter> t(fbTemplateAlloc(m.model));
    if (!fbTemplateAppendSpecArray(t.get(), kSpec, flags, &err)) {
      throw EngineError("IPFIX template setup failed: " + take_error(err));
    }
    const std::uint16_t id =
        fbSessionAddTemplate(m.session.get(), internal ? TRUE : FALSE, tid, t.get(), &err);
    if (id == 0) throw EngineError("IPFIX template setup failed: " + take_error(err));
    t.release();  // the session owns it now
    return id;
  };
  m.int_tid = add_template(UINT32_MAX, true, FB_TID_AUTO);
  const std::uint32_t dpi = cfg.dpi ? kFDpi : 0;
  if (cfg.biflow) {
    add_template(dpi | kFRev | kFV4, false, kTidIpv4Biflow);
    add_template(dpi | kFRev | kFV6, false, kTidIpv6Biflow);
  } else {
    add_template(dpi | kFV4, false, kTidIpv4Uniflow);
    add_template(dpi | kFV6, false, kTidIpv6Uniflow);
  }

  fbExporter_t* exporter = nullptr;
  if (network_) {
    const bool tcp = cfg.output.rfind("tcp://", 0) == 0;
    std::string hostport = cfg.output.substr(6);
    std::string host;
    std::string port;
    if (!hostport.empty() && hostport[0] == '[') {
      const auto close = hostport.find(']');
      if (close == std::string::npos || close + 1 >= hostport.size() ||
          hostport[close + 1] != ':') {
        throw EngineError("bad collector address '" + cfg.output + "' (want tcp://HOST:PORT)");
      }
      host = hostport.substr(1, close - 1);
      port = hostport.substr(close + 2);
    } else {
      const auto colon = hostport.rfind(':');
      if (colon == std::string::npos) {
        throw EngineError("bad collector address '" + cfg.output + "' (want tcp://HOST:PORT)");
      }
      host = hostport.substr(0, colon);
      port = hostport.substr(colon + 1);
    }
    if (host.empty() || port.empty() || port.find_first_not_of("0123456789") != std::string::npos) {
      throw EngineError("bad collector address '" + cfg.output + "' (want tcp://HOST:PORT)");
    }
    m.udp = !tcp;
    fbConnSpec_t spec{};
    spec.transport = tcp ? FB_TCP : FB_UDP;
    spec.host = host.data();
    spec.svc = port.data();
    exporter = fbExporterAllocNet(&spec);
  } else {
    OutputFileConfig ocfg;
    ocfg.path = cfg.output;
    ocfg.dir_fd = cfg.dir_fd;
    ocfg.name = cfg.name;
    ocfg.unnamed_temporary = cfg.unnamed_temporary;
    ocfg.what = "IPFIX output";
    m.file = std::make_unique<OutputFile>(ocfg);
    exporter = fbExporterAllocFP(m.file->file());
  }
  if (!exporter) {
    abort();
    throw EngineError("cannot create IPFIX exporter for '" + cfg.output + "'");
  }
  m.mtu = fbExporterGetMTU(exporter);
  m.fbuf.reset(fBufAllocForExport(m.session.release(), exporter));
}

IpfixExporter::~IpfixExporter() {
  if (!committed_) abort();
}

void IpfixExporter::abort() noexcept {
  if (!impl_) return;
  impl_->fbuf.reset();  // frees session + exporter (does not close our FILE)
  if (impl_->file) impl_->file->abort();
}

unsigned IpfixExporter::write(const Flow& f, EndReason reason, const FlowLabel& label,
                              std::uint64_t now_ms) {
  Impl& m = *impl_;
  GError* err = nullptr;
  const auto fail = [&](const char* what) { m.fail(what, err); };
  const auto export_time = static_cast<std::uint32_t>(now_ms / 1000);
  if (appended_ == 0) {
    fBufSetExportTime(m.fbuf.get(), export_time);
    if (!fbSessionExportTemplates(fBufGetSession(m.fbuf.get()), &err)) fail("templates");
    if (!fBufSetInternalTemplate(m.fbuf.get(), m.int_tid, &err)) fail("internal template");
    m.last_flush_ms = m.last_templates_ms = now_ms;
    m.last_templates_wall = std::chrono::steady_clock::now();
  }
  if (export_time != m.last_export_time) {
    fBufSetExportTime(m.fbuf.get(), export_time);
    m.last_export_time = export_time;
  }

  IpfixRecord r{};
  std::uint8_t app_id[3];
  const auto set_var = [](fbVarfield_t& v, const std::string* s) {
    if (s && !s->empty()) {
      v.len = s->size();
      v.buf = reinterpret_cast<std::uint8_t*>(const_cast<char*>(s->data()));
    }
  };
  if (m.cfg.dpi) {
    app_id[0] = 22;
    app_id[1] = static_cast<std::uint8_t>(label.id >> 8);
    app_id[2] = static_cast<std::uint8_t>(label.id & 0xff);
    r.applicationId.len = sizeof app_id;
    r.applicationId.buf = app_id;
    set_var(r.applicationName, label.name);
    set_var(r.flowServerName, label.server);
    if (label.server && label.server_kind == FlowLabel::kHttp) set_var(r.httpHost, label.server);
    if (label.server && label.server_kind == FlowLabel::kTls)
      set_var(r.sslServerName, label.server);
    if (label.server && label.server_kind == FlowLabel::kDns) set_var(r.dnsQuery, label.server);
    set_var(r.ja3cHash, label.ja3c);
    r.l7ProtoRisk = label.risk;
    r.l7RiskScore = label.risk_score;
    set_var(r.l7ProtoRiskName, label.risks);
  }
  set_var(r.communityId, &label.community_id);
  r.vlanId = f.key.vlan;
  r.protocolIdentifier = f.key.proto;
  r.ipVersion = f.key.ip_version;
  r.flowEndReason = static_cast<std::uint8_t>(reason);

  const bool v6 = f.key.ip_version == 6;
  const auto set_endpoints = [&](const FlowKey& k) {
    if (v6) {
      std::memcpy(r.sourceIPv6Address, k.src.data(), 16);
      std::memcpy(r.destinationIPv6Address, k.dst.data(), 16);
    } else {
      r.sourceIPv4Address = (std::uint32_t{k.src[0]} << 24) | (std::uint32_t{k.src[1]} << 16) |
                            (std::uint32_t{k.src[2]} << 8) | k.src[3];
      r.destinationIPv4Address = (std::uint32_t{k.dst[0]} << 24) | (std::uint32_t{k.dst[1]} << 16) |
                                 (std::uint32_t{k.dst[2]} << 8) | k.dst[3];
    }
    r.sourceTransportPort = k.sport;
    r.destinationTransportPort = k.dport;
  };
  const auto set_forward = [&](const DirectionStats& d) {
    r.octetDeltaCount = d.octets;
    r.packetDeltaCount = d.packets;
    r.tcpControlBits = d.tcp_flags;
    r.ipClassOfService = d.tos;
    (v6 ? r.icmpTypeCodeIPv6 : r.icmpTypeCodeIPv4) = d.icmp_type_code;
  };
  const bool icmp = f.key.proto == 1 || f.key.proto == 58;

  unsigned written = 0;
  const auto append = [&](std::uint16_t ext) {
    // A new template opens a new set. A record that does not fit ends the message here, before
    // libfixbuf writes a set header for it (see Impl::msg_len).
    const std::uint32_t len = encoded_length(r, m.layouts[ext - kTidIpv4Biflow]);
    const std::uint32_t set_header = ext != m.current_ext ? kSetHeaderLen : 0;
    if (m.msg_len != 0 && m.msg_len + set_header + len > m.mtu) {
      if (!fBufEmit(m.fbuf.get(), &err)) fail("emit");
      if (m.file && (m.unsynced += m.msg_len) >= kWritebackBytes) {
        m.file->start_writeback();
        m.unsynced = 0;
      }
      m.msg_len = 0;
      m.pending = 0;
    }
    m.msg_len = (m.msg_len == 0 ? kMessageHeaderLen + kSetHeaderLen : m.msg_len + set_header) + len;
    if (ext != m.current_ext) {
      if (!fBufSetExportTemplate(m.fbuf.get(), ext, &err)) fail("export template");
      m.current_ext = ext;
    }
    if (!fBufAppend(m.fbuf.get(), reinterpret_cast<std::uint8_t*>(&r), sizeof r, &err)) {
      fail("append");
    }
    ++appended_;
    ++records_;
    ++written;
    ++m.pending;
  };

  if (m.cfg.biflow) {
    set_endpoints(f.key);
    set_forward(f.fwd);
    if (!icmp) r.icmpTypeCodeIPv4 = r.icmpTypeCodeIPv6 = 0;
    r.flowStartMilliseconds = f.start_ms;
    r.flowEndMilliseconds = f.end_ms;
    r.reverseOctetDeltaCount = f.rev.octets;
    r.reversePacketDeltaCount = f.rev.packets;
    r.reverseTcpControlBits = f.rev.tcp_flags;
    r.reverseIpClassOfService = f.rev.tos;
    if (icmp) (v6 ? r.reverseIcmpTypeCodeIPv6 : r.reverseIcmpTypeCodeIPv4) = f.rev.icmp_type_code;
    append(v6 ? kTidIpv6Biflow : kTidIpv4Biflow);
  } else {
    const std::uint16_t tid = v6 ? kTidIpv6Uniflow : kTidIpv4Uniflow;
    if (f.fwd.packets) {
      set_endpoints(f.key);
      set_forward(f.fwd);
      if (!icmp) r.icmpTypeCodeIPv4 = r.icmpTypeCodeIPv6 = 0;
      r.flowStartMilliseconds = f.fwd.first_ms;
      r.flowEndMilliseconds = f.fwd.last_ms;
      append(tid);
    }
    if (f.rev.packets) {
      set_endpoints(f.key.reversed());
      set_forward(f.rev);
      if (!icmp) r.icmpTypeCodeIPv4 = r.icmpTypeCodeIPv6 = 0;
      r.flowStartMilliseconds = f.rev.first_ms;
      r.flowEndMilliseconds = f.rev.last_ms;
      append(tid);
    }
  }
  return written;
}

void IpfixExporter::tick(std::uint64_t now_ms) {
  Impl& m = *impl_;
  if (!network_ || m.pending == 0 || now_ms < m.last_flush_ms + kLiveFlushMs) return;
  GError* err = nullptr;
  const auto fail = [&](const char* what) { m.fail(what, err); };
  const auto export_time = static_cast<std::uint32_t>(now_ms / 1000);
  fBufSetExportTime(m.fbuf.get(), export_time);
  m.last_export_time = export_time;
  if (!fBufEmit(m.fbuf.get(), &err)) fail("emit");
  m.msg_len = 0;
  m.pending = 0;
  m.last_flush_ms = now_ms;
  const auto wall = std::chrono::steady_clock::now();
  if (m.udp &&
      (now_ms >= m.last_templates_ms + kTemplateRefreshMs ||
       wall - m.last_templates_wall >= std::chrono::milliseconds(kTemplateRefreshWallMs))) {
    // RFC 7011 section 8.4: over UDP, templates are resent periodically. They go in a message of
    // their own, before the next data.
    if (!fbSessionExportTemplates(fBufGetSession(m.fbuf.get()), &err)) fail("templates");
    if (!fBufEmit(m.fbuf.get(), &err)) fail("emit templates");
    if (!fBufSetInternalTemplate(m.fbuf.get(), m.int_tid, &err)) fail("internal template");
    m.current_ext = 0;
    m.last_templates_ms = now_ms;
    m.last_templates_wall = wall;
    ++template_resends_;
  }
}

void IpfixExporter::finish() {
  Impl& m = *impl_;
  if (!m.fbuf) return;  // finished already
  GError* err = nullptr;
  if (appended_ == 0) {  // still write the templates so the file is a valid IPFIX file
    if (!fbSessionExportTemplates(fBufGetSession(m.fbuf.get()), &err)) {
      throw EngineError("error writing IPFIX output '" + m.cfg.output + "': " + take_error(err));
    }
  }
  if (!fBufEmit(m.fbuf.get(), &err)) {
    throw EngineError("error writing IPFIX output '" + m.cfg.output + "': " + take_error(err));
  }
  m.fbuf.reset();  // a network export: closes the connection
  if (!network_) m.file->sync();
}

void IpfixExporter::publish() {
  finish();
  if (!network_) impl_->file->publish();
  committed_ = true;
}

void IpfixExporter::commit() { publish(); }

void IpfixExporter::check_unreplaced() const {
  if (impl_->file) impl_->file->check_unreplaced();
}

}  // namespace ipfixweb::engine

// Link-layer / network-layer decoding of one captured packet into a flow key and counters.
// Pure function over the captured bytes: no allocation, no global state.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

namespace ipfixweb::engine {

// Link types (LINKTYPE_* values as libpcap's pcap_datalink() reports them on Linux).
inline constexpr int kDltNull = 0;
inline constexpr int kDltEthernet = 1;
inline constexpr int kDltPpp = 9;
inline constexpr int kDltRaw = 12;  // DLT_RAW on Linux (LINKTYPE_RAW 101 is mapped to it)
inline constexpr int kDltRawOpenBsd = 14;
inline constexpr int kDltCiscoHdlc = 104;
inline constexpr int kDltLoop = 108;
inline constexpr int kDltLinuxSll = 113;
inline constexpr int kDltLinkTypeRaw = 101;
inline constexpr int kDltIpv4 = 228;
inline constexpr int kDltIpv6 = 229;
inline constexpr int kDltLinuxSll2 = 276;

bool link_type_supported(int dlt);

// Why a packet was not metered (summary "not_metered").
enum class DecodeStatus : std::uint8_t {
  kOk = 0,
  kNonIp,        // ARP, LLDP, STP, ... (a valid frame that carries no IP)
  kTruncated,    // capture ends before the headers needed for the flow key
  kMalformed,    // header fields that cannot be right (bad version, IHL, lengths)
  kUnsupported,  // encapsulation we do not decode (e.g. GTP inside, IPX)
};
inline constexpr int kDecodeStatusCount = 5;
const char* decode_status_name(DecodeStatus s);

// Flow key: addresses are 16 bytes, IPv4 uses the first 4 (rest zero) so keys compare bytewise.
struct FlowKey {
  std::array<std::uint8_t, 16> src{};
  std::array<std::uint8_t, 16> dst{};
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  std::uint16_t vlan = 0;
  std::uint8_t proto = 0;
  std::uint8_t ip_version = 0;

  bool operator==(const FlowKey& o) const = default;
  FlowKey reversed() const {
    FlowKey r = *this;
    r.src = dst;
    r.dst = src;
    r.sport = dport;
    r.dport = sport;
    return r;
  }
};

// Tunnel layers that were removed to reach the metered (innermost) IP header.
enum TunnelBits : std::uint8_t {
  kTunnelIpInIp = 1,  // IPv4/IPv6 in IPv4/IPv6 (proto 4 / 41)
  kTunnelGre = 2,
  kTunnelVxlan = 4,
  kTunnelTeredo = 8,
  kTunnelMplsOrPppoe = 16,
};

struct DecodedPacket {
  FlowKey key;
  std::uint32_t ip_octets = 0;       // total length of the metered IP packet (from its header)
  const std::uint8_t* l3 = nullptr;  // metered IP header (for nDPI)
  std::uint32_t l3_caplen = 0;       // captured bytes from l3 to the end of the frame
  std::uint16_t tcp_flags = 0;       // 9 bits (NS..FIN)
  std::uint16_t icmp_type_code = 0;  // type << 8 | code
  std::uint8_t tos = 0;              // IPv4 TOS / IPv6 traffic class
  std::uint8_t tunnels = 0;          // TunnelBits
  // IP fragments: `fragment` is set for any fragment; only the first one carries ports.
  bool fragment = false;
  bool first_fragment = false;
  std::uint32_t frag_id = 0;
};

struct DecodeOptions {
  bool decapsulate_tunnels = true;
  // Teredo (UDP 3544) stays an outer flow by default, as ndpiReader 4.2 reports it.
  bool decapsulate_teredo = false;
};

// Decodes one frame of link type `dlt`. On kOk `out` holds the key and counters. `wirelen` is
// the frame's original length (pcap `len`; 0 = not cut, same as `caplen`): an IP header whose
// total length exceeds what was on the wire is kMalformed, one cut by the snaplen is metered
// with its header's length.
DecodeStatus decode_packet(int dlt, const std::uint8_t* data, std::uint32_t caplen,
                           const DecodeOptions& opts, DecodedPacket& out,
                           std::uint32_t wirelen = 0);

std::string format_address(const std::array<std::uint8_t, 16>& a, std::uint8_t ip_version);

}  // namespace ipfixweb::engine

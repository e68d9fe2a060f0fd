#include "decoder.hpp"

#include <arpa/inet.h>

#include <algorithm>

namespace ipfixweb::engine {
namespace {

constexpr int kMaxDepth = 8;  // nested encapsulations we follow before giving up

inline std::uint16_t rd16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
inline std::uint32_t rd32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

struct Ctx {
  const DecodeOptions& opts;
  DecodedPacket& out;
  int depth = 0;
  bool vlan_set = false;
  std::uint32_t uncaptured = 0;  // wire length - captured length (bytes cut by the snaplen)
};

DecodeStatus decode_ipv4(Ctx& c, const std::uint8_t* p, std::uint32_t len);
DecodeStatus decode_ipv6(Ctx& c, const std::uint8_t* p, std::uint32_t len);
DecodeStatus decode_ether(Ctx& c, const std::uint8_t* p, std::uint32_t len);

DecodeStatus decode_ip_by_version(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 1) return DecodeStatus::kTruncated;
  switch (p[0] >> 4) {
    case 4:
      return decode_ipv4(c, p, len);
    case 6:
      return decode_ipv6(c, p, len);
    default:
      return DecodeStatus::kMalformed;
  }
}

DecodeStatus decode_mpls(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  c.out.tunnels |= kTunnelMplsOrPppoe;
  for (int labels = 0; labels < 16; ++labels) {
    if (len < 4) return DecodeStatus::kTruncated;
    const bool bottom = (p[2] & 0x01) != 0;
    p += 4;
    len -= 4;
    if (bottom) {
      if (len < 1) return DecodeStatus::kTruncated;
      const int nibble = p[0] >> 4;
      if (nibble == 4 || nibble == 6) return decode_ip_by_version(c, p, len);
      return DecodeStatus::kUnsupported;  // pseudowire / control word
    }
  }
  return DecodeStatus::kMalformed;
}

DecodeStatus decode_ppp(Ctx& c, const std::uint8_t* p, std::uint32_t len);

DecodeStatus decode_ethertype(Ctx& c, std::uint16_t type, const std::uint8_t* p,
                              std::uint32_t len) {
  if (++c.depth > kMaxDepth) return DecodeStatus::kUnsupported;
  switch (type) {
    case 0x0800:
      return decode_ipv4(c, p, len);
    case 0x86dd:
      return decode_ipv6(c, p, len);
    case 0x8847:
    case 0x8848:
      return decode_mpls(c, p, len);
    case 0x6558:
      return decode_ether(c, p, len);
    case 0x880b:
      return decode_ppp(c, p, len);
    case 0x8903:  // Cisco FabricPath: FTAG/TTL, then the original Ethernet frame
      if (len < 2) return DecodeStatus::kTruncated;
      return decode_ether(c, p + 2, len - 2);
    case 0x8864:  // PPPoE session: ver/type, code, session id, length, then PPP protocol
      if (len < 8) return DecodeStatus::kTruncated;
      c.out.tunnels |= kTunnelMplsOrPppoe;
      return decode_ppp(c, p + 6, len - 6);
    default:
      return DecodeStatus::kNonIp;
  }
}

DecodeStatus decode_ppp(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 2) return DecodeStatus::kTruncated;
  if ((p[0] == 0x0f || p[0] == 0x8f) && p[1] == 0x00) {  // Cisco HDLC framing on a "PPP" link
    if (len < 4) return DecodeStatus::kTruncated;
    return decode_ethertype(c, rd16(p + 2), p + 4, len - 4);
  }
  if (p[0] == 0xff && p[1] == 0x03) {  // address + control
    p += 2;
    len -= 2;
  }
  if (len < 1) return DecodeStatus::kTruncated;
  std::uint16_t proto;
  if (p[0] & 0x01) {  // protocol field compression
    proto = p[0];
    p += 1;
    len -= 1;
  } else {
    if (len < 2) return DecodeStatus::kTruncated;
    proto = rd16(p);
    p += 2;
    len -= 2;
  }
  switch (proto) {
    case 0x0021:
      return decode_ipv4(c, p, len);
    case 0x0057:
      return decode_ipv6(c, p, len);
    case 0x0281:
      return decode_mpls(c, p, len);
    default:
      return DecodeStatus::kNonIp;
  }
}

DecodeStatus decode_ether(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 14) return DecodeStatus::kTruncated;
  std::uint16_t type = rd16(p + 12);
  p += 14;
  len -= 14;
  while (type == 0x8100 || type == 0x88a8 || type == 0x9100) {
    if (len < 4) return DecodeStatus::kTruncated;
    if (!c.vlan_set) {  // vlanId is the outermost tag
      c.out.key.vlan = rd16(p) & 0x0fff;
      c.vlan_set = true;
    }
    type = rd16(p + 2);
    p += 4;
    len -= 4;
  }
  if (type < 0x0600) {  // 802.3 length field: only LLC/SNAP can carry IP
    if (len >= 8 && p[0] == 0xaa && p[1] == 0xaa && p[2] == 0x03) {
      type = rd16(p + 6);
      p += 8;
      len -= 8;
    } else {
      return DecodeStatus::kNonIp;
    }
  }
  return decode_ethertype(c, type, p, len);
}

// Tries an inner decode; when it fails the outer packet is metered as it was.
template <typename Fn>
bool try_inner(Ctx& c, std::uint8_t tunnel_bit, Fn&& fn) {
  if (!c.opts.decapsulate_tunnels || c.depth >= kMaxDepth) return false;
  const DecodedPacket saved = c.out;
  const bool saved_vlan = c.vlan_set;
  ++c.depth;
  c.out.tunnels |= tunnel_bit;
  if (fn() == DecodeStatus::kOk) return true;
  c.out = saved;
  c.vlan_set = saved_vlan;
  return false;
}

DecodeStatus decode_gre(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 4) return DecodeStatus::kTruncated;
  const std::uint16_t flags = rd16(p);
  const std::uint16_t proto = rd16(p + 2);
  const int version = flags & 0x7;
  std::uint32_t hlen = 4;
  if (flags & 0x8000) hlen += 4;                    // checksum + reserved
  if (flags & 0x2000) hlen += 4;                    // key
  if (flags & 0x1000) hlen += 4;                    // sequence
  if (version == 1 && (flags & 0x0080)) hlen += 4;  // PPTP acknowledgment
  if (len < hlen) return DecodeStatus::kTruncated;
  p += hlen;
  len -= hlen;
  switch (proto) {
    case 0x88be:  // ERSPAN type II (with sequence) or type I (without)
      if (flags & 0x1000) {
        if (len < 8) return DecodeStatus::kTruncated;
        return decode_ether(c, p + 8, len - 8);
      }
      return decode_ether(c, p, len);
    case 0x22eb: {  // ERSPAN type III: 12 bytes, plus 8 of platform info when O is set
      if (len < 12) return DecodeStatus::kTruncated;
      const std::uint32_t h = (p[11] & 0x01) ? 20 : 12;
      if (len < h) return DecodeStatus::kTruncated;
      return decode_ether(c, p + h, len - h);
    }
    default: {
      const DecodeStatus s = decode_ethertype(c, proto, p, len);
      return s == DecodeStatus::kNonIp ? DecodeStatus::kUnsupported : s;
    }
  }
}

// L4 header: ports, flags, ICMP type/code, and UDP-carried tunnels.
DecodeStatus decode_l4(Ctx& c, std::uint8_t proto, const std::uint8_t* p, std::uint32_t len) {
  DecodedPacket& o = c.out;
  o.key.proto = proto;
  switch (proto) {
    case 6:  // TCP
      if (len < 4) return DecodeStatus::kTruncated;
      o.key.sport = rd16(p);
      o.key.dport = rd16(p + 2);
      if (len >= 14) o.tcp_flags = static_cast<std::uint16_t>(((p[12] & 0x01) << 8) | p[13]);
      return DecodeStatus::kOk;
    case 132:  // SCTP
      if (len < 4) return DecodeStatus::kTruncated;
      o.key.sport = rd16(p);
      o.key.dport = rd16(p + 2);
      return DecodeStatus::kOk;
    case 17: {  // UDP
      if (len < 4) return DecodeStatus::kTruncated;
      o.key.sport = rd16(p);
      o.key.dport = rd16(p + 2);
      if (len <= 8 || !c.opts.decapsulate_tunnels) return DecodeStatus::kOk;
      const std::uint8_t* b = p + 8;
      const std::uint32_t blen = len - 8;
      if (o.key.dport == 4789 && blen >= 8 + 14 && (b[0] & 0x08)) {  // VXLAN
        try_inner(c, kTunnelVxlan, [&] { return decode_ether(c, b + 8, blen - 8); });
      } else if (o.key.dport == 6081 && blen >= 8) {  // Geneve
        const std::uint32_t h = 8 + (b[0] & 0x3f) * 4u;
        if (blen > h) {
          try_inner(c, kTunnelVxlan,
                    [&] { return decode_ethertype(c, rd16(b + 2), b + h, blen - h); });
        }
      } else if (c.opts.decapsulate_teredo && (o.key.sport == 3544 || o.key.dport == 3544)) {
        const std::uint8_t* t = b;
        std::uint32_t tlen = blen;
        if (tlen >= 4 && t[0] == 0x00 && t[1] == 0x01) {  // authentication indicator
          const std::uint32_t h = 4u + t[2] + t[3] + 8 + 1;
          if (tlen < h) return DecodeStatus::kOk;
          t += h;
          tlen -= h;
        }
        if (tlen >= 8 && t[0] == 0x00 && t[1] == 0x00) {  // origin indication
          t += 8;
          tlen -= 8;
        }
        if (tlen >= 40 && (t[0] >> 4) == 6 && rd16(t + 4) + 40u <= tlen) {
          try_inner(c, kTunnelTeredo, [&] { return decode_ipv6(c, t, tlen); });
        }
      }
      return DecodeStatus::kOk;
    }
    case 1:   // ICMP
    case 58:  // ICMPv6
      if (len >= 2) o.icmp_type_code = rd16(p);
      return DecodeStatus::kOk;
    case 4:  // IPv4 in IP
      try_inner(c, kTunnelIpInIp, [&] { return decode_ipv4(c, p, len); });
      return DecodeStatus::kOk;
    case 41:  // IPv6 in IP
      try_inner(c, kTunnelIpInIp, [&] { return decode_ipv6(c, p, len); });
      return DecodeStatus::kOk;
    case 47:  // GRE
      try_inner(c, kTunnelGre, [&] { return decode_gre(c, p, len); });
      return DecodeStatus::kOk;
    default:
      return DecodeStatus::kOk;
  }
}

void reset_l3(DecodedPacket& o) {
  o.key.src = {};
  o.key.dst = {};
  o.key.sport = o.key.dport = 0;
  o.tcp_flags = 0;
  o.icmp_type_code = 0;
  o.fragment = o.first_fragment = false;
  o.frag_id = 0;
}

DecodeStatus decode_ipv4(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 20) return DecodeStatus::kTruncated;
  if ((p[0] >> 4) != 4) return DecodeStatus::kMalformed;
  const std::uint32_t ihl = (p[0] & 0x0fu) * 4u;
  if (ihl < 20) return DecodeStatus::kMalformed;
  if (len < ihl) return DecodeStatus::kTruncated;
  std::uint32_t total = rd16(p + 2);
  if (total == 0) total = len;  // TSO / offloaded length
  if (total < ihl) return DecodeStatus::kMalformed;
  // The header claims more bytes than the frame had on the wire (not a snaplen cut): the length
  // is a lie; tshark calls it malformed and ndpiReader drops the packet.
  if (total > len + c.uncaptured) return DecodeStatus::kMalformed;
  DecodedPacket& o = c.out;
  reset_l3(o);
  o.key.ip_version = 4;
  std::memcpy(o.key.src.data(), p + 12, 4);
  std::memcpy(o.key.dst.data(), p + 16, 4);
  o.key.proto = p[9];
  o.tos = p[1];
  o.ip_octets = total;
  o.l3 = p;
  o.l3_caplen = len;
  const std::uint16_t frag = rd16(p + 6);
  const std::uint16_t offset = frag & 0x1fff;
  const bool more = (frag & 0x2000) != 0;
  if (offset != 0 || more) {
    o.fragment = true;
    o.first_fragment = offset == 0;
    o.frag_id = rd16(p + 4);
    if (offset != 0) return DecodeStatus::kOk;  // no L4 header here; ports come from the first
  }
  const std::uint32_t payload = std::min(len, total) - ihl;
  if (o.fragment) {  // first fragment: ports only, never decapsulate a partial packet
    DecodeOptions no_decap{false};
    Ctx inner{no_decap, o, c.depth, c.vlan_set, c.uncaptured};
    return decode_l4(inner, p[9], p + ihl, payload);
  }
  return decode_l4(c, p[9], p + ihl, payload);
}

bool ipv6_ext_header(std::uint8_t nh) {
  switch (nh) {
    case 0:
    case 43:
    case 60:
    case 135:
    case 139:
    case 140:
    case 253:
    case 254:
      return true;
    default:
      return false;
  }
}

DecodeStatus decode_ipv6(Ctx& c, const std::uint8_t* p, std::uint32_t len) {
  if (len < 40) return DecodeStatus::kTruncated;
  if ((p[0] >> 4) != 6) return DecodeStatus::kMalformed;
  std::uint32_t total = 40u + rd16(p + 4);
  if (total == 40 && p[6] != 59) total = std::max<std::uint32_t>(len, 40);  // jumbogram / TSO
  if (total > len + c.uncaptured) return DecodeStatus::kMalformed;  // longer than on the wire
  DecodedPacket& o = c.out;
  reset_l3(o);
  o.key.ip_version = 6;
  std::memcpy(o.key.src.data(), p + 8, 16);
  std::memcpy(o.key.dst.data(), p + 24, 16);
  o.tos = static_cast<std::uint8_t>((rd16(p) >> 4) & 0xff);
  o.ip_octets = total;
  o.l3 = p;
  o.l3_caplen = len;
  const std::uint32_t end = std::min(len, total);
  std::uint8_t nh = p[6];
  std::uint32_t off = 40;
  for (int n = 0; n < 16; ++n) {
    if (ipv6_ext_header(nh)) {
      if (off + 2 > end) return DecodeStatus::kTruncated;
      const std::uint32_t hlen = (p[off + 1] + 1u) * 8u;
      nh = p[off];
      off += hlen;
    } else if (nh == 51) {  // AH
      if (off + 2 > end) return DecodeStatus::kTruncated;
      const std::uint32_t hlen = (p[off + 1] + 2u) * 4u;
      nh = p[off];
      off += hlen;
    } else if (nh == 44) {  // fragment header
      if (off + 8 > end) return DecodeStatus::kTruncated;
      const std::uint16_t fo = rd16(p + off + 2);
      o.fragment = true;
      o.first_fragment = (fo >> 3) == 0;
      o.frag_id = rd32(p + off + 4);
      nh = p[off];
      off += 8;
      if (!o.first_fragment) {
        o.key.proto = nh;
        return DecodeStatus::kOk;
      }
      if ((fo & 1) == 0) {  // atomic fragment: a whole packet
        o.fragment = o.first_fragment = false;
      }
    } else {
      break;
    }
    if (off > end) return DecodeStatus::kTruncated;
  }
  if (o.fragment) {
    DecodeOptions no_decap{false};
    Ctx inner{no_decap, o, c.depth, c.vlan_set, c.uncaptured};
    return decode_l4(inner, nh, p + off, end - off);
  }
  return decode_l4(c, nh, p + off, end - off);
}

}  // namespace

bool link_type_supported(int dlt) {
  switch (dlt) {
    case kDltNull:
    case kDltEthernet:
    case kDltPpp:
    case 50:
    case 51:
    case kDltRaw:
    case kDltRawOpenBsd:
    case kDltLinkTypeRaw:
    case kDltCiscoHdlc:
    case kDltLoop:
    case kDltLinuxSll:
    case kDltIpv4:
    case kDltIpv6:
    case kDltLinuxSll2:
      return true;
    default:
      return false;
  }
}

const char* decode_status_name(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::kOk:
      return "ok";
    case DecodeStatus::kNonIp:
      return "non_ip";
    case DecodeStatus::kTruncated:
      return "truncated";
    case DecodeStatus::kMalformed:
      return "malformed";
    case DecodeStatus::kUnsupported:
      return "unsupported";
  }
  return "unknown";
}

DecodeStatus decode_packet(int dlt, const std::uint8_t* data, std::uint32_t caplen,
                           const DecodeOptions& opts, DecodedPacket& out, std::uint32_t wirelen) {
  out = DecodedPacket{};
  Ctx c{opts, out};
  c.uncaptured = wirelen > caplen ? wirelen - caplen : 0;
  const std::uint8_t* p = data;
  const std::uint32_t len = caplen;
  switch (dlt) {
    case kDltEthernet:
      return decode_ether(c, p, len);
    case kDltLinuxSll:  // 16-byte cooked header, protocol at offset 14
      if (len < 16) return DecodeStatus::kTruncated;
      return decode_ethertype(c, rd16(p + 14), p + 16, len - 16);
    case kDltLinuxSll2:  // 20-byte cooked header v2, protocol at offset 0
      if (len < 20) return DecodeStatus::kTruncated;
      return decode_ethertype(c, rd16(p), p + 20, len - 20);
    case kDltRaw:
    case kDltRawOpenBsd:
    case kDltLinkTypeRaw:
      return decode_ip_by_version(c, p, len);
    case kDltIpv4:
      return decode_ipv4(c, p, len);
    case kDltIpv6:
      return decode_ipv6(c, p, len);
    case kDltNull:
    case kDltLoop: {  // 4-byte address family: host order (NULL) or network order (LOOP)
      if (len < 4) return DecodeStatus::kTruncated;
      std::uint32_t fam = rd32(p);
      if (dlt == kDltNull && fam > 0xffff) fam = __builtin_bswap32(fam);
      if (fam == 2) return decode_ipv4(c, p + 4, len - 4);
      if (fam == 10 || fam == 24 || fam == 28 || fam == 30) return decode_ipv6(c, p + 4, len - 4);
      return DecodeStatus::kNonIp;
    }
    case kDltPpp:
    case 50:  // PPP in HDLC-like framing
      return decode_ppp(c, p, len);
    case 51:  // PPPoE without Ethernet header
      if (len < 6) return DecodeStatus::kTruncated;
      return decode_ppp(c, p + 6, len - 6);
    case kDltCiscoHdlc:
      if (len < 4) return DecodeStatus::kTruncated;
      return decode_ethertype(c, rd16(p + 2), p + 4, len - 4);
    default:
      return DecodeStatus::kUnsupported;
  }
}

std::string format_address(const std::array<std::uint8_t, 16>& a, std::uint8_t ip_version) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(ip_version == 6 ? AF_INET6 : AF_INET, a.data(), buf, sizeof buf);
  return buf;
}

}  // namespace ipfixweb::engine

#include "community_id.hpp"

#include <openssl/evp.h>

#include <cstring>
#include <memory>
#include <stdexcept>

namespace ipfixweb::engine {
namespace {

constexpr std::uint8_t kIcmp = 1;
constexpr std::uint8_t kTcp = 6;
constexpr std::uint8_t kUdp = 17;
constexpr std::uint8_t kIcmp6 = 58;
constexpr std::uint8_t kSctp = 132;

bool has_ports(std::uint8_t proto) {
  return proto == kTcp || proto == kUdp || proto == kSctp || proto == kIcmp || proto == kIcmp6;
}

// Zeek's ICMP counterparts (pycommunityid communityid/icmp.py, icmp6.py): the reply type of a
// request and the other way round; -1 for one-way messages.
int icmp_counterpart(std::uint8_t proto, std::uint8_t type) {
  if (proto == kIcmp) {
    switch (type) {
      case 8:  // echo
        return 0;
      case 0:  // echo reply
        return 8;
      case 13:  // timestamp
        return 14;
      case 14:
        return 13;
      case 15:  // information request
        return 16;
      case 16:
        return 15;
      case 10:  // router solicitation
        return 9;
      case 9:  // router advertisement
        return 10;
      case 17:  // address mask request
        return 18;
      case 18:
        return 17;
      default:
        return -1;
    }
  }
  switch (type) {
    case 128:  // echo request
      return 129;
    case 129:
      return 128;
    case 130:  // MLD listener query
      return 131;
    case 131:
      return 130;
    case 133:  // router solicitation
      return 134;
    case 134:
      return 133;
    case 135:  // neighbour solicitation
      return 136;
    case 136:
      return 135;
    case 139:  // ICMP node information query ("who are you")
      return 140;
    case 140:
      return 139;
    case 144:  // home agent address discovery
      return 145;
    case 145:
      return 144;
    default:
      return -1;
  }
}

// SHA1 of a few bytes through a digest fetched once and a context kept per thread: OpenSSL 3's
// one-shot SHA1() looks the algorithm up on every call, EVP_Digest() allocates a context, each
// several times the cost of hashing 40 bytes.
const EVP_MD* sha1_md() {
  static const EVP_MD* const md = [] {
    const EVP_MD* m = EVP_MD_fetch(nullptr, "SHA1", nullptr);
    return m ? m : EVP_sha1();
  }();
  return md;
}

bool sha1(const std::uint8_t* data, std::size_t n, unsigned char (&digest)[20]) {
  const EVP_MD* const md = sha1_md();
  struct CtxFree {
    void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
  };
  thread_local const std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  unsigned int len = 0;
  return ctx && EVP_DigestInit_ex2(ctx.get(), md, nullptr) &&
         EVP_DigestUpdate(ctx.get(), data, n) && EVP_DigestFinal_ex(ctx.get(), digest, &len) &&
         len == 20;
}

}  // namespace

void prepare_community_id() { sha1_md(); }

std::string community_id(std::uint8_t ip_version, const std::uint8_t* src, const std::uint8_t* dst,
                         std::uint8_t proto, std::uint16_t sport, std::uint16_t dport,
                         std::uint16_t seed) {
  const std::size_t alen = ip_version == 6 ? 16 : 4;
  const bool ports = has_ports(proto);
  bool one_way = false;
  if (proto == kIcmp || proto == kIcmp6) {
    const int counterpart = icmp_counterpart(proto, static_cast<std::uint8_t>(sport));
    if (counterpart < 0) {
      one_way = true;  // (type, code), never reordered
    } else {
      dport = static_cast<std::uint16_t>(counterpart);
    }
  }
  // Smaller endpoint first: addresses compare as big-endian byte strings, then the ports.
  const int cmp = std::memcmp(src, dst, alen);
  const bool keep = one_way || cmp < 0 || (cmp == 0 && (!ports || sport <= dport));
  const std::uint8_t* a = keep ? src : dst;
  const std::uint8_t* b = keep ? dst : src;
  const std::uint16_t pa = keep ? sport : dport;
  const std::uint16_t pb = keep ? dport : sport;

  std::uint8_t buf[2 + 16 + 16 + 2 + 4];
  std::size_t n = 0;
  buf[n++] = static_cast<std::uint8_t>(seed >> 8);
  buf[n++] = static_cast<std::uint8_t>(seed & 0xff);
  std::memcpy(buf + n, a, alen);
  n += alen;
  std::memcpy(buf + n, b, alen);
  n += alen;
  buf[n++] = proto;
  buf[n++] = 0;  // padding: the input stays 32-bit aligned
  if (ports) {
    buf[n++] = static_cast<std::uint8_t>(pa >> 8);
    buf[n++] = static_cast<std::uint8_t>(pa & 0xff);
    buf[n++] = static_cast<std::uint8_t>(pb >> 8);
    buf[n++] = static_cast<std::uint8_t>(pb & 0xff);
  }
  unsigned char digest[20];
  if (!sha1(buf, n, digest)) throw std::runtime_error("SHA1 failed (libcrypto)");
  // "1:" and base64 (RFC 4648) of the 20 bytes: 6 groups of 3 bytes, then 2 bytes and one '='.
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char id[kCommunityIdLength] = {'1', ':'};
  char* o = id + 2;
  for (int i = 0; i < 18; i += 3) {
    const std::uint32_t v =
        (std::uint32_t{digest[i]} << 16) | (std::uint32_t{digest[i + 1]} << 8) | digest[i + 2];
    *o++ = kB64[(v >> 18) & 63];
    *o++ = kB64[(v >> 12) & 63];
    *o++ = kB64[(v >> 6) & 63];
    *o++ = kB64[v & 63];
  }
  const std::uint32_t v = (std::uint32_t{digest[18]} << 16) | (std::uint32_t{digest[19]} << 8);
  *o++ = kB64[(v >> 18) & 63];
  *o++ = kB64[(v >> 12) & 63];
  *o++ = kB64[(v >> 6) & 63];
  *o++ = '=';
  return std::string(id, sizeof id);
}

std::string community_id(const FlowKey& key, std::uint16_t icmp_type_code, std::uint16_t seed) {
  std::uint16_t sport = key.sport;
  std::uint16_t dport = key.dport;
  if (key.proto == kIcmp || key.proto == kIcmp6) {
    sport = icmp_type_code >> 8;
    dport = icmp_type_code & 0xff;
  }
  return community_id(key.ip_version, key.src.data(), key.dst.data(), key.proto, sport, dport,
                      seed);
}

std::string community_id(const Flow& flow, std::uint16_t seed) {
  if (flow.fwd.packets == 0 && flow.rev.packets != 0) {
    return community_id(flow.key.reversed(), flow.rev.icmp_type_code, seed);
  }
  return community_id(flow.key, flow.fwd.icmp_type_code, seed);
}

}  // namespace ipfixweb::engine

// flow_rows.packed (format version 2): a row's numeric values in one blob, written beside the
// columns from the same FlowRow, so that an export reads six columns per row (packed and the
// five text columns) instead of thirty-five (stepping SQLite over every column and reading
// them one call each was most of an export's time).
//
// The writer hands rows to its thread in the longer form: the same bytes followed by the
// strings, so a row is copied once; the stored blob is that form cut before the strings.
// Internal to ipfixweb_flows; docs/flow-store.md "Packed rows" describes the layout.
//
//   u8 tag (kPackedTag)
//   u8 bits: 1 has_rev, 2 has_flags, 4 has_app, 8 server_name, 16 ja3c, 32 community_id,
//            64 risks, 128 addresses as 4 bytes (ip_version 4)
//   u8 ip_version, u8 proto, u8 end_reason
//   varint start_ms, varint zigzag(end_ms - start_ms)
//   src, dst (4 or 16 bytes each)
//   varint sport, dport, vlan, fwd_packets, fwd_bytes
//   has_rev: varint rev_packets, rev_bytes
//   has_flags: varint tcp_flags, icmp_type_code, tos; and with has_rev rev_tcp_flags,
//              rev_icmp_type_code, rev_tos
//   has_app: varint app_id, risk, risk_score
//   -- the stored blob ends here; the handed-over form goes on with the strings:
//   has_app: string app; then the strings present (bits 8..64): server_name, ja3c,
//   community_id, risks
// A string is a varint length and its bytes. Varints are LEB128 (7 bits a byte, low first).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "ipfixweb/flows/schema.hpp"

namespace ipfixweb::flows::packed {

inline constexpr std::uint8_t kPackedTag = 1;

// Writes v as a varint at p; returns the end (at most 10 bytes).
inline char* put_varint(char* p, std::uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// Appends v as a varint to out.
inline void put_varint(std::string& out, std::uint64_t v) {
  char buf[10];
  out.append(buf, static_cast<std::size_t>(put_varint(buf, v) - buf));
}

inline char* put_string(char* p, std::string_view s) {
  p = put_varint(p, s.size());
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

// Appends the handed-over form of a row; *stored_end is set to the end of its stored part.
// The row is written through a pointer into room made for the largest form (one resize
// instead of an append per value: this runs on the metering thread for every record).
inline void encode(std::string& out, const FlowRow& r, std::size_t* stored_end = nullptr) {
  const bool v4 = r.ip_version == 4;
  std::uint8_t bits = 0;
  if (r.has_rev) bits |= 1;
  if (r.has_flags) bits |= 2;
  if (r.has_app) bits |= 4;
  if (!r.server_name.empty()) bits |= 8;
  if (!r.ja3c.empty()) bits |= 16;
  if (!r.community_id.empty()) bits |= 32;
  if (!r.risks.empty()) bits |= 64;
  if (v4) bits |= 128;
  const std::size_t strings =
      r.app.size() + r.server_name.size() + r.ja3c.size() + r.community_id.size() + r.risks.size();
  // 5 head bytes, 32 address bytes, at most 18 varints of at most 10 bytes, 5 strings.
  const std::size_t old = out.size();
  out.resize(old + 5 + 32 + 18 * 10 + 5 * 10 + strings);
  char* const begin = out.data() + old;
  char* p = begin;
  *p++ = static_cast<char>(kPackedTag);
  *p++ = static_cast<char>(bits);
  *p++ = static_cast<char>(r.ip_version);
  *p++ = static_cast<char>(r.proto);
  *p++ = static_cast<char>(r.end_reason);
  p = put_varint(p, r.start_ms);
  const auto d = static_cast<std::int64_t>(r.end_ms - r.start_ms);
  p = put_varint(p, (static_cast<std::uint64_t>(d) << 1) ^ static_cast<std::uint64_t>(d >> 63));
  const auto* src = reinterpret_cast<const char*>(r.src.data());
  const auto* dst = reinterpret_cast<const char*>(r.dst.data());
  if (v4) {
    std::memcpy(p, src + 12, 4);
    std::memcpy(p + 4, dst + 12, 4);
    p += 8;
  } else {
    std::memcpy(p, src, 16);
    std::memcpy(p + 16, dst, 16);
    p += 32;
  }
  p = put_varint(p, r.sport);
  p = put_varint(p, r.dport);
  p = put_varint(p, r.vlan);
  p = put_varint(p, r.fwd_packets);
  p = put_varint(p, r.fwd_bytes);
  if (r.has_rev) {
    p = put_varint(p, r.rev_packets);
    p = put_varint(p, r.rev_bytes);
  }
  if (r.has_flags) {
    p = put_varint(p, r.tcp_flags);
    p = put_varint(p, r.icmp_type_code);
    p = put_varint(p, r.tos);
    if (r.has_rev) {
      p = put_varint(p, r.rev_tcp_flags);
      p = put_varint(p, r.rev_icmp_type_code);
      p = put_varint(p, r.rev_tos);
    }
  }
  if (r.has_app) {
    p = put_varint(p, r.app_id);
    p = put_varint(p, r.risk);
    p = put_varint(p, r.risk_score);
  }
  if (stored_end) *stored_end = old + static_cast<std::size_t>(p - begin);
  if (r.has_app) p = put_string(p, r.app);
  if (bits & 8) p = put_string(p, r.server_name);
  if (bits & 16) p = put_string(p, r.ja3c);
  if (bits & 32) p = put_string(p, r.community_id);
  if (bits & 64) p = put_string(p, r.risks);
  out.resize(old + static_cast<std::size_t>(p - begin));
}

class Reader {
 public:
  Reader(const std::uint8_t* p, std::size_t n) : p_(p), end_(p + n) {}
  bool ok() const { return ok_; }
  const std::uint8_t* here() const { return p_; }
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }
  std::uint8_t byte() {
    if (p_ == end_) return fail();
    return *p_++;
  }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return fail();
      const std::uint8_t b = *p_++;
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    return fail();
  }
  void bytes(std::uint8_t* to, std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n) {
      fail();
      return;
    }
    std::memcpy(to, p_, n);
    p_ += n;
  }
  std::string_view string() {
    const std::uint64_t n = varint();
    if (!ok_ || static_cast<std::uint64_t>(end_ - p_) < n) return fail(), std::string_view();
    return string_of(static_cast<std::size_t>(n));
  }
  // The next n bytes as text.
  std::string_view string_of(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n) return fail(), std::string_view();
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  void skip(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      fail();
    else
      p_ += n;
  }
  // The bits byte of the row decode_numbers read.
  std::uint8_t bits() const { return bits_; }
  void set_bits(std::uint8_t b) { bits_ = b; }
  std::uint8_t fail() {
    ok_ = false;
    p_ = end_;
    return 0;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  bool ok_ = true;
  std::uint8_t bits_ = 0;
};

// The numeric values of a row back from its packed form (either form); the strings are
// left as they were. Returns the reader, positioned after the stored part.
inline Reader decode_numbers(const void* blob, std::size_t n, FlowRow& r) {
  Reader in(static_cast<const std::uint8_t*>(blob), n);
  if (in.byte() != kPackedTag) {
    in.fail();
    return in;
  }
  const std::uint8_t bits = in.byte();
  r.ip_version = in.byte();
  r.proto = in.byte();
  r.end_reason = in.byte();
  r.start_ms = in.varint();
  const std::uint64_t z = in.varint();
  r.end_ms = r.start_ms + ((z >> 1) ^ (~(z & 1) + 1));
  r.src = {};
  r.dst = {};
  if (bits & 128) {
    r.src[10] = r.src[11] = r.dst[10] = r.dst[11] = 0xff;
    in.bytes(r.src.data() + 12, 4);
    in.bytes(r.dst.data() + 12, 4);
  } else {
    in.bytes(r.src.data(), 16);
    in.bytes(r.dst.data(), 16);
  }
  r.sport = static_cast<std::uint16_t>(in.varint());
  r.dport = static_cast<std::uint16_t>(in.varint());
  r.vlan = static_cast<std::uint16_t>(in.varint());
  r.fwd_packets = in.varint();
  r.fwd_bytes = in.varint();
  r.has_rev = bits & 1;
  r.rev_packets = r.rev_bytes = 0;
  if (r.has_rev) {
    r.rev_packets = in.varint();
    r.rev_bytes = in.varint();
  }
  r.has_flags = bits & 2;
  r.tcp_flags = r.icmp_type_code = r.rev_tcp_flags = r.rev_icmp_type_code = 0;
  r.tos = r.rev_tos = 0;
  if (r.has_flags) {
    r.tcp_flags = static_cast<std::uint16_t>(in.varint());
    r.icmp_type_code = static_cast<std::uint16_t>(in.varint());
    r.tos = static_cast<std::uint8_t>(in.varint());
    if (r.has_rev) {
      r.rev_tcp_flags = static_cast<std::uint16_t>(in.varint());
      r.rev_icmp_type_code = static_cast<std::uint16_t>(in.varint());
      r.rev_tos = static_cast<std::uint8_t>(in.varint());
    }
  }
  r.has_app = bits & 4;
  r.app_id = 0;
  r.risk = 0;
  r.risk_score = 0;
  if (r.has_app) {
    r.app_id = static_cast<std::uint16_t>(in.varint());
    r.risk = in.varint();
    r.risk_score = static_cast<std::uint32_t>(in.varint());
  }
  in.set_bits(bits);
  return in;
}

// The whole row back from its handed-over form (strings point into the blob). False when the
// blob is not one.
inline bool decode(const void* blob, std::size_t n, FlowRow& r, std::size_t* stored_end = nullptr) {
  Reader in = decode_numbers(blob, n, r);
  if (stored_end)
    *stored_end = static_cast<std::size_t>(in.here() - static_cast<const std::uint8_t*>(blob));
  const std::uint8_t bits = in.bits();
  r.app = r.has_app ? in.string() : std::string_view();
  r.server_name = bits & 8 ? in.string() : std::string_view();
  r.ja3c = bits & 16 ? in.string() : std::string_view();
  r.community_id = bits & 32 ? in.string() : std::string_view();
  r.risks = bits & 64 ? in.string() : std::string_view();
  return in.ok();
}

}  // namespace ipfixweb::flows::packed

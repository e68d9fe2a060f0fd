// Community ID v1 (https://github.com/corelight/community-id-spec): a direction-free flow hash,
// "1:" + base64(SHA1(seed . addr_a . addr_b . proto . 0 . port_a . port_b)), all in network byte
// order, with the smaller (address, port) endpoint first. ICMP / ICMPv6 use the message type as
// the first "port" and the reply type (request/reply pairs) or the code (one-way messages, whose
// endpoints are never swapped) as the second, as Zeek and pycommunityid do. Protocols other than
// TCP, UDP, SCTP, ICMP and ICMPv6 hash no ports at all.
//
// nDPI 4.2 has ndpi_flowv4_flow_hash / ndpi_flowv6_flow_hash, but they take no seed and compare
// the ports of endpoints with equal addresses after htons() (wrong order on little-endian hosts),
// so this is our own implementation (SHA1 from OpenSSL's libcrypto).
#pragma once

#include <cstdint>
#include <string>

#include "decoder.hpp"
#include "flow_table.hpp"

namespace ipfixweb::engine {

// Length of a v1 ID: "1:" and 28 characters of base64 (20 bytes of SHA1).
inline constexpr std::size_t kCommunityIdLength = 30;

// Raw form. `src` and `dst` are 4 (ip_version 4) or 16 bytes in network order. For ICMP (proto 1)
// and ICMPv6 (58) `sport` is the message type and `dport` its code, as the spec's
// community_id_icmp() takes them; for other protocols without ports both are ignored.
std::string community_id(std::uint8_t ip_version, const std::uint8_t* src, const std::uint8_t* dst,
                         std::uint8_t proto, std::uint16_t sport, std::uint16_t dport,
                         std::uint16_t seed = 0);

// Loads libcrypto's SHA1 implementation now (a few ms, once per process) rather than at the
// first record, so that forked children inherit it.
void prepare_community_id();

// From a flow key (whose ports are 0 for ICMP): `icmp_type_code` (type << 8 | code, as in
// DecodedPacket) is used for ICMP and ICMPv6 keys only.
std::string community_id(const FlowKey& key, std::uint16_t icmp_type_code, std::uint16_t seed = 0);

// The ID of a flow record: its key, and for ICMP the type/code of the record's first packet in
// the forward direction (of the reverse direction, with the key reversed, when the record has no
// forward packet). Both uniflow records of a biflow get this one ID.
std::string community_id(const Flow& flow, std::uint16_t seed = 0);

}  // namespace ipfixweb::engine

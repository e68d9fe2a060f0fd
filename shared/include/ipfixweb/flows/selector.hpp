// A flow selector: the text that names one flow (one flow record) so that its packets can be
// cut out of the captures it came from (the `extract` task kind, and
// POST /api/v1/tasks/{id}/flows/{flow}/pcap, which writes the selector of a stored record).
//
//   <proto> <src>:<sport> <-> <dst>:<dport> [vlan <id>] [ms <first>-<last>]
//
//   tcp 10.0.0.1:51234 <-> 93.184.216.34:443 ms 1700000000123-1700000004567
//   udp [2001:db8::1]:5353 -> [ff02::fb]:5353 vlan 20
//   icmp 192.0.2.1:0 <-> 192.0.2.2:0
//
// <proto> is a protocol name of the store's proto_name column (tcp, udp, icmp, icmpv6, sctp,
// gre, esp, ah, igmp, ospf) or a number 0..255. Ports are those of the engine's flow key (0
// for protocols without ports). `<->` takes the packets of both directions (a biflow record),
// `->` only those from src to dst (a uniflow record). `vlan` is the outer 802.1Q id of the
// flow key (absent: 0, untagged). `ms` bounds the packet times, in milliseconds since the
// epoch, both ends included (absent: the whole capture).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace ipfixweb::flows {

struct Selector {
  std::uint8_t proto = 0;
  std::uint8_t ip_version = 4;
  // IPv4: the address in the first 4 bytes, the rest zero (the engine's flow key layout).
  std::array<std::uint8_t, 16> src{};
  std::array<std::uint8_t, 16> dst{};
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  std::uint16_t vlan = 0;
  bool both_directions = true;
  std::optional<std::uint64_t> first_ms;  // both set or both unset
  std::optional<std::uint64_t> last_ms;

  bool operator==(const Selector&) const = default;
};

struct SelectorError {
  std::size_t position = 0;  // byte offset in the text where it went wrong
  std::string message;       // e.g. "expected '<->' or '->'"
};

std::variant<Selector, SelectorError> parse_selector(std::string_view text);

// The canonical text (what parse_selector reads back to the same selector).
std::string format_selector(const Selector& s);

// Whether a packet with this key, VLAN and time is one of the selected flow's.
// `src`/`dst` use the layout of Selector (IPv4 in the first 4 bytes).
inline bool selector_matches(const Selector& s, std::uint8_t ip_version, std::uint8_t proto,
                             const std::array<std::uint8_t, 16>& src,
                             const std::array<std::uint8_t, 16>& dst, std::uint16_t sport,
                             std::uint16_t dport, std::uint16_t vlan, std::uint64_t ts_ms) {
  if (proto != s.proto || ip_version != s.ip_version || vlan != s.vlan) return false;
  if (s.first_ms && (ts_ms < *s.first_ms || ts_ms > *s.last_ms)) return false;
  if (sport == s.sport && dport == s.dport && src == s.src && dst == s.dst) return true;
  return s.both_directions && sport == s.dport && dport == s.sport && src == s.dst && dst == s.src;
}

}  // namespace ipfixweb::flows

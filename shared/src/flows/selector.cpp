#include "ipfixweb/flows/selector.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "ipfixweb/flows/schema.hpp"

namespace ipfixweb::flows {
namespace {

// A left-to-right reader of the selector text; every failure names its position.
class WordReader {
 public:
  explicit WordReader(std::string_view text) : text_(text) {}

  std::size_t pos() const { return pos_; }
  bool at_end() {
    skip_spaces();
    return pos_ == text_.size();
  }
  // The next space-separated word (may be empty at the end).
  std::string_view word() {
    skip_spaces();
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != ' ') ++pos_;
    return text_.substr(start, pos_ - start);
  }
  std::size_t word_start() {
    skip_spaces();
    return pos_;
  }

 private:
  void skip_spaces() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  std::string_view text_;
  std::size_t pos_ = 0;
};

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::optional<std::uint8_t> parse_proto(std::string_view s) {
  unsigned n = 0;
  if (parse_number(s, n)) return n <= 255 ? std::optional<std::uint8_t>(n) : std::nullopt;
  for (unsigned p = 0; p <= 255; ++p)
    if (proto_name(static_cast<std::uint8_t>(p)) == s) return static_cast<std::uint8_t>(p);
  return std::nullopt;
}

// "<ipv4>:<port>" or "[<ipv6>]:<port>"; the message of what is wrong, or "" when it is fine.
std::string parse_endpoint(std::string_view s, std::uint8_t& version,
                           std::array<std::uint8_t, 16>& addr, std::uint16_t& port) {
  std::string host;
  std::string_view port_text;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return "expected [IPv6 address]:port";
    host = std::string(s.substr(1, close - 1));
    port_text = s.substr(close + 2);
    version = 6;
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return "expected address:port";
    host = std::string(s.substr(0, colon));
    port_text = s.substr(colon + 1);
    version = 4;
  }
  addr = {};
  // inet_pton reads a C string: "2001:db8::\0" + anything would be read as "2001:db8::"
  // (found by fuzz_task_request: the api took such a flow, the broker refused it).
  if (host.find('\0') != std::string::npos ||
      ::inet_pton(version == 4 ? AF_INET : AF_INET6, host.c_str(), addr.data()) != 1)
    return version == 4 ? "not an IPv4 address (IPv6 goes in brackets: [2001:db8::1]:443)"
                        : "not an IPv6 address";
  if (!parse_number(port_text, port)) return "expected a port number 0..65535 after ':'";
  return {};
}

void append_endpoint(std::string& out, std::uint8_t version,
                     const std::array<std::uint8_t, 16>& addr, std::uint16_t port) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(version == 4 ? AF_INET : AF_INET6, addr.data(), buf, sizeof buf);
  if (version == 6) out += '[';
  out += buf;
  if (version == 6) out += ']';
  out += ':';
  out += std::to_string(port);
}

}  // namespace

std::variant<Selector, SelectorError> parse_selector(std::string_view text) {
  Selector s;
  WordReader r(text);
  const auto fail = [](std::size_t at, std::string message) {
    return SelectorError{at, std::move(message)};
  };

  std::size_t at = r.word_start();
  const auto proto = parse_proto(r.word());
  if (!proto) return fail(at, "expected a protocol (tcp, udp, icmp, ... or a number 0..255)");
  s.proto = *proto;

  at = r.word_start();
  std::uint8_t src_version = 0;
  if (auto why = parse_endpoint(r.word(), src_version, s.src, s.sport); !why.empty())
    return fail(at, why);

  at = r.word_start();
  const std::string_view arrow = r.word();
  if (arrow == "<->")
    s.both_directions = true;
  else if (arrow == "->")
    s.both_directions = false;
  else
    return fail(at, "expected '<->' (both directions) or '->' (src to dst only)");

  at = r.word_start();
  if (auto why = parse_endpoint(r.word(), s.ip_version, s.dst, s.dport); !why.empty())
    return fail(at, why);
  if (s.ip_version != src_version) return fail(at, "src and dst are of different IP versions");

  bool vlan_seen = false;
  while (!r.at_end()) {
    at = r.word_start();
    const std::string_view key = r.word();
    if (key == "vlan" && !vlan_seen) {
      vlan_seen = true;
      at = r.word_start();
      if (!parse_number(r.word(), s.vlan) || s.vlan > 4095)
        return fail(at, "expected a VLAN id 0..4095");
    } else if (key == "ms" && !s.first_ms) {
      at = r.word_start();
      const std::string_view span = r.word();
      const auto dash = span.find('-');
      std::uint64_t first = 0, last = 0;
      if (dash == std::string_view::npos || !parse_number(span.substr(0, dash), first) ||
          !parse_number(span.substr(dash + 1), last))
        return fail(at, "expected <first>-<last> in milliseconds since the epoch");
      if (last < first) return fail(at, "the span ends before it starts");
      s.first_ms = first;
      s.last_ms = last;
    } else {
      return fail(at, vlan_seen || s.first_ms ? "expected 'vlan <id>', 'ms <first>-<last>' "
                                                "(each at most once) or the end"
                                              : "expected 'vlan <id>', 'ms <first>-<last>' or "
                                                "the end");
    }
  }
  return s;
}

std::string format_selector(const Selector& s) {
  std::string out = proto_name(s.proto);
  out += ' ';
  append_endpoint(out, s.ip_version, s.src, s.sport);
  out += s.both_directions ? " <-> " : " -> ";
  append_endpoint(out, s.ip_version, s.dst, s.dport);
  if (s.vlan) out += " vlan " + std::to_string(s.vlan);
  if (s.first_ms) out += " ms " + std::to_string(*s.first_ms) + "-" + std::to_string(*s.last_ms);
  return out;
}

}  // namespace ipfixweb::flows

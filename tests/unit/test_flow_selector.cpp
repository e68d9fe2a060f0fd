// Flow selectors (ipfixweb/flows/selector.hpp): the text that names one flow for an extract
// task. Parsed exactly, refused with a position, written back canonically.
#include <gtest/gtest.h>

#include "ipfixweb/flows/selector.hpp"

using namespace ipfixweb::flows;

namespace {

Selector parsed(const std::string& text) {
  auto r = parse_selector(text);
  if (auto* e = std::get_if<SelectorError>(&r)) {
    ADD_FAILURE() << text << ": at " << e->position << ": " << e->message;
    return {};
  }
  return std::get<Selector>(r);
}

SelectorError refused(const std::string& text) {
  auto r = parse_selector(text);
  if (auto* e = std::get_if<SelectorError>(&r)) return *e;
  ADD_FAILURE() << text << " was accepted as " << format_selector(std::get<Selector>(r));
  return {};
}

std::array<std::uint8_t, 16> v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  return {a, b, c, d};
}

}  // namespace

TEST(FlowSelector, ReadsProtocolEndpointsDirectionVlanAndSpan) {
  const Selector s = parsed("tcp 10.0.0.1:51234 <-> 93.184.216.34:443 vlan 5 ms 100-250");
  EXPECT_EQ(s.proto, 6);
  EXPECT_EQ(s.ip_version, 4);
  EXPECT_EQ(s.src, v4(10, 0, 0, 1));
  EXPECT_EQ(s.dst, v4(93, 184, 216, 34));
  EXPECT_EQ(s.sport, 51234);
  EXPECT_EQ(s.dport, 443);
  EXPECT_EQ(s.vlan, 5);
  EXPECT_TRUE(s.both_directions);
  EXPECT_EQ(s.first_ms, 100u);
  EXPECT_EQ(s.last_ms, 250u);

  const Selector u = parsed("17 [2001:db8::1]:5353 -> [ff02::fb]:5353");
  EXPECT_EQ(u.proto, 17);
  EXPECT_EQ(u.ip_version, 6);
  EXPECT_EQ(u.src[0], 0x20);
  EXPECT_EQ(u.src[15], 1);
  EXPECT_FALSE(u.both_directions);
  EXPECT_EQ(u.vlan, 0);
  EXPECT_FALSE(u.first_ms);
}

TEST(FlowSelector, WritesTheCanonicalTextItReadsBack) {
  for (const std::string text :
       {"tcp 10.0.0.1:51234 <-> 93.184.216.34:443 vlan 5 ms 100-250",
        "udp [2001:db8::1]:5353 -> [ff02::fb]:5353", "icmp 192.0.2.1:0 <-> 192.0.2.2:0",
        "99 192.0.2.1:0 <-> 192.0.2.2:0 ms 5-5", "icmpv6 [::1]:0 -> [::2]:0 vlan 4095"}) {
    EXPECT_EQ(format_selector(parsed(text)), text);
  }
  // Other spellings of the same selector come back canonical.
  EXPECT_EQ(format_selector(parsed("  6   10.0.0.1:1  <->  10.0.0.2:2  vlan 0  ")),
            "tcp 10.0.0.1:1 <-> 10.0.0.2:2");
  EXPECT_EQ(format_selector(parsed("tcp [2001:DB8:0:0::1]:1 <-> [2001:db8::2]:2")),
            "tcp [2001:db8::1]:1 <-> [2001:db8::2]:2");
}

TEST(FlowSelector, RefusesWithThePositionOfWhatIsWrong) {
  struct Case {
    std::string text;
    std::size_t position;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"", 0, "expected a protocol"},
      {"tls 10.0.0.1:1 <-> 10.0.0.2:2", 0, "expected a protocol"},
      {"256 10.0.0.1:1 <-> 10.0.0.2:2", 0, "expected a protocol"},
      {"tcp 10.0.0.1 <-> 10.0.0.2:2", 4, "expected address:port"},
      {"tcp 10.0.0.300:1 <-> 10.0.0.2:2", 4, "not an IPv4 address"},
      {"tcp 2001:db8::1:1 <-> 10.0.0.2:2", 4, "IPv6 goes in brackets"},
      {"tcp 10.0.0.1:65536 <-> 10.0.0.2:2", 4, "port number"},
      {"tcp 10.0.0.1:1 <> 10.0.0.2:2", 15, "expected '<->'"},
      {"tcp 10.0.0.1:1 <-> [::1]:2", 19, "different IP versions"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:", 19, "port number"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2 vlan 4096", 35, "VLAN id"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2 ms 9-8", 33, "ends before it starts"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2 ms 9", 33, "<first>-<last>"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2 vlan 1 vlan 2", 37, "at most once"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2 and 1=1", 30, "expected 'vlan"},
      {"tcp 10.0.0.1:1 <-> 10.0.0.2:2'; DROP TABLE flows", 19, "port number"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const SelectorError e = refused(c.text);
    EXPECT_EQ(e.position, c.position) << e.message;
    EXPECT_NE(e.message.find(c.says), std::string::npos) << e.message;
  }
}

TEST(FlowSelector, MatchesBothDirectionsOnlyWhenAskedAndOnlyInsideTheSpanAndVlan) {
  const Selector both = parsed("udp 10.0.0.1:1000 <-> 10.0.0.2:53 vlan 7 ms 100-200");
  const auto a = v4(10, 0, 0, 1), b = v4(10, 0, 0, 2), c = v4(10, 0, 0, 3);
  EXPECT_TRUE(selector_matches(both, 4, 17, a, b, 1000, 53, 7, 100));
  EXPECT_TRUE(selector_matches(both, 4, 17, b, a, 53, 1000, 7, 200));   // the answer
  EXPECT_FALSE(selector_matches(both, 4, 17, a, b, 1000, 53, 7, 99));   // before the span
  EXPECT_FALSE(selector_matches(both, 4, 17, a, b, 1000, 53, 7, 201));  // after it
  EXPECT_FALSE(selector_matches(both, 4, 17, a, b, 1000, 53, 0, 150));  // another VLAN
  EXPECT_FALSE(selector_matches(both, 4, 6, a, b, 1000, 53, 7, 150));   // TCP
  EXPECT_FALSE(selector_matches(both, 4, 17, a, c, 1000, 53, 7, 150));  // another host
  EXPECT_FALSE(selector_matches(both, 4, 17, a, b, 1001, 53, 7, 150));  // another port
  EXPECT_FALSE(selector_matches(both, 4, 17, b, a, 1000, 53, 7, 150));  // swapped halfway
  EXPECT_FALSE(selector_matches(both, 6, 17, a, b, 1000, 53, 7, 150));  // IPv6, same bytes

  const Selector one = parsed("udp 10.0.0.1:1000 -> 10.0.0.2:53");
  EXPECT_TRUE(selector_matches(one, 4, 17, a, b, 1000, 53, 0, 1));
  EXPECT_FALSE(selector_matches(one, 4, 17, b, a, 53, 1000, 0, 1));
}

// Found by fuzz_task_request: the address went to inet_pton as a C string, so a NUL byte ended
// it there ("2001:db9::\0" + "2" read as 2001:db9::); the api accepted such an extract request
// and the broker refused it.
TEST(FlowSelector, AnAddressWithANulByteIsNotAnAddress) {
  const auto with_nul = [](std::string before, const char* after) {
    before.push_back('\0');
    return before + after;
  };
  EXPECT_EQ(refused(with_nul("udp [2001:db9::", "2]:53 -> [ff02::fb]:2676")).position, 4u);
  EXPECT_EQ(refused(with_nul("udp 10.0.0.1", "9:53 -> 10.0.0.2:53")).position, 4u);
  EXPECT_EQ(refused(with_nul("udp 10.0.0.1:53 -> 10.0.0.2", ":53")).position, 19u);
}

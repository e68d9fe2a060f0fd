// The flow filter language (docs/flow-filter.md): every filter is run as SQL against a real
// SQLite flow store and its rows compared with a predicate computed in C++ over the same rows.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <set>
#include <sstream>

#include "flow_test_db.hpp"
#include "ipfixweb/flows/query.hpp"

using namespace ipfixweb::flows;
using flowtest::F;
using flowtest::icontains;
using flowtest::ieq;
using flowtest::in_net;
using flowtest::kT0;

namespace {

class FlowFilter : public ::testing::Test {
 protected:
  void SetUp() override {
    rows = flowtest::sample_flows();
    flowtest::insert_all(db, rows);
  }

  Where where(const std::string& filter) {
    auto r = parse_filter(filter);
    if (auto* e = std::get_if<FilterError>(&r)) {
      ADD_FAILURE() << "filter '" << filter << "' rejected at " << e->position << ": "
                    << e->message;
      return {};
    }
    return std::get<Where>(r);
  }

  std::vector<std::int64_t> select(const std::string& filter) {
    Where w = where(filter);
    return flowtest::ids(
        db.get(),
        "SELECT id FROM flows" + (w.sql.empty() ? "" : " WHERE " + w.sql) + " ORDER BY id",
        w.binds);
  }

  std::vector<std::int64_t> expected(const std::function<bool(const F&)>& pred) {
    std::vector<std::int64_t> out;
    for (const auto& f : rows)
      if (pred(f)) out.push_back(f.id);
    return out;
  }

  // The filter selects exactly the rows `pred` accepts, and that is neither none nor all of
  // them (so that the comparison says something).
  void check(const std::string& filter, const std::function<bool(const F&)>& pred) {
    SCOPED_TRACE(filter);
    auto want = expected(pred);
    EXPECT_FALSE(want.empty()) << "the predicate selects no row";
    EXPECT_LT(want.size(), rows.size()) << "the predicate selects every row";
    EXPECT_EQ(select(filter), want) << where(filter).sql;
  }
  // The same where selecting none or all rows is a possible answer.
  void check_any(const std::string& filter, const std::function<bool(const F&)>& pred) {
    SCOPED_TRACE(filter);
    EXPECT_EQ(select(filter), expected(pred)) << where(filter).sql;
  }

  FilterError error(const std::string& filter) {
    auto r = parse_filter(filter);
    if (auto* e = std::get_if<FilterError>(&r)) return *e;
    ADD_FAILURE() << "filter '" << filter << "' accepted: " << std::get<Where>(r).sql;
    return {};
  }

  flowtest::Db db;
  std::vector<F> rows;
};

bool either_port(const F& f, std::int64_t p) { return f.sport == p || f.dport == p; }

}  // namespace

TEST_F(FlowFilter, AnEmptyOrBlankFilterHasNoCondition) {
  for (std::string text : {"", " ", " \t\n "}) {
    Where w = where(text);
    EXPECT_EQ(w.sql, "");
    EXPECT_TRUE(w.binds.empty());
  }
  EXPECT_EQ(select("").size(), rows.size());
}

TEST_F(FlowFilter, TheBriefsExampleSelectsWhatItSays) {
  check("app ~ \"TLS\" and dst net 10.0.0.0/8 and bytes > 1M and not port 53 and risk > 0",
        [](const F& f) {
          return icontains(f.app, "tls") && in_net(f.dst, "10.0.0.0/8") && f.bytes > 1000000 &&
                 !either_port(f, 53) && f.risk && *f.risk > 0;
        });
}

TEST_F(FlowFilter, ProtocolsByNameOrNumberAndBareProtocolNames) {
  check("proto tcp", [](const F& f) { return f.proto == 6; });
  check("proto 17", [](const F& f) { return f.proto == 17; });
  check("proto udp or proto icmp", [](const F& f) { return f.proto == 17 || f.proto == 1; });
  check("tcp", [](const F& f) { return f.proto == 6; });
  check("udp", [](const F& f) { return f.proto == 17; });
  check("icmpv6 or sctp or gre",
        [](const F& f) { return f.proto == 58 || f.proto == 132 || f.proto == 47; });
  check("proto = TCP", [](const F& f) { return f.proto == 6; });
  check("protocol != tcp", [](const F& f) { return f.proto != 6; });
  check("proto in (tcp, 17)", [](const F& f) { return f.proto == 6 || f.proto == 17; });
  check("proto > 17", [](const F& f) { return f.proto > 17; });
  check("proto_name = \"icmpv6\"", [](const F& f) { return f.proto == 58; });
  check("ipv6", [](const F& f) { return f.ip_version == 6; });
  check("inet", [](const F& f) { return f.ip_version == 4; });
}

TEST_F(FlowFilter, HostMatchesEitherEndAndSrcOrDstOnlyTheirOwn) {
  check("host 192.168.1.1",
        [](const F& f) { return f.src == "192.168.1.1" || f.dst == "192.168.1.1"; });
  check("ip 10.0.0.1", [](const F& f) { return f.src == "10.0.0.1" || f.dst == "10.0.0.1"; });
  check("src host 10.0.0.1", [](const F& f) { return f.src == "10.0.0.1"; });
  check("dst host 10.0.0.1", [](const F& f) { return f.dst == "10.0.0.1"; });
  check("dst ip 2001:db8:1::80", [](const F& f) { return f.dst == "2001:db8:1::80"; });
  check("src = 2001:DB8::1", [](const F& f) { return f.src == "2001:db8::1"; });
  check("dst == 8.8.8.8", [](const F& f) { return f.dst == "8.8.8.8"; });
  check("host != 10.0.0.1", [](const F& f) { return f.src != "10.0.0.1" && f.dst != "10.0.0.1"; });
  check("src in (10.0.0.1, 10.0.0.2, 2001:db8::2)", [](const F& f) {
    return f.src == "10.0.0.1" || f.src == "10.0.0.2" || f.src == "2001:db8::2";
  });
  // An IPv4 address written IPv4-mapped is the same key.
  check("host ::ffff:10.9.9.9", [](const F& f) { return f.src == "10.9.9.9"; });
  // Addresses are also text: ~ finds a piece of it.
  check("src ~ \"192.168.\"", [](const F& f) { return f.src.rfind("192.168.", 0) == 0; });
}

TEST_F(FlowFilter, ANetPrefixMatchesOnlyAddressesInside) {
  for (std::string net : {"10.0.0.0/8", "192.168.0.0/16", "192.168.1.0/24", "10.0.0.1/32",
                          "10.255.255.255/32", "10.1.2.2/31", "2001:db8::/32", "2001:db8::/48",
                          "2001:db8:1::80/128", "fe80::/10", "ff00::/8", "2001:db8::/31"}) {
    check("net " + net, [&](const F& f) { return in_net(f.src, net) || in_net(f.dst, net); });
    check_any("src net " + net, [&](const F& f) { return in_net(f.src, net); });
    check_any("dst net " + net, [&](const F& f) { return in_net(f.dst, net); });
    check_any("dst = " + net, [&](const F& f) { return in_net(f.dst, net); });
    check_any("src != " + net, [&](const F& f) { return !in_net(f.src, net); });
    check("not net " + net, [&](const F& f) { return !in_net(f.src, net) && !in_net(f.dst, net); });
  }
  // /0: every IPv4 address (IPv4 prefixes live inside ::ffff:0:0/96), or every address at all.
  check("src net 0.0.0.0/0", [](const F& f) { return f.ip_version == 4; });
  EXPECT_EQ(select("net ::/0").size(), rows.size());
  // An address alone is a full-length network.
  check("net 10.0.0.1", [](const F& f) { return f.src == "10.0.0.1" || f.dst == "10.0.0.1"; });
}

TEST_F(FlowFilter, HostBitsBelowAPrefixAreIgnored) {
  // Masked, not refused: 10.1.2.3/8 is 10.0.0.0/8, 2001:db8::1/32 is 2001:db8::/32.
  EXPECT_EQ(select("net 10.1.2.3/8"), select("net 10.0.0.0/8"));
  EXPECT_EQ(select("dst net 2001:db8:1::80/32"), select("dst net 2001:db8::/32"));
  EXPECT_EQ(select("src net 192.168.1.10/24"), select("src net 192.168.1.0/24"));
}

TEST_F(FlowFilter, BadAddressesAndNetworksAreErrorsAtTheirPosition) {
  struct Case {
    std::string filter;
    std::size_t position;
    std::string message;
  } cases[] = {
      {"net 10.0.0.0/33", 4, "invalid network '10.0.0.0/33'"},
      {"dst net 2001:db8::/129", 8, "invalid network '2001:db8::/129'"},
      {"net 10.0.0/8", 4, "invalid network '10.0.0/8'"},
      {"net 10.0.0.0/", 4, "invalid network '10.0.0.0/'"},
      {"net 10.0.0.0/x", 4, "invalid network '10.0.0.0/x'"},
      {"net 10.0.0.0/-1", 4, "invalid network '10.0.0.0/-1'"},
      {"host 10.0.0.256", 5, "invalid address '10.0.0.256'"},
      {"host example.com", 5, "invalid address 'example.com'"},
      {"src = 1:2:3", 6, "invalid address '1:2:3'"},
      {"host 10.0.0.0/8", 5, "'host' takes an address, not a network like '10.0.0.0/8'"},
      {"src net 10.0.0.0/8 and dst host 10.0.0.0/8", 32,
       "'dst host' takes an address, not a network like '10.0.0.0/8'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.filter);
    auto e = error(c.filter);
    EXPECT_EQ(e.position, c.position);
    EXPECT_EQ(e.message, c.message);
    EXPECT_FALSE(e.expected.empty());
  }
}

TEST_F(FlowFilter, PortMatchesEitherPortAndSrcOrDstPortOnlyTheirOwn) {
  check("port 443", [](const F& f) { return either_port(f, 443); });
  check("src port 53", [](const F& f) { return f.sport == 53; });
  check("dst port 53", [](const F& f) { return f.dport == 53; });
  check("dst port > 1023", [](const F& f) { return f.dport > 1023; });
  check("sport = 443", [](const F& f) { return f.sport == 443; });
  check("dport >= 8080", [](const F& f) { return f.dport >= 8080; });
  check("src_port < 1024", [](const F& f) { return f.sport < 1024; });
  check("port < 100", [](const F& f) { return f.sport < 100 || f.dport < 100; });
  check("port in (22, 80)", [](const F& f) { return either_port(f, 22) || either_port(f, 80); });
  // "port != 53" is "not port 53": neither port is 53.
  check("port != 53", [](const F& f) { return !either_port(f, 53); });
  EXPECT_EQ(select("port != 53"), select("not port 53"));
  check("port not in (443, 53)",
        [](const F& f) { return !either_port(f, 443) && !either_port(f, 53); });
}

TEST_F(FlowFilter, EveryComparisonOperatorComparesIntegers) {
  check("bytes = 5000", [](const F& f) { return f.bytes == 5000; });
  check("bytes == 5000", [](const F& f) { return f.bytes == 5000; });
  check("bytes != 5000", [](const F& f) { return f.bytes != 5000; });
  check("bytes < 5000", [](const F& f) { return f.bytes < 5000; });
  check("bytes <= 5000", [](const F& f) { return f.bytes <= 5000; });
  check("bytes > 5000", [](const F& f) { return f.bytes > 5000; });
  check("bytes >= 5000", [](const F& f) { return f.bytes >= 5000; });
  check("bytes>=5000", [](const F& f) { return f.bytes >= 5000; });
  check("packets > 1000", [](const F& f) { return f.packets > 1000; });
  check("vlan = 10", [](const F& f) { return f.vlan == 10; });
  check("tos = 0x10", [](const F& f) { return f.tos && *f.tos == 16; });
  check("risk_score >= 40", [](const F& f) { return f.risk_score && *f.risk_score >= 40; });
  check("app_id = 124", [](const F& f) { return f.app_id && *f.app_id == 124; });
  check("fwd_bytes > 1M", [](const F& f) { return f.fwd_bytes > 1000000; });
  check("rev_bytes < 1000", [](const F& f) { return f.rev_bytes && *f.rev_bytes < 1000; });
  check("icmp_type_code = 2048",
        [](const F& f) { return f.icmp_type_code && *f.icmp_type_code == 2048; });
  check("id in (1, 3, 5)", [](const F& f) { return f.id == 1 || f.id == 3 || f.id == 5; });
  check("ip_version = 6", [](const F& f) { return f.ip_version == 6; });
  check("tcp_flags = 0x1b", [](const F& f) { return f.tcp_flags && *f.tcp_flags == 0x1b; });
  check("flags = 2", [](const F& f) { return f.tcp_flags && *f.tcp_flags == 2; });
}

TEST_F(FlowFilter, NumberSuffixesScaleByThousands) {
  // k/K = 1e3, m/M = 1e6, g/G = 1e9 (nfdump's units; not 1024).
  check("bytes >= 1M", [](const F& f) { return f.bytes >= 1000000; });
  check("bytes > 1m", [](const F& f) { return f.bytes > 1000000; });
  check("bytes = 1M", [](const F& f) { return f.bytes == 1000000; });
  check("bytes < 5k", [](const F& f) { return f.bytes < 5000; });
  check("bytes <= 5K", [](const F& f) { return f.bytes <= 5000; });
  check("bytes > 2.5M", [](const F& f) { return f.bytes > 2500000; });
  check("bytes >= 2.5M", [](const F& f) { return f.bytes >= 2500000; });
  check("bytes > 1G", [](const F& f) { return f.bytes > 1000000000; });
  check("bytes < 7g", [](const F& f) { return f.bytes < 7000000000; });
  check("bytes = 0x1388", [](const F& f) { return f.bytes == 5000; });
  check("bytes > 123.4565k", [](const F& f) { return f.bytes > 123456; });  // 123456.5
  check("bytes < 123.4565k", [](const F& f) { return f.bytes <= 123456; });
  auto w = where("bytes > 1.5k");
  ASSERT_EQ(w.binds.size(), 1u);
  EXPECT_EQ(std::get<std::int64_t>(w.binds[0].v), 1500);
  for (std::string bad : {"bytes > 1T", "bytes > 1KB", "bytes > k", "bytes > 0x", "bytes > 0xg",
                          "bytes > -1", "bytes > 1.", "bytes > 1e6", "bytes > 99999999999G",
                          "bytes > 0x8000000000000000", "bytes > 1.0000000001"}) {
    auto e = error(bad);
    EXPECT_EQ(e.position, 8u) << bad;
    EXPECT_EQ(e.message.rfind("invalid number", 0), 0u) << bad << ": " << e.message;
  }
}

TEST_F(FlowFilter, DurationTakesTimeUnitsAndPlainMilliseconds) {
  check("duration > 10s", [](const F& f) { return f.duration() > 10000; });
  check("duration >= 10s", [](const F& f) { return f.duration() >= 10000; });
  check("duration <= 500ms", [](const F& f) { return f.duration() <= 500; });
  check("duration < 2m", [](const F& f) { return f.duration() < 120000; });
  check("duration > 1h", [](const F& f) { return f.duration() > 3600000; });
  check("duration_ms = 700", [](const F& f) { return f.duration() == 700; });
  check("duration > 1.5s", [](const F& f) { return f.duration() > 1500; });
  check("duration > 0.5h", [](const F& f) { return f.duration() > 1800000; });
  EXPECT_EQ(select("duration < 1d").size(), rows.size());
  check("duration = 0", [](const F& f) { return f.duration() == 0; });
  auto e = error("duration > 1M");
  EXPECT_EQ(e.position, 11u);
  EXPECT_EQ(e.message, "invalid duration '1M' for 'duration'");
}

TEST_F(FlowFilter, TextEqualityIsExactButIgnoresCase) {
  check("app = \"TLS.YouTube\"", [](const F& f) { return ieq(f.app, "TLS.YouTube"); });
  check("app = tls.youtube", [](const F& f) { return ieq(f.app, "TLS.YouTube"); });
  check("app == TLS", [](const F& f) { return ieq(f.app, "TLS"); });
  check("application = dns", [](const F& f) { return ieq(f.app, "DNS"); });
  check("server_name = \"mail.google.com\"",
        [](const F& f) { return ieq(f.server_name, "mail.google.com"); });
  check("ja3 = e7d705a3286e19ea42f587b344ee6865",
        [](const F& f) { return f.ja3c == "e7d705a3286e19ea42f587b344ee6865"; });
  check("ja3c = E7D705A3286E19EA42F587B344EE6865",
        [](const F& f) { return f.ja3c == "e7d705a3286e19ea42f587b344ee6865"; });
  check("community_id = \"1:LQU9qZlK+B5F3KDmev6m5PMibrg=\"",
        [](const F& f) { return f.community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="; });
  check("app in (\"DNS\", tls)", [](const F& f) { return ieq(f.app, "DNS") || ieq(f.app, "TLS"); });
}

TEST_F(FlowFilter, TextContainsIgnoresCaseAndTakesWildcardsLiterally) {
  check("app ~ \"tls\"", [](const F& f) { return icontains(f.app, "tls"); });
  check("server_name ~ google", [](const F& f) { return icontains(f.server_name, "google"); });
  check("sni ~ GOOGLE", [](const F& f) { return icontains(f.server_name, "google"); });
  check("risks ~ \"self-signed\"", [](const F& f) { return icontains(f.risks, "self-signed"); });
  // % and _ are characters to find, not LIKE wildcards.
  check("server_name ~ \"50%\"", [](const F& f) { return icontains(f.server_name, "50%"); });
  check("sni ~ a_b", [](const F& f) { return icontains(f.server_name, "a_b"); });
  EXPECT_TRUE(select("sni ~ \"%\" and sni ~ \"0%_\"").size() == 1);
  EXPECT_TRUE(select("sni ~ \"a%b\"").empty());
  check("sni ~ \"\\\\\" or sni ~ _o", [](const F& f) { return icontains(f.server_name, "_o"); });
}

TEST_F(FlowFilter, NegativeOperatorsAreExactComplementsAndIncludeMissingValues) {
  // A missing (null) value satisfies no comparison; !=, !~, 'not in' and 'not' are the
  // complements of =, ~, 'in' and the term, so they do match it.
  check("app != TLS", [](const F& f) { return !ieq(f.app, "TLS"); });
  check("sni !~ google", [](const F& f) { return !icontains(f.server_name, "google"); });
  check("risk != 0", [](const F& f) { return !(f.risk && *f.risk == 0); });
  check("app not in (TLS, DNS)",
        [](const F& f) { return !ieq(f.app, "TLS") && !ieq(f.app, "DNS"); });
  check("rev_bytes !in (0, 100)",
        [](const F& f) { return !(f.rev_bytes && (*f.rev_bytes == 0 || *f.rev_bytes == 100)); });
  check("not risk > 0", [](const F& f) { return !(f.risk && *f.risk > 0); });
  check("not app ~ tls", [](const F& f) { return !icontains(f.app, "tls"); });
  EXPECT_EQ(select("app != TLS"), select("not app = TLS"));
  EXPECT_EQ(select("sni !~ google"), select("!sni ~ google"));
}

TEST_F(FlowFilter, NotAlwaysSelectsExactlyTheOtherRows) {
  for (std::string f : {"risk > 0", "app = TLS", "sni ~ google", "rev_bytes < 1000",
                        "tos = 0 or app_id > 100", "not (risk >= 0 and tos >= 0)",
                        "app in (DNS, QUIC) and risk = 0", "net 10.0.0.0/8", "ja3 != x"}) {
    SCOPED_TRACE(f);
    auto yes = select(f);
    auto no = select("not (" + f + ")");
    std::set<std::int64_t> all(yes.begin(), yes.end());
    for (auto id : no) EXPECT_TRUE(all.insert(id).second) << id << " in both";
    EXPECT_EQ(all.size(), rows.size());
  }
}

TEST_F(FlowFilter, AliasesNameTheSameColumns) {
  std::pair<std::string, std::string> same[] = {
      {"sni ~ google", "server_name ~ google"},
      {"ja3 = x", "ja3c = x"},
      {"duration > 1s", "duration_ms > 1000"},
      {"start > 0", "start_ms > 0"},
      {"first > 0", "start_time > 0"},
      {"end > 0", "end_ms > 0"},
      {"last > 0", "end_time > 0"},
      {"pkts > 5", "packets > 5"},
      {"src_port = 53", "sport = 53"},
      {"dst_port = 53", "dport = 53"},
      {"application = DNS", "app = DNS"},
      {"protocol = 6", "proto = 6"},
      {"flags = 2", "tcp_flags = 2"},
      {"ipver = 6", "ip_version = 6"},
  };
  for (const auto& [a, b] : same) {
    SCOPED_TRACE(a);
    Where x = where(a), y = where(b);
    EXPECT_EQ(x.sql, y.sql);
    EXPECT_EQ(select(a), select(b));
  }
}

TEST_F(FlowFilter, QuotedStringsTakeEscapedQuotesAndBackslashes) {
  Where w = where(R"(app = "a \"quoted\" \\ word" or app = "")");
  ASSERT_EQ(w.binds.size(), 2u);
  EXPECT_EQ(std::get<std::string>(w.binds[0].v), "a \"quoted\" \\ word");
  EXPECT_EQ(std::get<std::string>(w.binds[1].v), "");
  check(R"(sni = "www.youtube.com")",
        [](const F& f) { return f.server_name == "www.youtube.com"; });
  // Quoting makes any text a value, keywords and operators included.
  Where k = where(R"(app = "and" or app = "(x) != y")");
  EXPECT_EQ(std::get<std::string>(k.binds[0].v), "and");
  EXPECT_EQ(std::get<std::string>(k.binds[1].v), "(x) != y");
}

TEST_F(FlowFilter, TimesAreIso8601UtcComparedInMilliseconds) {
  check("start >= \"2020-01-01T00:00:02Z\"", [](const F& f) { return f.start_ms >= kT0 + 2000; });
  check("end < 2020-01-01T00:00:01.5Z", [](const F& f) { return f.end_ms < kT0 + 1500; });
  check("start_ms < 1577836801000", [](const F& f) { return f.start_ms < kT0 + 1000; });
  check("start < \"2020-01-01 00:00:01.25\"", [](const F& f) { return f.start_ms < kT0 + 1250; });
  check("start <= 2020-01-01T01:00:01+01:00", [](const F& f) { return f.start_ms <= kT0 + 1000; });
  check("start > 2019-12-31T23:00:02-01:00", [](const F& f) { return f.start_ms > kT0 + 2000; });
  check("end >= 2020-01-01T00:01", [](const F& f) { return f.end_ms >= kT0 + 60000; });
  EXPECT_EQ(select("start >= 2020-01-01").size(), rows.size());
  EXPECT_TRUE(select("start >= 2020-01-02").empty());
  auto w = where("start = 2020-02-29T12:34:56.789Z");
  EXPECT_EQ(std::get<std::int64_t>(w.binds[0].v), 1582979696789);
  for (std::string bad : {"start > yesterday", "start > 2020-13-01", "start > 2019-02-29",
                          "start > 2020-01-01T24:00Z", "start > 2020-01-01T00:00:00X",
                          "start > 2020-1-1", "start > 2020-01-01T00:00:00.Z"}) {
    auto e = error(bad);
    EXPECT_EQ(e.position, 8u) << bad;
    EXPECT_EQ(e.message.rfind("invalid time", 0), 0u) << bad << ": " << e.message;
  }
}

TEST_F(FlowFilter, InListsMatchAnyListedValue) {
  check("dport in (80, 443, 8080)",
        [](const F& f) { return f.dport == 80 || f.dport == 443 || f.dport == 8080; });
  check("dport in(53)", [](const F& f) { return f.dport == 53; });
  check("app in (\"DNS\", \"TLS\")",
        [](const F& f) { return ieq(f.app, "DNS") || ieq(f.app, "TLS"); });
  check("bytes in (1M, 5k)", [](const F& f) { return f.bytes == 1000000 || f.bytes == 5000; });
  check("dst net in (10.0.0.0/8, 8.8.8.8)",
        [](const F& f) { return in_net(f.dst, "10.0.0.0/8") || f.dst == "8.8.8.8"; });
  check("host in (10.0.0.1, 2001:db8::2)", [](const F& f) {
    return f.src == "10.0.0.1" || f.dst == "10.0.0.1" || f.src == "2001:db8::2" ||
           f.dst == "2001:db8::2";
  });
}

TEST_F(FlowFilter, NotBindsTighterThanAndWhichBindsTighterThanOr) {
  auto a = [](const F& f) { return f.proto == 17; };
  auto b = [](const F& f) { return f.dport == 53; };
  auto c = [](const F& f) { return f.app && *f.app == "QUIC"; };
  check("udp or dport = 53 and app = QUIC", [&](const F& f) { return a(f) || (b(f) && c(f)); });
  check("(udp or dport = 53) and app = QUIC", [&](const F& f) { return (a(f) || b(f)) && c(f); });
  check("not udp and dport = 443", [&](const F& f) { return !a(f) && f.dport == 443; });
  check("not (udp and dport = 53)", [&](const F& f) { return !(a(f) && b(f)); });
  check("udp && dport = 53 || app = QUIC", [&](const F& f) { return (a(f) && b(f)) || c(f); });
  check("!udp && !tcp", [&](const F& f) { return f.proto != 17 && f.proto != 6; });
  check("not not udp", [&](const F& f) { return a(f); });
  check("((((udp))))", [&](const F& f) { return a(f); });
  check("tcp and (port 80 or port 22) and not vlan = 0", [](const F& f) {
    return f.proto == 6 && (either_port(f, 80) || either_port(f, 22)) && f.vlan != 0;
  });
}

TEST_F(FlowFilter, KeywordsAndFieldNamesIgnoreCase) {
  EXPECT_EQ(select("TCP AND Port 443 OR NOT Bytes > 1K"),
            select("tcp and port 443 or not bytes > 1k"));
  EXPECT_EQ(select("SRC HOST 10.0.0.1"), select("src host 10.0.0.1"));
  EXPECT_EQ(select("Dport IN (80)"), select("dport in (80)"));
  EXPECT_EQ(select("proto Not In (UDP)"), select("proto not in (udp)"));
}

TEST_F(FlowFilter, InjectionAttemptsStayLiteralValues) {
  const std::string attempts[] = {
      R"(app = "'; DROP TABLE flows; --")",
      R"(app ~ "%' OR 1=1 --")",
      R"(sni = "x\" or 1=1 --")",
      R"(app = x';DELETE)",
      R"(app in ("a') OR 1=1; DROP TABLE flows; --", b))",
      R"(ja3 = "\\' OR ''='")",
      R"(app ~ "\\")",
  };
  const auto before = db.scalar("SELECT count(*) FROM flows");
  for (const auto& a : attempts) {
    SCOPED_TRACE(a);
    Where w = where(a);
    EXPECT_EQ(w.sql.find("DROP"), std::string::npos) << w.sql;
    EXPECT_EQ(w.sql.find("DELETE"), std::string::npos) << w.sql;
    EXPECT_EQ(w.sql.find("1=1"), std::string::npos) << w.sql;
    EXPECT_TRUE(select(a).empty());
  }
  EXPECT_EQ(db.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name = 'flows'"),
            1);
  EXPECT_EQ(db.scalar("SELECT count(*) FROM flows"), before);
}

TEST_F(FlowFilter, TheSqlHoldsOnlyColumnNamesOperatorsAndPlaceholders) {
  std::set<std::string> allowed{"AND",     "OR",     "NOT",    "IS",     "TRUE",
                                "NULL",    "IN",     "LIKE",   "ESCAPE", "BETWEEN",
                                "COLLATE", "NOCASE", "src_ip", "dst_ip"};
  for (const auto& c : kFlowColumns) allowed.insert(std::string(c.name));
  for (std::string f :
       {"app ~ \"TLS\" and dst net 10.0.0.0/8 and bytes > 1M and not port 53 and risk > 0",
        "host 1.2.3.4 or src net 2001:db8::/32 or dst in (1.2.3.4, 10.0.0.0/8)",
        "sni !~ 'x' and app not in (a, b) and start > 2020-01-01 and duration < 1h",
        "proto in (tcp, udp) or ipv6 or dport != 443 or tos = 0x10 or src ~ \"10.\"",
        "community_id = \"1:abc=\" and ja3 != \"it's\" and risks ~ \"a%b_c\""}) {
    SCOPED_TRACE(f);
    Where w = where(f);
    std::string sql = w.sql;
    std::size_t placeholders = 0;
    for (std::size_t i = 0; i < sql.size();) {
      char c = sql[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t j = i;
        while (j < sql.size() &&
               (std::isalnum(static_cast<unsigned char>(sql[j])) || sql[j] == '_'))
          ++j;
        EXPECT_TRUE(allowed.count(sql.substr(i, j - i)))
            << "'" << sql.substr(i, j - i) << "' in " << sql;
        i = j;
      } else if (sql.compare(i, 3, "'\\'") == 0) {  // ESCAPE '\'
        i += 3;
      } else {
        EXPECT_NE(std::string(" ?()=!<>,").find(c), std::string::npos)
            << "'" << c << "' in " << sql;
        placeholders += c == '?';
        ++i;
      }
    }
    EXPECT_EQ(placeholders, w.binds.size());
  }
}

TEST_F(FlowFilter, SyntaxErrorNamesThePositionAndWhatWasExpected) {
  auto e = error("bytes 5");
  EXPECT_EQ(e.position, 6u);
  EXPECT_EQ(e.message, "expected a comparison operator after 'bytes'");
  EXPECT_NE(e.expected.find(">="), std::string::npos);

  e = error("tcp and bytes");
  EXPECT_EQ(e.position, 13u);
  EXPECT_EQ(e.message, "expected a comparison operator after 'bytes'");

  e = error("app TLS");
  EXPECT_EQ(e.position, 4u);
  EXPECT_NE(e.expected.find("~"), std::string::npos);
}

TEST_F(FlowFilter, AnUnknownFieldSuggestsTheClosestName) {
  auto e = error("tcp and byts > 1M");
  EXPECT_EQ(e.position, 8u);
  EXPECT_EQ(e.message, "unknown field 'byts' (did you mean 'bytes'?)");
  EXPECT_EQ(error("servername ~ x").message,
            "unknown field 'servername' (did you mean 'server_name'?)");
  EXPECT_EQ(error("dprot = 1").message, "unknown field 'dprot' (did you mean 'dport'?)");
  EXPECT_EQ(error("xyzzy = 1").message, "unknown field 'xyzzy'");
  EXPECT_EQ(error("src_ip = 10.0.0.1").message.rfind("unknown field 'src_ip' (the address keys", 0),
            0u);
  e = error("proto tpc");
  EXPECT_EQ(e.position, 6u);
  EXPECT_EQ(e.message, "unknown protocol 'tpc' (did you mean 'tcp'?)");
}

TEST_F(FlowFilter, AnUnterminatedStringIsAnErrorAtItsQuote) {
  auto e = error("app = \"TLS");
  EXPECT_EQ(e.position, 6u);
  EXPECT_EQ(e.message, "unterminated string");
  e = error("tcp or app in (\"a\", \"b\\\"c)");
  EXPECT_EQ(e.position, 20u);
  EXPECT_EQ(e.message, "unterminated string");
  e = error("app = \"abc\\");
  EXPECT_EQ(e.position, 6u);
  EXPECT_EQ(e.message, "unterminated string");
}

TEST_F(FlowFilter, ErrorsNameTheirPosition) {
  struct Case {
    std::string filter;
    std::size_t position;
    std::string message;
  } cases[] = {
      {"tcp and", 7, "expected a filter term after 'and'"},
      {"tcp or ", 7, "expected a filter term after 'or'"},
      {"not", 3, "expected a filter term after 'not'"},
      {"( ", 2, "expected a filter term after '('"},
      {"= 5", 0, "expected a filter term"},
      {"443", 0, "expected a filter term"},
      {"(tcp or udp", 11, "missing ')' for the '(' at 0"},
      {"tcp and ((udp)", 14, "missing ')' for the '(' at 8"},
      {"tcp)", 3, "unmatched ')'"},
      {"tcp !udp", 4, "unexpected '!udp'"},
      {"bytes > ", 8, "expected a value after '>'"},
      {"bytes >= )", 9, "expected a value after '>='"},
      {"bytes ~ 5", 6, "operator '~' applies only to text fields; 'bytes' is a number"},
      {"app < x", 4, "operator '<' does not apply to the text field 'app'"},
      {"src > 1.2.3.4", 4, "operator '>' does not apply to the address 'src'"},
      {"net ~ 10", 4, "operator '~' does not apply to 'net'"},
      {"dport in 80", 9, "expected a list after 'in'"},
      {"dport in (80,", 13, "expected a value in the list"},
      {"dport in ()", 10, "expected a value in the list"},
      {"dport in (80 443)", 13, "expected ',' or ')' in the list"},
      {"tcp udp", 4, "'tcp' takes no value; join terms with 'and' or 'or'"},
      {"ipv6 = 1", 5, "'ipv6' takes no value; join terms with 'and' or 'or'"},
      {"port", 4, "expected a value after 'port'"},
      {"src host", 8, "expected a value after 'src host'"},
      {"src 10.0.0.1", 4, "expected a comparison operator or 'host', 'net', 'port' after 'src'"},
      {"app = \"a\\qb\"", 8, "invalid escape sequence in a string"},
      {"start > yesterday", 8, "invalid time 'yesterday' for 'start'"},
      {"duration > 5x", 11, "invalid duration '5x' for 'duration'"},
      {"proto 256", 6, "unknown protocol '256'"},
      {"bytes > 1M and not", 18, "expected a filter term after 'not'"},
      {"app = a=b", 7, "unexpected '=b'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.filter);
    auto e = error(c.filter);
    EXPECT_EQ(e.position, c.position);
    EXPECT_EQ(e.message, c.message);
    EXPECT_FALSE(e.expected.empty());
  }
}

TEST_F(FlowFilter, AFilterLongerThan4096BytesIsAnError) {
  std::string ok = "port 1";
  const std::string more = " or app = " + std::string(40, 'x');
  while (ok.size() + more.size() <= kMaxFilterBytes) ok += more;
  ok.resize(kMaxFilterBytes, ' ');
  EXPECT_TRUE(std::holds_alternative<Where>(parse_filter(ok)));
  auto e = error(ok + " ");
  EXPECT_EQ(e.position, kMaxFilterBytes);
  EXPECT_EQ(e.message, "the filter is longer than 4096 bytes");
}

TEST_F(FlowFilter, NestingDeeperThan64LevelsIsAnErrorNotACrash) {
  auto nested = [](std::size_t n) { return std::string(n, '(') + "tcp" + std::string(n, ')'); };
  EXPECT_EQ(select(nested(kMaxFilterDepth)), select("tcp"));
  auto e = error(nested(kMaxFilterDepth + 1));
  EXPECT_EQ(e.position, kMaxFilterDepth);  // the 65th '('
  EXPECT_EQ(e.message, "nesting deeper than 64 levels");
  // As deep as the length allows: an error, and the stack is fine.
  EXPECT_EQ(error(nested(2040)).message, "nesting deeper than 64 levels");
  EXPECT_EQ(error(std::string(4000, '(')).message, "nesting deeper than 64 levels");
  EXPECT_EQ(error(std::string(4000, '!') + "tcp").message, "nesting deeper than 64 levels");
  std::string nots;
  for (std::size_t i = 0; i < kMaxFilterDepth; ++i) nots += "not ";
  EXPECT_EQ(select(nots + "tcp"), select("tcp"));
  EXPECT_EQ(error("not " + nots + "tcp").message, "nesting deeper than 64 levels");
  // Nots and parentheses count together.
  EXPECT_EQ(error(nots + "(tcp)").message, "nesting deeper than 64 levels");
  // Long flat chains are not nesting.
  std::string chain = "tcp";
  for (int i = 0; i < 200; ++i) chain += " and tcp";
  EXPECT_EQ(select(chain), select("tcp"));
}

TEST_F(FlowFilter, MoreThan256TermsIsAnError) {
  std::string f = "port 1";
  for (std::size_t i = 1; i < kMaxFilterTerms; ++i)
    f.append(" or port ").append(std::to_string(i + 1));
  EXPECT_TRUE(std::holds_alternative<Where>(parse_filter(f)));
  auto at = f.size() + 4;
  auto e = error(f + " or port 9");
  EXPECT_EQ(e.position, at);
  EXPECT_EQ(e.message.rfind("too many terms", 0), 0u) << e.message;
  std::string list = "dport in (0";
  for (std::size_t i = 1; i <= kMaxFilterTerms; ++i) list.append(",").append(std::to_string(i));
  EXPECT_EQ(error(list + ")").message.rfind("too many terms", 0), 0u);
}

TEST_F(FlowFilter, AnyTextGivesAnErrorOrSqlThatRuns) {
  // Random token soup and random bytes: never a crash or an exception; a Where always prepares
  // with one placeholder per value, an error always points inside the text.
  const char* tokens[] = {
      "tcp",   "and",        "or",  "not",        "!",   "(",     ")",     "port", "53", "src",
      "dst",   "host",       "net", "10.0.0.0/8", "::1", "app",   "~",     "=",    "!=", "<",
      ">=",    "in",         ",",   "\"x\"",      "\"",  "1M",    "bytes", "sni",  "&&", "||",
      "start", "2020-01-01", "\\",  "duration",   "5s",  "proto", "udp",   "'",    "%",  "0x1f"};
  std::mt19937 rng(12345);
  for (int round = 0; round < 4000; ++round) {
    std::string text;
    if (round % 4 == 3) {
      std::uniform_int_distribution<int> byte(0, 255), len(0, 40);
      for (int i = len(rng); i > 0; --i) text += static_cast<char>(byte(rng));
    } else {
      std::uniform_int_distribution<std::size_t> pick(0, std::size(tokens) - 1), len(1, 12);
      for (std::size_t i = len(rng); i > 0; --i) {
        text += tokens[pick(rng)];
        if (rng() % 3) text += ' ';
      }
    }
    SCOPED_TRACE(text);
    std::variant<Where, FilterError> r;
    ASSERT_NO_THROW(r = parse_filter(text));
    if (auto* e = std::get_if<FilterError>(&r)) {
      EXPECT_LE(e->position, text.size());
      EXPECT_FALSE(e->message.empty());
      continue;
    }
    const Where& w = std::get<Where>(r);
    if (w.sql.empty()) continue;
    sqlite3_stmt* s = nullptr;
    std::string sql = "SELECT id FROM flows WHERE " + w.sql;
    ASSERT_EQ(sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &s, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db.get()) << "\n"
        << sql;
    EXPECT_EQ(static_cast<std::size_t>(sqlite3_bind_parameter_count(s)), w.binds.size());
    EXPECT_EQ(bind_values(s, w.binds), SQLITE_OK);
    int rc = SQLITE_ROW;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    }
    EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db.get());
    sqlite3_finalize(s);
  }
}

TEST_F(FlowFilter, AndOrAlternatingMoreThan10LevelsIsAnErrorAndUpTo10AlwaysPrepares) {
  // "A and (B or C and (D or ...))": every 'or' group inside an 'and' is a level of
  // parentheses in the SQL; SQLite's parser takes only so many.
  const std::string leaves[] = {"app not in (a, b)", "not net in (1.2.3.4, 10.0.0.0/8)",
                                "port != 5", "sni !~ x", "not risk > 0"};
  auto alternating = [&](std::size_t levels, std::size_t* last_group = nullptr) {
    std::string f = leaves[0] + " and (";
    for (std::size_t i = 1; i < levels; ++i) {
      f += leaves[i % 5] + " or " + leaves[(i + 1) % 5] + " and ";
      if (last_group) *last_group = f.size();
      f += "(";
    }
    f += leaves[2] + " or " + leaves[3];
    return f + std::string(levels, ')');
  };
  for (std::size_t levels = 1; levels <= kMaxFilterAlternation; ++levels) {
    const std::string f = alternating(levels);
    SCOPED_TRACE(f);
    // Wrapped as the list query wraps it, with a cursor: it prepares and runs.
    auto first = build_list({.filter = f, .sort = "-app,bytes", .limit = "1"});
    ASSERT_TRUE(std::holds_alternative<ListQuery>(first));
    EXPECT_EQ(
        flowtest::ids(db.get(), std::get<ListQuery>(first).sql, std::get<ListQuery>(first).binds)
            .size(),
        2u);
    std::string next;
    const auto& q = std::get<ListQuery>(first);
    run_query(db.get(), q.sql, q.binds, [&](sqlite3_stmt* s) {
      next = q.next_cursor(s);
      return false;
    });
    auto second = build_list({.filter = f, .sort = "-app,bytes", .limit = "1", .cursor = next});
    ASSERT_TRUE(std::holds_alternative<ListQuery>(second));
    auto r = run_query(db.get(), std::get<ListQuery>(second).sql, std::get<ListQuery>(second).binds,
                       nullptr);
    EXPECT_TRUE(r.ok()) << r.message;
  }
  std::size_t last_group = 0;
  auto e = error(alternating(kMaxFilterAlternation + 1, &last_group));
  EXPECT_EQ(e.message, "'and' and 'or' alternate more than 10 levels deep");
  EXPECT_EQ(e.position, last_group);
  // Parentheses that change nothing, and 'not', do not count.
  check("((((tcp and ((udp or tcp)))))) and not not (not (not tcp))",
        [](const F& f) { return f.proto == 6; });
}

TEST_F(FlowFilter, RandomNestedFiltersAreErrorsOrRunWrappedWithACursor) {
  const std::string leaves[] = {"tcp",
                                "app not in (a, \"b\")",
                                "not net in (1.2.3.4, ::/0)",
                                "port != 5",
                                "sni !~ x",
                                "risk > 0",
                                "dst host 10.0.0.1",
                                "duration < 1s",
                                "start >= 2020-01-01T00:00:01Z"};
  std::mt19937 rng(777);
  std::function<std::string(int)> gen = [&](int depth) -> std::string {
    std::uniform_int_distribution<int> pick(0, depth > 40 ? 0 : 5);
    switch (pick(rng)) {
      case 0:
      case 1:
        return leaves[rng() % std::size(leaves)];
      case 2:
        return "not " + gen(depth + 1);
      case 3:
        return "(" + gen(depth + 1) + ")";
      case 4:
        return gen(depth + 1) + " and " + gen(depth + 1);
      default:
        return "(" + gen(depth + 1) + " or " + gen(depth + 1) + ")";
    }
  };
  int accepted = 0, rejected = 0;
  for (int round = 0; round < 600; ++round) {
    const std::string f = gen(0);
    SCOPED_TRACE(f);
    auto r = build_list({.filter = f, .sort = "-risk,src", .limit = "2"});
    if (auto* e = std::get_if<ParamError>(&r)) {
      ASSERT_TRUE(e->filter);
      ++rejected;
      continue;
    }
    ++accepted;
    const auto& q = std::get<ListQuery>(r);
    std::string next;
    std::int64_t n = 0;
    auto o = run_query(db.get(), q.sql, q.binds, [&](sqlite3_stmt* s) {
      if (++n == 2) next = q.next_cursor(s);
      return true;
    });
    ASSERT_TRUE(o.ok()) << o.message << "\n" << q.sql;
    if (n < 3) continue;
    auto again = build_list({.filter = f, .sort = "-risk,src", .limit = "2", .cursor = next});
    ASSERT_TRUE(std::holds_alternative<ListQuery>(again));
    o = run_query(db.get(), std::get<ListQuery>(again).sql, std::get<ListQuery>(again).binds,
                  nullptr);
    ASSERT_TRUE(o.ok()) << o.message << "\n" << std::get<ListQuery>(again).sql;
  }
  EXPECT_GT(accepted, 100);
  EXPECT_GT(rejected, 0);
}

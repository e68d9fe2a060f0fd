// A flow store in memory for the filter and query tests: the real schema (create_tables_sql),
// hand-made rows kept beside it in C++ so that tests can compute expected answers without SQL.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/schema.hpp"

namespace flowtest {

using ipfixweb::flows::SqlValue;
using I = std::optional<std::int64_t>;
using S = std::optional<std::string>;

// One row of the flows table, as the tests know it.
struct F {
  std::int64_t id = 0;
  std::int64_t start_ms = 0, end_ms = 0;
  std::int64_t ip_version = 4, proto = 6;
  std::string src, dst;
  std::int64_t sport = 0, dport = 0, vlan = 0;
  std::int64_t packets = 0, bytes = 0, fwd_packets = 0, fwd_bytes = 0;
  I rev_packets, rev_bytes, tcp_flags, rev_tcp_flags, icmp_type_code, rev_icmp_type_code, tos,
      rev_tos, end_reason, app_id;
  S app, server_name, ja3c, community_id;
  I risk, risk_score;
  S risks;
  std::int64_t duration() const { return end_ms - start_ms; }
};

// The 16-byte key of an address text (IPv4 as ::ffff:a.b.c.d).
inline std::array<std::uint8_t, 16> key_of(const std::string& text) {
  std::uint8_t v4[4];
  std::array<std::uint8_t, 16> k{};
  if (::inet_pton(AF_INET, text.c_str(), v4) == 1) return ipfixweb::flows::v4_key(v4);
  EXPECT_EQ(::inet_pton(AF_INET6, text.c_str(), k.data()), 1) << text;
  return k;
}

// Whether an address is inside a network "a.b.c.d/n" or "x::y/n", computed bit by bit.
inline bool in_net(const std::string& addr, const std::string& net) {
  auto slash = net.find('/');
  auto a = key_of(addr);
  auto n = key_of(net.substr(0, slash));
  int len = std::stoi(net.substr(slash + 1));
  std::uint8_t v4[4];
  bool net_v4 = ::inet_pton(AF_INET, net.substr(0, slash).c_str(), v4) == 1;
  int bits = net_v4 ? 96 + len : len;
  for (int b = 0; b < bits; ++b) {
    int m = 0x80 >> (b % 8);
    if ((a[static_cast<std::size_t>(b / 8)] & m) != (n[static_cast<std::size_t>(b / 8)] & m))
      return false;
  }
  return true;
}

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
inline bool ieq(const S& a, const std::string& b) { return a && lower(*a) == lower(b); }
inline bool icontains(const S& a, const std::string& b) {
  return a && lower(*a).find(lower(b)) != std::string::npos;
}

class Db {
 public:
  Db() {
    EXPECT_EQ(sqlite3_open(":memory:", &db_), SQLITE_OK);
    exec(ipfixweb::flows::create_tables_sql());
  }
  ~Db() { sqlite3_close(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  sqlite3* get() const { return db_; }

  void exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "") << "\n" << sql;
    sqlite3_free(err);
  }

  std::int64_t scalar(const std::string& sql) {
    std::int64_t v = -1;
    auto r = ipfixweb::flows::run_query(db_, sql, {}, [&](sqlite3_stmt* s) {
      v = sqlite3_column_int64(s, 0);
      return false;
    });
    EXPECT_TRUE(r.ok()) << r.message;
    return v;
  }

  void insert(const F& f) {
    static const char* kSql =
        "INSERT INTO flow_rows(id, start_ms, end_ms, ip_version, proto, src, dst, src_ip, dst_ip, "
        "sport, dport, vlan, packets, bytes, fwd_packets, fwd_bytes, rev_packets, rev_bytes, "
        "tcp_flags, rev_tcp_flags, icmp_type_code, rev_icmp_type_code, tos, rev_tos, "
        "end_reason, app_id, app, server_name, ja3c, community_id, risk, risk_score, risks) "
        "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt* s = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db_, kSql, -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
    int i = 0;
    auto integer = [&](std::int64_t v) { sqlite3_bind_int64(s, ++i, v); };
    auto opt = [&](const I& v) {
      ++i;
      if (v) sqlite3_bind_int64(s, i, *v);
    };
    auto text = [&](const std::string& v) {
      sqlite3_bind_text(s, ++i, v.c_str(), -1, SQLITE_TRANSIENT);
    };
    auto otext = [&](const S& v) {
      ++i;
      if (v) sqlite3_bind_text(s, i, v->c_str(), -1, SQLITE_TRANSIENT);
    };
    auto blob = [&](const std::string& addr) {
      auto k = key_of(addr);
      sqlite3_bind_blob(s, ++i, k.data(), 16, SQLITE_TRANSIENT);
    };
    integer(f.id);
    integer(f.start_ms);
    integer(f.end_ms);
    integer(f.ip_version);
    integer(f.proto);
    text(f.src);
    text(f.dst);
    blob(f.src);
    blob(f.dst);
    integer(f.sport);
    integer(f.dport);
    integer(f.vlan);
    integer(f.packets);
    integer(f.bytes);
    integer(f.fwd_packets);
    integer(f.fwd_bytes);
    opt(f.rev_packets);
    opt(f.rev_bytes);
    opt(f.tcp_flags);
    opt(f.rev_tcp_flags);
    opt(f.icmp_type_code);
    opt(f.rev_icmp_type_code);
    opt(f.tos);
    opt(f.rev_tos);
    opt(f.end_reason);
    opt(f.app_id);
    otext(f.app);
    otext(f.server_name);
    otext(f.ja3c);
    otext(f.community_id);
    opt(f.risk);
    opt(f.risk_score);
    otext(f.risks);
    ASSERT_EQ(sqlite3_step(s), SQLITE_DONE) << sqlite3_errmsg(db_);
    sqlite3_finalize(s);
  }

 private:
  sqlite3* db_ = nullptr;
};

inline constexpr std::int64_t kT0 = 1577836800000;  // 2020-01-01T00:00:00Z

// The hand-made rows: both address families, common protocols and ports, rows with and
// without DPI (null app, risk), repeated values and NULLs for the sort keys.
inline std::vector<F> sample_flows() {
  std::vector<F> v;
  auto add = [&](std::int64_t proto, std::string src, std::int64_t sport, std::string dst,
                 std::int64_t dport, std::int64_t bytes) -> F& {
    F f;
    f.id = static_cast<std::int64_t>(v.size()) + 1;
    f.proto = proto;
    f.ip_version = src.find(':') == std::string::npos ? 4 : 6;
    f.src = std::move(src);
    f.dst = std::move(dst);
    f.sport = sport;
    f.dport = dport;
    f.bytes = bytes;
    f.fwd_bytes = bytes;
    f.packets = bytes / 500 + 1;
    f.fwd_packets = f.packets;
    f.start_ms = kT0 + f.id * 250;
    f.end_ms = f.start_ms + f.id * 700;
    f.tos = 0;
    f.tcp_flags = proto == 6 ? I{0x1b} : I{};
    v.push_back(f);
    return v.back();
  };
  auto dpi = [](F& f, std::string app, std::int64_t app_id, std::int64_t risk) {
    f.app = std::move(app);
    f.app_id = app_id;
    f.risk = risk;
    f.risk_score = risk ? 10 * risk : 0;
  };
  {
    F& f = add(6, "192.168.1.10", 51000, "10.1.2.3", 443, 2500000);
    dpi(f, "TLS.YouTube", 124, 4);
    f.server_name = "www.youtube.com";
    f.ja3c = "e7d705a3286e19ea42f587b344ee6865";
    f.risks = "self-signed certificate";
    f.community_id = "1:LQU9qZlK+B5F3KDmev6m5PMibrg=";
    f.rev_bytes = 2400000;
    f.rev_packets = 1800;
  }
  {
    F& f = add(6, "192.168.1.10", 51001, "10.200.0.1", 443, 900000);
    dpi(f, "TLS", 91, 0);
    f.server_name = "mail.GOOGLE.com";
    f.ja3c = "e7d705a3286e19ea42f587b344ee6865";
  }
  {
    F& f = add(17, "192.168.1.10", 53000, "192.168.1.1", 53, 120);
    dpi(f, "DNS", 5, 0);
    f.server_name = "www.google.com";
  }
  {
    F& f = add(17, "192.168.1.1", 53, "192.168.1.10", 53000, 240);
    dpi(f, "DNS", 5, 2);
    f.server_name = "www.google.com";
    f.risks = "suspicious DGA domain";
  }
  {
    F& f = add(6, "10.0.0.1", 40000, "172.16.5.4", 80, 5000);
    dpi(f, "HTTP", 7, 0);
    f.server_name = "intranet.example";
    f.vlan = 10;
    f.tos = 0x10;
  }
  {
    F& f = add(6, "2001:db8::1", 50000, "2001:db8:1::80", 443, 3000000);
    dpi(f, "TLS", 91, 8);
    f.server_name = "a_b.example";
    f.rev_bytes = 0;
    f.rev_packets = 0;
    f.risks = "self-signed certificate,obsolete TLS version";
  }
  {
    F& f = add(17, "2001:db8::2", 5353, "ff02::fb", 5353, 400);
    dpi(f, "MDNS", 8, 0);
  }
  {
    F& f = add(58, "fe80::1", 0, "fe80::2", 0, 64);
    dpi(f, "ICMPV6", 102, 0);
    f.icmp_type_code = 128 * 256;
    f.tos.reset();
  }
  {
    F& f = add(1, "10.0.0.1", 0, "8.8.8.8", 0, 84);
    f.icmp_type_code = 8 * 256;  // no DPI: app, risk null
  }
  {
    F& f = add(6, "10.0.0.2", 1024, "10.0.0.3", 22, 1000000);  // 1M exactly, no DPI
    f.vlan = 10;
  }
  {
    F& f = add(6, "10.0.0.2", 1025, "10.255.255.255", 8080, 1000001);
    dpi(f, "Unknown", 0, 0);
    f.server_name = "50%_off.example";
  }
  {
    F& f = add(132, "::ffff:10.9.9.9", 2905, "10.9.9.10", 2905, 70000);  // written mapped
    f.ip_version = 4;
    f.src = "10.9.9.9";
    dpi(f, "SCTP", 200, 0);
  }
  {
    F& f = add(47, "203.0.113.7", 0, "198.51.100.9", 0, 123456);
    dpi(f, "GRE", 80, 1);
    f.vlan = 4094;
  }
  {
    F& f = add(6, "192.168.1.11", 60000, "10.1.2.4", 443, 2500000);
    dpi(f, "TLS.YouTube", 124, 0);
    f.server_name = "r3.googlevideo.com";
    f.ja3c = "b32309a26951912be7dba376398abc3b";
    f.rev_bytes = 2400000;
    f.rev_packets = 1700;
    f.end_ms = f.start_ms + 3600000 + 1;  // more than an hour
  }
  {
    F& f = add(6, "192.168.1.11", 60001, "10.1.2.4", 443, 2500000);
    dpi(f, "TLS.YouTube", 124, 4);
    f.server_name = "r3.googlevideo.com";
    f.risks = "self-signed certificate";
    f.rev_bytes = 100;
    f.end_ms = f.start_ms + 10000;  // exactly 10 s
  }
  {
    F& f = add(17, "192.168.1.12", 443, "1.1.1.1", 443, 800000);
    dpi(f, "QUIC", 188, 0);
    f.server_name = "cloudflare-dns.com";
    f.end_ms = f.start_ms + 500;
  }
  {
    F& f = add(6, "2001:db8:ffff::9", 443, "2001:db9::1", 33000, 7000000000);
    dpi(f, "TLS", 91, 16);
    f.server_name = "big.example";
    f.risks = "TLS certificate expired";
  }
  {
    F& f = add(6, "10.0.0.1", 55555, "10.0.0.1", 55555, 0);  // a scan packet to itself
    f.tcp_flags = 2;
    f.end_ms = f.start_ms;
  }
  return v;
}

inline void insert_all(Db& db, const std::vector<F>& rows) {
  db.exec("BEGIN");
  for (const auto& f : rows) db.insert(f);
  db.exec("COMMIT");
}

// Runs SQL with its binds; the first column of every row as an integer.
inline std::vector<std::int64_t> ids(sqlite3* db, const std::string& sql,
                                     const std::vector<SqlValue>& binds) {
  std::vector<std::int64_t> out;
  auto r = ipfixweb::flows::run_query(db, sql, binds, [&](sqlite3_stmt* s) {
    out.push_back(sqlite3_column_int64(s, 0));
    return true;
  });
  EXPECT_TRUE(r.ok()) << r.message << "\n" << sql;
  return out;
}

}  // namespace flowtest

#include "ipfixweb/flows/schema.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace ipfixweb::flows {

int column_index(std::string_view name) {
  for (std::size_t i = 0; i < kFlowColumns.size(); ++i)
    if (kFlowColumns[i].name == name) return static_cast<int>(i);
  return -1;
}

bool is_computed(const Column& c) { return c.sql.starts_with("AS "); }

std::string create_tables_sql() {
  std::string table = "CREATE TABLE flow_rows(";
  std::string view = "CREATE VIEW flows AS SELECT ";
  bool first_stored = true, first = true;
  for (const auto& c : kFlowColumns) {
    if (!first) view += ", ";
    first = false;
    if (is_computed(c)) {
      view.append("(").append(c.sql.substr(3)).append(") AS ").append(c.name);
      continue;
    }
    view.append(c.name);
    if (!first_stored) table += ", ";
    first_stored = false;
    table.append(c.name).append(" ").append(c.sql);
  }
  std::string s = table + ");\n" + view + " FROM flow_rows;\n";
  s += "CREATE TABLE series(dim TEXT NOT NULL, key TEXT NOT NULL, bucket_ms INTEGER NOT NULL, "
       "packets INTEGER NOT NULL, bytes INTEGER NOT NULL, flows INTEGER NOT NULL, "
       "PRIMARY KEY(dim, key, bucket_ms)) WITHOUT ROWID;\n"
       "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;\n"
       "CREATE TABLE top(dim TEXT NOT NULL, metric TEXT NOT NULL, rank INTEGER NOT NULL, key, "
       "key2, bytes INTEGER NOT NULL, packets INTEGER NOT NULL, flows INTEGER NOT NULL, "
       "PRIMARY KEY(dim, metric, rank)) WITHOUT ROWID;\n";
  return s;
}

std::string create_indexes_sql() {
  std::string s;
  for (const auto& c : kFlowColumns) {
    if (!c.indexed) continue;
    s.append("CREATE INDEX flow_rows_")
        .append(c.name)
        .append(" ON flow_rows(")
        .append(c.name)
        .append(");\n");
  }
  return s;
}

std::string select_expression(std::string_view name) {
  // Without an alias: ORDER BY resolves a result column's alias before a table's column, and
  // "proto AS proto_name" would have sorted by the number where the text was asked for.
  if (name == "start_time") return "start_ms";
  if (name == "end_time") return "end_ms";
  if (name == "proto_name") return "proto";
  return std::string(name);
}

std::string proto_name(std::uint8_t proto) {
  switch (proto) {
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 1:
      return "icmp";
    case 58:
      return "icmpv6";
    case 132:
      return "sctp";
    case 47:
      return "gre";
    case 50:
      return "esp";
    case 51:
      return "ah";
    case 2:
      return "igmp";
    case 89:
      return "ospf";
    default:
      return std::to_string(proto);
  }
}

std::array<std::uint8_t, 16> v4_key(const std::uint8_t* addr) {
  std::array<std::uint8_t, 16> k{};
  k[10] = 0xff;
  k[11] = 0xff;
  std::memcpy(k.data() + 12, addr, 4);
  return k;
}

std::string address_text(const std::array<std::uint8_t, 16>& key, std::uint8_t ip_version) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ip_version == 4) {  // by hand: inet_ntop formats through sprintf
    char* p = buf;
    for (int i = 12; i < 16; ++i) {
      unsigned v = key[static_cast<std::size_t>(i)];
      if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
      if (v >= 10) *p++ = static_cast<char>('0' + v / 10 % 10);
      *p++ = static_cast<char>('0' + v % 10);
      if (i < 15) *p++ = '.';
    }
    return std::string(buf, p);
  } else {
    ::inet_ntop(AF_INET6, key.data(), buf, sizeof buf);
  }
  return buf;
}

}  // namespace ipfixweb::flows

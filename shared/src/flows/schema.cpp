#include "ipfixweb/flows/schema.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace ipfixweb::flows {

int column_index(std::string_view name) {
  for (std::size_t i = 0; i < kFlowColumns.size(); ++i)
    if (kFlowColumns[i].name == name) return static_cast<int>(i);
  return -1;
}

std::string create_tables_sql() {
  std::string s = "CREATE TABLE flows(";
  bool first = true;
  for (const auto& c : kFlowColumns) {
    if (!first) s += ", ";
    first = false;
    s.append(c.name).append(" ").append(c.sql);
  }
  s += ");\n";
  s +=
      "CREATE TABLE series(dim TEXT NOT NULL, key TEXT NOT NULL, bucket_ms INTEGER NOT NULL, "
      "packets INTEGER NOT NULL, bytes INTEGER NOT NULL, flows INTEGER NOT NULL, "
      "PRIMARY KEY(dim, key, bucket_ms)) WITHOUT ROWID;\n"
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;\n";
  return s;
}

std::string create_indexes_sql() {
  std::string s;
  for (const auto& c : kFlowColumns) {
    if (!c.indexed) continue;
    s.append("CREATE INDEX flows_")
        .append(c.name)
        .append(" ON flows(")
        .append(c.name)
        .append(");\n");
  }
  return s;
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
  if (ip_version == 4) {
    ::inet_ntop(AF_INET, key.data() + 12, buf, sizeof buf);
  } else {
    ::inet_ntop(AF_INET6, key.data(), buf, sizeof buf);
  }
  return buf;
}

}  // namespace ipfixweb::flows

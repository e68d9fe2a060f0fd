// Test helpers: build packets byte by byte and write classic pcap files with exactly known flows.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ipfixweb::engine::test {

using Bytes = std::vector<std::uint8_t>;

std::array<std::uint8_t, 16> addr(const std::string& text);  // IPv4 or IPv6 literal

// L4 headers (checksums zero; the engine does not verify them).
Bytes tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags, std::size_t payload = 0);
Bytes tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags, const Bytes& payload);
Bytes udp(std::uint16_t sport, std::uint16_t dport, std::size_t payload = 0);
Bytes udp(std::uint16_t sport, std::uint16_t dport, const Bytes& payload);
Bytes icmp(std::uint8_t type, std::uint8_t code, std::size_t payload = 8);

Bytes text(const std::string& s);
// DNS message with one question (`response`: one A answer 192.0.2.1 is appended).
Bytes dns(std::uint16_t id, const std::string& qname, bool response);

// IP packets. `proto` is the next protocol of `l4`. IPv4 fragment fields: offset in 8-byte units.
Bytes ipv4(const std::string& src, const std::string& dst, std::uint8_t proto, const Bytes& l4,
           std::uint8_t tos = 0, std::uint16_t id = 1, std::uint16_t frag_offset = 0,
           bool more_fragments = false);
Bytes ipv6(const std::string& src, const std::string& dst, std::uint8_t next, const Bytes& l4,
           const Bytes& ext_headers = {}, std::uint8_t first_ext = 0);

// Link layers.
Bytes ether(const Bytes& l3, std::uint16_t ethertype, const std::vector<std::uint16_t>& vlans = {});
inline Bytes ether4(const Bytes& ip, const std::vector<std::uint16_t>& vlans = {}) {
  return ether(ip, 0x0800, vlans);
}
inline Bytes ether6(const Bytes& ip, const std::vector<std::uint16_t>& vlans = {}) {
  return ether(ip, 0x86dd, vlans);
}
Bytes concat(const Bytes& a, const Bytes& b);

// Classic pcap (microsecond) writer.
class PcapWriter {
 public:
  PcapWriter(std::string path, std::uint32_t linktype = 1, std::uint32_t snaplen = 65535);
  // Adds a frame captured at `ts_us`; `caplen` < frame size cuts it (orig_len stays the size).
  void add(std::uint64_t ts_us, const Bytes& frame, std::size_t caplen = SIZE_MAX);
  void close();
  ~PcapWriter();
  std::size_t count() const { return count_; }

 private:
  std::string path_;
  Bytes data_;
  std::size_t count_ = 0;
  bool closed_ = false;
};

// Fresh scratch directory under $TMPDIR (removed by the destructor).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace ipfixweb::engine::test

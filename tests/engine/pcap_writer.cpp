#include "pcap_writer.hpp"

#include <arpa/inet.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace ipfixweb::engine::test {
namespace {

void put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& b, std::uint32_t v) {
  put16(b, static_cast<std::uint16_t>(v >> 16));
  put16(b, static_cast<std::uint16_t>(v));
}
void put32le(Bytes& b, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
void put16le(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v));
  b.push_back(static_cast<std::uint8_t>(v >> 8));
}

}  // namespace

std::array<std::uint8_t, 16> addr(const std::string& text) {
  std::array<std::uint8_t, 16> a{};
  if (inet_pton(AF_INET, text.c_str(), a.data()) == 1) return a;
  if (inet_pton(AF_INET6, text.c_str(), a.data()) == 1) return a;
  throw std::invalid_argument("bad address " + text);
}

Bytes tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags, std::size_t payload) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put32(b, 1000);  // seq
  put32(b, 0);     // ack
  b.push_back(0x50);
  b.push_back(flags);
  put16(b, 65535);
  put16(b, 0);
  put16(b, 0);
  b.resize(b.size() + payload, 'x');
  return b;
}

Bytes tcp(std::uint16_t sport, std::uint16_t dport, std::uint8_t flags, const Bytes& payload) {
  Bytes b = tcp(sport, dport, flags, std::size_t{0});
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes dns(std::uint16_t id, const std::string& qname, bool response) {
  Bytes b;
  put16(b, id);
  put16(b, response ? 0x8180 : 0x0100);
  put16(b, 1);                 // questions
  put16(b, response ? 1 : 0);  // answers
  put16(b, 0);
  put16(b, 0);
  std::size_t start = 0;
  while (start < qname.size()) {
    std::size_t dot = qname.find('.', start);
    if (dot == std::string::npos) dot = qname.size();
    b.push_back(static_cast<std::uint8_t>(dot - start));
    b.insert(b.end(), qname.begin() + static_cast<std::ptrdiff_t>(start),
             qname.begin() + static_cast<std::ptrdiff_t>(dot));
    start = dot + 1;
  }
  b.push_back(0);
  put16(b, 1);  // A
  put16(b, 1);  // IN
  if (response) {
    put16(b, 0xc00c);  // name pointer to the question
    put16(b, 1);
    put16(b, 1);
    put32(b, 300);
    put16(b, 4);
    for (const std::uint8_t o : {192, 0, 2, 1}) b.push_back(o);
  }
  return b;
}

Bytes udp(std::uint16_t sport, std::uint16_t dport, const Bytes& payload) {
  Bytes b;
  put16(b, sport);
  put16(b, dport);
  put16(b, static_cast<std::uint16_t>(8 + payload.size()));
  put16(b, 0);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes udp(std::uint16_t sport, std::uint16_t dport, std::size_t payload) {
  return udp(sport, dport, Bytes(payload, 'u'));
}

Bytes icmp(std::uint8_t type, std::uint8_t code, std::size_t payload) {
  Bytes b{type, code, 0, 0};
  const Bytes pad(payload, 0);  // (resize() here trips GCC 12's -Warray-bounds)
  b.insert(b.end(), pad.begin(), pad.end());
  return b;
}

Bytes ipv4(const std::string& src, const std::string& dst, std::uint8_t proto, const Bytes& l4,
           std::uint8_t tos, std::uint16_t id, std::uint16_t frag_offset, bool more_fragments) {
  Bytes b;
  b.push_back(0x45);
  b.push_back(tos);
  put16(b, static_cast<std::uint16_t>(20 + l4.size()));
  put16(b, id);
  put16(b, static_cast<std::uint16_t>((more_fragments ? 0x2000 : 0) | (frag_offset & 0x1fff)));
  b.push_back(64);
  b.push_back(proto);
  put16(b, 0);
  const auto s = addr(src);
  const auto d = addr(dst);
  b.insert(b.end(), s.begin(), s.begin() + 4);
  b.insert(b.end(), d.begin(), d.begin() + 4);
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

Bytes ipv6(const std::string& src, const std::string& dst, std::uint8_t next, const Bytes& l4,
           const Bytes& ext_headers, std::uint8_t first_ext) {
  Bytes b;
  put32(b, 0x60000000);
  put16(b, static_cast<std::uint16_t>(ext_headers.size() + l4.size()));
  b.push_back(ext_headers.empty() ? next : first_ext);
  b.push_back(64);
  const auto s = addr(src);
  const auto d = addr(dst);
  b.insert(b.end(), s.begin(), s.end());
  b.insert(b.end(), d.begin(), d.end());
  b.insert(b.end(), ext_headers.begin(), ext_headers.end());
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

Bytes ether(const Bytes& l3, std::uint16_t ethertype, const std::vector<std::uint16_t>& vlans) {
  Bytes b{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x66, 0x77, 0x88, 0x99, 0xaa};
  for (std::size_t i = 0; i < vlans.size(); ++i) {
    put16(b, i == 0 && vlans.size() > 1 ? 0x88a8 : 0x8100);
    put16(b, vlans[i]);
  }
  put16(b, ethertype);
  b.insert(b.end(), l3.begin(), l3.end());
  return b;
}

Bytes concat(const Bytes& a, const Bytes& b) {
  Bytes r = a;
  r.insert(r.end(), b.begin(), b.end());
  return r;
}

PcapWriter::PcapWriter(std::string path, std::uint32_t linktype, std::uint32_t snaplen)
    : path_(std::move(path)) {
  put32le(data_, 0xa1b2c3d4);
  put16le(data_, 2);
  put16le(data_, 4);
  put32le(data_, 0);
  put32le(data_, 0);
  put32le(data_, snaplen);
  put32le(data_, linktype);
}

void PcapWriter::add(std::uint64_t ts_us, const Bytes& frame, std::size_t caplen) {
  const std::size_t cap = std::min(caplen, frame.size());
  put32le(data_, static_cast<std::uint32_t>(ts_us / 1'000'000));
  put32le(data_, static_cast<std::uint32_t>(ts_us % 1'000'000));
  put32le(data_, static_cast<std::uint32_t>(cap));
  put32le(data_, static_cast<std::uint32_t>(frame.size()));
  data_.insert(data_.end(), frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cap));
  ++count_;
}

void PcapWriter::close() {
  if (closed_) return;
  closed_ = true;
  std::ofstream out(path_, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data_.data()),
            static_cast<std::streamsize>(data_.size()));
  if (!out) throw std::runtime_error("cannot write " + path_);
}

PcapWriter::~PcapWriter() {
  try {
    close();
  } catch (...) {
  }
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ipfixweb-engine-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace ipfixweb::engine::test

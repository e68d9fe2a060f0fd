// Benchmark helper for scripts/bench-engine (not installed, not used by the service).
//
//   pcap_floor FILE...            the floor: a bare libpcap read loop (pcap_next_ex, touching each
//                                 frame's first byte), prints packets, captured bytes, seconds
//   pcap_floor --synth OUT N      writes a classic pcap with N single-packet UDP/IPv4 flows
//   (distinct
//                                 5-tuples, 1 us apart) to measure flow-table memory per flow
//   pcap_floor --copies IN OUT N SHIFT
//                                 writes N copies of the classic-pcap Ethernet capture IN one after
//                                 the other, copy i shifted by i*SHIFT seconds and with the last
//                                 byte of the outer IPv4/IPv6 source and destination addresses
//                                 XORed with i (IPv4 header checksum fixed), so every copy has its
//                                 own flows (tools that do not expire flows by packet time would
//                                 otherwise merge the copies)
#include <pcap/pcap.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int floor_loop(int argc, char** argv) {
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
  std::uint64_t x = 0;
  for (int i = 1; i < argc; ++i) {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(argv[i], err);
    if (!p) {
      std::fprintf(stderr, "pcap_floor: %s\n", err);
      return 1;
    }
    pcap_pkthdr* h = nullptr;
    const u_char* d = nullptr;
    int rc;
    while ((rc = pcap_next_ex(p, &h, &d)) == 1) {
      ++packets;
      bytes += h->caplen;
      if (h->caplen) x += d[0];
    }
    pcap_close(p);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("packets %llu bytes %llu seconds %.3f (checksum %llu)\n",
              static_cast<unsigned long long>(packets), static_cast<unsigned long long>(bytes), s,
              static_cast<unsigned long long>(x & 0xff));
  return 0;
}

void put16(std::uint8_t* p, unsigned v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

int synth(const char* out, unsigned long n) {
  FILE* f = std::fopen(out, "wb");
  if (!f) {
    std::perror(out);
    return 1;
  }
  const std::uint32_t gh[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1};  // LE host assumed
  std::fwrite(gh, 4, 6, f);
  std::uint8_t frame[14 + 20 + 8 + 18] = {};
  frame[12] = 0x08;  // IPv4
  std::uint8_t* ip = frame + 14;
  ip[0] = 0x45;
  put16(ip + 2, 20 + 8 + 18);
  ip[8] = 64;
  ip[9] = 17;
  std::uint8_t* udp = ip + 20;
  put16(udp + 4, 8 + 18);
  const std::uint64_t t0 = 1'700'000'000'000'000ULL;
  for (unsigned long i = 0; i < n; ++i) {
    // 10.x.y.z -> 172.16.0.1, source port varies: every packet is a new flow
    ip[12] = 10;
    ip[13] = static_cast<std::uint8_t>(i >> 16);
    ip[14] = static_cast<std::uint8_t>(i >> 8);
    ip[15] = static_cast<std::uint8_t>(i);
    ip[16] = 172;
    ip[17] = 16;
    ip[18] = 0;
    ip[19] = 1;
    put16(udp, 1024 + static_cast<unsigned>(i >> 24));
    put16(udp + 2, 5001);
    const std::uint64_t t = t0 + i;
    const std::uint32_t rh[4] = {static_cast<std::uint32_t>(t / 1'000'000),
                                 static_cast<std::uint32_t>(t % 1'000'000), sizeof frame,
                                 sizeof frame};
    std::fwrite(rh, 4, 4, f);
    std::fwrite(frame, 1, sizeof frame, f);
  }
  return std::fclose(f) == 0 ? 0 : 1;
}

int copies(const char* in, const char* out, unsigned n, std::uint32_t shift) {
  FILE* f = std::fopen(in, "rb");
  if (!f) {
    std::perror(in);
    return 1;
  }
  std::vector<std::uint8_t> buf;
  std::uint8_t chunk[1 << 16];
  std::size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0)
    buf.insert(buf.end(), chunk, chunk + got);
  std::fclose(f);
  std::uint32_t magic = 0;
  if (buf.size() >= 24) std::memcpy(&magic, buf.data(), 4);
  std::uint32_t link = 0;
  if (buf.size() >= 24) std::memcpy(&link, buf.data() + 20, 4);
  if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) {
    std::fprintf(stderr, "pcap_floor: %s: need a native-order classic pcap\n", in);
    return 1;
  }
  FILE* o = std::fopen(out, "wb");
  if (!o) {
    std::perror(out);
    return 1;
  }
  std::fwrite(buf.data(), 1, 24, o);
  std::vector<std::uint8_t> rec;
  for (unsigned c = 0; c < n; ++c) {
    const auto x = static_cast<std::uint8_t>(c);
    for (std::size_t pos = 24; pos + 16 <= buf.size();) {
      std::uint32_t hdr[4];
      std::memcpy(hdr, buf.data() + pos, 16);
      const std::uint32_t caplen = hdr[2];
      if (pos + 16 + caplen > buf.size()) break;
      rec.assign(buf.begin() + static_cast<std::ptrdiff_t>(pos + 16),
                 buf.begin() + static_cast<std::ptrdiff_t>(pos + 16 + caplen));
      pos += 16 + caplen;
      hdr[0] += c * shift;
      if (x && link == 1 &&
          caplen >= 14) {  // Ethernet: skip VLAN tags, rewrite the outer IP header
        std::size_t off = 12;
        std::uint16_t et = static_cast<std::uint16_t>(rec[off] << 8 | rec[off + 1]);
        while ((et == 0x8100 || et == 0x88a8) && off + 6 <= caplen) {
          off += 4;
          et = static_cast<std::uint16_t>(rec[off] << 8 | rec[off + 1]);
        }
        off += 2;
        if (et == 0x0800 && off + 20 <= caplen && (rec[off] >> 4) == 4) {
          std::uint8_t* ip = rec.data() + off;
          ip[15] ^= x;
          ip[19] ^= x;
          const unsigned ihl = (ip[0] & 15u) * 4u;
          if (ihl >= 20 && off + ihl <= caplen) {
            ip[10] = ip[11] = 0;
            std::uint32_t sum = 0;
            for (unsigned i = 0; i < ihl; i += 2)
              sum += static_cast<std::uint32_t>(ip[i] << 8 | ip[i + 1]);
            while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
            put16(ip + 10, ~sum & 0xffff);
          }
        } else if (et == 0x86dd && off + 40 <= caplen && (rec[off] >> 4) == 6) {
          rec[off + 23] ^= x;
          rec[off + 39] ^= x;
        }
      }
      std::fwrite(hdr, 4, 4, o);
      std::fwrite(rec.data(), 1, rec.size(), o);
    }
  }
  return std::fclose(o) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::strcmp(argv[1], "--copies") == 0) {
    return copies(argv[2], argv[3], static_cast<unsigned>(std::strtoul(argv[4], nullptr, 10)),
                  static_cast<std::uint32_t>(std::strtoul(argv[5], nullptr, 10)));
  }
  if (argc == 4 && std::strcmp(argv[1], "--synth") == 0) {
    return synth(argv[2], std::strtoul(argv[3], nullptr, 10));
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: pcap_floor FILE... | --synth OUT N | --copies IN OUT N SHIFT\n");
    return 2;
  }
  return floor_loop(argc, argv);
}

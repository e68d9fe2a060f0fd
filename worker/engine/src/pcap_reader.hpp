// Offline capture reading (pcap and pcapng via libpcap, plain or compressed with gzip, zstd, xz
// or bzip2) and timestamp-ordered merging of several inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <pcap/pcap.h>

#include "ipfixweb/capture/decompress.hpp"
#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

struct PcapCloser {
  void operator()(pcap_t* p) const noexcept {
    if (p) pcap_close(p);
  }
};
using PcapHandle = std::unique_ptr<pcap_t, PcapCloser>;

struct RawPacket {
  std::uint64_t ts_us = 0;  // capture time, microseconds since the epoch
  std::uint32_t caplen = 0;
  std::uint32_t wirelen = 0;
  const std::uint8_t* data = nullptr;  // valid until the next read on the same reader
  int dlt = 0;
  std::size_t input = 0;  // index of the input it came from
};

struct ReadOptions {
  // false: always read through libpcap (tests compare both paths).
  bool allow_map = true;
  // Compressed input: the bounds against decompression bombs, and whether to decode on a thread
  // of its own (a few buffers ahead of libpcap).
  capture::DecompressLimits limits;
  bool read_ahead = true;
  // A memory-mapped capture drops the pages it read from the process every 8 MiB (the RSS
  // bound), all but this many bytes behind the read position. A threaded conversion's shards
  // read packets somewhat after the reader: they are given room, so they do not fault the pages
  // in again.
  std::size_t mapped_behind = 0;
};
// The reading options a conversion's or an extract's options ask for.
ReadOptions read_options(const Options& opts);

// Compressed captures (told by content, not by name; docs/engine.md, Compressed input) are
// decompressed in one streaming pass and read by libpcap through a stdio stream over the
// decompressor (fopencookie): pcap and pcapng alike. Plain classic pcap files are read from a
// memory mapping; anything else through libpcap.
class PcapReader {
 public:
  // Throws EngineError with a one-line reason for unreadable or non-capture files, unsupported
  // link types and bad filters.
  // `allow_map` false: always read through libpcap (tests compare both paths).
  PcapReader(const std::string& path, const std::string& bpf_filter, bool allow_map = true);
  // An already open capture: `fd` is a readable regular file, `path` only names it (messages,
  // summary). Read through duplicates; the caller keeps `fd`.
  PcapReader(int fd, const std::string& path, const std::string& bpf_filter, bool allow_map = true);
  PcapReader(int fd, const std::string& path, const std::string& bpf_filter,
             const ReadOptions& options);
  ~PcapReader();
  PcapReader(const PcapReader&) = delete;
  PcapReader& operator=(const PcapReader&) = delete;
  // true: `out` filled; false: end of file. A cut-short last record ends the file and sets
  // truncated(); so does a compressed stream cut short (even between records). Other read
  // errors throw EngineError, corrupt compressed data and a decompression bound included.
  bool next(RawPacket& out);
  int dlt() const { return dlt_; }
  const std::string& path() const { return path_; }
  // The file's size and the bytes of it read so far: compressed bytes for a compressed file.
  std::uint64_t file_size() const { return file_size_; }
  std::uint64_t position() const;
  capture::Compression compression() const { return compression_; }
  bool truncated() const { return truncated_; }
  const std::string& truncation_message() const { return truncation_message_; }
  std::uint64_t packets() const { return packets_; }
  int snaplen() const { return pcap_snapshot(handle_.get()); }
  bool memory_mapped() const { return map_ != nullptr; }

 private:
  // Classic pcap files are read straight from a read-only mapping (no copy per packet); libpcap
  // opened and validated the file and still reads pcapng and anything unusual.
  void open_capture(int fd, const std::string& bpf_filter, const ReadOptions& options);
  pcap_t* open_compressed(int fd, const ReadOptions& options, char* err);
  [[noreturn]] void fail_compressed(const std::string& where);
  void try_map(int fd);
  bool next_mapped(RawPacket& out);
  bool fail_truncated(const std::string& why);
  std::string path_;
  // The decompressor libpcap's stream reads from: declared before handle_, so it outlives the
  // stream (closed with the handle).
  struct Compressed;
  std::unique_ptr<Compressed> compressed_;
  capture::Compression compression_ = capture::Compression::None;
  PcapHandle handle_;
  int dlt_ = 0;
  std::uint64_t file_size_ = 0;
  std::uint64_t packets_ = 0;
  bool truncated_ = false;
  std::string truncation_message_;
  const std::uint8_t* map_ = nullptr;
  std::size_t map_size_ = 0;
  std::size_t pos_ = 0;
  std::size_t released_ = 0;  // mapping before this offset was dropped (keeps RSS small)
  std::size_t mapped_behind_ = 0;
  bool swapped_ = false;
  bool nsec_ = false;
  std::uint32_t snapshot_ = 0;
  bpf_program prog_{};
  bool have_prog_ = false;
};

// Reads several captures as one stream in timestamp order (ties: input order).
class MergedReader {
 public:
  // `fds`: empty, or an open file per path (see PcapReader). Compressed inputs decode on
  // threads of their own (ReadOptions::read_ahead) when there are at most
  // kMaxReadAheadInputs inputs.
  MergedReader(const std::vector<std::string>& paths, const std::string& bpf_filter,
               const std::vector<int>& fds = {}, const ReadOptions& options = {});
  static constexpr std::size_t kMaxReadAheadInputs = 16;
  bool next(RawPacket& out);
  std::uint64_t bytes_total() const { return bytes_total_; }
  std::uint64_t bytes_read() const;
  const std::vector<std::unique_ptr<PcapReader>>& readers() const { return readers_; }

 private:
  struct Head {
    RawPacket pkt;
    bool valid = false;
    bool primed = false;
  };
  std::vector<std::unique_ptr<PcapReader>> readers_;
  std::vector<Head> heads_;
  // Min-heap of readers with a packet, by (timestamp, input index): O(log K)
  // per packet, so hundreds of rotated files merge as fast as a few.
  std::vector<std::size_t> heap_;
  bool primed_ = false;
  bool later(std::size_t a, std::size_t b) const {
    const auto ta = heads_[a].pkt.ts_us, tb = heads_[b].pkt.ts_us;
    return ta != tb ? ta > tb : a > b;
  }
  std::size_t last_ = SIZE_MAX;  // reader whose packet was handed out last (needs advancing)
  std::uint64_t bytes_total_ = 0;
};

}  // namespace ipfixweb::engine

#include "pcap_reader.hpp"

#include <algorithm>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

#include "decoder.hpp"
#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

ReadOptions read_options(const Options& opts) {
  ReadOptions r;
  r.limits.max_output = opts.max_decompressed_bytes;
  r.limits.max_ratio = opts.max_decompression_ratio;
  // A threaded conversion's rings hold up to 32 rounds of 384 packets per shard (sharded.hpp),
  // about 5 MiB of a typical capture per shard: 8 MiB per shard (up to 8) stay mapped.
  if (opts.threads > 1) r.mapped_behind = std::size_t{std::min(opts.threads, 8u)} * (8u << 20);
  return r;
}

PcapReader::PcapReader(const std::string& path, const std::string& bpf_filter, bool allow_map)
    : PcapReader(-1, path, bpf_filter, allow_map) {}

PcapReader::PcapReader(int fd, const std::string& path, const std::string& bpf_filter,
                       bool allow_map)
    : PcapReader(fd, path, bpf_filter, [allow_map] {
        ReadOptions o;
        o.allow_map = allow_map;
        return o;
      }()) {}

PcapReader::PcapReader(int fd, const std::string& path, const std::string& bpf_filter,
                       const ReadOptions& options)
    : path_(path) {
  open_capture(fd, bpf_filter, options);
}

namespace {

// A descriptor of our own, closed on every path.
class OwnFd {
 public:
  explicit OwnFd(int fd) : fd_(fd) {}
  ~OwnFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  OwnFd(const OwnFd&) = delete;
  OwnFd& operator=(const OwnFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// The compression of the file open as `fd`, from its magic number (read with pread: the
// descriptor's offset is left alone).
capture::Compression compression_of(int fd) {
  char head[8];
  ssize_t n;
  do {
    n = ::pread(fd, head, sizeof head, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return capture::Compression::None;  // libpcap reports what is wrong
  return capture::sniff_compression(std::string_view(head, static_cast<std::size_t>(n)));
}

}  // namespace

// What libpcap's stream reads: the decompressed bytes sniffed at the start first, then the rest
// from the decompressor. A decompressor error is kept for the reader's message (libpcap only
// sees a failed read, EIO).
struct PcapReader::Compressed {
  Compressed(int fd, const capture::Decompressor::Options& o) : dec(fd, o) {}
  capture::Decompressor dec;
  std::string head;  // the start of the content, read to sniff it
  std::size_t head_pos = 0;
  std::string error;  // what stopped the decompressor

  static ssize_t read(void* cookie, char* buf, std::size_t n) {
    auto* c = static_cast<Compressed*>(cookie);
    if (c->head_pos < c->head.size()) {
      const std::size_t k = std::min(n, c->head.size() - c->head_pos);
      std::memcpy(buf, c->head.data() + c->head_pos, k);
      c->head_pos += k;
      return static_cast<ssize_t>(k);
    }
    try {
      return static_cast<ssize_t>(c->dec.read(buf, n));
    } catch (const std::exception& e) {
      c->error = e.what();
      errno = EIO;
      return -1;
    }
  }
  static int close(void*) { return 0; }  // the reader owns this object

  // Decompresses more of the stream without keeping it (at most kDrainBytes, a few seconds of
  // decoding: an error path must not take as long as the file); an error is kept in `error`.
  static constexpr std::uint64_t kDrainBytes = std::uint64_t{1} << 30;
  void drain() {
    std::vector<char> scratch(256 * 1024);
    try {
      for (std::uint64_t n = 0; n < kDrainBytes;) {
        const std::size_t r = dec.read(scratch.data(), scratch.size());
        if (r == 0) break;
        n += r;
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
};

void PcapReader::fail_compressed(const std::string& where) {
  throw EngineError(where + " (" + std::string(capture::name(compression_)) +
                    "-compressed): " + compressed_->error);
}

pcap_t* PcapReader::open_compressed(int fd, const ReadOptions& options, char* err) {
  capture::Decompressor::Options dopts;
  dopts.limits = options.limits;
  dopts.read_ahead = options.read_ahead;
  try {
    compressed_ = std::make_unique<Compressed>(fd, dopts);
  } catch (const capture::DecompressError& e) {
    throw EngineError("cannot read input '" + path_ + "': " + e.what());
  }
  Compressed& c = *compressed_;
  // The start of the content says whether it is a capture at all (libpcap's "unknown file
  // format" would not say that the file was decompressed).
  c.head.resize(capture::kSniffBytes);
  std::size_t got = 0;
  try {
    while (got < c.head.size()) {
      const std::size_t r = c.dec.read(c.head.data() + got, c.head.size() - got);
      if (r == 0) break;
      got += r;
    }
  } catch (const capture::DecompressError& e) {
    c.error = e.what();
    fail_compressed("cannot read input '" + path_ + "'");
  }
  c.head.resize(got);
  const std::string kind = std::string(capture::name(compression_)) + "-compressed";
  if (got == 0 && c.dec.truncated()) {
    throw EngineError("input '" + path_ + "' is " + kind +
                      " and cut short before any content, not a readable capture");
  }
  if (got == 0) throw EngineError("input '" + path_ + "' is " + kind + " and holds nothing");
  const capture::Sniff content = capture::sniff_plain(c.head);
  if (content.format == capture::Format::Ipfix) {
    throw EngineError("input '" + path_ + "' is " + kind + " IPFIX, not a pcap/pcapng capture");
  }
  if (content.format == capture::Format::Unknown && !content.need_more) {
    throw EngineError("input '" + path_ + "' is not a readable pcap/pcapng capture (" + kind +
                      " data that is neither pcap nor pcapng)");
  }
  const cookie_io_functions_t io{&Compressed::read, nullptr, nullptr, &Compressed::close};
  FILE* f = ::fopencookie(compressed_.get(), "rb", io);
  if (!f) throw EngineError("cannot open input '" + path_ + "': " + std::strerror(errno));
  // libpcap reads a record header then its data: a large stdio buffer makes few calls.
  std::setvbuf(f, nullptr, _IOFBF, 256 * 1024);
  pcap_t* p = pcap_fopen_offline(f, err);
  if (!p) {
    std::fclose(f);
    if (!c.error.empty()) fail_compressed("cannot read input '" + path_ + "'");
  }
  return p;
}

void PcapReader::open_capture(int fd, const std::string& bpf_filter, const ReadOptions& options) {
  const std::string& path = path_;
  struct stat st {};
  if ((fd >= 0 ? ::fstat(fd, &st) : ::stat(path.c_str(), &st)) != 0) {
    throw EngineError("cannot open input '" + path + "': " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) throw EngineError("cannot open input '" + path + "': is a directory");
  if (fd >= 0 && !S_ISREG(st.st_mode)) {
    throw EngineError("cannot open input '" + path + "': not a regular file");
  }
  file_size_ = static_cast<std::uint64_t>(st.st_size);
  if (file_size_ == 0) throw EngineError("input '" + path + "' is empty, not a capture file");
  char err[PCAP_ERRBUF_SIZE] = {};
  {
    // Compressed? Told by content. A file opened by name is opened once more by libpcap or the
    // mapping when it is not.
    const OwnFd own(fd >= 0 ? -1 : ::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    const int rfd = fd >= 0 ? fd : own.get();
    if (rfd < 0) throw EngineError("cannot open input '" + path + "': " + std::strerror(errno));
    compression_ = compression_of(rfd);
    if (compression_ != capture::Compression::None)
      handle_.reset(open_compressed(rfd, options, err));
  }
  if (compressed_) {
    // opened above
  } else if (fd >= 0) {
    // libpcap reads through a stdio stream of its own on a duplicate, from the start.
    const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    FILE* f = dup >= 0 ? ::fdopen(dup, "rb") : nullptr;
    if (!f) {
      const int e = errno;
      if (dup >= 0) ::close(dup);
      throw EngineError("cannot open input '" + path + "': " + std::strerror(e));
    }
    std::rewind(f);
    handle_.reset(pcap_fopen_offline(f, err));
    if (!handle_) std::fclose(f);  // unlike pcap_open_offline, it leaves the stream open
  } else {
    handle_.reset(pcap_open_offline(path.c_str(), err));
  }
  if (!handle_) {
    std::string why = err;
    if (why.find("unknown file format") != std::string::npos ||
        why.find("truncated dump file") != std::string::npos ||
        why.find("bad dump file format") != std::string::npos) {
      throw EngineError("input '" + path + "' is not a readable pcap/pcapng capture (" + why + ")");
    }
    throw EngineError("cannot open input '" + path + "': " + why);
  }
  dlt_ = pcap_datalink(handle_.get());
  if (!link_type_supported(dlt_)) {
    const char* name = pcap_datalink_val_to_name(dlt_);
    throw EngineError("input '" + path + "' has unsupported link type " + std::to_string(dlt_) +
                      (name ? std::string(" (") + name + ")" : std::string()));
  }
  if (!bpf_filter.empty()) {
    if (pcap_compile(handle_.get(), &prog_, bpf_filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
      throw EngineError("bad BPF filter '" + bpf_filter + "': " + pcap_geterr(handle_.get()));
    }
    have_prog_ = true;
    if (pcap_setfilter(handle_.get(), &prog_) != 0) {
      throw EngineError("cannot apply BPF filter '" + bpf_filter +
                        "': " + pcap_geterr(handle_.get()));
    }
  }
  mapped_behind_ = options.mapped_behind & ~std::size_t{4095};
  if (options.allow_map && !compressed_) try_map(fd);
}

PcapReader::~PcapReader() {
  if (map_) ::munmap(const_cast<std::uint8_t*>(map_), map_size_);
  if (have_prog_) pcap_freecode(&prog_);
}

namespace {
constexpr std::uint32_t kMagicUs = 0xa1b2c3d4;
constexpr std::uint32_t kMagicNs = 0xa1b23c4d;
constexpr std::uint32_t kMaxCaplen = 262144;  // libpcap's limit for the link types we decode
constexpr std::size_t kFileHeader = 24;
constexpr std::size_t kRecordHeader = 16;

inline std::uint32_t rd32(const std::uint8_t* p, bool swapped) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return swapped ? __builtin_bswap32(v) : v;
}
}  // namespace

void PcapReader::try_map(int given_fd) {
  if (file_size_ < kFileHeader) return;
  // The given descriptor is borrowed: mapped through a duplicate, closed below like an own one.
  const int fd = given_fd >= 0 ? ::fcntl(given_fd, F_DUPFD_CLOEXEC, 0)
                               : ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::uint8_t hdr[kFileHeader];
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                       static_cast<std::uint64_t>(st.st_size) == file_size_;
  if (!regular || ::pread(fd, hdr, sizeof hdr, 0) != static_cast<ssize_t>(sizeof hdr)) {
    ::close(fd);
    return;
  }
  std::uint32_t magic;
  std::memcpy(&magic, hdr, 4);
  bool swapped = false;
  bool nsec = false;
  if (magic == kMagicUs || magic == kMagicNs) {
    nsec = magic == kMagicNs;
  } else if (__builtin_bswap32(magic) == kMagicUs || __builtin_bswap32(magic) == kMagicNs) {
    swapped = true;
    nsec = __builtin_bswap32(magic) == kMagicNs;
  } else {
    ::close(fd);  // pcapng or a variant libpcap knows better
    return;
  }
  // Only version 2.4 with a plain link type (no FCS bits): older versions have swapped length
  // fields, which libpcap sorts out.
  std::uint16_t major;
  std::uint16_t minor;
  std::memcpy(&major, hdr + 4, 2);
  std::memcpy(&minor, hdr + 6, 2);
  if (swapped) {
    major = __builtin_bswap16(major);
    minor = __builtin_bswap16(minor);
  }
  if (major != 2 || minor != 4 || (rd32(hdr + 20, swapped) & 0xfc000000u) != 0) {
    ::close(fd);
    return;
  }
  void* m = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return;
  ::madvise(m, file_size_, MADV_SEQUENTIAL);
  map_ = static_cast<const std::uint8_t*>(m);
  map_size_ = file_size_;
  pos_ = kFileHeader;
  swapped_ = swapped;
  nsec_ = nsec;
  snapshot_ = static_cast<std::uint32_t>(pcap_snapshot(handle_.get()));
  if (snapshot_ == 0 || snapshot_ > kMaxCaplen) snapshot_ = kMaxCaplen;
}

bool PcapReader::fail_truncated(const std::string& why) {
  truncated_ = true;
  truncation_message_ = why;
  return false;
}

// Same results as libpcap's sf-pcap reader (1.10) for the link types we decode: records larger
// than 262144 bytes are an error, records larger than the file's snapshot length are cut to it,
// a record cut short by the end of the file ends the input as "truncated".
bool PcapReader::next_mapped(RawPacket& out) {
  // The previous packet is no longer needed: drop the pages behind it from this process (they
  // stay in the page cache) so the peak RSS does not grow with the input size.
  constexpr std::size_t kReleaseChunk = 8u << 20;
  if (pos_ - released_ >= mapped_behind_ + kReleaseChunk + 4096) {
    const std::size_t upto = (pos_ & ~std::size_t{4095}) - 4096 - mapped_behind_;
    ::madvise(const_cast<std::uint8_t*>(map_) + released_, upto - released_, MADV_DONTNEED);
    released_ = upto;
  }
  for (;;) {
    const std::size_t left = map_size_ - pos_;
    if (left == 0) return false;
    if (left < kRecordHeader) {
      return fail_truncated("truncated dump file; tried to read " + std::to_string(kRecordHeader) +
                            " header bytes, only got " + std::to_string(left));
    }
    const std::uint8_t* h = map_ + pos_;
    const std::uint32_t sec = rd32(h, swapped_);
    const std::uint32_t frac = rd32(h + 4, swapped_);
    std::uint32_t caplen = rd32(h + 8, swapped_);
    const std::uint32_t len = rd32(h + 12, swapped_);
    const std::size_t avail = left - kRecordHeader;
    if (caplen > kMaxCaplen) {
      throw EngineError("error reading '" + path_ + "' after " + std::to_string(packets_) +
                        " packets: invalid packet capture length " + std::to_string(caplen) +
                        (caplen <= snapshot_
                             ? ", bigger than maximum of " + std::to_string(kMaxCaplen)
                             : ", bigger than snaplen of " + std::to_string(snapshot_)));
    }
    if (caplen <= snapshot_) {
      if (avail < caplen) {
        return fail_truncated("truncated dump file; tried to read " + std::to_string(caplen) +
                              " captured bytes, only got " + std::to_string(avail));
      }
    } else {  // libpcap keeps the first snapshot_ bytes and skips the rest
      if (avail < snapshot_) {
        return fail_truncated("truncated dump file; tried to read " + std::to_string(snapshot_) +
                              " captured bytes, only got " + std::to_string(avail));
      }
      if (avail < caplen) {
        return fail_truncated("truncated dump file; tried to read " + std::to_string(caplen) +
                              " captured bytes, only got " + std::to_string(avail));
      }
    }
    pos_ += kRecordHeader + caplen;
    if (caplen > snapshot_) caplen = snapshot_;
    const std::uint8_t* data = h + kRecordHeader;
    if (have_prog_) {
      pcap_pkthdr ph{};
      ph.caplen = caplen;
      ph.len = len;
      if (pcap_offline_filter(&prog_, &ph, data) == 0) continue;
    }
    // As libpcap 1.10 does (checked by tests/engine/test_reader.cpp): the 32-bit fields are
    // signed in native-order files and unsigned in byte-swapped ones; nanoseconds scale down.
    std::int64_t tv_sec;
    std::int64_t tv_usec;
    if (swapped_) {
      tv_sec = sec;
      tv_usec = frac;
    } else {
      tv_sec = static_cast<std::int32_t>(sec);
      tv_usec = static_cast<std::int32_t>(frac);
    }
    if (nsec_) tv_usec /= 1000;
    out.ts_us =
        static_cast<std::uint64_t>(tv_sec) * 1'000'000u + static_cast<std::uint64_t>(tv_usec);
    out.caplen = caplen;
    out.wirelen = len;
    out.data = data;
    out.dlt = dlt_;
    ++packets_;
    return true;
  }
}

bool PcapReader::next(RawPacket& out) {
  if (truncated_) return false;
  if (map_) return next_mapped(out);
  pcap_pkthdr* hdr = nullptr;
  const u_char* data = nullptr;
  const int rc = pcap_next_ex(handle_.get(), &hdr, &data);
  if (rc == 1) {
    out.ts_us = static_cast<std::uint64_t>(hdr->ts.tv_sec) * 1'000'000u +
                static_cast<std::uint64_t>(hdr->ts.tv_usec);
    out.caplen = hdr->caplen;
    out.wirelen = hdr->len;
    out.data = data;
    out.dlt = dlt_;
    ++packets_;
    return true;
  }
  if (rc == PCAP_ERROR_BREAK) {  // end of file
    // A compressed stream cut short between two records: the same warning as a cut record.
    if (compressed_ && compressed_->dec.truncated()) {
      return fail_truncated(compressed_->dec.truncation_message());
    }
    return false;
  }
  std::string why = pcap_geterr(handle_.get());
  if (compressed_ && compressed_->error.empty() && why.find("truncated") == std::string::npos) {
    // libpcap's complaint (e.g. an impossible record length) may come from corrupt compressed
    // data that the stream's checksum, further on, tells as such: read on to find out.
    compressed_->drain();
  }
  if (compressed_ && !compressed_->error.empty()) {
    fail_compressed("error reading '" + path_ + "' after " + std::to_string(packets_) + " packets");
  }
  if (why.find("truncated") != std::string::npos) {
    if (compressed_ && compressed_->dec.truncated()) {
      why += "; " + compressed_->dec.truncation_message();
    }
    return fail_truncated(why);
  }
  throw EngineError("error reading '" + path_ + "' after " + std::to_string(packets_) +
                    " packets: " + why);
}

std::uint64_t PcapReader::position() const {
  if (map_) return pos_;
  if (compressed_) return compressed_->dec.compressed_position();
  FILE* f = pcap_file(handle_.get());
  if (!f) return 0;
  const long pos = std::ftell(f);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos);
}

MergedReader::MergedReader(const std::vector<std::string>& paths, const std::string& bpf_filter,
                           const std::vector<int>& fds, const ReadOptions& options) {
  if (paths.empty()) throw EngineError("no input file given");
  if (!fds.empty() && fds.size() != paths.size()) {
    throw EngineError("internal error: " + std::to_string(fds.size()) + " open inputs for " +
                      std::to_string(paths.size()) + " names");
  }
  ReadOptions ropts = options;
  // Hundreds of rotated files: no thread (and no ring of buffers) for each.
  if (paths.size() > kMaxReadAheadInputs) ropts.read_ahead = false;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    readers_.push_back(
        std::make_unique<PcapReader>(fds.empty() ? -1 : fds[i], paths[i], bpf_filter, ropts));
    bytes_total_ += readers_.back()->file_size();
  }
  heads_.resize(readers_.size());
}

bool MergedReader::next(RawPacket& out) {
  if (readers_.size() == 1) {  // fast path: no merging
    if (!readers_[0]->next(out)) return false;
    out.input = 0;
    return true;
  }
  auto cmp = [this](std::size_t a, std::size_t b) { return later(a, b); };
  if (!primed_) {
    primed_ = true;
    for (std::size_t i = 0; i < readers_.size(); ++i) {
      heads_[i].primed = true;
      heads_[i].valid = readers_[i]->next(heads_[i].pkt);
      heads_[i].pkt.input = i;
      if (heads_[i].valid) heap_.push_back(i);
    }
    std::make_heap(heap_.begin(), heap_.end(), cmp);
  } else if (last_ != SIZE_MAX) {
    // Advance the reader whose packet was consumed last (its data pointer is now stale).
    Head& h = heads_[last_];
    h.valid = readers_[last_]->next(h.pkt);
    h.pkt.input = last_;
    if (h.valid) {
      heap_.push_back(last_);
      std::push_heap(heap_.begin(), heap_.end(), cmp);
    }
  }
  if (heap_.empty()) {
    last_ = SIZE_MAX;
    return false;
  }
  std::pop_heap(heap_.begin(), heap_.end(), cmp);
  last_ = heap_.back();
  heap_.pop_back();
  out = heads_[last_].pkt;
  return true;
}

std::uint64_t MergedReader::bytes_read() const {
  std::uint64_t n = 0;
  for (const auto& r : readers_) n += r->position();
  return n;
}

}  // namespace ipfixweb::engine

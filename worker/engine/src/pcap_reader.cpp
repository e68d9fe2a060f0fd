#include "pcap_reader.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "decoder.hpp"
#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

PcapReader::PcapReader(const std::string& path, const std::string& bpf_filter) : path_(path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw EngineError("cannot open input '" + path + "': " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) throw EngineError("cannot open input '" + path + "': is a directory");
  file_size_ = static_cast<std::uint64_t>(st.st_size);
  if (file_size_ == 0) throw EngineError("input '" + path + "' is empty, not a capture file");
  char err[PCAP_ERRBUF_SIZE] = {};
  handle_.reset(pcap_open_offline(path.c_str(), err));
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
    bpf_program prog{};
    if (pcap_compile(handle_.get(), &prog, bpf_filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
      throw EngineError("bad BPF filter '" + bpf_filter + "': " + pcap_geterr(handle_.get()));
    }
    const int rc = pcap_setfilter(handle_.get(), &prog);
    pcap_freecode(&prog);
    if (rc != 0) {
      throw EngineError("cannot apply BPF filter '" + bpf_filter + "': " +
                        pcap_geterr(handle_.get()));
    }
  }
}

bool PcapReader::next(RawPacket& out) {
  if (truncated_) return false;
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
  if (rc == PCAP_ERROR_BREAK) return false;  // end of file
  const std::string why = pcap_geterr(handle_.get());
  if (why.find("truncated") != std::string::npos) {
    truncated_ = true;
    truncation_message_ = why;
    return false;
  }
  throw EngineError("error reading '" + path_ + "' after " + std::to_string(packets_) +
                    " packets: " + why);
}

std::uint64_t PcapReader::position() const {
  FILE* f = pcap_file(handle_.get());
  if (!f) return 0;
  const long pos = std::ftell(f);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos);
}

MergedReader::MergedReader(const std::vector<std::string>& paths, const std::string& bpf_filter) {
  if (paths.empty()) throw EngineError("no input file given");
  for (const auto& p : paths) {
    readers_.push_back(std::make_unique<PcapReader>(p, bpf_filter));
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
  // Advance the reader whose packet was consumed last (its data pointer is now stale), and prime
  // readers that have not been read yet.
  for (std::size_t i = 0; i < readers_.size(); ++i) {
    Head& h = heads_[i];
    if (!h.primed || i == last_) {
      h.primed = true;
      h.valid = readers_[i]->next(h.pkt);
      h.pkt.input = i;
    }
  }
  std::size_t best = SIZE_MAX;
  for (std::size_t i = 0; i < readers_.size(); ++i) {
    if (heads_[i].valid && (best == SIZE_MAX || heads_[i].pkt.ts_us < heads_[best].pkt.ts_us)) {
      best = i;
    }
  }
  last_ = best;
  if (best == SIZE_MAX) return false;
  out = heads_[best].pkt;
  return true;
}

std::uint64_t MergedReader::bytes_read() const {
  std::uint64_t n = 0;
  for (const auto& r : readers_) n += r->position();
  return n;
}

}  // namespace ipfixweb::engine

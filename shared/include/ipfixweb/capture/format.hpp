// What a capture file is, from its first bytes: its compression (gzip, zstd, xz, bzip2 or
// none) and its content (pcap, pcapng, IPFIX). Detection is by content, never by name.
// Used by the api (uploads are refused before they are stored when they are not captures),
// the drop folder and the engine (which reads compressed captures directly).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ipfixweb::capture {

enum class Compression { None, Gzip, Zstd, Xz, Bzip2 };
enum class Format { Unknown, Pcap, PcapNg, Ipfix };

struct Sniff {
  Compression compression = Compression::None;
  Format format = Format::Unknown;
  // The bytes given were too few to tell (more of the file may tell); format is Unknown.
  bool need_more = false;
};

// Enough of a file's beginning for sniff() to decide in every case it can decide.
inline constexpr std::size_t kSniffBytes = 64 * 1024;

// The compression from the magic number at the start of `head`.
Compression sniff_compression(std::string_view head);
// The format of uncompressed bytes (the start of a file, or of a decompressed stream).
// need_more only when `head` is shorter than a format's magic and could still be one.
Sniff sniff_plain(std::string_view head);
// The compression and the format of the content: a compressed `head` is decompressed in
// memory (at most kSniffBytes of output) to look at the content. need_more when `head` ends
// before either is known (and `head` is not the whole file: `complete` false); a few bytes of
// a compression magic number ask for more too. A corrupt compressed stream: its compression,
// Format::Unknown, need_more false. (Streaming decompression: decompress.hpp.)
Sniff sniff(std::string_view head, bool complete = false);

std::string_view name(Compression c);  // "none", "gzip", "zstd", "xz", "bzip2"
std::string_view name(Format f);       // "unknown", "pcap", "pcapng", "ipfix"
// "pcap", "pcapng+zstd", "ipfix+gzip", …: the form the api reports as a capture's format.
std::string describe(const Sniff& s);

}  // namespace ipfixweb::capture

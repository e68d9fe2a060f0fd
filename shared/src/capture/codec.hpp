// One decoder per compression format, behind one interface: the streaming Decompressor
// (decompress.cpp) and sniff() (format.cpp) decode through it. Internal to ipfixweb_capture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>

#include "ipfixweb/capture/decompress.hpp"
#include "ipfixweb/capture/format.hpp"

namespace ipfixweb::capture::detail {

class Codec {
 public:
  struct Step {
    std::size_t consumed = 0;  // input bytes taken
    std::size_t produced = 0;  // output bytes written
    // The input taken so far is whole streams (gzip members, zstd frames, xz streams, bzip2
    // streams): the data may end here without being cut short.
    bool at_end = false;
    // A DecompressError: the data is not valid in the format (Kind::Corrupt) or needs more
    // than a bound (Kind::Limit). `produced` bytes were written before the decoder found out
    // (a block whose CRC fails comes out whole first): they come before the error, so that
    // how far the output goes does not depend on the size of the output buffers.
    std::exception_ptr error;
  };
  virtual ~Codec() = default;
  // Decodes from `in` into `out`. `last`: no input follows `in` (the end of the file). Data
  // that is not valid in the format sets Step::error; the codec is not to be used after it.
  virtual Step step(const std::uint8_t* in, std::size_t in_len, std::uint8_t* out,
                    std::size_t out_len, bool last) = 0;
};

// Compression::None is not a codec: throws std::invalid_argument.
std::unique_ptr<Codec> make_codec(Compression c);

}  // namespace ipfixweb::capture::detail

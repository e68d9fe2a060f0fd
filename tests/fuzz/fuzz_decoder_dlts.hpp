// The link types of the decoder target's inputs (fuzz_decoder.cpp; byte 0's low 4 bits index
// this list), shared with the seed maker (make_seeds.cpp).
#pragma once

#include <cstddef>

#include "decoder.hpp"

namespace fuzz {

constexpr int kDlts[] = {
    ipfixweb::engine::kDltEthernet,   ipfixweb::engine::kDltLinuxSll,
    ipfixweb::engine::kDltLinuxSll2,  ipfixweb::engine::kDltRaw,
    ipfixweb::engine::kDltIpv4,       ipfixweb::engine::kDltIpv6,
    ipfixweb::engine::kDltNull,       ipfixweb::engine::kDltLoop,
    ipfixweb::engine::kDltPpp,        ipfixweb::engine::kDltCiscoHdlc,
    ipfixweb::engine::kDltRawOpenBsd, ipfixweb::engine::kDltLinkTypeRaw,
};
constexpr std::size_t kDltCount = sizeof kDlts / sizeof kDlts[0];

}  // namespace fuzz

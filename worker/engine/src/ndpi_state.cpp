// nDPI 4.2 keeps the detection module's layout behind NDPI_LIB_COMPILATION. The layout
// used here is the one of the installed headers, which belong to the library the engine
// links (same Debian package), and restore_module() refuses to vouch for a module whose
// bytes differ from the pristine image anywhere it does not know about.
#define NDPI_LIB_COMPILATION
#include "ndpi_state.hpp"

#include <ndpi/ndpi_api.h>

#include <cstring>
#include <iterator>

namespace ipfixweb::engine {
namespace {

using Module = ndpi_detection_module_struct;

// The lazily created LRU caches of nDPI 4.2. A cache that is created during a conversion
// and emptied afterwards is equivalent to one that does not exist yet.
constexpr ndpi_lru_cache* Module::*kLruCaches[] = {
    &Module::ookla_cache,    &Module::bittorrent_cache, &Module::zoom_cache,    &Module::stun_cache,
    &Module::tls_cert_cache, &Module::mining_cache,     &Module::msteams_cache,
};

}  // namespace

std::unique_ptr<unsigned char[]> snapshot_module(const Module* mod) {
  auto image = std::make_unique<unsigned char[]>(sizeof(Module));
  std::memcpy(image.get(), mod, sizeof(Module));
  return image;
}

bool restore_module(Module* mod, const unsigned char* pristine) {
  const auto* before = reinterpret_cast<const Module*>(pristine);
  if (mod->tinc_cache != before->tinc_cache) return false;  // private type: cannot empty it
  for (auto member : kLruCaches) {
    ndpi_lru_cache* c = mod->*member;
    if (c && c->entries) std::memset(c->entries, 0, sizeof(*c->entries) * c->num_entries);
  }
  // Fields that change per packet and are re-initialised before use; restored anyway.
  mod->current_ts = before->current_ts;
  std::memcpy(static_cast<void*>(&mod->packet), &before->packet, sizeof(mod->packet));
  // Everything else must be byte-for-byte what initialisation left (cache pointers aside).
  // Compared with the cache pointers swapped for their pristine values for a moment.
  ndpi_lru_cache* live[std::size(kLruCaches)];
  for (std::size_t i = 0; i < std::size(kLruCaches); ++i) {
    live[i] = mod->*kLruCaches[i];
    mod->*kLruCaches[i] = before->*kLruCaches[i];
  }
  const bool same = std::memcmp(static_cast<const void*>(mod), pristine, sizeof(Module)) == 0;
  for (std::size_t i = 0; i < std::size(kLruCaches); ++i) mod->*kLruCaches[i] = live[i];
  return same;
}

}  // namespace ipfixweb::engine

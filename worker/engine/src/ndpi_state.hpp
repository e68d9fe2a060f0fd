// Saving and restoring the mutable state of an nDPI 4.2 detection module (see
// NdpiModule::reset). Kept in its own translation unit because it needs the module's
// layout, which nDPI only shows with NDPI_LIB_COMPILATION defined.
#pragma once

#include <memory>

struct ndpi_detection_module_struct;

namespace ipfixweb::engine {

// A byte image of the module right after ndpi_finalize_initialization().
std::unique_ptr<unsigned char[]> snapshot_module(const ndpi_detection_module_struct* mod);

// Empties the module's LRU caches and restores its scratch fields from `pristine`; true when
// the module is then equivalent to the freshly initialised one (every other byte of it is
// unchanged), false when it is not and must be replaced.
bool restore_module(ndpi_detection_module_struct* mod, const unsigned char* pristine);

}  // namespace ipfixweb::engine

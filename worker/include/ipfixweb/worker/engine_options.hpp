// A task's spec as the engine's options: the one place that maps TaskSpec fields to
// engine::Options (shared/ knows nothing of the engine).
#pragma once

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::worker {

engine::Options to_engine_options(const proto::TaskSpec& spec);

}  // namespace ipfixweb::worker

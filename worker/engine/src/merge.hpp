// Merge (Mode::Merge): the outputs of a conversion run in flow partitions (Options::partition,
// on several workers, say) made into the output of the whole conversion. The parts' records
// are carried over as an IPFIX ingest carries them (every part holds whole flows, so no record
// is joined with another); the flow store's series are the sums of the parts' series (each
// part buckets its own packets at the same bucket size); the summary takes what every part
// counted of the whole capture (packets read, inputs, times) from one part and sums or
// recomputes what each counted of its own flows (docs/engine.md, Partitions).
#pragma once

#include <atomic>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

// Engine::convert_text for Mode::Merge. Throws EngineError when the parts are not partitions
// 0..N-1 of one conversion (one missing, twice, of another capture or other options).
Conversion merge_partitions(const Options& opts, const ProgressFn& progress,
                            const std::atomic<bool>* cancel);

}  // namespace ipfixweb::engine

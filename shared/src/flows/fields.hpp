// Names of the flows table's columns as the filter language and the list query take them:
// the canonical names of kFlowColumns plus a few aliases (docs/flow-filter.md). Internal to
// ipfixweb_flows.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "ipfixweb/flows/schema.hpp"

namespace ipfixweb::flows::detail {

std::string lower(std::string_view s);

// The exported column a (lower-case) name or alias names; nullptr when none. Sets
// *not_exported when the name is a column that is not exported (src_ip, dst_ip).
const Column* find_exported(std::string_view lowered, bool* not_exported = nullptr);

using flows::nullable;

// Levenshtein distance, for "did you mean".
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a likely typo, else "".
std::string_view closest(std::string_view word, const std::vector<std::string_view>& candidates);

// Every column and alias name that find_exported accepts.
std::vector<std::string_view> exported_names();

}  // namespace ipfixweb::flows::detail

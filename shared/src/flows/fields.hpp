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

struct Alias {
  std::string_view name;
  std::string_view column;
};

// Other names of exported columns, accepted wherever a column name is.
inline constexpr std::array kAliases{
    Alias{"start", "start_ms"},  Alias{"first", "start_ms"},       Alias{"end", "end_ms"},
    Alias{"last", "end_ms"},     Alias{"duration", "duration_ms"}, Alias{"protocol", "proto"},
    Alias{"src_port", "sport"},  Alias{"dst_port", "dport"},       Alias{"pkts", "packets"},
    Alias{"application", "app"}, Alias{"sni", "server_name"},      Alias{"ja3", "ja3c"},
    Alias{"flags", "tcp_flags"}, Alias{"ipver", "ip_version"},
};

std::string lower(std::string_view s);

// The exported column a (lower-case) name or alias names; nullptr when none. Sets
// *not_exported when the name is a column that is not exported (src_ip, dst_ip).
const Column* find_exported(std::string_view lowered, bool* not_exported = nullptr);

// Whether a column may hold NULL (no NOT NULL, not a primary key, not generated from
// NOT NULL columns).
bool nullable(const Column& c);

// Levenshtein distance, for "did you mean".
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is close enough to be a likely typo, else "".
std::string_view closest(std::string_view word, const std::vector<std::string_view>& candidates);

// Every column and alias name that find_exported accepts.
std::vector<std::string_view> exported_names();

}  // namespace ipfixweb::flows::detail

// Pure request validation for the HTTP api (unit-tested without a server). The fields and
// their rules come from shared's task definition (ipfixweb/shared/task_spec.hpp).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::api {

// The largest `limit` of a listed page (GET /api/v1/tasks, /api/v1/captures).
inline constexpr int kMaxPageLimit = 1000;

struct FieldError {
  std::string field;  // JSON pointer-ish: "pcap_files[0]", "DPI"
  std::string message;
};

struct ParsedRequest {
  proto::TaskSpec spec;  // paths as given (relative to a root) until resolve_paths
  proto::RequestExtras extras;
  // The request as stored: JSON text with the defaults filled in, keys in sorted order (the
  // same text nlohmann::json::dump() writes for it). Fields that carry
  // FieldInfo::omit_default appear only when they differ from their default.
  std::string normalised;
};

// Unknown request fields are refused on /api/v1/tasks (a typo must not be silently ignored);
// the compatibility routes of the original service ignore them.
enum class UnknownFields : bool { Refuse, Ignore };

// Whether the JSON text nests arrays and objects at most `max_depth` deep: a cheap scan
// (brackets inside strings do not count) before a parser builds a value per level.
bool json_depth_within(std::string_view text, int max_depth);

// A request body read as JSON, as the api reads every body: the nesting check first, then
// nlohmann's parser. nullopt when it nests deeper than `max_depth` (`too_deep` set) or is not
// JSON text. A NUL byte makes it not JSON: JSON text holds none (not even in strings, where
// control characters are escaped), and nlohmann's parser would stop at one and take the part
// before it for the whole body.
std::optional<nlohmann::json> parse_json_body(std::string_view text, int max_depth, bool& too_deep);

// Checks shape, types and ranges. On failure returns nullopt and fills `errors`.
std::optional<ParsedRequest> parse_task_request(const nlohmann::json& body,
                                                std::vector<FieldError>& errors,
                                                UnknownFields unknown = UnknownFields::Refuse);

// The request with `parallelism` set to n (its stored text made again).
void set_parallelism(ParsedRequest& r, std::uint32_t n);

// How many parts a conversion whose inputs hold `input_bytes` is split into automatically
// (--split-above, --split-parts): `parts` (0: `workers`, the workers the broker has) once the
// inputs reach `above` bytes (0: never), at most proto::kMaxParallelism; 1 (not split) below,
// or when that makes fewer than 2 parts.
std::uint32_t auto_parallelism(std::uint64_t input_bytes, std::uint64_t above, std::uint32_t parts,
                               std::uint32_t workers);

struct Roots {
  std::vector<std::string> inputs;  // canonical directories
  std::string output;               // canonical directory
};

// Resolves the request's paths under the roots: `spec` is the request's spec with absolute,
// checked paths on success; errors otherwise.
bool resolve_paths(const ParsedRequest& req, const Roots& roots, proto::TaskSpec& spec,
                   std::vector<FieldError>& errors);

}  // namespace ipfixweb::api

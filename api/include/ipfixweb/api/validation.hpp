// Pure request validation for the HTTP api (unit-tested without a server).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::api {

struct FieldError {
  std::string field;  // JSON pointer-ish: "pcap_files[0]", "DPI"
  std::string message;
};

// Names accepted in "analysis_list": protocol families whose breakdown the
// task summary includes (docs/api.md).
const std::vector<std::string>& analysis_names();

struct ParsedRequest {
  std::vector<std::string> pcap_files;  // as given (relative to an input root)
  std::string output_path;              // as given (relative to the output root)
  bool dpi = true;
  std::vector<std::string> analysis;
  int priority = 0;
  double idle_timeout = 300;
  double active_timeout = 1800;
  std::string filter;
  // The request as stored: JSON text with the defaults filled in, keys in
  // sorted order (the same text nlohmann::json::dump() writes for it).
  std::string normalised;
};

// Checks shape and types. On failure returns nullopt and fills `errors`.
std::optional<ParsedRequest> parse_task_request(const nlohmann::json& body,
                                                std::vector<FieldError>& errors);

struct Roots {
  std::vector<std::string> inputs;  // canonical directories
  std::string output;               // canonical directory
};

// Resolves paths under the roots; fills spec on success, errors otherwise.
bool resolve_paths(const ParsedRequest& req, const Roots& roots, proto::TaskSpec& spec,
                   std::vector<FieldError>& errors);

}  // namespace ipfixweb::api

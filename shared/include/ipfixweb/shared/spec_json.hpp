// JSON form of proto::TaskSpec, as stored in the tasks.spec column.
#pragma once

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::proto {

inline nlohmann::json spec_to_json(const TaskSpec& s) {
  return {{"inputs", s.inputs},
          {"output", s.output},
          {"dpi", s.dpi},
          {"analysis", s.analysis},
          {"idle_timeout", s.idle_timeout},
          {"active_timeout", s.active_timeout},
          {"filter", s.filter}};
}

// Throws nlohmann::json::exception on a malformed document.
inline TaskSpec spec_from_json(const nlohmann::json& j) {
  TaskSpec s;
  s.inputs = j.at("inputs").get<std::vector<std::string>>();
  s.output = j.at("output").get<std::string>();
  s.dpi = j.value("dpi", true);
  s.analysis = j.value("analysis", std::vector<std::string>{});
  s.idle_timeout = j.value("idle_timeout", 300.0);
  s.active_timeout = j.value("active_timeout", 1800.0);
  s.filter = j.value("filter", std::string{});
  return s;
}

}  // namespace ipfixweb::proto

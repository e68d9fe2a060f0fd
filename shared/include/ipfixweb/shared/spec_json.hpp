// JSON form of proto::TaskSpec, as stored in the tasks.spec column.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/json_escape.hpp"
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

// The same text as spec_to_json(s).dump() (keys sorted, numbers as nlohmann
// writes them), written directly: building and dumping the json tree was a
// tenth of the broker's time per submission. Strings that are not all ASCII
// take the nlohmann way, which also refuses invalid UTF-8 (throws
// nlohmann::json::exception) as before.
inline std::string spec_to_json_text(const TaskSpec& s) {
  auto ascii = [](std::string_view v) {
    for (char c : v)
      if (static_cast<unsigned char>(c) >= 0x80) return false;
    return true;
  };
  bool all_ascii = ascii(s.output) && ascii(s.filter);
  for (auto& v : s.inputs) all_ascii = all_ascii && ascii(v);
  for (auto& v : s.analysis) all_ascii = all_ascii && ascii(v);
  if (!all_ascii) return spec_to_json(s).dump();
  std::string out;
  out.reserve(160 + s.output.size() + s.filter.size() + 64 * s.inputs.size());
  auto number = [&out](double d) { out += nlohmann::json(d).dump(); };
  out += "{\"active_timeout\":";
  number(s.active_timeout);
  out += ",\"analysis\":";
  append_json_string_array(out, s.analysis);
  out += s.dpi ? ",\"dpi\":true" : ",\"dpi\":false";
  out += ",\"filter\":";
  append_json_string(out, s.filter);
  out += ",\"idle_timeout\":";
  number(s.idle_timeout);
  out += ",\"inputs\":";
  append_json_string_array(out, s.inputs);
  out += ",\"output\":";
  append_json_string(out, s.output);
  out.push_back('}');
  return out;
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

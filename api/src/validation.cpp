#include "ipfixweb/api/validation.hpp"

#include <algorithm>
#include <cmath>

#include <pcap/pcap.h>

#include "ipfixweb/shared/json_escape.hpp"
#include "ipfixweb/shared/paths.hpp"

namespace ipfixweb::api {

namespace {
constexpr std::size_t kMaxFiles = 1000;

std::string type_name(const nlohmann::json& v) { return v.type_name(); }

// The stored form of a valid request, written directly (building a json tree
// to dump it cost more than the rest of the validation). Byte for byte what
// nlohmann writes for the same object: keys sorted, numbers in its format,
// strings (valid UTF-8: the parser checked) escaped the same way.
std::string normalised_text(const ParsedRequest& r) {
  std::string out;
  out.reserve(200 + r.output_path.size() + r.filter.size() + 32 * r.pcap_files.size());
  out += r.dpi ? "{\"DPI\":true" : "{\"DPI\":false";
  out += ",\"active_timeout\":";
  out += nlohmann::json(r.active_timeout).dump();
  out += ",\"analysis_list\":";
  append_json_string_array(out, r.analysis);
  out += ",\"filter\":";
  append_json_string(out, r.filter);
  out += ",\"idle_timeout\":";
  out += nlohmann::json(r.idle_timeout).dump();
  out += ",\"output_path\":";
  append_json_string(out, r.output_path);
  out += ",\"pcap_files\":";
  append_json_string_array(out, r.pcap_files);
  out += ",\"priority\":";
  out += std::to_string(r.priority);
  out.push_back('}');
  return out;
}

// Compiles the filter for Ethernet to catch syntax errors at submission
// rather than as a failed task. (Filters that only make sense for another
// link type still compile here; the engine checks again per capture.)
std::string bpf_problem(const std::string& filter) {
  if (filter.empty()) return {};
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
  if (!dead) return {};
  bpf_program prog{};
  std::string why;
  if (pcap_compile(dead, &prog, filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
    why = std::string("not a valid BPF filter: ") + pcap_geterr(dead);
  else
    pcap_freecode(&prog);
  pcap_close(dead);
  return why;
}
}  // namespace

const std::vector<std::string>& analysis_names() {
  static const std::vector<std::string> names = {"tcp", "udp",  "icmp", "dns",
                                                 "tls", "http", "quic", "other"};
  return names;
}

std::optional<ParsedRequest> parse_task_request(const nlohmann::json& body,
                                                std::vector<FieldError>& errors) {
  if (!body.is_object()) {
    errors.push_back({"", "request body must be a JSON object, not " + type_name(body)});
    return std::nullopt;
  }
  ParsedRequest r;
  // pcap_files: required non-empty array of non-empty strings.
  if (!body.contains("pcap_files")) {
    errors.push_back({"pcap_files", "is required"});
  } else if (const auto& f = body["pcap_files"]; !f.is_array()) {
    errors.push_back({"pcap_files", "must be an array of strings, not " + type_name(f)});
  } else if (f.empty()) {
    errors.push_back({"pcap_files", "must name at least one capture"});
  } else if (f.size() > kMaxFiles) {
    errors.push_back({"pcap_files", "at most " + std::to_string(kMaxFiles) + " files"});
  } else {
    for (std::size_t i = 0; i < f.size(); ++i) {
      std::string field = "pcap_files[" + std::to_string(i) + "]";
      if (!f[i].is_string())
        errors.push_back({field, "must be a string, not " + type_name(f[i])});
      else if (f[i].get_ref<const std::string&>().empty())
        errors.push_back({field, "must not be empty"});
      else
        r.pcap_files.push_back(f[i].get<std::string>());
    }
  }
  if (!body.contains("output_path")) {
    errors.push_back({"output_path", "is required"});
  } else if (!body["output_path"].is_string()) {
    errors.push_back({"output_path", "must be a string, not " + type_name(body["output_path"])});
  } else if (body["output_path"].get_ref<const std::string&>().empty()) {
    errors.push_back({"output_path", "must not be empty"});
  } else {
    r.output_path = body["output_path"].get<std::string>();
  }
  // The original service spells it "DPI"; accept "dpi" too.
  for (const char* key : {"DPI", "dpi"}) {
    if (!body.contains(key)) continue;
    if (!body[key].is_boolean())
      errors.push_back({key, std::string("must be true or false, not ") + type_name(body[key])});
    else
      r.dpi = body[key].get<bool>();
  }
  if (body.contains("analysis_list")) {
    const auto& a = body["analysis_list"];
    if (!a.is_array()) {
      errors.push_back({"analysis_list", "must be an array of strings, not " + type_name(a)});
    } else {
      const auto& names = analysis_names();
      for (std::size_t i = 0; i < a.size(); ++i) {
        std::string field = "analysis_list[" + std::to_string(i) + "]";
        if (!a[i].is_string()) {
          errors.push_back({field, "must be a string, not " + type_name(a[i])});
          continue;
        }
        std::string v = a[i].get<std::string>();
        std::transform(v.begin(), v.end(), v.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        if (std::find(names.begin(), names.end(), v) == names.end()) {
          std::string all;
          for (auto& n : names) all += (all.empty() ? "" : ", ") + n;
          errors.push_back(
              {field, "unknown analysis '" + a[i].get<std::string>() + "' (known: " + all + ")"});
        } else if (std::find(r.analysis.begin(), r.analysis.end(), v) == r.analysis.end()) {
          r.analysis.push_back(v);
        }
      }
    }
  }
  if (body.contains("priority")) {
    const auto& p = body["priority"];
    if (!p.is_number_integer() || p.get<std::int64_t>() < -100 || p.get<std::int64_t>() > 100)
      errors.push_back({"priority", "must be an integer from -100 to 100"});
    else
      r.priority = p.get<int>();
  }
  auto timeout = [&](const char* key, double& out) {
    if (!body.contains(key)) return;
    const auto& v = body[key];
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0 ||
        v.get<double>() > 31536000)
      errors.push_back({key, "must be a number of seconds greater than 0"});
    else
      out = v.get<double>();
  };
  timeout("idle_timeout", r.idle_timeout);
  timeout("active_timeout", r.active_timeout);
  if (body.contains("filter")) {
    if (!body["filter"].is_string())
      errors.push_back({"filter", "must be a string (a BPF expression)"});
    else if (body["filter"].get_ref<const std::string&>().size() > 4096)
      errors.push_back({"filter", "is too long"});
    else if (auto why = bpf_problem(body["filter"].get<std::string>()); !why.empty())
      errors.push_back({"filter", why});
    else
      r.filter = body["filter"].get<std::string>();
  }
  if (!errors.empty()) return std::nullopt;
  r.normalised = normalised_text(r);
  return r;
}

bool resolve_paths(const ParsedRequest& req, const Roots& roots, proto::TaskSpec& spec,
                   std::vector<FieldError>& errors) {
  spec = {};
  for (std::size_t i = 0; i < req.pcap_files.size(); ++i) {
    auto r = paths::resolve_input(roots.inputs, req.pcap_files[i]);
    if (r.ok)
      spec.inputs.push_back(r.path);
    else
      errors.push_back({"pcap_files[" + std::to_string(i) + "]", r.error});
  }
  auto out = paths::resolve_output(roots.output, req.output_path);
  if (out.ok) {
    for (const auto& in : spec.inputs)
      if (in == out.path) errors.push_back({"output_path", "must not overwrite an input file"});
    spec.output = out.path;
  } else {
    errors.push_back({"output_path", out.error});
  }
  spec.dpi = req.dpi;
  spec.analysis = req.analysis;
  spec.idle_timeout = req.idle_timeout;
  spec.active_timeout = req.active_timeout;
  spec.filter = req.filter;
  return errors.empty();
}

}  // namespace ipfixweb::api

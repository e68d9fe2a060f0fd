#include "ipfixweb/api/validation.hpp"

#include "ipfixweb/flows/schema.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include <pcap/pcap.h>

#include "ipfixweb/shared/json_writer.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/spec_check.hpp"
#include "ipfixweb/shared/split.hpp"

namespace ipfixweb::api {

namespace {

using nlohmann::json;
using proto::FieldInfo;

std::string type_name(const json& v) { return v.type_name(); }

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

// What a string field's check finds wrong with a value ("" when nothing).
std::string check_problem(proto::Check check, const std::string& s) {
  if (check == proto::Check::Bpf) return bpf_problem(s);
  if (check == proto::Check::Selector && !s.empty()) return proto::selector_problem(s);
  return {};
}

std::string lower_case(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool in_range(const FieldInfo& f, double v) {
  return std::isfinite(v) && (f.min_exclusive ? v > f.min : v >= f.min) && v <= f.max;
}

std::string known_names(const FieldInfo& f) {
  std::string all;
  for (auto n : f.allowed) (all += all.empty() ? "" : ", ") += n;
  return all;
}

// ---- one reader per value type: (field info, request key, JSON value) -> value or errors ----

void read_value(const FieldInfo&, const std::string& key, const json& v, bool& out,
                std::vector<FieldError>& errors) {
  if (!v.is_boolean())
    errors.push_back({key, "must be true or false, not " + type_name(v)});
  else
    out = v.get<bool>();
}

void read_value(const FieldInfo& f, const std::string& key, const json& v, double& out,
                std::vector<FieldError>& errors) {
  if (!v.is_number() || !in_range(f, v.get<double>()))
    errors.push_back({key, std::string(f.range_error)});
  else
    out = v.get<double>();
}

template <class Int>
requires std::is_integral_v<Int>
void read_value(const FieldInfo& f, const std::string& key, const json& v, Int& out,
                std::vector<FieldError>& errors) {
  // Integers only (1.5 is not one); the range check in double is exact for every bound used
  // here (all below 2^53) and keeps negative numbers out of unsigned fields.
  if (!v.is_number_integer() || !in_range(f, v.get<double>()))
    errors.push_back({key, std::string(f.range_error)});
  else
    out = v.get<Int>();
}

void read_value(const FieldInfo& f, const std::string& key, const json& v, std::string& out,
                std::vector<FieldError>& errors) {
  if (!v.is_string()) {
    errors.push_back({key, f.type_error.empty() ? "must be a string, not " + type_name(v)
                                                : std::string(f.type_error)});
    return;
  }
  const auto& s = v.get_ref<const std::string&>();
  if (!f.allowed.empty()) {  // a closed set of names, case-insensitive
    const std::string lower = lower_case(s);
    if (std::find(f.allowed.begin(), f.allowed.end(), lower) == f.allowed.end())
      errors.push_back({key, "unknown " + std::string(f.item_name) + " '" + s.substr(0, 64) +
                                 "' (known: " + known_names(f) + ")"});
    else
      out = lower;
    return;
  }
  if (f.required && s.empty())
    errors.push_back({key, "must not be empty"});
  else if (f.max > 0 && static_cast<double>(s.size()) > f.max)
    errors.push_back({key, "is too long"});
  else if (s.find('\0') != std::string::npos)
    // The broker refuses it too (check_spec); libpcap and inet_pton would read up to it
    // (found by fuzz_task_request: "tcp \u0000..." compiled as "tcp ").
    errors.push_back({key, "contains a NUL byte"});
  else if (auto why = check_problem(f.check, s); !why.empty())
    errors.push_back({key, why});
  else
    out = s;
}

void read_value(const FieldInfo& f, const std::string& key, const json& v,
                std::vector<std::string>& out, std::vector<FieldError>& errors) {
  if (!v.is_array()) {
    errors.push_back({key, "must be an array of strings, not " + type_name(v)});
    return;
  }
  if (f.min >= 1 && v.empty()) {
    errors.push_back({key, std::string(f.empty_error)});
    return;
  }
  if (f.max > 0 && static_cast<double>(v.size()) > f.max) {
    errors.push_back({key, std::string(f.range_error)});
    return;
  }
  out.clear();
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string item_key = key + "[" + std::to_string(i) + "]";
    if (!v[i].is_string()) {
      errors.push_back({item_key, "must be a string, not " + type_name(v[i])});
      continue;
    }
    std::string s = v[i].get<std::string>();
    if (f.allowed.empty()) {
      if (s.empty())
        errors.push_back({item_key, "must not be empty"});
      else if (s.find('\0') != std::string::npos)
        errors.push_back({item_key, "contains a NUL byte"});
      else
        out.push_back(std::move(s));
      continue;
    }
    // A closed set of names: case-insensitive, duplicates dropped.
    std::string lower = lower_case(s);
    if (std::find(f.allowed.begin(), f.allowed.end(), lower) == f.allowed.end())
      errors.push_back({item_key, "unknown " + std::string(f.item_name) + " '" + s +
                                      "' (known: " + known_names(f) + ")"});
    else if (std::find(out.begin(), out.end(), lower) == out.end())
      out.push_back(std::move(lower));
  }
}

// Reads one field of the request into `owner`, under its key or its alias.
template <class Field, class Owner>
void read_field(const Field& f, const json& body, Owner& owner, std::vector<FieldError>& errors) {
  bool present = false;
  for (auto k : {f.info.request_key, f.info.alias}) {
    if (k.empty()) continue;
    auto it = body.find(k);
    if (it == body.end()) continue;
    present = true;
    read_value(f.info, std::string(k), *it, owner.*f.member, errors);
  }
  if (!present && f.info.required)
    errors.push_back({std::string(f.info.request_key), "is required"});
}

bool known_key(std::string_view k) {
  bool known = false;
  auto check = [&](const auto& f) { known |= f.info.request_key == k || f.info.alias == k; };
  proto::for_each_field(proto::kTaskSpecFields, check);
  proto::for_each_field(proto::kRequestExtraFields, check);
  return known;
}

// ---- the stored text: every request field in key order ----

struct RequestWriter {
  std::string_view key;
  void (*write)(JsonWriter&, const ParsedRequest&);
  bool (*omitted)(const ParsedRequest&);  // true: at its default and omitted (omit_default)
};

const proto::TaskSpec& part(const ParsedRequest& r, const proto::TaskSpec*) { return r.spec; }
const proto::RequestExtras& part(const ParsedRequest& r, const proto::RequestExtras*) {
  return r.extras;
}

template <const auto& Fields, std::size_t I>
RequestWriter request_writer() {
  using F = std::tuple_element_t<I, std::remove_cvref_t<decltype(Fields)>>;
  using Owner = typename F::owner_type;
  return {std::get<I>(Fields).info.request_key,
          [](JsonWriter& w, const ParsedRequest& r) {
            w.value(part(r, static_cast<const Owner*>(nullptr)).*std::get<I>(Fields).member);
          },
          [](const ParsedRequest& r) {
            const auto& f = std::get<I>(Fields);
            return f.info.omit_default &&
                   part(r, static_cast<const Owner*>(nullptr)).*f.member == Owner{}.*f.member;
          }};
}

template <const auto& Fields, std::size_t... I>
void add_writers(std::vector<RequestWriter>& out, std::index_sequence<I...>) {
  (out.push_back(request_writer<Fields, I>()), ...);
}

const std::vector<RequestWriter>& request_writers() {
  static const std::vector<RequestWriter> writers = [] {
    std::vector<RequestWriter> w;
    add_writers<proto::kTaskSpecFields>(w, std::make_index_sequence<proto::kTaskSpecFieldCount>{});
    add_writers<proto::kRequestExtraFields>(
        w, std::make_index_sequence<std::tuple_size_v<decltype(proto::kRequestExtraFields)>>{});
    std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    return w;
  }();
  return writers;
}

std::string normalised_text(const ParsedRequest& r) {
  std::string out;
  out.reserve(200 + r.spec.output.size() + r.spec.filter.size() + 32 * r.spec.inputs.size());
  JsonWriter w(out);
  w.begin_object();
  for (const auto& f : request_writers()) {
    if (f.omitted(r)) continue;
    w.key(f.key);
    f.write(w, r);
  }
  w.end_object();
  return out;
}

}  // namespace

bool json_depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

std::optional<json> parse_json_body(std::string_view text, int max_depth, bool& too_deep) {
  too_deep = !json_depth_within(text, max_depth);
  if (too_deep || text.find('\0') != std::string_view::npos) return std::nullopt;
  json body = json::parse(text, nullptr, false);
  if (body.is_discarded()) return std::nullopt;
  return body;
}

std::optional<ParsedRequest> parse_task_request(const json& body, std::vector<FieldError>& errors,
                                                UnknownFields unknown) {
  if (!body.is_object()) {
    errors.push_back({"", "request body must be a JSON object, not " + type_name(body)});
    return std::nullopt;
  }
  ParsedRequest r;
  proto::for_each_field(proto::kTaskSpecFields,
                        [&](const auto& f) { read_field(f, body, r.spec, errors); });
  proto::for_each_field(proto::kRequestExtraFields,
                        [&](const auto& f) { read_field(f, body, r.extras, errors); });
  if (errors.empty())
    if (auto k = proto::kind_problem(r.spec); !k.field.empty())
      errors.push_back({std::string(k.field), k.message});
  if (errors.empty())
    if (auto k = proto::split_problem(r.spec, r.extras.parallelism); !k.field.empty())
      errors.push_back({std::string(k.field), k.message});
  if (unknown == UnknownFields::Refuse)
    for (const auto& [k, v] : body.items())
      if (!known_key(k)) errors.push_back({k, "is not a known field"});
  if (!errors.empty()) return std::nullopt;
  r.normalised = normalised_text(r);
  return r;
}

void set_parallelism(ParsedRequest& r, std::uint32_t n) {
  r.extras.parallelism = n;
  r.normalised = normalised_text(r);
}

std::uint32_t auto_parallelism(std::uint64_t input_bytes, std::uint64_t above, std::uint32_t parts,
                               std::uint32_t workers) {
  if (above == 0 || input_bytes < above) return 1;
  const std::uint32_t n = std::min(parts ? parts : workers, proto::kMaxParallelism);
  return n >= 2 ? n : 1;
}

bool resolve_paths(const ParsedRequest& req, const Roots& roots, proto::TaskSpec& spec,
                   std::vector<FieldError>& errors) {
  spec = req.spec;
  spec.inputs.clear();
  // A merge reads the outputs of the parts it merges: files under the output root.
  const bool merge = req.spec.kind == proto::kKindMerge;
  const std::vector<std::string> output_root{roots.output};
  for (std::size_t i = 0; i < req.spec.inputs.size(); ++i) {
    const std::string field = "pcap_files[" + std::to_string(i) + "]";
    auto r = paths::resolve_input(merge ? output_root : roots.inputs, req.spec.inputs[i]);
    if (!r.ok) {
      errors.push_back({field, r.error});
      continue;
    }
    // Read twice, a capture would be metered twice (duplicate packets): never what is meant.
    const auto same = std::find(spec.inputs.begin(), spec.inputs.end(), r.path);
    if (same != spec.inputs.end())
      errors.push_back({field, "names the same capture as an earlier entry (" + *same + ")"});
    else
      spec.inputs.push_back(r.path);
  }
  auto out = paths::resolve_output(roots.output, req.spec.output);
  if (out.ok) {
    for (const auto& in : spec.inputs)
      if (in == out.path) errors.push_back({"output_path", "must not overwrite an input file"});
    if (flows::is_store_name(out.path))
      errors.push_back({"output_path",
                        "must not end in .flows.sqlite (the name of a task's "
                        "flow store, which is written beside its output)"});
    spec.output = out.path;
  } else {
    errors.push_back({"output_path", out.error});
  }
  return errors.empty();
}

}  // namespace ipfixweb::api

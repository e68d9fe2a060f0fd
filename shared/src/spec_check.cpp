#include "ipfixweb/shared/spec_check.hpp"

#include <cmath>
#include <filesystem>
#include <set>
#include <type_traits>

#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/flows/selector.hpp"
#include "ipfixweb/shared/paths.hpp"

namespace ipfixweb::proto {
namespace {

std::string number_text(double v) {
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// The descriptor's range and list rules on one member, whatever its type.
template <class T>
std::string check_value(const T& v, const FieldInfo& f) {
  const std::string key(f.key);
  if constexpr (std::is_same_v<T, bool>) {
    return {};
  } else if constexpr (std::is_arithmetic_v<T>) {
    const double d = static_cast<double>(v);
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(v)) return key + " is not a finite number";
    if (f.min == 0 && f.max == 0) return {};
    const bool low = f.min_exclusive ? d <= f.min : d < f.min;
    if (low || d > f.max)
      return key + " is out of range (" + number_text(d) + "; allowed " +
             (f.min_exclusive ? "above " : "from ") + number_text(f.min) + " to " +
             number_text(f.max) + ")";
    return {};
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (f.required && v.empty()) return key + " is empty";
    if (f.max > 0 && static_cast<double>(v.size()) > f.max)
      return key + " is longer than " + number_text(f.max) + " bytes";
    if (v.find('\0') != std::string::npos) return key + " contains a NUL byte";
    if (!f.allowed.empty()) {
      bool ok = false;
      for (auto a : f.allowed) ok |= a == v;
      if (!ok) return key + " is not a known " + std::string(f.item_name);
    }
    if (f.check == Check::Selector && !v.empty())
      if (auto why = selector_problem(v); !why.empty()) return key + ": " + why;
    return {};
  } else {  // std::vector<std::string>
    if (f.required && v.empty()) return key + " is empty";
    if (f.max > 0 && static_cast<double>(v.size()) > f.max)
      return key + " has more than " + number_text(f.max) + " items";
    if (!f.allowed.empty())
      for (const auto& item : v) {
        bool ok = false;
        for (auto a : f.allowed) ok |= a == item;
        if (!ok) return key + " has an unknown item '" + item.substr(0, 64) + "'";
      }
    return {};
  }
}

template <class Owner, class Fields>
std::string check_fields(const Owner& owner, const Fields& fields) {
  std::string problem;
  for_each_field(fields, [&](const auto& field) {
    if (problem.empty()) problem = check_value(owner.*field.member, field.info);
  });
  return problem;
}

bool inside_any(const std::vector<std::string>& roots, const std::string& path) {
  for (const auto& r : roots)
    if (path != r && paths::is_within(r, path)) return true;
  return false;
}

}  // namespace

bool is_normal_absolute(const std::string& p) {
  if (p.empty() || p.front() != '/' || p.size() > 4096) return false;
  if (p.find('\0') != std::string::npos) return false;
  if (p.size() > 1 && p.back() == '/') return false;
  for (std::size_t start = 1; start <= p.size();) {
    const std::size_t slash = std::min(p.find('/', start), p.size());
    const std::string_view part(p.data() + start, slash - start);
    if (p.size() > 1 && (part.empty() || part == "." || part == "..")) return false;
    start = slash + 1;
  }
  return true;
}

std::string normal_root(const std::string& dir) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(dir, ec);
  auto p = std::filesystem::weakly_canonical(ec ? std::filesystem::path(dir) : abs, ec)
               .lexically_normal()
               .string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string selector_problem(const std::string& text) {
  const auto parsed = flows::parse_selector(text);
  if (const auto* e = std::get_if<flows::SelectorError>(&parsed))
    return "not a flow selector: at " + std::to_string(e->position) + ": " + e->message;
  return {};
}

KindProblem kind_problem(const TaskSpec& spec) {
  const bool extract = spec.kind == kKindExtract;
  if (extract && spec.flow.empty()) return {"flow", "is required for kind extract"};
  if (!extract && !spec.flow.empty()) return {"flow", "applies to kind extract only"};
  if ((spec.kind == kKindIngest || spec.kind == kKindMerge) && !spec.filter.empty())
    return {"filter",
            "applies to captures, not to kind " + spec.kind + " (whose inputs are IPFIX files)"};
  if (spec.partitions > 1 && spec.kind != kKindConvert)
    return {"partitions", "applies to kind convert only"};
  if (spec.partition >= spec.partitions)
    return {"partition", "must be less than partitions (" + std::to_string(spec.partitions) + ")"};
  return {};
}

std::string check_spec(const TaskSpec& spec, const SpecRoots& roots) {
  if (auto problem = check_fields(spec, kTaskSpecFields); !problem.empty()) return problem;
  if (auto k = kind_problem(spec); !k.field.empty()) return std::string(k.field) + " " + k.message;
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < spec.inputs.size(); ++i) {
    const auto& in = spec.inputs[i];
    const std::string where = "inputs[" + std::to_string(i) + "]";
    if (!is_normal_absolute(in)) return where + " is not an absolute, normalised path";
    if (spec.kind == kKindMerge) {  // the parts' outputs
      if (!inside_any({roots.output}, in)) return where + " is outside the output root";
    } else if (!inside_any(roots.inputs, in)) {
      return where + " is outside every input root";
    }
    if (!seen.insert(in).second) return where + " names a capture twice";
  }
  if (!is_normal_absolute(spec.output)) return "output is not an absolute, normalised path";
  if (!inside_any({roots.output}, spec.output)) return "output is outside the output root";
  if (seen.count(spec.output)) return "output names an input";
  if (flows::is_store_name(spec.output)) return "output has a flow store's name";
  return {};
}

std::string check_extras(const RequestExtras& extras) {
  return check_fields(extras, kRequestExtraFields);
}

}  // namespace ipfixweb::proto

#include "fields.hpp"

#include <algorithm>

namespace ipfixweb::flows::detail {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

const Column* find_exported(std::string_view lowered, bool* not_exported) {
  if (not_exported) *not_exported = false;
  std::string_view name = lowered;
  for (const auto& a : kAliases)
    if (a.name == lowered) name = a.column;
  int i = column_index(name);
  if (i < 0) return nullptr;
  const Column& c = kFlowColumns[static_cast<std::size_t>(i)];
  if (!c.exported) {
    if (not_exported) *not_exported = true;
    return nullptr;
  }
  return &c;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and transpositions of
  // neighbours ("tpc" is one edit from "tcp").
  const std::size_t w = b.size() + 1;
  std::vector<std::size_t> d((a.size() + 1) * w);
  for (std::size_t i = 0; i <= a.size(); ++i) d[i * w] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      std::size_t v =
          std::min({d[(i - 1) * w + j] + 1, d[i * w + j - 1] + 1, d[(i - 1) * w + j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        v = std::min(v, d[(i - 2) * w + j - 2] + 1);
      d[i * w + j] = v;
    }
  }
  return d[a.size() * w + b.size()];
}

std::string_view closest(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string w = lower(word);
  std::string_view best;
  std::size_t best_d = 0;
  for (auto c : candidates) {
    std::size_t d = edit_distance(w, c);
    if (best.empty() || d < best_d) {
      best = c;
      best_d = d;
    }
  }
  // A typo: at most 2 edits, and fewer than half the word.
  if (best.empty() || best_d > 2 || best_d * 2 >= std::max(w.size(), best.size())) return {};
  return best;
}

}  // namespace ipfixweb::flows::detail

namespace ipfixweb::flows {

bool nullable(const Column& c) {
  return c.sql.find("NOT NULL") == std::string_view::npos &&
         c.sql.find("PRIMARY KEY") == std::string_view::npos &&
         c.sql.find("GENERATED") == std::string_view::npos;
}

std::vector<std::string_view> field_names() {
  std::vector<std::string_view> names;
  for (const auto& c : kFlowColumns)
    if (c.exported) names.push_back(c.name);
  for (const auto& a : kAliases) names.push_back(a.name);
  return names;
}

}  // namespace ipfixweb::flows

namespace ipfixweb::flows::detail {

std::vector<std::string_view> exported_names() { return field_names(); }

}  // namespace ipfixweb::flows::detail

// JSON form of proto::TaskSpec, as stored in the tasks.spec column: an object keyed by
// FieldInfo::key (task_spec.hpp), keys in byte order (what nlohmann::json::dump() writes).
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/json_writer.hpp"
#include "ipfixweb/shared/task_spec.hpp"

namespace ipfixweb::proto {

namespace detail {

// A field's key and its writer, for writing an owner's fields in key order.
template <class Owner>
struct KeyedWriter {
  std::string_view key;
  void (*write)(JsonWriter&, const Owner&);
};

// The writers of Fields (a tuple of Field<Owner, T>), sorted by key.
template <const auto& Fields, class Owner, std::size_t... I>
constexpr auto keyed_writers(std::index_sequence<I...>) {
  std::array<KeyedWriter<Owner>, sizeof...(I)> out{KeyedWriter<Owner>{
      std::get<I>(Fields).info.key,
      [](JsonWriter& w, const Owner& o) { w.value(o.*(std::get<I>(Fields).member)); }}...};
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  return out;
}

}  // namespace detail

// The stored text. Throws nlohmann::json::exception when a string is not valid UTF-8 (a path
// that cannot be stored faithfully is refused, never altered).
inline std::string spec_to_json_text(const TaskSpec& s) {
  static constexpr auto kWriters = detail::keyed_writers<kTaskSpecFields, TaskSpec>(
      std::make_index_sequence<kTaskSpecFieldCount>{});
  std::string out;
  out.reserve(192 + s.output.size() + s.filter.size() + 64 * s.inputs.size());
  JsonWriter w(out, JsonWriter::Utf8::Strict);
  w.begin_object();
  for (const auto& f : kWriters) {
    w.key(f.key);
    f.write(w, s);
  }
  w.end_object();
  return out;
}

inline nlohmann::json spec_to_json(const TaskSpec& s) {
  return nlohmann::json::parse(spec_to_json_text(s));
}

// Missing keys keep their defaults (rows stored before a field existed); `inputs` and `output`
// are required. Throws nlohmann::json::exception on a malformed document.
inline TaskSpec spec_from_json(const nlohmann::json& j) {
  TaskSpec s;
  for_each_field(kTaskSpecFields, [&](const auto& f) {
    if (f.info.required)
      j.at(std::string(f.info.key)).get_to(s.*f.member);
    else if (auto it = j.find(f.info.key); it != j.end())
      it->get_to(s.*f.member);
  });
  return s;
}

}  // namespace ipfixweb::proto

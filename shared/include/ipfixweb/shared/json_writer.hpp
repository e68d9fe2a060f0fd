// The one JSON text writer, for the places whose speed matters (the task summary, stored
// requests and specs, rendered tasks, replies). It writes what nlohmann::json::dump() writes
// for the same document: no spaces, strings escaped alike, numbers in its format, text that is
// not UTF-8 replaced by U+FFFD (nlohmann's error_handler_t::replace) or, with Utf8::Strict,
// refused with nlohmann's exception (for text that must not change: paths). Build a document with
// nlohmann where clarity matters more than speed.
//
//   std::string out;
//   JsonWriter w(out);
//   w.begin_object();
//   w.key("packets").value(std::uint64_t{347});
//   w.key("names").string_array(names);
//   w.end_object();
#pragma once

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/json_escape.hpp"

namespace ipfixweb {

class JsonWriter {
 public:
  enum class Utf8 : bool { Replace, Strict };
  explicit JsonWriter(std::string& out, Utf8 utf8 = Utf8::Replace) : s_(out), utf8_(utf8) {}

  JsonWriter& begin_object() { return open('{'); }
  JsonWriter& end_object() { return close('}'); }
  JsonWriter& begin_array() { return open('['); }
  JsonWriter& end_array() { return close(']'); }

  // An object's key; the value written next takes no comma.
  JsonWriter& key(std::string_view k) {
    comma();
    string_text(k);
    s_.push_back(':');
    first_ = true;
    return *this;
  }

  JsonWriter& value(std::string_view v) {
    comma();
    string_text(v);
    return *this;
  }
  JsonWriter& value(const std::string& v) { return value(std::string_view(v)); }
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(bool v) {
    comma();
    s_ += v ? "true" : "false";
    return *this;
  }
  JsonWriter& value(std::uint64_t v) { return integer(v); }
  JsonWriter& value(std::int64_t v) { return integer(v); }
  JsonWriter& value(std::uint32_t v) { return integer(v); }
  JsonWriter& value(std::int32_t v) { return integer(v); }
  JsonWriter& value(double v) {
    comma();
    // nlohmann's number format, to the digit (300.0, 0.1, 1e+100); cheap next to the rest.
    s_ += nlohmann::json(v).dump();
    return *this;
  }
  JsonWriter& null() {
    comma();
    s_ += "null";
    return *this;
  }
  // JSON text written as it is (a stored document spliced in); empty: null.
  JsonWriter& raw(std::string_view json_text) {
    comma();
    s_ += json_text.empty() ? std::string_view("null") : json_text;
    return *this;
  }
  // A string, or null when empty.
  JsonWriter& string_or_null(std::string_view v) { return v.empty() ? null() : value(v); }
  template <class Strings>
  JsonWriter& string_array(const Strings& items) {
    begin_array();
    for (const auto& item : items) value(std::string_view(item));
    return end_array();
  }
  JsonWriter& value(const std::vector<std::string>& items) { return string_array(items); }

 private:
  void comma() {
    if (!first_) s_.push_back(',');
    first_ = false;
  }
  JsonWriter& open(char c) {
    comma();
    s_.push_back(c);
    first_ = true;
    return *this;
  }
  JsonWriter& close(char c) {
    s_.push_back(c);
    first_ = false;
    return *this;
  }
  template <class Int>
  JsonWriter& integer(Int v) {
    comma();
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    s_.append(buf, r.ptr);
    return *this;
  }
  void string_text(std::string_view v) {
    if (!is_valid_utf8(v)) {  // rare: nlohmann replaces (or refuses) what is not UTF-8
      s_ += nlohmann::json(std::string(v))
                .dump(-1, ' ', false,
                      utf8_ == Utf8::Strict ? nlohmann::json::error_handler_t::strict
                                            : nlohmann::json::error_handler_t::replace);
      return;
    }
    append_json_string(s_, v);  // the escapes nlohmann writes for UTF-8 text
  }

  std::string& s_;
  Utf8 utf8_;
  bool first_ = true;
};

}  // namespace ipfixweb

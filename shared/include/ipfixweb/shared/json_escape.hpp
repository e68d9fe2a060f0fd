// JSON string escaping for code that writes JSON text directly (log lines,
// rendered tasks): quotes, backslashes and control characters escaped.
#pragma once

#include <cstdio>
#include <string_view>

namespace ipfixweb {

// Appends the escaped body of a JSON string (without the quotes). Out needs
// push_back(char) and append(const char*, const char*): std::string and
// spdlog's memory buffer both have them.
template <class Out>
void append_json_escaped(Out& out, std::string_view s) {
  auto put = [&out](std::string_view v) { out.append(v.data(), v.data() + v.size()); };
  for (char c : s) {
    switch (c) {
      case '"':
        put("\\\"");
        break;
      case '\\':
        put("\\\\");
        break;
      case '\n':
        put("\\n");
        break;
      case '\r':
        put("\\r");
        break;
      case '\t':
        put("\\t");
        break;
      case '\b':
        put("\\b");
        break;
      case '\f':
        put("\\f");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          int n = std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out.append(buf, buf + n);
        } else {
          out.push_back(c);
        }
    }
  }
}

// Appends `s` as a quoted JSON string.
template <class Out>
void append_json_string(Out& out, std::string_view s) {
  out.push_back('"');
  append_json_escaped(out, s);
  out.push_back('"');
}

// Appends a JSON array of strings, written as nlohmann writes it (no spaces).
template <class Out, class Strings>
void append_json_string_array(Out& out, const Strings& items) {
  out.push_back('[');
  bool first = true;
  for (const auto& item : items) {
    if (!first) out.push_back(',');
    first = false;
    append_json_string(out, item);
  }
  out.push_back(']');
}

}  // namespace ipfixweb

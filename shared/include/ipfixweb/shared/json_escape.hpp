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
  const char* run = s.data();  // characters that need no escape are appended a run at a time
  const char* const end = s.data() + s.size();
  for (const char* p = run; p != end; ++p) {
    const char c = *p;
    if (static_cast<unsigned char>(c) >= 0x20 && c != '"' && c != '\\') continue;
    out.append(run, p);
    run = p + 1;
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
      default: {
        char buf[8];
        int n = std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out.append(buf, buf + n);
      }
    }
  }
  out.append(run, end);
}

// Whether `s` is well-formed UTF-8 (Unicode table 3-7: no overlong forms, no surrogates,
// nothing above U+10FFFF). Text that is not needs replacing before it goes into JSON.
inline bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n = 0;
    unsigned lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= n; ++i)
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    p += n + 1;
  }
  return true;
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

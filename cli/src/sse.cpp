#include "ipfixweb/cli/sse.hpp"

#include <cctype>

namespace ipfixweb::cli {

bool SseParser::feed(std::string_view bytes) {
  if (stopped_) return false;
  for (char c : bytes) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n') continue;
    }
    if (c == '\r' || c == '\n') {
      skip_lf_ = c == '\r';
      std::string l;
      l.swap(partial_);
      if (!started_) {
        started_ = true;
        if (l.rfind("\xEF\xBB\xBF", 0) == 0) l.erase(0, 3);  // a leading BOM
      }
      if (!line(l)) {
        stopped_ = true;
        return false;
      }
      continue;
    }
    partial_ += c;
    if (partial_.size() > (16u << 20)) partial_.clear();  // a runaway line is dropped
  }
  return true;
}

bool SseParser::line(std::string_view l) {
  if (l.empty()) {
    // Dispatch. The last event id counts from here: an `id:` of an event cut off before its
    // blank line is not taken (a reconnection then replays that event).
    last_id_ = id_buffer_;
    const bool had = has_data_;
    SseEvent e;
    e.type = type_.empty() ? "message" : type_;
    e.data = std::move(data_);
    e.id = last_id_;
    type_.clear();
    data_.clear();
    has_data_ = false;
    if (!had) return true;
    return on_event_(e);
  }
  if (l.front() == ':') {
    ++comments_;
    return true;
  }
  const auto colon = l.find(':');
  std::string_view field = l.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    type_ = std::string(value);
  } else if (field == "data") {
    if (has_data_) data_ += '\n';
    data_ += value;
    has_data_ = true;
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_buffer_ = std::string(value);
  } else if (field == "retry") {
    bool digits = !value.empty();
    for (char c : value) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (digits && value.size() < 12) retry_ms_ = std::stol(std::string(value));
  }
  return true;
}

}  // namespace ipfixweb::cli

// Server-sent events (the WHATWG HTML "event stream" format): the bytes of a text/event-stream
// in any pieces, events out.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace ipfixweb::cli {

struct SseEvent {
  std::string type = "message";  // the `event:` field
  std::string data;              // the `data:` lines joined by "\n"
  std::string id;                // the last `id:` of the stream up to this event
};

class SseParser {
 public:
  // Called for every complete event; false stops the parser (feed() then returns false).
  using Handler = std::function<bool(const SseEvent&)>;
  explicit SseParser(Handler on_event) : on_event_(std::move(on_event)) {}

  // Takes the next bytes of the stream (lines may be cut anywhere, also between CR and LF).
  bool feed(std::string_view bytes);

  // The id of the last event dispatched (what a reconnection sends as Last-Event-ID).
  const std::string& last_id() const { return last_id_; }
  // The server's `retry:` in milliseconds, when it sent one.
  std::optional<long> retry_ms() const { return retry_ms_; }
  // Comment lines (keep-alives) seen.
  long comments() const { return comments_; }

 private:
  bool line(std::string_view l);

  Handler on_event_;
  std::string partial_;
  bool skip_lf_ = false;
  bool stopped_ = false;
  bool started_ = false;
  std::string type_, data_, id_buffer_, last_id_;
  bool has_data_ = false;
  std::optional<long> retry_ms_;
  long comments_ = 0;
};

}  // namespace ipfixweb::cli

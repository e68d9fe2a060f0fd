// A streaming multipart/form-data parser (RFC 7578) for uploads from browsers: the body is
// fed piece by piece as it arrives and its parts come out as events, the file's content in
// pieces too, so that memory stays bounded whatever the file's size (a part's header fields
// at most 16 KiB, plus the length of the boundary).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace ipfixweb::api {

// The boundary of a "multipart/form-data; boundary=..." Content-Type; nullopt without one
// (or one longer than RFC 2046's 70 characters).
std::optional<std::string> multipart_boundary(const std::string& content_type);

class MultipartParser {
 public:
  struct Event {
    enum class Kind { PartStart, Data, PartEnd } kind;
    std::string name;       // PartStart: the form field's name
    std::string filename;   // PartStart: its file name, "" when it is not a file
    std::string_view data;  // Data: the next bytes of the part's content
  };
  explicit MultipartParser(std::string boundary);
  // Feeds the next bytes of the body; false when the body is malformed (see error()).
  bool feed(std::string_view data, const std::function<void(const Event&)>& on);
  // The closing boundary was seen.
  bool complete() const { return state_ == State::Done; }
  const std::string& error() const { return error_; }

 private:
  enum class State { Preamble, AfterBoundary, Headers, Body, Done, Failed };
  bool fail(std::string why);
  bool parse_headers(std::string_view block, Event& start);
  std::string delim_;  // "\r\n--" + boundary
  std::string buf_;
  State state_ = State::Preamble;
  std::string error_;
};

}  // namespace ipfixweb::api

#include "ipfixweb/api/multipart.hpp"

#include <algorithm>
#include <cctype>

namespace ipfixweb::api {

namespace {

// Bounds on what is held before the next boundary or the end of a part's header fields. Each
// is a bound on where that thing starts in the body, not on how much happens to be buffered:
// a body is accepted or refused the same way whatever pieces it arrives in.
constexpr std::size_t kMaxHeaders = 16 * 1024;   // a part's header fields
constexpr std::size_t kMaxPreamble = 64 * 1024;  // before the first boundary
constexpr std::size_t kMaxPadding = 256;         // spaces and tabs after a boundary

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The value of parameter `key` in a header value ("form-data; name=\"file\"").
std::string param(std::string_view value, std::string_view key) {
  const std::string l = lower(value);
  std::size_t at = 0;
  for (;;) {
    at = l.find(std::string(key) + "=", at);
    if (at == std::string::npos) return "";
    // A whole parameter name: after ';' or a space.
    if (at > 0 && l[at - 1] != ';' && l[at - 1] != ' ') {
      at += key.size();
      continue;
    }
    std::string_view rest = value.substr(at + key.size() + 1);
    if (!rest.empty() && rest.front() == '"') {
      std::string out;
      for (std::size_t i = 1; i < rest.size(); ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) {
          out += rest[++i];
        } else if (rest[i] == '"') {
          return out;
        } else {
          out += rest[i];
        }
      }
      return out;
    }
    return std::string(rest.substr(0, rest.find(';')));
  }
}

}  // namespace

std::optional<std::string> multipart_boundary(const std::string& content_type) {
  std::string b = param(content_type, "boundary");
  while (!b.empty() && b.back() == ' ') b.pop_back();
  if (b.empty() || b.size() > 70) return std::nullopt;
  return b;
}

MultipartParser::MultipartParser(std::string boundary) : delim_("\r\n--" + boundary) {}

bool MultipartParser::fail(std::string why) {
  state_ = State::Failed;
  error_ = std::move(why);
  return false;
}

bool MultipartParser::parse_headers(std::string_view block, Event& start) {
  bool disposition = false;
  while (!block.empty()) {
    const auto eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol == std::string_view::npos ? block.size() : eol + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return fail("a part's header line has no ':'");
    if (lower(line.substr(0, colon)) != "content-disposition") continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (lower(value.substr(0, 9)) != "form-data") return fail("a part is not form-data");
    start.name = param(value, "name");
    start.filename = param(value, "filename");
    disposition = true;
  }
  if (!disposition) return fail("a part has no Content-Disposition");
  return true;
}

bool MultipartParser::feed(std::string_view data, const std::function<void(const Event&)>& on) {
  if (state_ == State::Failed) return false;
  if (state_ == State::Done) return true;  // the epilogue is ignored
  buf_.append(data);
  for (;;) {
    switch (state_) {
      case State::Preamble: {
        // The first boundary may open the body (no CRLF before it).
        const std::string_view first(delim_.data() + 2, delim_.size() - 2);
        std::size_t at = buf_.rfind(first, 0) == 0 ? 0 : std::string::npos;
        std::size_t skip = first.size();
        if (at == std::string::npos) {
          at = buf_.find(delim_);
          skip = delim_.size();
        }
        // No boundary starting within the first 64 KiB: one found later is too late, and once
        // that much more than a delimiter is here, none can start in time.
        if (at == std::string::npos ? buf_.size() >= kMaxPreamble + delim_.size()
                                    : at > kMaxPreamble)
          return fail("no boundary in the first 64 KiB");
        if (at == std::string::npos) return true;
        buf_.erase(0, at + skip);
        state_ = State::AfterBoundary;
        break;
      }
      case State::AfterBoundary: {
        if (buf_.size() < 2) return true;
        if (buf_.compare(0, 2, "--") == 0) {
          state_ = State::Done;
          buf_.clear();
          return true;
        }
        // Transport padding (spaces, tabs) may follow a boundary before its CRLF.
        const auto eol = buf_.find("\r\n");
        if (eol == std::string::npos ? buf_.size() >= kMaxPadding + 2 : eol > kMaxPadding)
          return fail("a boundary is not followed by a line end");
        if (eol == std::string::npos) return true;
        if (buf_.find_first_not_of(" \t", 0) != eol) return fail("garbage after a boundary");
        buf_.erase(0, eol + 2);
        state_ = State::Headers;
        break;
      }
      case State::Headers: {
        const auto end = buf_.find("\r\n\r\n");
        if (end == std::string::npos ? buf_.size() >= kMaxHeaders + 4 : end > kMaxHeaders)
          return fail("a part's header is larger than 16 KiB");
        if (end == std::string::npos) {
          // A part without header fields ("\r\n" at once) has none to parse.
          if (buf_.rfind("\r\n", 0) == 0) return fail("a part has no Content-Disposition");
          return true;
        }
        Event start{Event::Kind::PartStart, {}, {}, {}};
        if (!parse_headers(std::string_view(buf_).substr(0, end), start)) return false;
        buf_.erase(0, end + 4);
        on(start);
        state_ = State::Body;
        break;
      }
      case State::Body: {
        const auto at = buf_.find(delim_);
        if (at == std::string::npos) {
          // All but what may be the start of the delimiter.
          const std::size_t keep = std::min(buf_.size(), delim_.size() - 1);
          const std::size_t give = buf_.size() - keep;
          if (give > 0) {
            on(Event{Event::Kind::Data, {}, {}, std::string_view(buf_.data(), give)});
            buf_.erase(0, give);
          }
          return true;
        }
        if (at > 0) on(Event{Event::Kind::Data, {}, {}, std::string_view(buf_.data(), at)});
        on(Event{Event::Kind::PartEnd, {}, {}, {}});
        buf_.erase(0, at + delim_.size());
        state_ = State::AfterBoundary;
        break;
      }
      case State::Done:
        buf_.clear();
        return true;
      case State::Failed:
        return false;
    }
  }
}

}  // namespace ipfixweb::api

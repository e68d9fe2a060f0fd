// libFuzzer target: the streaming multipart/form-data parser of browser uploads
// (api/src/multipart.cpp; POST /api/v1/captures with a form) and the boundary parameter of
// the Content-Type it comes with.
//
// Input: the Content-Type header value, '\n', then the body. (The seeds use
// "multipart/form-data; boundary=X".)
//
// Properties checked besides "no crash, no sanitizer report":
//  - the body gives the same outcome (accepted, complete, the same parts with the same names,
//    file names and content) whatever pieces it arrives in: whole, in 13-byte pieces, in
//    4099-byte pieces, and byte by byte (bodies up to 4 KiB); the network decides the pieces,
//    so they must not decide the answer;
//  - events come in order: PartStart, Data..., PartEnd.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/api/multipart.hpp"

namespace api = ipfixweb::api;

namespace {

struct Part {
  std::string name, filename, data;
  bool ended = false;
  bool operator==(const Part&) const = default;
};

struct Outcome {
  bool ok = true;
  bool complete = false;
  std::vector<Part> parts;
  std::string error;
};

Outcome parse(const std::string& boundary, std::string_view body, std::size_t piece) {
  api::MultipartParser p(boundary);
  Outcome out;
  bool in_part = false;
  auto on = [&](const api::MultipartParser::Event& e) {
    using K = api::MultipartParser::Event::Kind;
    switch (e.kind) {
      case K::PartStart:
        FUZZ_CHECK(!in_part, "PartStart inside a part");
        in_part = true;
        out.parts.push_back({e.name, e.filename, {}, false});
        break;
      case K::Data:
        FUZZ_CHECK(in_part, "Data outside a part");
        FUZZ_CHECK(!e.data.empty(), "an empty Data event");
        out.parts.back().data.append(e.data);
        break;
      case K::PartEnd:
        FUZZ_CHECK(in_part, "PartEnd outside a part");
        in_part = false;
        out.parts.back().ended = true;
        break;
    }
  };
  for (std::size_t at = 0; at < body.size() && out.ok; at += piece) {
    out.ok = p.feed(body.substr(at, piece), on);
    if (!out.ok) FUZZ_CHECK(!p.error().empty());
  }
  if (body.empty()) out.ok = p.feed({}, on);
  out.complete = p.complete();
  FUZZ_CHECK(!out.complete || !in_part, "complete inside a part");
  out.error = p.error();
  return out;
}

std::string describe(const Outcome& o) {
  std::string s = o.ok ? "accepted" : "refused (" + o.error + ")";
  s += o.complete ? ", complete, " : ", incomplete, ";
  s += std::to_string(o.parts.size()) + " parts";
  for (const auto& p : o.parts)
    s += " [" + p.name + "|" + p.filename + "|" + std::to_string(p.data.size()) + " bytes]";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto nl = in.find('\n');
  if (nl == std::string_view::npos) return 0;
  const auto boundary = api::multipart_boundary(std::string(in.substr(0, nl)));
  if (!boundary) return 0;
  FUZZ_CHECK(!boundary->empty() && boundary->size() <= 70, *boundary);
  const std::string_view body = in.substr(nl + 1);

  const Outcome whole = parse(*boundary, body, body.size() + 1);
  std::vector<std::size_t> pieces = {13, 4099};
  if (body.size() <= 4096) pieces.push_back(1);
  for (std::size_t piece : pieces) {
    const Outcome o = parse(*boundary, body, piece);
    FUZZ_CHECK(o.ok == whole.ok && o.complete == whole.complete,
               "in pieces of " + std::to_string(piece) + ": " + describe(o) +
                   "; whole: " + describe(whole));
    if (whole.ok)
      FUZZ_CHECK(o.parts == whole.parts, "in pieces of " + std::to_string(piece) + ": " +
                                             describe(o) + "; whole: " + describe(whole));
  }
  return 0;
}

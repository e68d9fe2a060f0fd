// libFuzzer target: the body of POST /api/v1/tasks as the api takes it (api/src/server.cpp,
// submit_body): the nesting check (json_depth_within), nlohmann's parser, the field checks
// (parse_task_request, both for /api/v1/tasks, which refuses unknown fields, and for the
// compatibility routes, which ignore them), path resolution beneath real roots
// (resolve_paths) and then the broker's own check of what it would be sent (check_spec).
//
// Input: the request body, any bytes.
//
// Properties checked besides "no crash, no sanitizer report":
//  - parse_json_body (the api's reading of a body) takes a value exactly when it is the whole
//    text, and json_depth_within agrees with the depth of that value;
//  - a request is either accepted or has errors, never both or neither;
//  - the stored request text (normalised) is a JSON object that is accepted again, as the same
//    text (it is what Idempotency-Key fingerprints);
//  - a spec the api accepts and resolves passes the broker's check_spec and check_extras with
//    the same roots (else the broker would refuse what the api said was fine);
//  - the stored spec JSON reads back to the same spec.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_util.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/spec_check.hpp"
#include "ipfixweb/shared/spec_json.hpp"

using nlohmann::json;
namespace api = ipfixweb::api;
namespace proto = ipfixweb::proto;

namespace {

// Arrays and objects nested, as json_depth_within counts them.
int depth_of(const json& j) {
  if (!j.is_structured()) return 0;
  int deepest = 0;
  for (const auto& v : j) deepest = std::max(deepest, depth_of(v));
  return deepest + 1;
}

void touch(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  FUZZ_CHECK(fd >= 0, path);
  ::close(fd);
}

// Input and output roots with a few files, directories and symbolic links in them (leading
// inside and outside), canonical as the api makes them.
struct Roots {
  fuzz::TempDir dir{"task-request"};
  api::Roots roots;
  proto::SpecRoots spec_roots;
  Roots() {
    const std::string in = dir.path() + "/in", in2 = dir.path() + "/in2", out = dir.path() + "/out";
    for (const auto& d : {in, in + "/sub", in + "/dir", in2, out, out + "/d"})
      ::mkdir(d.c_str(), 0755);
    for (const auto& f :
         {in + "/a.pcap", in + "/sub/b.pcapng", in + "/x", in2 + "/c.pcap", out + "/exists.ipfix"})
      touch(f);
    FUZZ_CHECK(::symlink("a.pcap", (in + "/link").c_str()) == 0);
    FUZZ_CHECK(::symlink("/etc/hostname", (in + "/escape").c_str()) == 0);
    FUZZ_CHECK(::symlink("../in2", (in + "/to-in2").c_str()) == 0);
    FUZZ_CHECK(::symlink("/tmp", (out + "/sl").c_str()) == 0);
    FUZZ_CHECK(::symlink("d", (out + "/dl").c_str()) == 0);
    roots.inputs = {ipfixweb::paths::canonical_dir(in), ipfixweb::paths::canonical_dir(in2)};
    roots.output = ipfixweb::paths::canonical_dir(out);
    spec_roots.inputs = roots.inputs;
    spec_roots.output = roots.output;
  }
};

std::string joined(const std::vector<api::FieldError>& errors) {
  std::string s;
  for (const auto& e : errors) s += e.field + ": " + e.message + "; ";
  return s;
}

void check_request(const json& body, api::UnknownFields unknown, const Roots& r) {
  std::vector<api::FieldError> errors;
  auto parsed = api::parse_task_request(body, errors, unknown);
  FUZZ_CHECK(parsed.has_value() == errors.empty(), joined(errors));
  if (!parsed) return;

  // The stored text is accepted again, as itself.
  json again = json::parse(parsed->normalised, nullptr, false);
  FUZZ_CHECK(again.is_object(), parsed->normalised);
  std::vector<api::FieldError> errors2;
  auto reparsed = api::parse_task_request(again, errors2, api::UnknownFields::Refuse);
  FUZZ_CHECK(reparsed.has_value(), parsed->normalised + " -> " + joined(errors2));
  FUZZ_CHECK(reparsed->normalised == parsed->normalised,
             parsed->normalised + " vs " + reparsed->normalised);

  FUZZ_CHECK(proto::check_extras(parsed->extras).empty(), parsed->normalised);

  proto::TaskSpec spec;
  std::vector<api::FieldError> path_errors;
  if (!api::resolve_paths(*parsed, r.roots, spec, path_errors)) {
    FUZZ_CHECK(!path_errors.empty());
    return;
  }
  // What the api would send, the broker accepts.
  const std::string why = proto::check_spec(spec, r.spec_roots);
  FUZZ_CHECK(why.empty(), why + " for " + parsed->normalised);

  // The spec as the broker stores it reads back the same.
  const std::string text = proto::spec_to_json_text(spec);
  const proto::TaskSpec back = proto::spec_from_json(json::parse(text));
  FUZZ_CHECK(proto::spec_to_json_text(back) == text, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Roots roots;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr int kMaxDepth = 64;  // the api's default --max-json-depth
  bool too_deep = false, too_deep4 = false;
  const auto body = api::parse_json_body(text, kMaxDepth, too_deep);
  const auto body4 = api::parse_json_body(text, 4, too_deep4);
  if (!body) return 0;  // the api answers 400
  // A value is the whole text: nothing after a NUL byte, where nlohmann's parser stops.
  FUZZ_CHECK(text.find('\0') == std::string_view::npos, "a body with a NUL byte was taken");
  const int depth = depth_of(*body);
  FUZZ_CHECK(!too_deep && depth <= kMaxDepth, "depth " + std::to_string(depth));
  FUZZ_CHECK(body4.has_value() == (depth <= 4) && too_deep4 == (depth > 4),
             "depth " + std::to_string(depth));
  check_request(*body, api::UnknownFields::Refuse, roots);
  check_request(*body, api::UnknownFields::Ignore, roots);
  return 0;
}

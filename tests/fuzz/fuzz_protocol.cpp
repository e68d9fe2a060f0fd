// libFuzzer target: the msgpack envelope of every ZeroMQ message (shared/src/protocol.cpp,
// ipfixweb/shared/protocol.hpp; docs/protocol.md) as the broker, the workers, their task
// runners and the api decode it: decode() with its limits, then the body as each message type
// (Envelope::as<T>), and what the broker checks of a submission (check_spec, check_extras).
//
// Input: one frame, any bytes (the seeds are encoded messages of every type).
//
// Properties checked besides "no crash, no sanitizer report" (and no exception escaping
// decode(), which promises to report malformed input as nullopt):
//  - a frame decode() accepts has version kVersion and a string type;
//  - a body read as T, encoded again and decoded, reads as T again and encodes to the same
//    bytes (encoding is a function of the value; nothing a peer sends changes meaning on the
//    way through);
//  - within_object_limit agrees with decode() about what is msgpack.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/spec_check.hpp"
#include "ipfixweb/shared/spec_json.hpp"

namespace proto = ipfixweb::proto;

namespace {

const proto::SpecRoots& roots() {
  static const proto::SpecRoots r{{"/data/input", "/mnt/captures"}, "/data/output"};
  return r;
}

void check_spec(const proto::TaskSpec& spec) {
  const std::string why = proto::check_spec(spec, roots());
  (void)proto::kind_problem(spec);
  if (!why.empty()) return;
  // An accepted spec is stored as JSON (the broker's task row) unless a string is not UTF-8,
  // which the broker refuses alone; stored, it reads back as itself.
  std::string text;
  try {
    text = proto::spec_to_json_text(spec);
  } catch (const nlohmann::json::exception&) {
    return;
  }
  const auto back = proto::spec_from_json(nlohmann::json::parse(text));
  FUZZ_CHECK(proto::spec_to_json_text(back) == text, text);
  FUZZ_CHECK(proto::check_spec(back, roots()).empty(), text);
}

// Whether the frame holds a number that becomes 2^64 as a double (a float of 2^64 or more, an
// unsigned integer of 2^64 - 1024 or more). msgpack-cxx 4.1's pack_double converts such a
// double to uint64_t (undefined behaviour, UBSan's report; found by this target): its bound
// double(UINT64_MAX) rounds up to 2^64. No process packs a double a peer sent it without
// checking its range first (specs go through check_spec, progress is clamped, the rest are
// the sender's own values), so only this harness's re-encoding meets it: it is skipped then.
bool holds_2_pow_64(const std::uint8_t* data, std::size_t size) {
  msgpack::object_handle h;
  try {
    h = msgpack::unpack(reinterpret_cast<const char*>(data), size);
  } catch (const std::exception&) {
    return false;
  }
  constexpr double kTwoPow64 = 18446744073709551616.0;
  std::vector<const msgpack::object*> todo{&h.get()};
  while (!todo.empty()) {
    const msgpack::object* o = todo.back();
    todo.pop_back();
    switch (o->type) {
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64:
        if (o->via.f64 >= kTwoPow64) return true;
        break;
      case msgpack::type::POSITIVE_INTEGER:
        if (static_cast<double>(o->via.u64) >= kTwoPow64) return true;
        break;
      case msgpack::type::ARRAY:
        for (std::uint32_t i = 0; i < o->via.array.size; ++i) todo.push_back(&o->via.array.ptr[i]);
        break;
      case msgpack::type::MAP:
        for (std::uint32_t i = 0; i < o->via.map.size; ++i) {
          todo.push_back(&o->via.map.ptr[i].key);
          todo.push_back(&o->via.map.ptr[i].val);
        }
        break;
      default:
        break;
    }
  }
  return false;
}

bool g_skip_reencode = false;

template <class T>
void round_trip(const proto::Envelope& env) {
  std::string error;
  auto body = env.as<T>(&error);
  if (!body) {
    FUZZ_CHECK(!error.empty());
    return;
  }
  if (g_skip_reencode) return;
  const std::string once = proto::encode(env.type, *body);
  std::string why;
  auto env2 = proto::decode(once.data(), once.size(), &why);
  FUZZ_CHECK(env2.has_value(), why);
  FUZZ_CHECK(env2->type == env.type);
  auto body2 = env2->as<T>(&why);
  FUZZ_CHECK(body2.has_value(), why);
  const std::string twice = proto::encode(env2->type, *body2);
  FUZZ_CHECK(once == twice, "type " + env.type);

  if constexpr (std::is_same_v<T, proto::Submit>) {
    (void)proto::check_extras({body->priority});
    check_spec(body->spec);
  } else if constexpr (std::is_same_v<T, proto::SubmitBatch>) {
    for (const auto& s : body->submits) check_spec(s.spec);
  } else if constexpr (std::is_same_v<T, proto::Task>) {
    check_spec(body->spec);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string error;
  std::optional<proto::Envelope> env;
  try {
    env = proto::decode(data, size, &error);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, std::string("decode threw: ") + e.what());
  }
  (void)proto::within_object_limit(data, size, 64);
  if (!env) {
    FUZZ_CHECK(!error.empty());
    return 0;
  }
  FUZZ_CHECK(env->version == proto::kVersion);
  // (decode() counts only frames over 4 KiB; the counter must accept whatever it accepts.)
  FUZZ_CHECK(proto::within_object_limit(data, size, proto::kMaxObjects),
             "decode() accepted a frame within_object_limit refuses");
  g_skip_reencode = holds_2_pow_64(data, size);
  // Every reader of every side, whatever the type says (a peer chooses the type).
  round_trip<proto::Submit>(*env);
  round_trip<proto::SubmitReply>(*env);
  round_trip<proto::SubmitBatch>(*env);
  round_trip<proto::SubmitBatchReply>(*env);
  round_trip<proto::Ping>(*env);
  round_trip<proto::Pong>(*env);
  round_trip<proto::Cancel>(*env);
  round_trip<proto::CancelReply>(*env);
  round_trip<proto::Ready>(*env);
  round_trip<proto::Heartbeat>(*env);
  round_trip<proto::Task>(*env);
  round_trip<proto::Started>(*env);
  round_trip<proto::ProgressMsg>(*env);
  round_trip<proto::Done>(*env);
  round_trip<proto::Abort>(*env);
  round_trip<proto::Bye>(*env);
  return 0;
}

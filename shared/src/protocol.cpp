#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::proto {

std::optional<Envelope> decode(const void* data, std::size_t size, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<Envelope> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (size == 0) return fail("empty frame");
  if (size > (64u << 20)) return fail("frame too large");
  Envelope env;
  try {
    // Limits keep a hostile frame from making us allocate without bound.
    msgpack::unpack_limit limit(/*array*/ 100000, /*map*/ 1000, /*str*/ 16u << 20,
                                /*bin*/ 16u << 20, /*ext*/ 0, /*depth*/ 16);
    env.handle_ = msgpack::unpack(static_cast<const char*>(data), size, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    return fail(std::string("not msgpack: ") + e.what());
  }
  const msgpack::object& root = env.handle_.get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != 3)
    return fail("envelope is not a 3-element array");
  const msgpack::object* items = root.via.array.ptr;
  if (items[0].type != msgpack::type::POSITIVE_INTEGER) return fail("version is not an integer");
  if (items[1].type != msgpack::type::STR) return fail("type is not a string");
  if (items[2].type != msgpack::type::MAP) return fail("body is not a map");
  env.version = static_cast<std::uint32_t>(items[0].via.u64);
  if (env.version != kVersion)
    return fail("unsupported protocol version " + std::to_string(env.version));
  env.type.assign(items[1].via.str.ptr, items[1].via.str.size);
  env.body_ = items[2];
  return env;
}

}  // namespace ipfixweb::proto

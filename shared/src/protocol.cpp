#include "ipfixweb/shared/protocol.hpp"

namespace ipfixweb::proto {

namespace {

// Counts the objects a frame declares (containers count their elements as they are
// announced), stopping past the limit: a frame of a few bytes per object, or a container
// announcing more elements than it holds, expands about 24 times when unpacked.
struct ObjectCounter : msgpack::null_visitor {
  std::size_t count = 1, limit = 0;
  bool add(std::size_t n) {
    count += n;
    return count <= limit;
  }
  bool start_array(std::uint32_t n) { return add(n); }
  bool start_map(std::uint32_t n) { return add(2 * static_cast<std::size_t>(n)); }
};

}  // namespace

bool within_object_limit(const void* data, std::size_t size, std::size_t limit) {
  ObjectCounter counter;
  counter.limit = limit;
  std::size_t off = 0;
  return msgpack::parse(static_cast<const char*>(data), size, off, counter);
}

std::optional<Envelope> decode(const void* data, std::size_t size, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<Envelope> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (size == 0) return fail("empty frame");
  if (size > kMaxFrame) return fail("frame too large");
  // Small frames cannot hold many objects; larger ones are counted before they are unpacked.
  if (size > 4096 && !within_object_limit(data, size, kMaxObjects))
    return fail("frame has more than " + std::to_string(kMaxObjects) +
                " objects or is not msgpack");
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

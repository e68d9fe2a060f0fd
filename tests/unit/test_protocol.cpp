#include <gtest/gtest.h>

#include "ipfixweb/shared/protocol.hpp"

using namespace ipfixweb;

TEST(Protocol, RoundTripsATask) {
  proto::Task t;
  t.task_id = "abc";
  t.attempt = 2;
  t.spec.inputs = {"/in/a.pcap", "/in/b.pcap"};
  t.spec.output = "/out/x.ipfix";
  t.spec.dpi = false;
  t.spec.filter = "tcp";
  std::string wire = proto::encode(proto::type::kTask, t);
  std::string err;
  auto env = proto::decode(wire.data(), wire.size(), &err);
  ASSERT_TRUE(env) << err;
  EXPECT_EQ(env->type, "task");
  auto back = env->as<proto::Task>(&err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->task_id, "abc");
  EXPECT_EQ(back->attempt, 2u);
  EXPECT_EQ(back->spec.inputs, t.spec.inputs);
  EXPECT_EQ(back->spec.output, t.spec.output);
  EXPECT_FALSE(back->spec.dpi);
  EXPECT_EQ(back->spec.filter, "tcp");
}

TEST(Protocol, MissingFieldsTakeDefaultsAndUnknownOnesAreIgnored) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(proto::kVersion);
  pk.pack(std::string("ready"));
  pk.pack_map(2);
  pk.pack(std::string("worker_id"));
  pk.pack(std::string("w1"));
  pk.pack(std::string("from_the_future"));
  pk.pack(42);
  auto env = proto::decode(buf.data(), buf.size(), nullptr);
  ASSERT_TRUE(env);
  auto r = env->as<proto::Ready>();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->worker_id, "w1");
  EXPECT_EQ(r->slots, 1u);
  EXPECT_TRUE(r->running.empty());
}

TEST(Protocol, MalformedFramesAreRejectedNotThrown) {
  std::string err;
  EXPECT_FALSE(proto::decode("", 0, &err));
  EXPECT_FALSE(proto::decode("\xc1", 1, &err));  // never-used msgpack byte
  EXPECT_FALSE(err.empty());
  std::string garbage = "hello world, definitely not msgpack";
  EXPECT_FALSE(proto::decode(garbage.data(), garbage.size(), &err));
  // Right shape, wrong version.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(99);
  pk.pack(std::string("ping"));
  pk.pack_map(0);
  EXPECT_FALSE(proto::decode(buf.data(), buf.size(), &err));
  EXPECT_NE(err.find("version"), std::string::npos);
  // Right envelope, body of the wrong type for the message.
  msgpack::sbuffer b2;
  msgpack::packer<msgpack::sbuffer> p2(b2);
  p2.pack_array(3);
  p2.pack(proto::kVersion);
  p2.pack(std::string("task"));
  p2.pack_map(1);
  p2.pack(std::string("attempt"));
  p2.pack(std::string("not a number"));
  auto env = proto::decode(b2.data(), b2.size(), &err);
  ASSERT_TRUE(env);
  EXPECT_FALSE(env->as<proto::Task>(&err));
  EXPECT_NE(err.find("bad task body"), std::string::npos);
}

TEST(Protocol, TruncatedFramesNeverDecode) {
  proto::Submit s;
  s.request = R"({"pcap_files":["a"]})";
  s.spec.inputs = {"/a"};
  std::string wire = proto::encode(proto::type::kSubmit, s);
  for (std::size_t n = 1; n < wire.size(); ++n) {
    auto env = proto::decode(wire.data(), n, nullptr);
    if (env) {
      EXPECT_FALSE(env->as<proto::Submit>()) << "prefix " << n << " decoded";
    }
  }
}

namespace {
// A result as workers sent it before Done carried the summary's totals.
struct DoneWithoutTotals {
  std::string task_id = "t1";
  std::string state = "succeeded";
  std::string summary = "{\"packets\":3}";
  std::string error;
  bool retryable = false;
  MSGPACK_DEFINE_MAP(task_id, state, summary, error, retryable)
};
}  // namespace

TEST(Protocol, DoneTotalsRoundTripAndAreZeroFromOlderWorkers) {
  proto::Done d;
  d.task_id = "t2";
  d.state = "succeeded";
  d.packets = 347;
  d.bytes = 71000;
  d.flows = 40;
  std::string wire = proto::encode(proto::type::kDone, d);
  std::string err;
  auto env = proto::decode(wire.data(), wire.size(), &err);
  ASSERT_TRUE(env) << err;
  auto back = env->as<proto::Done>(&err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->packets, 347u);
  EXPECT_EQ(back->bytes, 71000u);
  EXPECT_EQ(back->flows, 40u);

  wire = proto::encode(proto::type::kDone, DoneWithoutTotals{});
  env = proto::decode(wire.data(), wire.size(), &err);
  ASSERT_TRUE(env) << err;
  back = env->as<proto::Done>(&err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->task_id, "t1");
  EXPECT_EQ(back->summary, "{\"packets\":3}");
  EXPECT_EQ(back->packets, 0u);
  EXPECT_EQ(back->flows, 0u);
}

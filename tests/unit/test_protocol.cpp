#include <gtest/gtest.h>

#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/spec_json.hpp"

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
  d.state = Outcome::Succeeded;
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

TEST(Protocol, SubmitBatchAndItsReplyRoundTrip) {
  proto::SubmitBatch b;
  b.req_id = 77;
  for (int i = 0; i < 3; ++i) {
    proto::Submit s;
    s.req_id = 100 + static_cast<std::uint64_t>(i);
    s.request = R"({"pcap_files":["a.pcap"]})";
    s.spec.inputs = {"/in/a.pcap"};
    s.spec.output = "/out/" + std::to_string(i) + ".ipfix";
    s.idempotency_key = i == 1 ? "key" : "";
    s.priority = i;
    b.submits.push_back(s);
  }
  std::string wire = proto::encode(proto::type::kSubmitBatch, b);
  std::string err;
  auto env = proto::decode(wire.data(), wire.size(), &err);
  ASSERT_TRUE(env) << err;
  EXPECT_EQ(env->type, "submit_batch");
  auto back = env->as<proto::SubmitBatch>(&err);
  ASSERT_TRUE(back) << err;
  EXPECT_EQ(back->req_id, 77u);
  ASSERT_EQ(back->submits.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back->submits[i].req_id, 100 + i);
    EXPECT_EQ(back->submits[i].spec.output, b.submits[i].spec.output);
    EXPECT_EQ(back->submits[i].priority, static_cast<int>(i));
  }
  EXPECT_EQ(back->submits[1].idempotency_key, "key");

  proto::SubmitBatchReply r;
  r.req_id = 77;
  r.replies.resize(2);
  r.replies[0].req_id = 100;
  r.replies[0].accepted = true;
  r.replies[0].task_id = "t";
  r.replies[1].req_id = 101;
  r.replies[1].code = Refusal::Capacity;
  r.replies[1].retry_after = 3;
  wire = proto::encode(proto::type::kSubmitBatchReply, r);
  env = proto::decode(wire.data(), wire.size(), &err);
  ASSERT_TRUE(env) << err;
  auto rb = env->as<proto::SubmitBatchReply>(&err);
  ASSERT_TRUE(rb) << err;
  EXPECT_EQ(rb->req_id, 77u);
  ASSERT_EQ(rb->replies.size(), 2u);
  EXPECT_TRUE(rb->replies[0].accepted);
  EXPECT_EQ(rb->replies[0].task_id, "t");
  EXPECT_EQ(rb->replies[1].code, Refusal::Capacity);
  EXPECT_EQ(rb->replies[1].retry_after, 3);
  // A batch body where a submission has the wrong shape is refused whole.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(proto::kVersion);
  pk.pack(std::string("submit_batch"));
  pk.pack_map(1);
  pk.pack(std::string("submits"));
  pk.pack_array(1);
  pk.pack(std::string("not a submission"));
  env = proto::decode(buf.data(), buf.size(), &err);
  ASSERT_TRUE(env) << err;
  EXPECT_FALSE(env->as<proto::SubmitBatch>(&err));
}

TEST(Protocol, SpecJsonTextIsWhatNlohmannWrites) {
  proto::TaskSpec s;
  s.inputs = {"/in/a.pcap", "/in/with \"quotes\" and \\ back\tslash\x01.pcap"};
  s.output = "/out/x.ipfix";
  s.analysis = {"tcp", "dns"};
  s.filter = "tcp port 80";
  EXPECT_EQ(proto::spec_to_json_text(s), proto::spec_to_json(s).dump());
  for (double d : {300.0, 0.5, 1e-3, 31536000.0, 1e16, 0.1 + 0.2, 1.0 / 3}) {
    s.idle_timeout = d;
    s.active_timeout = d * 7;
    s.dpi = !s.dpi;
    EXPECT_EQ(proto::spec_to_json_text(s), proto::spec_to_json(s).dump()) << d;
  }
  s.analysis.clear();
  s.filter.clear();
  s.inputs = {"/in/caf\xc3\xa9.pcap"};  // UTF-8 passes through
  EXPECT_EQ(proto::spec_to_json_text(s), proto::spec_to_json(s).dump());
  auto back = proto::spec_from_json(nlohmann::json::parse(proto::spec_to_json_text(s)));
  EXPECT_EQ(back.inputs, s.inputs);
  s.inputs = {std::string("/in/caf") + '\xe9' + ".pcap"};  // not UTF-8: refused as before
  EXPECT_THROW(proto::spec_to_json_text(s), nlohmann::json::exception);
}

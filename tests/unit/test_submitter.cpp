// The api's BatchSubmitter (api/include/ipfixweb/api/submitter.hpp) against a fake broker: a
// ROUTER socket on a loopback port that answers each batch as told, or never.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "ipfixweb/api/submitter.hpp"
#include "ipfixweb/shared/protocol.hpp"

using namespace ipfixweb;
using namespace std::chrono_literals;

namespace {

// A broker's frontend that accepts each task under its idempotency key as id (`answer`), or
// reads and never answers.
class FakeBroker {
 public:
  explicit FakeBroker(bool answer) : answer_(answer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("tcp://127.0.0.1:*");
    endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeBroker() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int batches() const { return batches_; }

 private:
  void run() {
    while (!stop_) {
      zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      std::vector<zmq::message_t> parts;
      zmq::message_t m;
      while (sock_.recv(m, zmq::recv_flags::dontwait)) {
        parts.push_back(std::move(m));
        if (!parts.back().more()) {
          handle(parts);
          parts.clear();
        }
      }
    }
  }
  void handle(std::vector<zmq::message_t>& parts) {
    if (parts.size() != 2) return;
    auto env = proto::decode(parts[1].data(), parts[1].size(), nullptr);
    if (!env || env->type != proto::type::kSubmitBatch) return;
    auto batch = env->as<proto::SubmitBatch>(nullptr);
    if (!batch) return;
    ++batches_;
    if (!answer_) return;
    proto::SubmitBatchReply reply;
    reply.req_id = batch->req_id;
    for (const auto& s : batch->submits) {
      proto::SubmitReply r;
      r.req_id = s.req_id;
      r.accepted = true;
      r.task_id = s.idempotency_key;
      r.state = TaskState::Queued;
      reply.replies.push_back(r);
    }
    sock_.send(parts[0], zmq::send_flags::sndmore);
    const std::string wire = proto::encode(proto::type::kSubmitBatchReply, reply);
    sock_.send(zmq::buffer(wire), zmq::send_flags::none);
  }

  bool answer_;
  zmq::context_t ctx_;
  zmq::socket_t sock_{ctx_, zmq::socket_type::router};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> batches_{0};
  std::thread thread_;
};

proto::Submit submission(const std::string& key) {
  proto::Submit s;
  s.request = "{}";
  s.idempotency_key = key;
  return s;
}

// What the callbacks were called with, by key.
struct Answers {
  std::mutex mu;
  std::map<std::string, std::vector<std::optional<proto::SubmitReply>>> by_key;
  api::BatchSubmitter::Done done(const std::string& key) {
    return [this, key](std::optional<proto::SubmitReply> r) {
      std::lock_guard lock(mu);
      by_key[key].push_back(std::move(r));
    };
  }
  std::size_t answered() {
    std::lock_guard lock(mu);
    return by_key.size();
  }
  // Each submission's callback was called once, with nothing (the client's 503).
  void expect_each_once_with_nothing() {
    std::lock_guard lock(mu);
    for (const auto& [key, got] : by_key) {
      ASSERT_EQ(got.size(), 1u) << key;
      EXPECT_FALSE(got[0]) << key;
    }
  }
};

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace

TEST(BatchSubmitter, EachAsyncSubmissionGetsItsOwnAnswerOnce) {
  FakeBroker broker(true);
  zmq::context_t ctx;
  Answers answers;
  {
    api::BatchSubmitter sub(ctx, broker.endpoint(), {});
    for (int i = 0; i < 200; ++i)
      sub.submit_async(submission("k" + std::to_string(i)), answers.done("k" + std::to_string(i)));
    ASSERT_TRUE(eventually([&] { return answers.answered() == 200; })) << answers.answered();
    // The synchronous form shares the thread.
    auto r = sub.submit(submission("sync"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->task_id, "sync");
  }
  std::lock_guard lock(answers.mu);
  for (const auto& [key, got] : answers.by_key) {
    ASSERT_EQ(got.size(), 1u) << key;
    ASSERT_TRUE(got[0]) << key;
    EXPECT_TRUE(got[0]->accepted);
    EXPECT_EQ(got[0]->task_id, key);
  }
  EXPECT_LT(broker.batches(), 201);  // some shared a message
}

TEST(BatchSubmitter, AnAsyncSubmissionTheBrokerNeverAnswersGetsNothingAfterTheTimeout) {
  FakeBroker broker(false);
  zmq::context_t ctx;
  Answers answers;
  api::BatchSubmitter::Options o;
  o.timeout_s = 0.3;
  api::BatchSubmitter sub(ctx, broker.endpoint(), o);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i)
    sub.submit_async(submission("k" + std::to_string(i)), answers.done("k" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] { return answers.answered() == 5; }));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
  std::this_thread::sleep_for(300ms);  // and nothing more
  answers.expect_each_once_with_nothing();
}

// Waiting submissions are answered (with nothing: the client gets 503) when the submitter
// goes, at once, not after their timeout; so are submissions made while it stops.
TEST(BatchSubmitter, SubmissionsStillWaitingWhenTheSubmitterGoesAreAnsweredWithNothing) {
  FakeBroker broker(false);
  zmq::context_t ctx;
  Answers answers;
  api::BatchSubmitter::Options o;
  o.timeout_s = 60;
  auto sub = std::make_unique<api::BatchSubmitter>(ctx, broker.endpoint(), o);
  for (int i = 0; i < 5; ++i)
    sub->submit_async(submission("k" + std::to_string(i)), answers.done("k" + std::to_string(i)));
  ASSERT_TRUE(eventually([&] { return broker.batches() > 0; }));
  const auto t0 = std::chrono::steady_clock::now();
  sub.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ASSERT_EQ(answers.answered(), 5u);
  answers.expect_each_once_with_nothing();
}

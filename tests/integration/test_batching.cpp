// Batched submissions: the broker's `submit_batch` message, sent raw as any
// frontend client may, and the api's batching of concurrent HTTP submissions.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "harness.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/util.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

// A client of the broker's frontend, as the api is one.
struct FrontendClient {
  zmq::context_t ctx;
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  explicit FrontendClient(const std::string& endpoint) {
    sock.set(zmq::sockopt::linger, 0);
    sock.connect(endpoint);
  }
  // Sends one frame; the first reply of `type`, or nullopt after `timeout`.
  std::optional<proto::Envelope> call(const std::string& wire, std::string_view type,
                                      std::chrono::milliseconds timeout = 10s) {
    sock.send(zmq::buffer(wire), zmq::send_flags::none);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 50ms);
      zmq::message_t m;
      while (sock.recv(m, zmq::recv_flags::dontwait)) {
        auto env = proto::decode(m.data(), m.size(), nullptr);
        if (env && env->type == type) return env;
      }
    }
    return std::nullopt;
  }
};

// A submission as the api would make it (paths resolved under the roots).
proto::Submit submission(const Stack& s, const std::string& out, const std::string& key = {}) {
  proto::Submit x;
  x.request = json{{"pcap_files", {"sample.pcap"}}, {"output_path", out}}.dump();
  x.spec.inputs = {fs::canonical(s.input_dir() + "/sample.pcap").string()};
  x.spec.output = fs::canonical(s.output_dir()).string() + "/" + out;
  x.idempotency_key = key;
  x.fingerprint = fingerprint(x.request);
  return x;
}

std::size_t task_count(const Stack& s) {
  auto r = s.client()->Get("/api/v1/tasks?limit=1000");
  EXPECT_TRUE(r);
  return r ? json::parse(r->body)["tasks"].size() : 0;
}

}  // namespace

TEST(Batching, BrokerAnswersABatchInOrderAndOneBadSubmissionSinksNoOther) {
  StackOptions o;
  o.workers = 0;
  Stack s(o);
  FrontendClient d(s.broker_frontend());

  proto::SubmitBatch b;
  b.req_id = 4242;
  b.submits.push_back(submission(s, "batch/a.ipfix"));
  // Not UTF-8: cannot be stored as JSON, refused alone (its savepoint rolls back).
  b.submits.push_back(submission(s, "batch/bad.ipfix"));
  b.submits.back().spec.inputs = {std::string("/in/caf") + '\xe9' + ".pcap"};
  b.submits.push_back(submission(s, "batch/b.ipfix"));
  // The same key twice in one batch: one task, the second answer points at it.
  b.submits.push_back(submission(s, "batch/keyed.ipfix", "batch-key"));
  b.submits.push_back(submission(s, "batch/keyed.ipfix", "batch-key"));
  // The same key with another request: conflict.
  b.submits.push_back(submission(s, "batch/other.ipfix", "batch-key"));
  for (std::size_t i = 0; i < b.submits.size(); ++i) b.submits[i].req_id = 1000 + i;

  auto env = d.call(proto::encode(proto::type::kSubmitBatch, b), proto::type::kSubmitBatchReply);
  ASSERT_TRUE(env) << "no submit_batch_reply";
  std::string err;
  auto reply = env->as<proto::SubmitBatchReply>(&err);
  ASSERT_TRUE(reply) << err;
  EXPECT_EQ(reply->req_id, 4242u);
  ASSERT_EQ(reply->replies.size(), b.submits.size());
  for (std::size_t i = 0; i < b.submits.size(); ++i) EXPECT_EQ(reply->replies[i].req_id, 1000 + i);
  auto& r = reply->replies;
  EXPECT_TRUE(r[0].accepted);
  EXPECT_FALSE(r[1].accepted);
  EXPECT_EQ(r[1].code, ipfixweb::Refusal::Invalid) << r[1].reason;
  EXPECT_TRUE(r[2].accepted);
  EXPECT_TRUE(r[3].accepted);
  EXPECT_FALSE(r[3].existing);
  EXPECT_TRUE(r[4].accepted);
  EXPECT_TRUE(r[4].existing);
  EXPECT_EQ(r[4].task_id, r[3].task_id);
  EXPECT_FALSE(r[5].accepted);
  EXPECT_EQ(r[5].code, ipfixweb::Refusal::Conflict);
  std::set<std::string> ids = {r[0].task_id, r[2].task_id, r[3].task_id};
  EXPECT_EQ(ids.size(), 3u);
  for (auto& id : ids) {
    auto t = s.get_task(id);
    EXPECT_EQ(t["state"], "queued") << t.dump();
  }
  EXPECT_EQ(s.get_task(r[0].task_id)["output_path"], "batch/a.ipfix");
  EXPECT_EQ(s.get_task(r[2].task_id)["output_path"], "batch/b.ipfix");
  EXPECT_EQ(task_count(s), 3u);

  // The single `submit` message still works, and sees the batch's key.
  proto::Submit one = submission(s, "batch/keyed.ipfix", "batch-key");
  one.req_id = 7;
  env = d.call(proto::encode(proto::type::kSubmit, one), proto::type::kSubmitReply);
  ASSERT_TRUE(env);
  auto single = env->as<proto::SubmitReply>(&err);
  ASSERT_TRUE(single) << err;
  EXPECT_EQ(single->req_id, 7u);
  EXPECT_TRUE(single->existing);
  EXPECT_EQ(single->task_id, r[3].task_id);

  // A batch over the limit is dropped whole (never half-done), and the broker
  // keeps serving.
  proto::SubmitBatch huge;
  huge.req_id = 1;
  huge.submits.assign(proto::kMaxSubmitBatch + 1, submission(s, "batch/huge.ipfix"));
  EXPECT_FALSE(d.call(proto::encode(proto::type::kSubmitBatch, huge),
                      proto::type::kSubmitBatchReply, 500ms));
  EXPECT_EQ(task_count(s), 3u);
  auto [st, body] = s.submit({{"pcap_files", {"sample.pcap"}}, {"output_path", "after.ipfix"}});
  EXPECT_EQ(st, 202) << body.dump();
}

TEST(Batching, BrokerRefusesWhatExceedsCapacityWithinABatch) {
  StackOptions o;
  o.workers = 0;
  o.max_queue = 2;
  Stack s(o);
  FrontendClient d(s.broker_frontend());
  proto::SubmitBatch b;
  b.req_id = 1;
  for (int i = 0; i < 4; ++i)
    b.submits.push_back(submission(s, "cap/" + std::to_string(i) + ".ipfix"));
  auto env = d.call(proto::encode(proto::type::kSubmitBatch, b), proto::type::kSubmitBatchReply);
  ASSERT_TRUE(env);
  auto reply = env->as<proto::SubmitBatchReply>();
  ASSERT_TRUE(reply);
  ASSERT_EQ(reply->replies.size(), 4u);
  EXPECT_TRUE(reply->replies[0].accepted);
  EXPECT_TRUE(reply->replies[1].accepted);
  for (int i : {2, 3}) {
    EXPECT_FALSE(reply->replies[i].accepted);
    EXPECT_EQ(reply->replies[i].code, ipfixweb::Refusal::Capacity);
    EXPECT_GE(reply->replies[i].retry_after, 1);
  }
  // Through HTTP the refusal is a 503 with Retry-After, as for single submissions.
  auto c = s.client();
  auto r = c->Post("/api/v1/tasks",
                   json{{"pcap_files", {"sample.pcap"}}, {"output_path", "cap/http.ipfix"}}.dump(),
                   "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
}

// Many handler threads submit at once: the api sends them to the broker in
// shared messages, and every client still gets the answer for its own task.
TEST(Batching, ConcurrentHttpSubmissionsShareMessagesAndEachGetsItsOwnAnswer) {
  StackOptions o;
  o.workers = 0;
  o.max_queue = 100000;
  Stack s(o);
  constexpr int kThreads = 32, kEach = 25;
  std::mutex mu;
  std::map<std::string, std::string> output_of;  // task id -> output path submitted
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto c = s.client();
      for (int i = 0; i < kEach; ++i) {
        std::string out = "conc/" + std::to_string(t) + "-" + std::to_string(i) + ".ipfix";
        auto r = c->Post("/api/v1/tasks",
                         json{{"pcap_files", {"sample.pcap"}}, {"output_path", out}}.dump(),
                         "application/json");
        std::lock_guard<std::mutex> lock(mu);
        if (!r || r->status != 202) {
          failures.push_back(out + ": " + (r ? std::to_string(r->status) + " " + r->body : "-"));
          continue;
        }
        auto j = json::parse(r->body);
        std::string id = j["task_id"];
        if (r->get_header_value("Location") != "/api/v1/tasks/" + id)
          failures.push_back(out + ": Location " + r->get_header_value("Location"));
        if (!output_of.emplace(id, out).second) failures.push_back(out + ": duplicate id " + id);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  ASSERT_EQ(output_of.size(), static_cast<std::size_t>(kThreads * kEach));
  // Each id names the task that was submitted under it.
  auto r = s.client()->Get("/api/v1/tasks?limit=1000");
  ASSERT_TRUE(r);
  auto tasks = json::parse(r->body)["tasks"];
  ASSERT_EQ(tasks.size(), output_of.size());
  for (auto& t : tasks) {
    auto it = output_of.find(t["task_id"]);
    ASSERT_NE(it, output_of.end()) << t.dump();
    EXPECT_EQ(t["output_path"], it->second);
  }
  // And they did share messages.
  auto m = s.client()->Get("/metrics");
  ASSERT_TRUE(m);
  auto at = m->body.find("\nipfixweb_api_submit_batches_total ");
  ASSERT_NE(at, std::string::npos);
  long batches = std::stol(m->body.substr(at + 35));
  EXPECT_GT(batches, 0);
  EXPECT_LT(batches, kThreads * kEach);
  std::cerr << kThreads * kEach << " submissions in " << batches << " messages\n";
}

namespace {

// Starts `n` submissions to outputs under `dir`, each on a thread of its own that waits up to
// 30 s for its answer and records its status in `statuses` (-1: none).
std::vector<std::thread> submit_in_threads(Stack& s, int n, const std::string& dir,
                                           std::vector<int>& statuses) {
  statuses.assign(static_cast<std::size_t>(n), 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&s, &statuses, dir, i] {
      auto c = s.client();
      c->set_read_timeout(30, 0);
      auto r = c->Post("/api/v1/tasks",
                       json{{"pcap_files", {"sample.pcap"}},
                            {"output_path", dir + "/" + std::to_string(i) + ".ipfix"}}
                           .dump(),
                       "application/json");
      statuses[static_cast<std::size_t>(i)] = r ? r->status : -1;
    });
  return threads;
}

}  // namespace

// A submission waiting for the broker holds no handler thread (http::Route::deferred): with a
// frozen broker and four handler threads, forty waiting submissions leave the task list
// (a SQLite read on a handler thread) answering at once; each submission gets its answer once
// the broker wakes, or 503 once the broker timeout has passed.
TEST(Batching, SubmissionsWaitingForTheBrokerHoldNoHandlerThread) {
  StackOptions o;
  o.workers = 0;
  o.max_queue = 100000;
  o.extra_api_args = {"--threads", "4", "--broker-timeout", "4"};
  Stack s(o);
  ASSERT_EQ(s.submit(json{{"pcap_files", {"sample.pcap"}}, {"output_path", "first.ipfix"}}).first,
            202);
  s.broker().signal(SIGSTOP);
  constexpr int kWaiting = 40;
  std::vector<int> statuses;
  auto threads = submit_in_threads(s, kWaiting, "wait", statuses);
  std::this_thread::sleep_for(500ms);  // the submissions are in and waiting
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = s.client()->Get("/api/v1/tasks?limit=5");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s) << "round " << i;
  }
  s.broker().signal(SIGCONT);
  for (auto& t : threads) t.join();
  for (int i = 0; i < kWaiting; ++i)
    EXPECT_TRUE(statuses[static_cast<std::size_t>(i)] == 202 ||
                statuses[static_cast<std::size_t>(i)] == 503)
        << i << ": " << statuses[static_cast<std::size_t>(i)];
}

// An api stopped while submissions wait for a frozen broker (longer than its 5 s grace) exits
// cleanly: the submitter answers what still waits as it goes, before the metrics those answers
// are counted in (a use after free before; the ASan lane sees it).
TEST(Batching, AnApiStoppedWhileSubmissionsWaitForAFrozenBrokerExitsCleanly) {
  StackOptions o;
  o.workers = 0;
  o.max_queue = 100000;
  o.extra_api_args = {"--broker-timeout", "30"};
  Stack s(o);
  ASSERT_EQ(s.submit(json{{"pcap_files", {"sample.pcap"}}, {"output_path", "first.ipfix"}}).first,
            202);
  s.broker().signal(SIGSTOP);
  std::vector<int> statuses;
  auto threads = submit_in_threads(s, 5, "stop", statuses);
  std::this_thread::sleep_for(500ms);
  s.api().signal(SIGTERM);
  const auto status = s.api().wait(20s);
  s.broker().signal(SIGCONT);
  for (auto& t : threads) t.join();
  ASSERT_TRUE(status) << "the api did not exit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
}

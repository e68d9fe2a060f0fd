// Issue 4: nothing accepted is lost under faults. Real processes, real kills.
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "fake_peers.hpp"
#include "harness.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/sqlite.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

// The heartbeat interval of stacks whose only worker is a FakeWorker that is to stay alive: it
// sends no heartbeats, and the broker gives a worker up after three silent intervals (15 s:
// longer than any wait of these tests, however loaded the machine).
constexpr double kSilentWorkerBeat = 5.0;

json events_of(Stack& s, const std::string& id) {
  auto r = s.client()->Get("/api/v1/tasks/" + id + "/events");
  return r ? json::parse(r->body)["events"] : json();
}

int terminal_events(const json& events) {
  int n = 0;
  for (auto& e : events) {
    std::string st = e["state"];
    n += st == "succeeded" || st == "failed" || st == "cancelled";
  }
  return n;
}

}  // namespace

TEST(Faults, WorkerKilledMidTaskLosesNothing) {
  StackOptions o;
  o.workers = 2;
  o.slots = 1;
  Stack s(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    // About 1.5 s each here: progress is first reported half a second into a task.
    auto [st, body] = s.submit(long_task(s, 40, "kill/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202) << body.dump();
    ids.push_back(body["task_id"]);
  }
  // Wait until w1 is in the middle of a task, then kill it without warning.
  std::string victim;
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& id : ids) {
          auto t = s.get_task(id);
          if (t["state"] == "running" && t["worker"] == "w1" && t["progress"] > 0) victim = id;
        }
        return !victim.empty();
      },
      20s));
  s.workers()[0]->signal(SIGKILL);
  for (auto& id : ids) {
    auto t = s.wait_terminal(id, 60s);
    EXPECT_EQ(t["state"], "succeeded") << t.dump();
    EXPECT_EQ(terminal_events(events_of(s, id)), 1);
  }
  auto t = s.get_task(victim);
  // The run lost with its killed worker used no attempt (issue 17): one counted run.
  EXPECT_EQ(t["attempts"], 1) << t.dump();
  EXPECT_EQ(t["worker"], "w2");
  bool requeued = false;
  for (auto& e : events_of(s, victim))
    requeued |=
        e["state"] == "queued" && e["reason"].get<std::string>().find("lost") != std::string::npos;
  EXPECT_TRUE(requeued) << events_of(s, victim).dump();
  EXPECT_TRUE(s.temporaries().empty()) << s.temporaries()[0];
}

TEST(Faults, BrokerKilledUnderLoadAndRestartedFinishesEveryAcceptedTaskOnce) {
  StackOptions o;
  o.workers = 2;
  o.slots = 2;
  o.max_queue = 500;
  Stack s(o);
  std::vector<std::string> accepted;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::thread submitter([&] {
    for (int i = 0; i < 60 && !stop; ++i) {
      auto [st, body] = s.submit(long_task(s, 1, "load/" + std::to_string(i) + ".ipfix"));
      if (st == 202) {
        std::lock_guard<std::mutex> lock(mu);
        accepted.push_back(body["task_id"]);
      } else {
        EXPECT_EQ(st, 503) << body.dump();  // refused while the broker is down: fine
      }
      std::this_thread::sleep_for(5ms);
    }
  });
  ASSERT_TRUE(wait_until(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return accepted.size() >= 15;
      },
      30s));
  s.broker().signal(SIGKILL);
  ASSERT_TRUE(s.broker().wait(5s));
  std::this_thread::sleep_for(300ms);
  s.start_broker();
  submitter.join();
  ASSERT_GE(accepted.size(), 15u);
  for (auto& id : accepted) {
    auto t = s.wait_terminal(id, 90s);
    EXPECT_EQ(t["state"], "succeeded") << t.dump();
    EXPECT_EQ(terminal_events(events_of(s, id)), 1) << events_of(s, id).dump();
  }
  // Nothing else appeared: every task in the database is one we were told of.
  auto r = s.client()->Get("/api/v1/tasks?limit=1000");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), accepted.size());
  EXPECT_TRUE(s.temporaries().empty());
}

TEST(Faults, AdmissionAcceptsExactlyCapacityAndRefusesTheRestAtOnce) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  o.max_queue = 4;
  Stack s(o);
  long_task(s, 1, "warm.ipfix");  // create big.pcap before the burst
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<std::string> accepted;
  int refused = 0;
  double slowest_refusal = 0;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      auto c = s.client();
      auto body = long_task(s, 15, "adm/" + std::to_string(i) + ".ipfix");
      auto t0 = std::chrono::steady_clock::now();
      auto r = c->Post("/api/v1/tasks", body.dump(), "application/json");
      double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ASSERT_TRUE(r) << httplib::to_string(r.error()) << " after " << took << " s";
      std::lock_guard<std::mutex> lock(mu);
      if (r->status == 202) {
        accepted.push_back(json::parse(r->body)["task_id"]);
      } else {
        EXPECT_EQ(r->status, 503) << r->body;
        EXPECT_FALSE(r->get_header_value("Retry-After").empty());
        EXPECT_GE(std::stoi(r->get_header_value("Retry-After")), 1);
        ++refused;
        slowest_refusal = std::max(slowest_refusal, took);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(accepted.size(), 5u);  // 1 slot of credit + a queue of 4
  EXPECT_EQ(refused, 45);
  // Refusals did not wait for capacity: all of them came back while the first
  // accepted task (seconds of work) was still running.
  int finished = 0;
  for (auto& id : accepted) {
    std::string st = s.get_task(id)["state"];
    finished += st != "queued" && st != "running";
  }
  EXPECT_EQ(finished, 0) << "slowest refusal took " << slowest_refusal << " s";
  for (auto& id : accepted) EXPECT_EQ(s.wait_terminal(id, 120s)["state"], "succeeded");
}

TEST(Faults, CrashingTaskFailsAfterMaxAttemptsWhileOthersFlow) {
  StackOptions o;
  o.workers = 1;
  o.slots = 2;
  // One CPU-second per task (1 to 2 s: the limit is armed in whole seconds): the huge task is
  // killed by SIGXCPU every time. 60 references (20.8 M packets) took 1.98 s on a fast VM in
  // 2026 and sometimes finished under the limit; 240 take about 8.
  o.extra_worker_args = {"--cpu-limit", "1"};
  o.extra_broker_args = {"--max-attempts", "2"};
  Stack s(o);
  auto [st, body] = s.submit(long_task(s, kSanitized ? 60 : 240, "huge.ipfix"));
  ASSERT_EQ(st, 202) << body.dump();
  std::string huge = body["task_id"];
  std::vector<std::string> small;
  for (int i = 0; i < 10; ++i) {
    auto [st2, b2] = s.submit(small_task("small/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st2, 202);
    small.push_back(b2["task_id"]);
  }
  for (auto& id : small) EXPECT_EQ(s.wait_terminal(id, 30s)["state"], "succeeded");
  auto t = s.wait_terminal(huge, 60s);
  EXPECT_EQ(t["state"], "failed");
  EXPECT_EQ(t["attempts"], 2);
  std::string err = t["error"].is_string() ? t["error"].get<std::string>() : "";
  EXPECT_NE(err.find("SIGXCPU"), std::string::npos) << err;
  EXPECT_NE(err.find("2 attempts"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(s.output_dir() + "/huge.ipfix"));
  EXPECT_TRUE(s.temporaries().empty());
  // The worker survived its children's deaths.
  EXPECT_TRUE(s.workers()[0]->running());
}

TEST(Faults, CancelQueuedAndRunningTasks) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  Stack s(o);
  auto [s1, running] = s.submit(long_task(s, 30, "cancel/running.ipfix"));
  auto [s2, queued] = s.submit(small_task("cancel/queued.ipfix"));
  ASSERT_EQ(s1, 202);
  ASSERT_EQ(s2, 202);
  std::string rid = running["task_id"], qid = queued["task_id"];
  ASSERT_TRUE(wait_until([&] { return s.get_task(rid)["state"] == "running"; }, 10s));
  auto c = s.client();
  auto r = c->Delete("/api/v1/tasks/" + qid);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(s.get_task(qid)["state"], "cancelled");
  auto t0 = std::chrono::steady_clock::now();
  r = c->Delete("/api/v1/tasks/" + rid);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202) << r->body;
  auto t = s.wait_terminal(rid, 10s);
  EXPECT_EQ(t["state"], "cancelled");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  EXPECT_FALSE(fs::exists(s.output_dir() + "/cancel/running.ipfix"));
  EXPECT_TRUE(s.temporaries().empty());
  r = c->Delete("/api/v1/tasks/" + rid);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 409);
  r = c->Delete("/api/v1/tasks/00000000-0000-4000-8000-000000000000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  // The worker still serves.
  auto [s3, after] = s.submit(small_task("cancel/after.ipfix"));
  ASSERT_EQ(s3, 202);
  EXPECT_EQ(s.wait_terminal(after["task_id"])["state"], "succeeded");
}

TEST(Faults, TaskTimeLimitAbortsTheChild) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  o.extra_broker_args = {"--task-timeout", "0.3"};
  Stack s(o);
  auto [st, body] = s.submit(long_task(s, 30, "slow.ipfix"));
  ASSERT_EQ(st, 202);
  auto t = s.wait_terminal(body["task_id"], 20s);
  EXPECT_EQ(t["state"], "failed");
  EXPECT_NE(t["error"].get<std::string>().find("timed out"), std::string::npos) << t.dump();
  EXPECT_EQ(t["attempts"], 1);  // a timeout is not retried: it would time out again
  EXPECT_FALSE(fs::exists(s.output_dir() + "/slow.ipfix"));
  EXPECT_TRUE(s.temporaries().empty());
}

TEST(Faults, TasksWaitForAWorkerAndRunWhenOneArrives) {
  StackOptions o;
  o.workers = 0;
  Stack s(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto [st, body] = s.submit(small_task("wait/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202);
    ids.push_back(body["task_id"]);
  }
  std::this_thread::sleep_for(300ms);
  for (auto& id : ids) EXPECT_EQ(s.get_task(id)["state"], "queued");
  s.start_worker();
  for (auto& id : ids) EXPECT_EQ(s.wait_terminal(id)["state"], "succeeded");
}

TEST(Faults, WorkerSigtermDrainsAndRequeuesWhatOutlivesTheGrace) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  o.extra_worker_args = {"--grace", "0.2"};
  Stack s(o);
  auto [st, body] = s.submit(long_task(s, 20, "drain.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = body["task_id"];
  ASSERT_TRUE(wait_until([&] { return s.get_task(id)["state"] == "running"; }, 10s));
  s.workers()[0]->signal(SIGTERM);
  auto status = s.workers()[0]->wait(5s);
  ASSERT_TRUE(status) << "worker did not stop within its grace period";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  ASSERT_TRUE(wait_until([&] { return s.get_task(id)["state"] == "queued"; }, 5s))
      << s.get_task(id).dump();
  EXPECT_EQ(s.get_task(id)["attempts"], 0);  // an abort for shutdown is not the task's fault
  s.start_worker();
  EXPECT_EQ(s.wait_terminal(id, 60s)["state"], "succeeded");
  EXPECT_TRUE(s.temporaries().empty());
}

TEST(Faults, ApiAnswersQuicklyWhenTheBrokerIsDown) {
  Stack s;
  s.broker().signal(SIGKILL);
  ASSERT_TRUE(s.broker().wait(5s));
  auto c = s.client();
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->Post("/api/v1/tasks", small_task("down.ipfix").dump(), "application/json");
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_FALSE(r->get_header_value("Retry-After").empty());
  EXPECT_LT(took, 3.0);
  r = c->Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  // Back again: ready and accepting.
  s.start_broker();
  s.wait_ready(2);
  auto [st, body] = s.submit(small_task("up.ipfix"));
  EXPECT_EQ(st, 202) << body.dump();
}

TEST(Faults, MalformedFramesAreDroppedAndTheBrokerKeepsServing) {
  Stack s;
  zmq::context_t ctx;
  for (const std::string& endpoint : {s.broker_frontend(), s.broker_backend()}) {
    zmq::socket_t d(ctx, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 1000);
    d.connect(endpoint);
    for (std::string junk : {std::string("garbage"), std::string("\x93\x01", 2),
                             std::string(1 << 16, '\xff'), std::string()}) {
      d.send(zmq::buffer(junk), zmq::send_flags::none);
    }
    d.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
    d.send(zmq::str_buffer("b"), zmq::send_flags::none);
  }
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(s.broker().running());
  auto [st, body] = s.submit(small_task("after-junk.ipfix"));
  ASSERT_EQ(st, 202);
  EXPECT_EQ(s.wait_terminal(body["task_id"])["state"], "succeeded");
}

TEST(Faults, IdempotencyKeyReturnsTheSameTaskAndRefusesAnotherBody) {
  Stack s;
  json body = small_task("idem/a.ipfix");
  auto [s1, b1] = s.submit(body, "key-123");
  ASSERT_EQ(s1, 202) << b1.dump();
  auto [s2, b2] = s.submit(body, "key-123");
  EXPECT_EQ(s2, 200) << b2.dump();
  EXPECT_EQ(b2["task_id"], b1["task_id"]);
  EXPECT_EQ(b2["existing"], true);
  auto [s3, b3] = s.submit(small_task("idem/other.ipfix"), "key-123");
  EXPECT_EQ(s3, 422) << b3.dump();
  // Many concurrent submissions with one key make one task.
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&] {
      auto [st, b] = s.submit(small_task("idem/burst.ipfix"), "burst-key");
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_TRUE(st == 200 || st == 202) << st;
      if (b.is_object() && b.contains("task_id")) ids.insert(b["task_id"]);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ids.size(), 1u);
  auto r = s.client()->Get("/api/v1/tasks?limit=1000");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 2u);
}

// Randomised chaos: workers killed and restarted at random, one broker
// restart, hundreds of submissions. Every accepted task reaches exactly one
// terminal state and nothing stays queued or running.
TEST(Faults, RandomisedFaultRunLosesNoAcceptedTask) {
  StackOptions o;
  o.workers = 3;
  o.slots = 2;
  o.max_queue = 1000;
  o.extra_broker_args = {"--max-attempts", "20"};
  Stack s(o);
  long_task(s, 1, "warm.ipfix");
  std::mt19937 rng(12345);
  std::vector<std::string> accepted;
  std::mutex mu;
  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::atomic<int> submitted{0};
  const int kTasks = 500;
  std::thread submitter([&] {
    std::mt19937 r2(777);
    for (int i = 0; i < kTasks; ++i, ++submitted) {
      json body = (r2() % 5 == 0) ? long_task(s, 1, "chaos/" + std::to_string(i) + ".ipfix")
                                  : small_task("chaos/" + std::to_string(i) + ".ipfix");
      auto [st, b] = s.submit(body);
      if (st == 202) {
        std::lock_guard<std::mutex> lock(mu);
        accepted.push_back(b["task_id"]);
      } else {
        ++refused;
      }
    }
    done = true;
  });
  int kills = 0;
  bool broker_restarted = false;
  // The broker restarts a third of the way through the submissions (by count: a fast api made
  // all 500 in under the 2 s this waited for before, and the restart never came).
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 200));
    auto& ws = s.workers();
    std::size_t victim = rng() % ws.size();
    if (ws[victim]->running()) {
      ws[victim]->signal(SIGKILL);
      ws[victim]->wait(5s);
      ++kills;
    }
    s.start_worker();  // a fresh worker (new id) takes its place
    if (!broker_restarted && submitted >= kTasks / 3) {
      s.broker().signal(SIGKILL);
      s.broker().wait(5s);
      s.start_broker();
      broker_restarted = true;
    }
  }
  submitter.join();
  EXPECT_TRUE(broker_restarted);
  EXPECT_GT(kills, 3);
  ASSERT_GT(accepted.size(), kTasks / 2u) << refused << " refused";
  int succeeded = 0, failed = 0;
  for (auto& id : accepted) {
    auto t = s.wait_terminal(id, 120s);
    if (t["state"] == "succeeded") ++succeeded;
    if (t["state"] == "failed") {
      ++failed;
      ADD_FAILURE() << t.dump();
    }
    EXPECT_EQ(terminal_events(events_of(s, id)), 1) << id;
  }
  EXPECT_EQ(succeeded + failed, static_cast<int>(accepted.size()));
  // Nothing is left queued or running in the database.
  auto q = s.client()->Get("/api/v1/tasks?state=queued");
  auto r = s.client()->Get("/api/v1/tasks?state=running");
  ASSERT_TRUE(q && r);
  EXPECT_EQ(json::parse(q->body)["tasks"].size(), 0u) << q->body;
  EXPECT_EQ(json::parse(r->body)["tasks"].size(), 0u) << r->body;
  EXPECT_TRUE(s.temporaries().empty());
  std::cout << "accepted " << accepted.size() << ", refused " << refused << ", worker kills "
            << kills << ", broker restarts 1\n";
}

// CURVE: only clients whose public key the broker authorised can talk to it.
TEST(Security, CurveKeysKeepStrangersOut) {
  std::string keys =
      (fs::temp_directory_path() / ("ipfixweb-keys-" + std::to_string(::getpid()))).string();
  fs::create_directories(keys + "/frontend");
  fs::create_directories(keys + "/backend");
  auto keygen = [&](const std::string& prefix) {
    int st = 0;
    run_capture(bin_dir() + "/ipfixweb-broker --curve-keygen '" + prefix + "'", &st);
    ASSERT_EQ(st, 0);
  };
  keygen(keys + "/broker");
  keygen(keys + "/frontend/api");
  keygen(keys + "/backend/worker");
  keygen(keys + "/stranger");
  StackOptions o;
  o.workers = 1;
  o.extra_broker_args = {"--curve-secret-key",          keys + "/broker.key",
                         "--curve-authorized-frontend", keys + "/frontend",
                         "--curve-authorized-backend",  keys + "/backend"};
  o.extra_worker_args = {"--curve-server-key", keys + "/broker.pub", "--curve-secret-key",
                         keys + "/backend/worker.key"};
  o.extra_api_args = {"--curve-server-key", keys + "/broker.pub", "--curve-secret-key",
                      keys + "/frontend/api.key"};
  {
    Stack s(o);
    auto [st, body] = s.submit(small_task("curve.ipfix"));
    ASSERT_EQ(st, 202) << body.dump();
    EXPECT_EQ(s.wait_terminal(body["task_id"])["state"], "succeeded");
    // A worker with an unknown key, and one without CURVE, never register.
    s.extra_worker_args_for_next(
        {"--curve-server-key", keys + "/broker.pub", "--curve-secret-key", keys + "/stranger.key"});
    s.start_worker("stranger");
    s.extra_worker_args_for_next({});
    s.start_worker("plain");
    // Nor does one with the api's key: each side has its own list (issue 12, finding 8).
    s.extra_worker_args_for_next({"--curve-server-key", keys + "/broker.pub", "--curve-secret-key",
                                  keys + "/frontend/api.key"});
    s.start_worker("api-key");
    s.extra_worker_args_for_next({});
    std::this_thread::sleep_for(1500ms);
    auto r = s.client()->Get("/readyz");
    ASSERT_TRUE(r);
    EXPECT_EQ(json::parse(r->body)["checks"]["broker"]["workers"], 1) << r->body;
    // The broker said why.
    std::ifstream log(s.data_dir() + "/broker.log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("not authorised"), std::string::npos) << text;
  }
  fs::remove_all(keys);
}

namespace {
// A worker written in the test, speaking the backend protocol directly, so a
// test can send exactly the messages (and the races) it wants.
// Kills the broker without warning and starts it again on the same database and ports.
// Call through ASSERT_NO_FATAL_FAILURE.
void kill_and_restart_broker(Stack& s) {
  s.broker().signal(SIGKILL);
  ASSERT_TRUE(s.broker().wait(5s));
  s.start_broker();
  s.wait_ready(0);
}

}  // namespace

// The broker's rules about its workers (stale ready, goodbye crossing a task, orphans after
// a restart claimed or reported by another worker, a worker back from the dead, unasked
// cancels) are tests of its core: tests/unit/test_broker_core.cpp. The tests below keep the
// end-to-end proofs that need real processes, a real restart or a real database.

// The broker sends tasks before committing their dispatch (group commit): one that dies in
// between restarts with the task still queued while a worker runs it. The worker claims it
// when it registers again; the new broker adopts that run (no abort, no second dispatch)
// and its result finishes the task once.
TEST(Faults, ADispatchTheBrokerDiedBeforeRecordingIsAdoptedFromItsWorker) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = kSilentWorkerBeat;                   // the fake worker does not heartbeat
  o.extra_broker_args = {"--commit-interval", "1"};  // a wide window between send and commit
  Stack s(o);
  // Queued (and committed: before its 202) while no worker is there; dispatched in a later
  // iteration that owes no client a reply, so nothing makes that commit early.
  auto [st, body] = s.submit(small_task("adopt/a.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = body["task_id"];
  FakeWorker w(s.broker_backend(), "fake", "incarnation-1");
  w.ready({});
  auto first = w.next_task(3s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->attempt, 1u);
  EXPECT_EQ(s.get_task(id)["state"], "queued") << "the dispatch was committed already";
  ASSERT_NO_FATAL_FAILURE(kill_and_restart_broker(s));
  w.ready({id});  // same incarnation, still running it
  EXPECT_FALSE(w.next_task(1500ms)) << "the claimed task was dispatched again";
  auto t = s.get_task(id);
  EXPECT_EQ(t["state"], "running") << t.dump();
  EXPECT_EQ(t["worker"], "fake");
  w.done(id, "succeeded");
  t = s.wait_terminal(id, 5s);
  EXPECT_EQ(t["state"], "succeeded");
  EXPECT_EQ(t["attempts"], 1);
  auto ev = events_of(s, id);
  EXPECT_EQ(terminal_events(ev), 1);
  ASSERT_EQ(ev.size(), 3u) << ev.dump();
  EXPECT_NE(ev[1]["reason"].get<std::string>().find("claimed by worker fake"), std::string::npos)
      << ev.dump();
}

// Regression: with group commit the broker sent worker messages before committing, even in
// an iteration that committed anyway, so a task submitted and dispatched in one iteration
// reached its worker before the INSERT that creates it. A broker that then failed to commit
// had a worker run a task that was never accepted. The commit is made to fail here: the
// broker's file size limit is set to its WAL's current size, so the next commit cannot grow
// the WAL: the commit fails with EFBIG and the broker exits with that error.
TEST(Faults, ATaskNeverReachesAWorkerBeforeItsSubmissionIsCommitted) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = kSilentWorkerBeat;  // the fake worker does not heartbeat
  Stack s(o);
  FakeWorker w(s.broker_backend(), "fake", "incarnation-1");
  w.ready({});
  s.wait_ready(1);
  const std::string wal = s.db_path() + "-wal";
  ASSERT_TRUE(fs::exists(wal));
  const rlimit rl{fs::file_size(wal), fs::file_size(wal)};
  ASSERT_EQ(::prlimit(s.broker().pid(), RLIMIT_FSIZE, &rl, nullptr), 0) << std::strerror(errno);
  auto [st, body] = s.submit(small_task("never/a.ipfix"));
  EXPECT_NE(st, 202) << body.dump();
  EXPECT_FALSE(w.next_task(1500ms)) << "a task whose submission was never committed was sent";
  // The broker starts over from the database instead of exiting (issue 12: no crash loop
  // on a full disk), and refuses new tasks for a while.
  ASSERT_TRUE(s.broker().running());
  auto list = s.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  EXPECT_EQ(json::parse(list->body)["tasks"].size(), 0u) << "the refused task was recorded";
}

// Issue 12, finding 7: a full disk crash-looped the broker (a failed commit made it exit,
// and it failed again at the next start). Now it refuses new tasks while reads go on, and
// takes them again once the disk has room.
TEST(Faults, AFullDiskRefusesNewTasksWithoutStoppingTheBrokerUntilThereIsRoomAgain) {
  StackOptions o;
  o.workers = 1;
  Stack s(o);
  auto [st0, before] = s.submit(small_task("full/before.ipfix"));
  ASSERT_EQ(st0, 202);
  s.wait_terminal(before["task_id"]);
  const std::string wal = s.db_path() + "-wal";
  const rlimit full{fs::file_size(wal), RLIM_INFINITY};  // the soft limit; raised again below
  ASSERT_EQ(::prlimit(s.broker().pid(), RLIMIT_FSIZE, &full, nullptr), 0) << std::strerror(errno);
  // Writes that grow the WAL fail from now on, as on a full disk.
  for (int i = 0; i < 3; ++i) {
    auto [st, body] = s.submit(small_task("full/during-" + std::to_string(i) + ".ipfix"));
    EXPECT_NE(st, 202) << body.dump();
  }
  ASSERT_TRUE(s.broker().running()) << "the broker stopped on a full disk";
  auto t = s.get_task(before["task_id"]);
  EXPECT_EQ(t["state"], "succeeded") << "reads go on";
  const rlimit room{RLIM_INFINITY, RLIM_INFINITY};
  ASSERT_EQ(::prlimit(s.broker().pid(), RLIMIT_FSIZE, &room, nullptr), 0);
  // New tasks are refused for 10 s after the last failure, then taken again.
  std::optional<std::string> id;
  for (int i = 0; i < 150 && !id; ++i) {
    auto [st, body] = s.submit(small_task("full/after-" + std::to_string(i) + ".ipfix"));
    if (st == 202)
      id = body["task_id"];
    else
      std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(id) << "no task accepted once the disk had room";
  EXPECT_EQ(s.wait_terminal(*id)["state"], "succeeded");
}

// --min-free-mb: below it new tasks are refused with 507 while reads keep working.
TEST(Faults, BelowTheFreeSpaceFloorNewTasksAreRefusedAndReadsGoOn) {
  StackOptions o;
  o.workers = 1;
  o.extra_broker_args = {"--min-free-mb", "1000000000"};
  Stack s(o);
  auto [st, body] = s.submit(small_task("floor/a.ipfix"));
  EXPECT_EQ(st, 507) << body.dump();
  EXPECT_NE(body["detail"].get<std::string>().find("not enough free disk space"), std::string::npos)
      << body.dump();
  auto list = s.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
}

// A task whose stored spec cannot be read fails when the broker starts, with a line in the
// completion log like any finished task.
TEST(Faults, AnUnreadableStoredSpecFailsTheTaskWithACompletionLine) {
  StackOptions o;
  o.workers = 0;
  Stack s(o);
  auto [st, body] = s.submit(small_task("spec/a.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = body["task_id"];
  s.broker().signal(SIGKILL);
  ASSERT_TRUE(s.broker().wait(5s));
  {
    ipfixweb::db::Database db(s.db_path(), ipfixweb::db::Database::Mode::ReadWriteCreate);
    db.exec("UPDATE tasks SET spec = 'not json' WHERE id = '" + id + "'");
  }
  s.start_broker();
  auto t = s.wait_terminal(id, 5s);
  EXPECT_EQ(t["state"], "failed");
  EXPECT_NE(t["error"].get<std::string>().find("unreadable task spec"), std::string::npos)
      << t.dump();
  std::ifstream log(s.data_dir() + "/logs/failed_tasks.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(log, line)) << "no completion line";
  EXPECT_EQ(json::parse(line)["task_id"], id);
}

// A retry removes the temporary files earlier attempts left on this host, only those of
// processes that are gone, and never another host's (workers elsewhere, or in other
// containers, that share the output storage: their pids mean nothing here).
TEST(Faults, RetrySweepsOnlyThisHostsDeadWritersTemporaries) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = kSilentWorkerBeat;  // the fake worker does not heartbeat
  Stack s(o);
  FakeWorker w(s.broker_backend(), "fake", "incarnation-1");
  w.ready({});
  auto [st, body] = s.submit(small_task("sweep/x.ipfix"));
  ASSERT_EQ(st, 202);
  std::string id = body["task_id"];
  ASSERT_TRUE(w.next_task(3s));

  // Leftovers of the first attempt's writer (a process that has exited), of a writer on
  // another host, and of a live local process.
  pid_t gone = ::fork();
  if (gone == 0) ::_exit(0);
  ::waitpid(gone, nullptr, 0);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string dir = s.output_dir() + "/sweep";
  fs::create_directories(dir);
  const std::string dead_here = dir + "/x.ipfix.tmp." + host + "." + std::to_string(gone);
  const std::string elsewhere = dir + "/x.ipfix.tmp.other-host." + std::to_string(gone);
  const std::string alive_here = dir + "/x.ipfix.tmp." + host + "." + std::to_string(::getpid());
  for (const auto& p : {dead_here, elsewhere, alive_here}) std::ofstream(p) << "partial";

  // The first attempt fails in a way worth retrying, and the fake worker leaves: attempt 2
  // runs on a real worker.
  ipfixweb::proto::Done crashed;
  crashed.task_id = id;
  crashed.error = "crashed with SIGSEGV";
  crashed.retryable = true;
  crashed.grant = w.grants[id];
  w.send(ipfixweb::proto::encode(ipfixweb::proto::type::kDone, crashed));
  w.send(ipfixweb::proto::encode(ipfixweb::proto::type::kBye, ipfixweb::proto::Bye{"test"}));
  s.start_worker();
  auto t = s.wait_terminal(id, 30s);
  EXPECT_EQ(t["state"], "succeeded") << t.dump();
  EXPECT_EQ(t["attempts"], 2) << t.dump();
  EXPECT_TRUE(fs::exists(dir + "/x.ipfix"));
  EXPECT_FALSE(fs::exists(dead_here));
  EXPECT_TRUE(fs::exists(elsewhere));
  EXPECT_TRUE(fs::exists(alive_here));
}

// Found by scripts/chaos (seed 1001): a worker renamed a task's output into place and was lost
// before its result arrived; the task ran again, failed (the disk was full), and the whole
// output of the lost run stayed under the final name of a failed task. The broker now removes
// such a file when the task ends without success, but only when it is newer than the task: a
// file that was there before the task is left alone.
TEST(Faults, AnOutputPublishedByARunWhoseResultWasLostGoesWhenTheTaskFails) {
  StackOptions o;
  o.workers = 0;
  // The fake worker sends no heartbeats: with the tests' 0.2 s beat, a loaded machine that kept
  // this thread from its `done` for 0.6 s made the broker give it up, and the task waited in the
  // queue for a worker that never came (failed once beside a fuzzer and ctest -j2; then once
  // more with a 2 s beat, 6 s of silence, in a full run beside two fuzzers).
  o.heartbeat = kSilentWorkerBeat;
  Stack s(o);
  const std::string before = s.output_dir() + "/before.ipfix";
  {
    std::ofstream(before) << "an older file at the path";
    std::ofstream(before + ".flows.sqlite") << "and its flow store";
  }
  std::filesystem::last_write_time(
      before, std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  std::filesystem::last_write_time(
      before + ".flows.sqlite",
      std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));

  FakeWorker w(s.broker_backend(), "w", "inc-0");
  int incarnation = 0;
  for (const std::string name : {"lost.ipfix", "before.ipfix"}) {
    SCOPED_TRACE(name);
    const std::string out = s.output_dir() + "/" + name;
    w.incarnation = "inc-" + std::to_string(++incarnation);
    w.ready({});
    auto [st, body] = s.submit(small_task(name));
    ASSERT_EQ(st, 202) << body.dump();
    auto first = w.next_task(5s);
    ASSERT_TRUE(first);
    if (name == "lost.ipfix") {  // the run publishes its output, then its worker dies
      std::ofstream(out) << "a whole output";
      std::ofstream(out + ".flows.sqlite") << "its flow store";
    }
    w.incarnation = "inc-" + std::to_string(++incarnation);  // back without the task
    w.ready({});
    auto again = w.next_task(5s);
    ASSERT_TRUE(again) << "the task did not run again";
    w.done(again->task_id, "failed");
    auto t = s.wait_terminal(first->task_id, 10s);
    EXPECT_EQ(t.value("state", ""), "failed") << t.dump();
    for (int i = 0; i < 50 && std::filesystem::exists(out) == (name == "lost.ipfix"); ++i)
      std::this_thread::sleep_for(20ms);
    if (name == "lost.ipfix") {
      EXPECT_FALSE(std::filesystem::exists(out)) << "the lost run's output stayed";
      EXPECT_FALSE(std::filesystem::exists(out + ".flows.sqlite"));
    } else {
      EXPECT_EQ(read_file(out), "an older file at the path");
      EXPECT_TRUE(std::filesystem::exists(out + ".flows.sqlite"));
    }
  }
}

// Found by scripts/chaos (seed 17): a frozen worker was given up for lost, its task ran again
// elsewhere and succeeded; then the frozen run woke, finished its conversion and renamed its own
// output over the good one, so the file no longer was the one the broker recorded and the
// download answered 410. A run now publishes nothing when another writer put a file under its
// output's name while it went on.
TEST(Faults, ARunGivenUpForLostDoesNotReplaceTheOutputOfTheRunThatSucceeded) {
  StackOptions o;
  o.workers = 2;
  o.slots = 1;
  Stack s(o);
  auto [st, body] = s.submit(long_task(s, kSanitized ? 4 : 20, "late.ipfix"));
  ASSERT_EQ(st, 202) << body.dump();
  const std::string id = body["task_id"];
  // Frozen midway: the worker (it stops heartbeating) and the runner converting the task.
  Process* first = nullptr;
  long runner = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        const json t = s.get_task(id);
        if (t.value("progress", 0.0) <= 0) return false;
        const std::string marker = "task " + id + " started in runner ";
        for (auto& w : s.workers()) {
          const std::string log = read_file(w->log_path());
          if (auto at = log.find(marker); at != std::string::npos) {
            first = w.get();
            runner = std::strtol(log.c_str() + at + marker.size(), nullptr, 10);
          }
        }
        return runner > 0;
      },
      30s));
  ASSERT_EQ(::kill(static_cast<pid_t>(runner), SIGSTOP), 0);
  first->signal(SIGSTOP);
  struct Thaw {  // whatever happens below, the stack can be stopped
    Process* w;
    long r;
    ~Thaw() {
      ::kill(static_cast<pid_t>(r), SIGCONT);
      w->signal(SIGCONT);
    }
  } thaw{first, runner};

  // The broker gives the worker up; the task runs again on the other one and succeeds.
  const json t = s.wait_terminal(id, 120s);
  ASSERT_EQ(t.value("state", ""), "succeeded") << t.dump();
  ASSERT_NE(first->name(), "worker " + t.value("worker", std::string())) << t.dump();
  const std::string out = s.output_dir() + "/late.ipfix";
  const auto recorded = fs::status(out);
  ASSERT_TRUE(fs::exists(recorded));
  auto r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);

  // The frozen run wakes (its worker stays frozen) and goes to the end of its conversion.
  ASSERT_EQ(::kill(static_cast<pid_t>(runner), SIGCONT), 0);
  const std::string mine = "." + std::to_string(runner);
  EXPECT_TRUE(wait_until(
      [&] {
        for (const auto& tmp : s.temporaries())
          if (tmp.size() > mine.size() &&
              tmp.compare(tmp.size() - mine.size(), mine.size(), mine) == 0)
            return false;
        std::ifstream stat("/proc/" + std::to_string(runner) + "/stat");
        std::string pid, comm, state;
        stat >> pid >> comm >> state;
        return state == "S";  // waiting for the next task: its conversion ended
      },
      120s));
  std::this_thread::sleep_for(200ms);
  r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << "the woken run replaced the output: " << r->body;
  EXPECT_TRUE(s.temporaries().empty());
  // Its worker wakes too: the task stays as it ended.
  first->signal(SIGCONT);
  EXPECT_TRUE(wait_until(
      [&] {
        return read_file(first->log_path()).find("another writer put a file") != std::string::npos;
      },
      10s))
      << "the woken run did not report why it published nothing";
  const json after = s.get_task(id);
  EXPECT_EQ(after.value("state", ""), "succeeded") << after.dump();
  r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Found by scripts/chaos (seed 17, again): a worker frozen before it read a dispatch was given up
// for lost and the task succeeded on another worker; when it woke, it read the dispatch still
// waiting in its socket and ran the task again. That run began with the good output already in
// place, took it for an output to overwrite, and replaced it: the file was no longer the one the
// broker recorded and the download answered 410. A worker that wakes after sending no heartbeat
// for the whole liveness window now drops its socket, and what was queued in it, unread.
TEST(Faults, AWorkerGivenUpForLostDoesNotRunWhatWasQueuedForItWhenItWakes) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  Stack s(o);
  Process* first = s.workers()[0].get();
  first->signal(SIGSTOP);
  struct Thaw {
    Process* w;
    ~Thaw() { w->signal(SIGCONT); }
  } thaw{first};
  auto [st, body] = s.submit(small_task("queued-for-the-frozen.ipfix"));
  ASSERT_EQ(st, 202) << body.dump();
  const std::string id = body["task_id"];
  // The broker dispatches it to the frozen worker (it still has its credit), gives the worker
  // up, and a second worker runs it.
  ASSERT_TRUE(wait_until([&] { return s.get_task(id).value("state", "") == "running"; }, 10s));
  Process& second = s.start_worker("w2");
  const json t = s.wait_terminal(id, 60s);
  ASSERT_EQ(t.value("state", ""), "succeeded") << t.dump();
  ASSERT_EQ(t.value("worker", ""), "w2") << t.dump();
  auto r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);

  first->signal(SIGCONT);
  EXPECT_TRUE(wait_until(
      [&] {
        return read_file(first->log_path()).find("dropping what it sent meanwhile") !=
               std::string::npos;
      },
      10s))
      << read_file(first->log_path());
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(read_file(first->log_path()).find("task " + id + " started"), std::string::npos)
      << "the woken worker ran the task that had gone to " << second.name();
  r = s.client()->Get("/api/v1/tasks/" + id + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << "the woken worker replaced the output: " << r->body;
  EXPECT_EQ(s.get_task(id).value("state", ""), "succeeded");
  // It serves again: a new task runs.
  auto [st2, b2] = s.submit(small_task("after-the-thaw.ipfix"));
  ASSERT_EQ(st2, 202);
  EXPECT_EQ(s.wait_terminal(b2["task_id"], 60s).value("state", ""), "succeeded");
}

// Found by scripts/chaos (seed 1001): a worker killed in the middle of a task left its runner's
// flow-store temporary behind; the task was cancelled meanwhile, so no rerun on this host swept
// it. The runner now removes its task's temporaries when its supervisor dies.
TEST(Faults, AWorkerKilledMidTaskLeavesNoTemporaryEvenWhenTheTaskNeverRunsAgain) {
  StackOptions o;
  o.workers = 1;
  o.slots = 1;
  Stack s(o);
  auto [st, body] = s.submit(long_task(s, 60, "orphaned.ipfix"));
  ASSERT_EQ(st, 202) << body.dump();
  const std::string id = body["task_id"];
  ASSERT_TRUE(wait_until([&] { return !s.temporaries().empty(); }, 20s))
      << "the task never wrote a temporary";
  s.workers()[0]->signal(SIGKILL);
  s.workers()[0]->wait(5s);
  auto c = s.client()->Delete("/api/v1/tasks/" + id);  // never to run again
  ASSERT_TRUE(c);
  EXPECT_TRUE(wait_until([&] { return s.temporaries().empty(); }, 5s))
      << "left: " << s.temporaries()[0];
  EXPECT_FALSE(std::filesystem::exists(s.output_dir() + "/orphaned.ipfix"));
}

// A full output disk is not the task's fault: the run ends without a result of the task's own,
// the broker runs it again later (backing off, no attempt used), and it succeeds once there is
// room. Needs root to mount a small tmpfs as the output root; skips otherwise.
TEST(Faults, AFullOutputDiskRunsTheTaskAgainOnceThereIsRoomWithoutUsingAnAttempt) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  StackOptions opts;
  opts.workers = 0;
  Stack s(opts);
  if (::mount("ipfixweb-test-full", s.output_dir().c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
              "size=256k") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{s.output_dir()};
  // Fill the file system to its last byte.
  const std::string filler = s.output_dir() + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string block(4096, 'x');
    while (out.write(block.data(), static_cast<std::streamsize>(block.size())) && out.flush()) {
    }
  }
  s.start_worker();
  s.wait_ready(1);
  auto [status, body] = s.submit(small_task("full.ipfix"));
  ASSERT_EQ(status, 202) << body.dump();
  const std::string id = body["task_id"];
  // Its run ends on the full disk and it goes back to the queue, saying why.
  std::string requeued;
  ASSERT_TRUE(wait_until(
      [&] {
        for (auto& e : events_of(s, id))
          if (e.value("state", "") == "queued" &&
              e.value("reason", "").find("file system is full") != std::string::npos)
            requeued = e["reason"];
        return !requeued.empty();
      },
      20s))
      << events_of(s, id).dump(1);
  // The cause is quoted: the system's or SQLite's words (the flow store is written first).
  EXPECT_TRUE(requeued.find("No space left on device") != std::string::npos ||
              requeued.find("database or disk is full") != std::string::npos)
      << requeued;
  EXPECT_NE(s.get_task(id)["state"], "failed");
  // (Temporaries are looked for at the end: the next run may be writing its own by now.)
  // Room again: the next run succeeds, and the full disk used no attempt.
  fs::remove(filler);
  const json t = s.wait_terminal(id, 60s);
  EXPECT_EQ(t["state"], "succeeded") << t.dump(1);
  EXPECT_EQ(t["attempts"], 1) << t.dump(1);
  EXPECT_TRUE(fs::exists(s.output_dir() + "/full.ipfix"));
  EXPECT_TRUE(s.temporaries().empty());
  EXPECT_EQ(terminal_events(events_of(s, id)), 1);
}

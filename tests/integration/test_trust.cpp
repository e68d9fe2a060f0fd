// Issue 12: the broker trusts nothing that reaches its sockets. Each test is a finding of the
// security review, reproduced against real processes: a client speaking to the broker's
// frontend directly (what the api is), and a peer on the backend posing as a worker.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <thread>

#include "fake_peers.hpp"
#include "harness.hpp"
#include "ipfixweb/shared/curve.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipfixweb;
using namespace ipfixweb::test;
using namespace std::chrono_literals;

namespace {

// The peak resident memory of a process in MiB (VmHWM in /proc), or -1.
long peak_rss_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6)) / 1024;
  return -1;
}

// A submission as the api would send it for `output` (absolute) from the stack's sample.
proto::Submit submission(Stack& s, const std::string& output) {
  proto::Submit sub;
  sub.req_id = 1;
  sub.request = R"({"pcap_files":["sample.pcap"],"output_path":"x.ipfix"})";
  sub.spec.inputs = {fs::canonical(s.input_dir() + "/sample.pcap").string()};
  sub.spec.output = output;
  return sub;
}

std::string canonical_output(Stack& s, const std::string& name) {
  return fs::canonical(s.output_dir()).string() + "/" + name;
}

bool broker_alive(Stack& s) { return s.broker().running(); }

}  // namespace

// Finding 1: a frontend client had the worker write an IPFIX file anywhere (e.g. over the
// database). The broker now refuses a spec whose paths are outside its roots.
TEST(Trust, AFrontendClientCannotHaveAFileWrittenOutsideTheOutputRoot) {
  Stack s;
  FakeClient client(s.broker_frontend());
  const std::string outside = s.data_dir() + "/outside.ipfix";
  const std::vector<std::pair<std::string, std::string>> outputs = {
      {s.data_dir() + "/ipfixweb.db", "output is outside the output root"},
      {outside, "output is outside the output root"},
      {canonical_output(s, "../outside.ipfix"), "output is not an absolute, normalised path"},
      {"tcp://127.0.0.1:4739", "output is not an absolute, normalised path"},
  };
  for (const auto& [output, why] : outputs) {
    auto reply = client.submit(submission(s, output), 3s);
    ASSERT_TRUE(reply) << output;
    EXPECT_FALSE(reply->accepted) << output;
    EXPECT_EQ(reply->code, Refusal::Invalid) << output;
    EXPECT_EQ(reply->reason, "the task is not valid: " + why) << output;
  }
  auto input_outside = submission(s, canonical_output(s, "ok.ipfix"));
  input_outside.spec.inputs = {"/etc/passwd"};
  auto reply = client.submit(input_outside, 3s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->reason, "the task is not valid: inputs[0] is outside every input root");
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(fs::exists(outside));
  auto list = s.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body)["tasks"].size(), 0u) << "nothing refused was recorded";
  // A spec inside the roots from the same client is still served.
  reply = client.submit(submission(s, canonical_output(s, "ok.ipfix")), 3s);
  ASSERT_TRUE(reply);
  ASSERT_TRUE(reply->accepted) << reply->reason;
  EXPECT_EQ(s.wait_terminal(reply->task_id)["state"], "succeeded");
}

// Finding 6: the raw request text of a frontend client was spliced into every task list, so
// one bad row made GET /api/v1/tasks invalid JSON for everyone.
TEST(Trust, AFrontendClientCannotMakeTheTaskListInvalidJson) {
  Stack s;
  FakeClient client(s.broker_frontend());
  auto bad = submission(s, canonical_output(s, "bad.ipfix"));
  bad.request = R"({"pcap_files": ["sample.pcap"]]]] not json)";
  auto reply = client.submit(bad, 3s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->code, Refusal::Invalid);
  EXPECT_EQ(reply->reason, "the task is not valid: the request text is not a JSON object");
  auto [st, body] = s.submit(small_task("good.ipfix"));
  ASSERT_EQ(st, 202);
  s.wait_terminal(body["task_id"]);
  auto list = s.client()->Get("/api/v1/tasks");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200);
  auto parsed = json::parse(list->body, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << list->body;
  EXPECT_EQ(parsed["tasks"].size(), 1u);
}

// Finding 2: one progress message with NaN stopped the broker (NOT NULL constraint failed:
// tasks.progress), and with it the whole stack.
TEST(Trust, ANaNProgressFromAWorkerDoesNotStopTheBroker) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = 2.0;  // the fake worker does not heartbeat
  Stack s(o);
  FakeWorker w(s.broker_backend(), "fake", "inc-1");
  w.ready({});
  auto [st, body] = s.submit(small_task("nan.ipfix"));
  ASSERT_EQ(st, 202);
  auto task = w.next_task(3s);
  ASSERT_TRUE(task);
  for (double v :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity(), 1e308}) {
    proto::ProgressMsg p;
    p.task_id = task->task_id;
    p.progress = v;
    w.send(proto::encode(proto::type::kProgress, p));
  }
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(broker_alive(s)) << "the broker stopped";
  auto t = s.get_task(task->task_id);
  EXPECT_EQ(t["state"], "running");
  EXPECT_TRUE(t["progress"].is_number()) << t.dump();
  w.done(task->task_id, "succeeded");
  EXPECT_EQ(s.wait_terminal(task->task_id, 5s)["state"], "succeeded");
}

// Finding 9: a task whose `task` message was lost (or whose worker never reports) stayed
// running for ever. Past its time limit plus a grace it is aborted and runs again.
TEST(Trust, ARunUnreportedPastItsTimeLimitIsAbortedAndRunsAgain) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = 2.0;  // the fake worker does not heartbeat: lost only after 6 s
  o.extra_broker_args = {"--task-timeout", "1", "--overdue-grace", "0.5"};
  Stack s(o);
  FakeWorker w(s.broker_backend(), "silent", "inc-1");
  w.ready({});
  auto [st, body] = s.submit(small_task("ghost.ipfix"));
  ASSERT_EQ(st, 202);
  auto first = w.next_task(3s);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->attempt, 1u);
  // Nothing is reported: after 1.5 s the broker gives up on the run.
  bool aborted = false;
  std::optional<proto::Task> again;
  const auto deadline = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < deadline && !again) {
    auto m = w.next_message(200ms);
    if (!m) continue;
    if (m->type == proto::type::kAbort) aborted = true;
    if (m->type == proto::type::kTask) again = m->as<proto::Task>();
  }
  EXPECT_TRUE(aborted) << "the worker was not told to stop the run";
  ASSERT_TRUE(again) << "the task did not run again";
  EXPECT_EQ(again->task_id, first->task_id);
  EXPECT_EQ(again->attempt, 2u);
  // Recorded with the next commit (messages to workers may go out ahead of it).
  std::string events;
  for (int i = 0; i < 50; ++i) {
    auto ev = s.client()->Get("/api/v1/tasks/" + first->task_id + "/events");
    if (ev) events = ev->body;
    if (events.find("no result from worker within the time limit") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(events.find("no result from worker within the time limit"), std::string::npos)
      << events;
}

// Finding 2: a peer on the backend could claim any task (ready.running) and forge its
// result. Claims and results now need the grant the broker gave with the task.
TEST(Trust, ARogueWorkerCannotClaimOrFinishAnotherWorkersTask) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = 2.0;
  Stack s(o);
  FakeWorker real(s.broker_backend(), "real", "inc-1");
  real.ready({});
  auto [st, body] = s.submit(small_task("claimed.ipfix"));
  ASSERT_EQ(st, 202);
  auto task = real.next_task(3s);
  ASSERT_TRUE(task);
  ASSERT_FALSE(task->grant.empty());
  const std::string id = task->task_id;

  FakeWorker rogue(s.broker_backend(), "rogue", "inc-9");
  rogue.grants[id] = "00000000000000000000000000000000";
  rogue.ready({id}, 4);
  auto answer = rogue.next_message(2s);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->type, proto::type::kAbort) << "the claim was not refused";
  rogue.done(id, "succeeded");
  rogue.grants[id] = task->grant;  // a grant given to another worker does not serve either
  rogue.done(id, "failed");
  std::this_thread::sleep_for(500ms);
  auto t = s.get_task(id);
  EXPECT_EQ(t["state"], "running") << t.dump();
  EXPECT_EQ(t["worker"], "real");
  real.done(id, "succeeded");
  t = s.wait_terminal(id, 5s);
  EXPECT_EQ(t["state"], "succeeded");
  EXPECT_EQ(t["worker"], "real");
}

// Finding 2: a worker advertising 2^32-1 slots took every task (and overflowed the sum).
TEST(Trust, AWorkerOfferingFourBillionSlotsIsGivenTheMostAllowed) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = 2.0;
  o.extra_broker_args = {"--max-worker-slots", "8"};
  Stack s(o);
  FakeWorker greedy(s.broker_backend(), "greedy", "inc-1");
  greedy.ready({}, 0xFFFFFFFFu);
  FakeWorker other(s.broker_backend(), "other", "inc-1");
  other.ready({}, 0xFFFFFFFFu);
  std::this_thread::sleep_for(300ms);
  auto r = s.client()->Get("/readyz");
  ASSERT_TRUE(r);
  auto broker = json::parse(r->body)["checks"]["broker"];
  EXPECT_EQ(broker["slots"], 16) << r->body;
}

// Finding 2: a peer answering every task with `aborted` (which uses no attempt) kept the task
// going round for ever.
TEST(Trust, AWorkerThatAbortsEveryRunCannotKeepATaskGoingRound) {
  StackOptions o;
  o.workers = 0;
  o.heartbeat = 2.0;
  o.extra_broker_args = {"--max-free-runs", "3"};
  Stack s(o);
  FakeWorker w(s.broker_backend(), "aborter", "inc-1");
  w.ready({});
  auto [st, body] = s.submit(small_task("round.ipfix"));
  ASSERT_EQ(st, 202);
  const std::string id = body["task_id"];
  int runs = 0;
  while (auto task = w.next_task(6s)) {  // (free runs back off: 1 s, then 2 s)
    ++runs;
    w.done(task->task_id, "aborted");
    ASSERT_LT(runs, 50) << "the task keeps coming back";
  }
  auto t = s.wait_terminal(id, 5s);
  EXPECT_EQ(t["state"], "failed");
  EXPECT_EQ(runs, 4) << "max free runs (3) + 1";
  EXPECT_NE(t["error"].get<std::string>().find("runs that ended without a result"),
            std::string::npos)
      << t.dump();
}

// Finding 4: frames of any size were buffered, and a frame of tiny objects expanded about 24
// times when unpacked.
TEST(Trust, HugeFramesAndObjectBombsDoNotGrowTheBroker) {
  Stack s;
  const long before = peak_rss_mib(s.broker().pid());
  ASSERT_GT(before, 0);
  {
    // 40 MiB: above ZMQ_MAXMSGSIZE; ZeroMQ drops the connection before buffering it.
    FakeClient big(s.broker_frontend());
    big.send(std::string(40u << 20, 'x'));
    // 20 MB of msgpack: 100,000 arrays of 200 one-byte integers each (every container within
    // the unpacker's per-container limits), 20 million objects of 24 bytes once unpacked.
    FakeClient bomb(s.broker_frontend());
    std::string frame =
        std::string("\x93\x01\xa6submit\xdd\x00\x01\x86\xa0", 14);  // array32: 100,000
    const std::string inner = std::string("\xdc\x00\xc8", 3) + std::string(200, '\x01');
    for (int i = 0; i < 100000; ++i) frame += inner;
    bomb.send(frame);
    std::this_thread::sleep_for(1500ms);
  }
  ASSERT_TRUE(broker_alive(s));
  const long after = peak_rss_mib(s.broker().pid());
  EXPECT_LT(after - before, 100) << "the broker's peak grew from " << before << " to " << after
                                 << " MiB";
  auto [st, body] = s.submit(small_task("after-bomb.ipfix"));
  ASSERT_EQ(st, 202);
  EXPECT_EQ(s.wait_terminal(body["task_id"])["state"], "succeeded");
}

// The proof of the issue: a rogue worker and a rogue frontend client send every message type
// with extreme and malformed values for 10 s while real users submit tasks. The broker stays
// up, no success is forged (every succeeded task has its output), and no file appears
// outside the roots.
TEST(Trust, HostilePeersForTenSecondsLeaveTheBrokerUpAndEveryTaskHonest) {
  StackOptions o;
  o.workers = 2;
  Stack s(o);
  const std::string outside = s.data_dir() + "/escaped";
  const std::string db_before = run_capture("sqlite3 " + s.db_path() + " 'PRAGMA integrity_check'");

  std::mt19937_64 rng(12);
  auto pick = [&](auto n) { return static_cast<std::size_t>(rng() % n); };
  const std::vector<std::string> strings = {"",
                                            std::string(300, 'a'),
                                            "\xff\xfe not utf-8",
                                            "../../etc/passwd",
                                            outside + "/x.ipfix",
                                            "tcp://127.0.0.1:1",
                                            s.db_path(),
                                            canonical_output(s, "rogue.ipfix"),
                                            "00000000-0000-4000-8000-000000000000",
                                            std::string(1, '\0')};
  auto any_string = [&] { return strings[pick(strings.size())]; };
  const std::vector<double> numbers = {
      std::nan(""), std::numeric_limits<double>::infinity(), -1e308, -1, 0, 0.5, 1e18,
      4294967295.0};
  auto any_number = [&] { return numbers[pick(numbers.size())]; };
  // A message of `type` whose body has random values under the real field names (and some
  // that are not), packed as msgpack of mixed types.
  const std::vector<std::string> keys = {
      "req_id",   "request",   "spec",    "idempotency_key", "fingerprint", "priority",
      "task_id",  "worker_id", "slots",   "running",         "grants",      "incarnation",
      "progress", "state",     "summary", "error",           "retryable",   "packets",
      "inputs",   "output",    "submits", "reason",          "seq",         "zzz"};
  auto random_message = [&](std::string_view type) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(3);
    pk.pack(pick(10) == 0 ? 7u : proto::kVersion);
    pk.pack(std::string(type));
    const std::size_t n = pick(8);
    pk.pack_map(static_cast<std::uint32_t>(n));
    for (std::size_t i = 0; i < n; ++i) {
      pk.pack(keys[pick(keys.size())]);
      switch (pick(7)) {
        case 0:
          pk.pack(any_string());
          break;
        case 1:
          pk.pack(any_number());
          break;
        case 2:
          pk.pack(static_cast<std::int64_t>(rng()));
          break;
        case 3:
          pk.pack(std::vector<std::string>{any_string(), any_string()});
          break;
        case 4:
          pk.pack_nil();
          break;
        case 5:
          pk.pack(pick(2) == 0);
          break;
        default: {
          proto::TaskSpec spec;
          spec.inputs = {any_string()};
          spec.output = any_string();
          spec.idle_timeout = any_number();
          spec.max_flows = rng();
          pk.pack(spec);
        }
      }
    }
    return std::string(buf.data(), buf.size());
  };
  const std::vector<std::string_view> backend_types = {
      proto::type::kReady, proto::type::kHeartbeat, proto::type::kStarted, proto::type::kProgress,
      proto::type::kDone,  proto::type::kBye,       proto::type::kTask,    "nonsense"};
  const std::vector<std::string_view> frontend_types = {
      proto::type::kSubmit, proto::type::kSubmitBatch, proto::type::kPing,
      proto::type::kCancel, proto::type::kPong,        "nonsense"};

  FakeClient rogue_client(s.broker_frontend());
  std::vector<std::unique_ptr<FakeWorker>> rogues;
  for (int i = 0; i < 3; ++i)
    rogues.push_back(
        std::make_unique<FakeWorker>(s.broker_backend(), "rogue-" + std::to_string(i), "inc"));
  std::vector<std::string> legit;
  const auto end = std::chrono::steady_clock::now() + 10s;
  std::size_t sent = 0;
  int round = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int k = 0; k < 50; ++k, ++sent) {
      auto& rogue = *rogues[pick(rogues.size())];
      // A valid ready now and then, so the rogue is a known worker and gets tasks.
      if (pick(20) == 0) {
        proto::Ready r;
        r.worker_id = rogue.id;
        r.slots = static_cast<std::uint32_t>(rng());
        r.running = {any_string()};
        r.grants = {any_string()};
        r.incarnation = any_string();
        rogue.send(proto::encode(proto::type::kReady, r));
      } else if (pick(10) == 0) {
        rogue.send(any_string());  // not msgpack at all
      } else {
        rogue.send(random_message(backend_types[pick(backend_types.size())]));
      }
      rogue_client.send(pick(10) == 0
                            ? any_string()
                            : random_message(frontend_types[pick(frontend_types.size())]));
      // Drain what the broker sends the rogues so their queues stay small.
      for (auto& r : rogues) {
        zmq::message_t m;
        while (r->sock.recv(m, zmq::recv_flags::dontwait)) {
        }
      }
      zmq::message_t m;
      while (rogue_client.sock.recv(m, zmq::recv_flags::dontwait)) {
      }
    }
    if (++round % 10 == 0) {
      auto [st, body] = s.submit(small_task("legit/" + std::to_string(round) + ".ipfix"));
      if (st == 202) legit.push_back(body["task_id"]);
    }
    ASSERT_TRUE(broker_alive(s)) << "the broker stopped after " << sent << " hostile messages";
    std::this_thread::sleep_for(5ms);
  }
  rogues.clear();  // gone: their tasks come back after missed heartbeats
  ASSERT_TRUE(broker_alive(s));
  EXPECT_GT(sent, 1000u);
  ASSERT_GE(legit.size(), 5u);
  int succeeded = 0;
  for (const auto& id : legit) {
    auto t = s.wait_terminal(id, 60s);
    if (t["state"] == "succeeded") ++succeeded;
  }
  EXPECT_GT(succeeded, 0);
  // No forged success: every task the database calls succeeded has its output on disk.
  auto list = s.client()->Get("/api/v1/tasks?limit=1000");
  ASSERT_TRUE(list);
  auto tasks = json::parse(list->body)["tasks"];
  for (auto& t : tasks) {
    if (t["state"] != "succeeded") continue;
    EXPECT_TRUE(fs::exists(s.output_dir() + "/" + t["output_path"].get<std::string>())) << t.dump();
  }
  EXPECT_FALSE(fs::exists(outside));
  EXPECT_EQ(run_capture("sqlite3 " + s.db_path() + " 'PRAGMA integrity_check'"), db_before);
  auto r = s.client()->Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  std::cout << "hostile messages: " << sent << ", legit tasks: " << legit.size()
            << ", succeeded: " << succeeded << "\n";
}

// Finding 5: any request could overwrite another task's output, even a running one's.
TEST(Trust, AnOutputBelongsToItsTaskUntilAnotherRequestSaysOverwrite) {
  StackOptions o;
  o.workers = 0;  // the first task stays queued
  Stack s(o);
  auto [st, first] = s.submit(small_task("owned.ipfix"));
  ASSERT_EQ(st, 202);
  auto [st2, second] = s.submit(small_task("owned.ipfix"));
  EXPECT_EQ(st2, 409) << second.dump();
  auto with_overwrite = small_task("owned.ipfix");
  with_overwrite["overwrite"] = true;
  auto [st3, third] = s.submit(with_overwrite);
  EXPECT_EQ(st3, 409) << "a queued task's output is never taken: " << third.dump();
  s.start_worker();
  EXPECT_EQ(s.wait_terminal(first["task_id"])["state"], "succeeded");
  auto [st4, fourth] = s.submit(small_task("owned.ipfix"));
  EXPECT_EQ(st4, 409) << fourth.dump();
  EXPECT_NE(fourth["detail"].get<std::string>().find("\"overwrite\": true"), std::string::npos)
      << fourth.dump();
  auto [st5, fifth] = s.submit(with_overwrite);
  ASSERT_EQ(st5, 202) << fifth.dump();
  EXPECT_EQ(s.wait_terminal(fifth["task_id"])["state"], "succeeded");
}

// Finding 7: nothing was ever deleted. With --retention-days, finished tasks leave the
// database and their outputs the disk, but only the file each task wrote.
TEST(Trust, RetentionRemovesOldTasksAndOnlyTheFilesTheyWrote) {
  StackOptions o;
  o.workers = 1;
  o.extra_broker_args = {"--retention-days", "0.00003"};  // 2.6 s
  Stack s(o);
  auto [st1, a] = s.submit(small_task("keep/replaced.ipfix"));
  auto [st2, b] = s.submit(small_task("keep/written.ipfix"));
  ASSERT_EQ(st1, 202);
  ASSERT_EQ(st2, 202);
  ASSERT_EQ(s.wait_terminal(a["task_id"])["state"], "succeeded");
  ASSERT_EQ(s.wait_terminal(b["task_id"])["state"], "succeeded");
  const std::string replaced = s.output_dir() + "/keep/replaced.ipfix";
  const std::string written = s.output_dir() + "/keep/written.ipfix";
  ASSERT_TRUE(fs::exists(written));
  // Someone puts another file where the first task's output was: not the task's to remove.
  fs::remove(replaced);
  std::ofstream(replaced) << "another file";
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    std::this_thread::sleep_for(100ms);
    auto r = s.client()->Get("/api/v1/tasks/" + b["task_id"].get<std::string>());
    gone = r && r->status == 404;
  }
  ASSERT_TRUE(gone) << "the old task is still in the database";
  auto r = s.client()->Get("/api/v1/tasks/" + a["task_id"].get<std::string>());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_FALSE(fs::exists(written)) << "the task's own output was kept";
  EXPECT_TRUE(fs::exists(replaced)) << "a file the task did not write was removed";
  EXPECT_EQ(run_capture("sqlite3 " + s.db_path() + " 'SELECT count(*) FROM task_events'"), "0\n");
}

// Finding 5: nothing stopped the output root from overlapping the database, the logs or
// the captures; a task's output could then replace them.
TEST(Trust, TheBrokerRefusesAnOutputRootThatHoldsTheDatabaseOrTheCaptures) {
  const fs::path dir =
      fs::temp_directory_path() / ("ipfixweb-overlap-" + std::to_string(::getpid()));
  fs::create_directories(dir / "input");
  const std::string broker = bin_dir() + "/ipfixweb-broker --data-dir " + dir.string() +
                             " --frontend tcp://127.0.0.1:" + std::to_string(free_port()) +
                             " --backend tcp://127.0.0.1:" + std::to_string(free_port());
  for (const auto& [output_root, why] : std::vector<std::pair<std::string, std::string>>{
           {dir.string(), "contains the input root"},
           {(dir / "input" / "out").string(), "is inside the input root"},
           {(dir / "logs").string(), "logs"}}) {
    int status = 0;
    const std::string out =
        run_capture("timeout 10 " + broker + " --output-root " + output_root + " 2>&1", &status);
    EXPECT_NE(status, 0) << output_root;
    EXPECT_NE(out.find(why), std::string::npos) << out;
  }
  fs::remove_all(dir);
}

// Finding 5: the download served whatever file was at the path, another task's included.
TEST(Trust, ADownloadServesOnlyTheFileItsTaskWrote) {
  Stack s;
  auto [st1, first] = s.submit(small_task("dl/x.ipfix"));
  ASSERT_EQ(st1, 202);
  ASSERT_EQ(s.wait_terminal(first["task_id"])["state"], "succeeded");
  const std::string first_url = "/api/v1/tasks/" + first["task_id"].get<std::string>() + "/output";
  auto r = s.client()->Get(first_url);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto again = small_task("dl/x.ipfix");
  again["overwrite"] = true;
  again["uniflow"] = true;  // another file at the same path
  auto [st2, second] = s.submit(again);
  ASSERT_EQ(st2, 202) << second.dump();
  ASSERT_EQ(s.wait_terminal(second["task_id"])["state"], "succeeded");
  r = s.client()->Get(first_url);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 410) << r->body;
  r = s.client()->Get("/api/v1/tasks/" + second["task_id"].get<std::string>() + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  // A FIFO put in the file's place is refused at once, not waited on.
  const std::string path = s.output_dir() + "/dl/x.ipfix";
  fs::remove(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto t0 = std::chrono::steady_clock::now();
  r = s.client()->Get("/api/v1/tasks/" + second["task_id"].get<std::string>() + "/output");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

// Finding 7: a list page of 1000 tasks could hold about 1 GB. A page stops at
// --max-page-bytes and its cursor goes on from there; every task is listed once.
TEST(Trust, AListPageStopsAtItsByteLimitAndTheCursorGoesOn) {
  StackOptions o;
  o.workers = 0;
  o.extra_api_args = {"--max-page-bytes", "2000"};
  Stack s(o);
  std::set<std::string> submitted;
  for (int i = 0; i < 12; ++i) {
    auto [st, body] = s.submit(small_task("page/" + std::to_string(i) + ".ipfix"));
    ASSERT_EQ(st, 202);
    submitted.insert(body["task_id"]);
  }
  std::set<std::string> listed;
  std::string next;
  int pages = 0;
  do {
    auto r = s.client()->Get("/api/v1/tasks?limit=1000" + (next.empty() ? "" : "&next=" + next));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    EXPECT_LT(r->body.size(), 2000u + 1500u) << "a page went far past the limit";
    auto page = json::parse(r->body);
    ASSERT_GT(page["tasks"].size(), 0u);
    for (auto& t : page["tasks"]) EXPECT_TRUE(listed.insert(t["task_id"]).second) << "twice";
    next = page["next"].is_null() ? "" : page["next"].get<std::string>();
    ++pages;
  } while (!next.empty() && pages < 20);
  EXPECT_EQ(listed, submitted);
  EXPECT_GT(pages, 2);
}

namespace {

// CURVE keys made by the broker's --curve-keygen in a directory removed at the end.
struct KeyRing {
  std::string dir =
      (fs::temp_directory_path() / ("ipfixweb-trust-keys-" + std::to_string(::getpid()))).string();
  KeyRing() {
    fs::create_directories(dir + "/frontend");
    fs::create_directories(dir + "/backend");
    make("broker");
    make("frontend/api");
    make("backend/worker");
    make("backend/other-worker");
  }
  ~KeyRing() { fs::remove_all(dir); }
  void make(const std::string& name) {
    int st = 0;
    run_capture(bin_dir() + "/ipfixweb-broker --curve-keygen '" + dir + "/" + name + "'", &st);
    if (st != 0) throw std::runtime_error("keygen failed");
  }
  // A fake peer's keys: the broker's public key and the pair `name`.
  CurveKeys client(const std::string& name) const {
    auto pair = curve::load_secret(dir + "/" + name + ".key");
    return {curve::load_public(dir + "/broker.pub"), pair.public_key, pair.secret_key};
  }
  StackOptions stack() const {
    StackOptions o;
    o.extra_broker_args = {"--curve-secret-key",          dir + "/broker.key",
                           "--curve-authorized-frontend", dir + "/frontend",
                           "--curve-authorized-backend",  dir + "/backend"};
    o.extra_worker_args = {"--curve-server-key", dir + "/broker.pub", "--curve-secret-key",
                           dir + "/backend/worker.key"};
    o.extra_api_args = {"--curve-server-key", dir + "/broker.pub", "--curve-secret-key",
                        dir + "/frontend/api.key"};
    return o;
  }
};

}  // namespace

// Finding 8: one list of keys for both sockets let a worker's key submit and cancel tasks.
TEST(Trust, AWorkersCurveKeyCannotSpeakToTheFrontend) {
  KeyRing keys;
  auto o = keys.stack();
  o.workers = 1;
  Stack s(o);
  FakeClient as_worker(s.broker_frontend(), keys.client("backend/worker"));
  proto::Ping ping;
  ping.req_id = 5;
  as_worker.send(proto::encode(proto::type::kPing, ping));
  EXPECT_FALSE(as_worker.next_reply(1500ms)) << "the frontend answered a worker's key";
  FakeClient as_api(s.broker_frontend(), keys.client("frontend/api"));
  as_api.send(proto::encode(proto::type::kPing, ping));
  EXPECT_TRUE(as_api.next_reply(3000ms)) << "the frontend did not answer the api's key";
}

// Finding 2: a peer took over a real worker's routing id. With CURVE the id belongs to the
// key that registered it.
TEST(Trust, AnotherWorkersKeyCannotSpeakInARegisteredWorkersName) {
  KeyRing keys;
  auto o = keys.stack();
  o.workers = 0;
  o.heartbeat = 2.0;
  Stack s(o);
  FakeWorker real(s.broker_backend(), "real", "inc-1", keys.client("backend/worker"));
  real.ready({});
  auto [st, body] = s.submit(small_task("held.ipfix"));
  ASSERT_EQ(st, 202);
  auto task = real.next_task(3s);
  ASSERT_TRUE(task);
  // Same routing id, another authorised key, and even the task's grant.
  FakeWorker rogue(s.broker_backend(), "real", "inc-2", keys.client("backend/other-worker"));
  rogue.grants = real.grants;
  rogue.ready({}, 4);  // a new incarnation would re-queue the real worker's task
  rogue.done(task->task_id, "failed");
  std::this_thread::sleep_for(800ms);
  auto t = s.get_task(task->task_id);
  EXPECT_EQ(t["state"], "running") << t.dump();
  EXPECT_EQ(t["attempts"], 1) << t.dump();
  std::ifstream log(s.data_dir() + "/broker.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("from another CURVE key"), std::string::npos) << text;
}

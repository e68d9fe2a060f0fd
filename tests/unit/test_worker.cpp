// The worker's pure parts: the runner channel's frames, the result of a runner that ended
// without one, progress throttling, and the session's liveness and result replay window.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/worker/channel.hpp"
#include "ipfixweb/worker/runner_pool.hpp"
#include "ipfixweb/worker/session.hpp"

using namespace ipfixweb;
using namespace ipfixweb::worker;
using channel::Kind;

namespace {

std::vector<channel::Frame> cut_all(channel::FrameReader& in) {
  std::vector<channel::Frame> out;
  while (auto f = in.next()) out.push_back(std::move(*f));
  return out;
}

// What a registration sends again, in order.
std::vector<std::string> replayed(const RecentResults& r) {
  std::vector<std::string> out;
  r.for_each([&](const std::string& m) { out.push_back(m); });
  return out;
}

std::string done_message(const std::string& task_id) {
  proto::Done d;
  d.task_id = task_id;
  d.state = Outcome::Succeeded;
  d.packets = 12;
  return proto::encode(proto::type::kDone, d);
}

}  // namespace

// ---- the runner channel -----------------------------------------------------------------

TEST(Channel, AFrameIsItsLengthLittleEndianThenItsKindThenThePayload) {
  const std::string f = channel::frame_bytes(Kind::Done, "abc");
  EXPECT_EQ(f, std::string("\x04\x00\x00\x00"
                           "Dabc",
                           8));
}

TEST(Channel, AFrameIsCutOnlyOnceItsLastByteArrived) {
  const std::string bytes = channel::frame_bytes(Kind::Progress, "progress message");
  channel::FrameReader in;
  for (std::size_t i = 0; i + 1 < bytes.size(); ++i) {
    in.append(&bytes[i], 1);
    EXPECT_FALSE(in.next()) << "after " << i + 1 << " bytes";
  }
  in.append(&bytes.back(), 1);
  auto f = in.next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->kind, Kind::Progress);
  EXPECT_EQ(f->payload, "progress message");
  EXPECT_EQ(in.pending(), 0u);
}

TEST(Channel, FramesArrivingTogetherAreCutInOrderAndAPartialOneWaits) {
  const std::string next = channel::frame_bytes(Kind::Done, "second");
  std::string bytes = channel::frame_bytes(Kind::Progress, "first") + next;
  bytes += channel::frame_bytes(Kind::Done, "third").substr(0, 7);
  channel::FrameReader in;
  in.append(bytes.data(), bytes.size());
  auto frames = cut_all(in);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].payload, "first");
  EXPECT_EQ(frames[1].kind, Kind::Done);
  EXPECT_EQ(frames[1].payload, "second");
  EXPECT_EQ(in.pending(), 7u);
}

TEST(Channel, ALongStreamOfFramesStaysIntactAcrossBufferCompaction) {
  channel::FrameReader in;
  std::size_t seen = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string payload(100 + i % 50, static_cast<char>('a' + i % 26));
    const std::string bytes = channel::frame_bytes(Kind::Progress, payload);
    // Split every frame across two reads, so frames straddle what was compacted.
    in.append(bytes.data(), 3);
    for (auto& f : cut_all(in)) EXPECT_EQ(f.payload.size(), 100 + (seen++) % 50);
    in.append(bytes.data() + 3, bytes.size() - 3);
    for (auto& f : cut_all(in)) EXPECT_EQ(f.payload.size(), 100 + (seen++) % 50);
  }
  EXPECT_EQ(seen, 2000u);
  EXPECT_EQ(in.pending(), 0u);
}

TEST(Channel, WrittenFramesAreReadBackOverASocketPair) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const std::string task = proto::encode(proto::type::kTask, proto::Task{"t1", 2, {}, 5, "g"});
  ASSERT_TRUE(channel::write_frame(fds[0], Kind::Task, task));
  channel::Frame f;
  ASSERT_TRUE(channel::read_frame(fds[1], f));
  EXPECT_EQ(f.kind, Kind::Task);
  EXPECT_EQ(f.payload, task);  // the message as it was, byte for byte
  ::close(fds[0]);
  EXPECT_FALSE(channel::read_frame(fds[1], f));  // the peer is gone
  ::close(fds[1]);
}

TEST(Channel, ReadingRefusesALengthNoFrameHas) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const char empty[5] = {0, 0, 0, 0, 'T'};
  ASSERT_EQ(::write(fds[0], empty, 5), 5);
  channel::Frame f;
  EXPECT_FALSE(channel::read_frame(fds[1], f));
  const char huge[5] = {0, 0, 0, 0x7f, 'T'};
  ASSERT_EQ(::write(fds[0], huge, 5), 5);
  EXPECT_FALSE(channel::read_frame(fds[1], f));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Channel, WritingToAGoneRunnerFailsWithoutASignal) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ::close(fds[1]);
  EXPECT_FALSE(channel::write_frame(fds[0], Kind::Task, "task"));  // no SIGPIPE
  ::close(fds[0]);
}

// ---- a runner that ended without a result --------------------------------------------------

TEST(LostRunner, ACancelledTaskIsCancelledAndNotRetried) {
  const auto d = result_of_lost_runner("t", KillReason::Cancelled, W_EXITCODE(0, SIGKILL), 3);
  EXPECT_EQ(d.task_id, "t");
  EXPECT_EQ(d.state, Outcome::Cancelled);
  EXPECT_EQ(d.error, "cancelled");
  EXPECT_FALSE(d.retryable);
}

TEST(LostRunner, ATimedOutTaskFailsSayingHowLongItRanInWholeSeconds) {
  const auto d = result_of_lost_runner("t", KillReason::Timeout, W_EXITCODE(0, SIGKILL), 12.9);
  EXPECT_EQ(d.state, Outcome::Failed);
  EXPECT_EQ(d.error, "timed out after 12 s");
  EXPECT_FALSE(d.retryable);
}

TEST(LostRunner, ATaskStoppedByShutdownIsAbortedSoTheBrokerRunsItAgain) {
  const auto d = result_of_lost_runner("t", KillReason::Shutdown, W_EXITCODE(0, SIGKILL), 30);
  EXPECT_EQ(d.state, Outcome::Aborted);
  EXPECT_EQ(d.error, "worker shutting down");
}

TEST(LostRunner, ACrashFailsRetryablyNamingTheSignal) {
  const auto d = result_of_lost_runner("t", std::nullopt, W_EXITCODE(0, SIGSEGV), 1);
  EXPECT_EQ(d.state, Outcome::Failed);
  EXPECT_EQ(d.error, "crashed with SIGSEGV");
  EXPECT_TRUE(d.retryable);
  EXPECT_EQ(result_of_lost_runner("t", std::nullopt, W_EXITCODE(0, SIGXCPU), 1).error,
            "crashed with SIGXCPU");
}

TEST(LostRunner, AnExitWithoutAResultFailsRetryablyNamingTheStatus) {
  const auto d = result_of_lost_runner("t", std::nullopt, W_EXITCODE(3, 0), 1);
  EXPECT_EQ(d.state, Outcome::Failed);
  EXPECT_EQ(d.error, "task runner exited with status 3 without a result");
  EXPECT_TRUE(d.retryable);
}

TEST(LostRunner, KillReasonsLogByName) {
  EXPECT_EQ(name(KillReason::Cancelled), "cancelled");
  EXPECT_EQ(name(KillReason::Timeout), "timeout");
  EXPECT_EQ(name(KillReason::Shutdown), "shutdown");
  EXPECT_EQ(fmt::format("killing runner 7 ({})", KillReason::Timeout),
            "killing runner 7 (timeout)");
}

// ---- a runner's result ----------------------------------------------------------------------

TEST(FailedRun, AnEngineErrorFailsTheTaskAndIsNotRetried) {
  const auto d = result_of_failed_run("t", "cannot read input 'x.pcap': truncated capture");
  EXPECT_EQ(d.task_id, "t");
  EXPECT_EQ(d.state, Outcome::Failed);
  EXPECT_FALSE(d.retryable);
  EXPECT_EQ(d.error, "cannot read input 'x.pcap': truncated capture");
}

TEST(FailedRun, AFullOutputFileSystemAbortsTheRunSoTheBrokerRunsItAgainLater) {
  // As the engine (strerror), libfixbuf and SQLite word it.
  for (const std::string error :
       {"error writing IPFIX output '/o/a.ipfix': No space left on device",
        "cannot write output '/o/a.ipfix': Disk quota exceeded",
        "flow store '/o/a.ipfix.flows.sqlite': database or disk is full"}) {
    SCOPED_TRACE(error);
    EXPECT_TRUE(is_out_of_space(error));
    const auto d = result_of_failed_run("t", error);
    EXPECT_EQ(d.state, Outcome::Aborted);
    EXPECT_EQ(d.error, "the output's file system is full (the task will run again): " + error);
  }
  EXPECT_FALSE(is_out_of_space("no space in the name"));
  EXPECT_FALSE(is_out_of_space(""));
}

TEST(RunnerResult, ADoneForTheTaskGivenIsTakenAsItIs) {
  std::string err;
  auto d = read_result(done_message("t1"), "t1", &err);
  ASSERT_TRUE(d) << err;
  EXPECT_EQ(d->state, Outcome::Succeeded);
  EXPECT_EQ(d->packets, 12u);
}

TEST(RunnerResult, ADoneForAnotherTaskIsUnreadable) {
  std::string err;
  EXPECT_FALSE(read_result(done_message("t2"), "t1", &err));
}

TEST(RunnerResult, AnotherMessageOrGarbageIsUnreadable) {
  std::string err;
  EXPECT_FALSE(read_result(proto::encode(proto::type::kProgress, proto::ProgressMsg{"t1", 0.5, 3}),
                           "t1", &err));
  EXPECT_FALSE(read_result("not msgpack", "t1", &err));
  EXPECT_FALSE(err.empty());
}

// ---- progress ------------------------------------------------------------------------------

TEST(ProgressThrottle, TheFirstProgressPassesAtOnceThenAtMostOncePerInterval) {
  ProgressThrottle t(0.5);
  EXPECT_TRUE(t.pass(100.0));
  EXPECT_FALSE(t.pass(100.1));
  EXPECT_FALSE(t.pass(100.49));
  EXPECT_TRUE(t.pass(100.5));
  EXPECT_FALSE(t.pass(100.9));
  EXPECT_TRUE(t.pass(101.2));
}

TEST(ProgressThrottle, ByDefaultTheIntervalIsTheChannelsProgressInterval) {
  ProgressThrottle t;
  EXPECT_TRUE(t.pass(0));
  EXPECT_FALSE(t.pass(channel::kProgressInterval * 0.99));
  EXPECT_TRUE(t.pass(channel::kProgressInterval));
}

// ---- the broker session -------------------------------------------------------------------

TEST(Liveness, AHeartbeatIsDueOncePerInterval) {
  Liveness l(1.0, 3);
  l.connected(10.0);
  EXPECT_FALSE(l.heartbeat_due(10.5));
  EXPECT_TRUE(l.heartbeat_due(11.0));
  EXPECT_FALSE(l.heartbeat_due(11.5));
  EXPECT_DOUBLE_EQ(l.next_heartbeat(), 12.0);
  EXPECT_TRUE(l.heartbeat_due(12.2));
  EXPECT_DOUBLE_EQ(l.next_heartbeat(), 13.2);
}

TEST(Liveness, TheBrokerIsGivenUpAfterLivenessIntervalsOfSilence) {
  Liveness l(1.0, 3);
  l.connected(10.0);
  EXPECT_FALSE(l.silent(13.0));
  EXPECT_TRUE(l.silent(13.01));
  l.heard(12.0);
  EXPECT_FALSE(l.silent(15.0));
  EXPECT_TRUE(l.silent(15.01));
}

// The broker gives a worker up after `liveness` intervals without a heartbeat from it; the
// worker knows when that happened to it (it did not run) by its own last heartbeat.
TEST(Liveness, AWorkerThatSentNoHeartbeatForLivenessIntervalsKnowsItWasGivenUp) {
  Liveness l(1.0, 3);
  l.connected(10.0);
  EXPECT_FALSE(l.quiet(13.0));  // counted from the connection
  EXPECT_TRUE(l.heartbeat_due(11.0));
  EXPECT_FALSE(l.quiet(14.0));
  EXPECT_TRUE(l.quiet(14.01));
  EXPECT_DOUBLE_EQ(l.quiet_for(20.0), 9.0);
  l.heard(19.0);  // hearing the broker does not make up for heartbeats we did not send
  EXPECT_TRUE(l.quiet(20.0));
  EXPECT_TRUE(l.heartbeat_due(20.0));
  EXPECT_FALSE(l.quiet(20.5));
}

TEST(Liveness, FreshConnectionsBackOffDoublingUpTo32Seconds) {
  Liveness l(1.0, 3);
  l.connected(0.0);
  double now = 3.25;  // first given up after 3 silent intervals
  std::vector<double> waits;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(l.silent(now));
    l.reconnected(now);
    const double at = now;
    while (!l.silent(now)) now += 0.25;
    waits.push_back(now - at);
  }
  const std::vector<double> expected = {1.25, 2.25, 4.25, 8.25, 16.25, 32.25, 32.25, 32.25};
  EXPECT_EQ(waits, expected);  // the back-off, first crossed on the 0.25 s grid
}

TEST(Liveness, HearingFromTheBrokerResetsTheBackOff) {
  Liveness l(1.0, 3);
  l.connected(0.0);
  l.reconnected(3.5);
  l.reconnected(5.0);
  EXPECT_DOUBLE_EQ(l.backoff(), 4.0);
  l.heard(6.0);
  EXPECT_DOUBLE_EQ(l.backoff(), 1.0);
  EXPECT_FALSE(l.silent(9.0));
  EXPECT_TRUE(l.silent(9.5));
}

TEST(Liveness, AFreshConnectionHeartbeatsOneIntervalLater) {
  Liveness l(2.0, 3);
  l.connected(0.0);
  l.reconnected(7.0);
  EXPECT_FALSE(l.heartbeat_due(8.9));
  EXPECT_TRUE(l.heartbeat_due(9.0));
}

TEST(RecentResults, ResultsAreReplayedInTheOrderTheyWereSent) {
  RecentResults r(10);
  r.add(1, "a");
  r.add(2, "b");
  r.add(3, "c");
  EXPECT_EQ(replayed(r), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(RecentResults, AResultOlderThanTheWindowIsForgottenWhenANewOneIsKept) {
  RecentResults r(10);
  r.add(0, "old");
  r.add(5, "mid");
  EXPECT_EQ(r.size(), 2u);
  r.add(10, "edge");  // "old" is exactly 10 s old: still kept
  EXPECT_EQ(r.size(), 3u);
  r.add(10.5, "new");
  EXPECT_EQ(replayed(r), (std::vector<std::string>{"mid", "edge", "new"}));
}

TEST(RecentResults, AtMost1024AreKeptTheOldestGoingFirst) {
  RecentResults r(1e9);
  for (int i = 0; i < 1100; ++i) r.add(i, std::to_string(i));
  const auto kept = replayed(r);
  ASSERT_EQ(kept.size(), RecentResults::kMax);
  EXPECT_EQ(kept.front(), "76");
  EXPECT_EQ(kept.back(), "1099");
}

TEST(RecentResults, TheWindowOutlastsNoticingALostBrokerAndReconnecting) {
  Config cfg;  // 1 s heartbeats, liveness 3
  EXPECT_DOUBLE_EQ(result_keep_seconds(cfg), 17.0);
  cfg.heartbeat_s = 0.2;
  cfg.liveness = 5;
  EXPECT_DOUBLE_EQ(result_keep_seconds(cfg), 9.0);
}

// The worker's pure parts: the runner channel's frames.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/worker/channel.hpp"

using namespace ipfixweb;
using namespace ipfixweb::worker;
using channel::Kind;

namespace {

std::vector<channel::Frame> cut_all(channel::FrameReader& in) {
  std::vector<channel::Frame> out;
  while (auto f = in.next()) out.push_back(std::move(*f));
  return out;
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
  const std::string task = proto::encode(proto::type::kTask, proto::Task{"t1", 2, {}, 5});
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

// IpfixExporter's file handling: an output gets its name only when its data is on disk.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exporter.hpp"
#include "ipfix_walk.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "pcap_writer.hpp"

namespace ipfixweb::engine {
namespace {

namespace fs = std::filesystem;

std::set<std::string> names(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An IPFIX message starts with version 10 (RFC 7011, section 3.1).
bool is_ipfix(const std::string& bytes) {
  return bytes.size() >= 16 && bytes[0] == 0 && bytes[1] == 10;
}

bool has_o_tmpfile(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

TEST(Exporter, AnOutputHasNoNameUntilItsDataIsOnDisk) {
  test::TempDir dir;
  if (!has_o_tmpfile(dir.path())) GTEST_SKIP() << "no O_TMPFILE in " << dir.path();
  ExporterConfig c;
  c.output = dir.file("out.ipfix");
  {
    IpfixExporter x(c);
    // Where O_TMPFILE works (ext4, xfs, btrfs, tmpfs) nothing shows while writing.
    EXPECT_EQ(names(dir.path()), std::set<std::string>{}) << "a name before the commit";
    x.commit();
  }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"});
  EXPECT_TRUE(is_ipfix(contents(c.output)));  // the templates, at least
  {
    IpfixExporter abandoned(c);  // destroyed without a commit: the old output stays
  }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"});
}

TEST(Exporter, CommitReplacesAnExistingOutputAndItsLeftoverTemporary) {
  test::TempDir dir;
  ExporterConfig c;
  c.output = dir.file("out.ipfix");
  std::ofstream(c.output) << "an older output";
  // A temporary under this process's name, as a dead process with our pid would leave it.
  std::ofstream(temporary_output_name(c.output, ::getpid())) << "partial";
  {
    IpfixExporter x(c);
    x.commit();
  }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"});
  EXPECT_TRUE(is_ipfix(contents(c.output)));
}

TEST(Exporter, NamedTemporaryWhenAskedFor) {
  test::TempDir dir;
  ExporterConfig c;
  c.output = dir.file("out.ipfix");
  c.unnamed_temporary = false;
  {
    IpfixExporter x(c);
    EXPECT_EQ(names(dir.path()),
              std::set<std::string>{
                  fs::path(temporary_output_name(c.output, ::getpid())).filename().string()});
    x.commit();
  }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"});
  EXPECT_TRUE(is_ipfix(contents(c.output)));
  { IpfixExporter abandoned(c); }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"}) << "temporary left behind";
}

TEST(Exporter, AMissingDirectoryIsAClearError) {
  test::TempDir dir;
  ExporterConfig c;
  c.output = dir.file("no/such/dir/out.ipfix");
  try {
    IpfixExporter x(c);
    FAIL() << "no error";
  } catch (const EngineError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write output"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos)
        << e.what();
  }
}

// The worker's way: a directory descriptor (opened beneath its output root) and a name in it.
// Whatever the name holds is replaced, never written through; with a named temporary (file
// systems without O_TMPFILE), a link planted at the temporary's name is not followed either.
class ExporterInDirectory : public ::testing::TestWithParam<bool> {};  // unnamed temporary?

TEST_P(ExporterInDirectory, WritesBeneathTheDescriptorAndFollowsNoLink) {
  test::TempDir dir, elsewhere;
  fs::create_directory(dir.file("sub"));
  const std::string victim = elsewhere.file("victim");
  std::ofstream(victim) << "not yours";
  const int dfd = ::open(dir.file("sub").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  fs::create_symlink(victim, dir.file("sub/out.ipfix"));
  ExporterConfig c;
  c.output = "tcp://127.0.0.1:1";  // only a name here: a directory output is never a network one
  c.dir_fd = dfd;
  c.name = "out.ipfix";
  c.unnamed_temporary = GetParam();
  const std::string tmp = temporary_output_name("out.ipfix", ::getpid());
  fs::create_symlink(victim, dir.file("sub/" + tmp));
  {
    IpfixExporter x(c);
    EXPECT_FALSE(x.is_network());
    x.commit();
  }
  EXPECT_EQ(contents(victim), "not yours");
  EXPECT_FALSE(fs::is_symlink(dir.file("sub/out.ipfix")));
  EXPECT_TRUE(is_ipfix(contents(dir.file("sub/out.ipfix"))));
  if (!GetParam()) {  // the planted link was removed, not written through
    EXPECT_EQ(names(dir.file("sub")), std::set<std::string>{"out.ipfix"});
  }
  EXPECT_GE(::fcntl(dfd, F_GETFD), 0) << "the caller's descriptor was closed";
  ::close(dfd);
}

TEST_P(ExporterInDirectory, AFinalNameThatIsADirectoryFailsAndLeavesNoTemporary) {
  test::TempDir dir;
  fs::create_directory(dir.file("out.ipfix"));
  const int dfd = ::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  ExporterConfig c;
  c.output = dir.file("out.ipfix");
  c.dir_fd = dfd;
  c.name = "out.ipfix";
  c.unnamed_temporary = GetParam();
  try {
    IpfixExporter x(c);
    x.commit();
    ADD_FAILURE() << "no error";
  } catch (const EngineError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename output"), std::string::npos) << e.what();
  }
  EXPECT_EQ(names(dir.path()), std::set<std::string>{"out.ipfix"});
  EXPECT_TRUE(fs::is_directory(dir.file("out.ipfix")));
  ::close(dfd);
}

TEST(ExporterDirectoryName, ANameThatIsNotOneFileNameIsRefused) {
  test::TempDir dir;
  const int dfd = ::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  for (const char* bad : {"../x", "a/b", "", ".", ".."}) {
    ExporterConfig c;
    c.output = "x";
    c.dir_fd = dfd;
    c.name = bad;
    EXPECT_THROW(IpfixExporter x(c), EngineError) << bad;
  }
  ::close(dfd);
}

INSTANTIATE_TEST_SUITE_P(Temporaries, ExporterInDirectory, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "unnamed" : "named"; });

// Flows that switch template at every record (IPv4, IPv6, ...) and carry server names of every
// length from 0 to 419 (so records of 100 to 900 bytes, and 3-byte variable lengths), so that many
// messages end at a template switch with too little room for the next record: where libfixbuf
// 2.4.1 wrote an empty data set. Returns the records written.
std::uint64_t write_switching_flows(IpfixExporter& x, int flows) {
  std::uint64_t written = 0;
  const std::string name = "TLS.Example";
  for (int i = 0; i < flows; ++i) {
    Flow f;
    const bool v6 = i % 2 == 1;
    f.key.ip_version = v6 ? 6 : 4;
    f.key.proto = 6;
    f.key.src[0] = 10;
    f.key.src[v6 ? 15 : 3] = static_cast<std::uint8_t>(i);
    f.key.dst[0] = 10;
    f.key.dst[v6 ? 15 : 3] = 1;
    f.key.sport = static_cast<std::uint16_t>(1024 + i);
    f.key.dport = 443;
    f.fwd.packets = 3;
    f.fwd.octets = 300;
    f.rev.packets = 2;
    f.rev.octets = 200;
    f.start_ms = f.fwd.first_ms = f.rev.first_ms = 1'700'000'000'000ULL + i;
    f.end_ms = f.fwd.last_ms = f.rev.last_ms = f.start_ms + 10;
    const std::string server(static_cast<std::size_t>(i * 37 % 420), 'a' + i % 26);
    FlowLabel label;
    label.name = &name;
    label.id = 91;
    label.server = &server;
    label.server_kind = FlowLabel::kTls;
    label.community_id = "1:LQU9qZlK+B5F3KDmev6m5PMibrg=";
    written += x.write(f, EndReason::kEndOfFlow, label, f.end_ms);
  }
  return written;
}

class ExporterSets : public ::testing::TestWithParam<bool> {};  // biflow?

TEST_P(ExporterSets, NoMessageOfAFileHoldsAnEmptySet) {
  test::TempDir dir;
  ExporterConfig c;
  c.output = dir.file("out.ipfix");
  c.biflow = GetParam();
  std::uint64_t written = 0;
  {
    IpfixExporter x(c);
    written = write_switching_flows(x, 3000);
    x.commit();
  }
  const test::IpfixWalk w = test::walk_ipfix(contents(c.output));
  EXPECT_TRUE(w.problems.empty()) << w.problems.size()
                                  << " problems, the first: " << w.problems.front();
  EXPECT_EQ(w.records, written);
  EXPECT_GT(w.messages, 10u);
}

// Live export: UDP messages (1420 bytes at most) and a TCP stream (8192-byte messages) from
// libfixbuf's network exporters, read on loopback by a thread.
TEST_P(ExporterSets, NoLiveMessageHoldsAnEmptySet) {
  for (const bool tcp : {false, true}) {
    SCOPED_TRACE(tcp ? "tcp" : "udp");
    const int fd = ::socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    ASSERT_GE(fd, 0);
    const int rcvbuf = 4 << 20;  // no datagram dropped while the reader lags
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen), 0);
    if (tcp) {
      ASSERT_EQ(::listen(fd, 1), 0);
    }
    std::string received;
    std::atomic<bool> done{false};
    std::thread reader([&] {
      int conn = fd;
      while (tcp && conn == fd) {  // the exporter connects at its first message
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 200) > 0) {
          conn = ::accept(fd, nullptr, nullptr);
        } else if (done) {
          return;
        }
      }
      char buf[65536];
      // Until EOF (TCP), or until the writer is done and nothing came for 200 ms (UDP).
      for (;;) {
        pollfd p{conn, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) {
          if (done) break;
          continue;
        }
        const ssize_t n = ::recv(conn, buf, sizeof buf, 0);
        if (n <= 0) break;
        received.append(buf, static_cast<std::size_t>(n));
      }
      if (tcp && conn >= 0) ::close(conn);
    });
    ExporterConfig c;
    c.output =
        std::string(tcp ? "tcp" : "udp") + "://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    c.biflow = GetParam();
    std::uint64_t written = 0;
    try {
      IpfixExporter x(c);
      written = write_switching_flows(x, tcp ? 1500 : 300);
      x.commit();
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
    done = true;
    reader.join();
    ::close(fd);
    const test::IpfixWalk w = test::walk_ipfix(received);
    EXPECT_TRUE(w.problems.empty())
        << w.problems.size() << " problems, the first: " << w.problems.front();
    EXPECT_EQ(w.records, written);
    EXPECT_GT(w.messages, 10u);
  }
}

INSTANTIATE_TEST_SUITE_P(Exporter, ExporterSets, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "Biflow" : "Uniflow"; });

}  // namespace
}  // namespace ipfixweb::engine

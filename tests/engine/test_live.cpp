// Live export to tcp:// and udp:// collectors; the collected stream is checked with ipfixDump.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Binds a socket of `type` to 127.0.0.1 on an ephemeral port; returns the port.
int bind_local(Fd& s, int type) {
  s.fd = ::socket(AF_INET, type, 0);
  if (s.fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  socklen_t len = sizeof a;
  ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// Reads until EOF (TCP) or until 1.5 s pass without data (UDP), at most 20 s overall.
std::string collect(int fd, bool stream) {
  std::string data;
  char buf[65536];
  for (int rounds = 0; rounds < 40; ++rounds) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1500) <= 0) {
      if (!stream && !data.empty()) break;
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

void write_capture(const std::string& path) {
  PcapWriter w(path);
  for (int i = 0; i < 50; ++i) {  // 50 UDP flows with 2 packets each
    const std::string c = "10.1.0." + std::to_string(i + 1);
    const auto t = 1'650'000'000'000'000ULL + static_cast<std::uint64_t>(i) * 1000;
    w.add(t, ether4(ipv4(c, "10.2.0.1", 17, udp(static_cast<std::uint16_t>(20000 + i), 53, 30))));
    w.add(t + 10, ether4(ipv4("10.2.0.1", c, 17, udp(53, static_cast<std::uint16_t>(20000 + i), 60))));
  }
}

void check_collected(const std::string& bytes, const std::string& file) {
  ASSERT_FALSE(bytes.empty());
  std::ofstream(file, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const DumpResult d = ipfix_dump(file);
  EXPECT_TRUE(d.stderr_text.empty()) << d.stderr_text;
  EXPECT_EQ(d.records.size(), 50u);
}

TEST(LiveExport, Tcp) {
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed";
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  Fd listener;
  const int port = bind_local(listener, SOCK_STREAM);
  ASSERT_GT(port, 0);
  ASSERT_EQ(::listen(listener.fd, 1), 0);
  std::string received;
  std::thread server([&] {
    pollfd p{listener.fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0) return;
    Fd conn;
    conn.fd = ::accept(listener.fd, nullptr, nullptr);
    if (conn.fd >= 0) received = collect(conn.fd, true);
  });
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q -o tcp://127.0.0.1:" +
                          std::to_string(port) + " " + shell_quote(dir.file("in.pcap")));
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  check_collected(received, dir.file("tcp.ipfix"));
}

TEST(LiveExport, Udp) {
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed";
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  Fd sock;
  const int port = bind_local(sock, SOCK_DGRAM);
  ASSERT_GT(port, 0);
  std::string received;
  std::thread server([&] { received = collect(sock.fd, false); });
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q -o udp://127.0.0.1:" +
                          std::to_string(port) + " " + shell_quote(dir.file("in.pcap")));
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  check_collected(received, dir.file("udp.ipfix"));
}

TEST(LiveExport, RefusedConnectionIsAnError) {
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  Fd s;
  const int port = bind_local(s, SOCK_STREAM);  // bound, not listening: connect is refused
  ASSERT_GT(port, 0);
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q -o tcp://127.0.0.1:" +
                          std::to_string(port) + " " + shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pcap2ipfix: error: "), std::string::npos) << r.err;
  const RunResult bad = run(shell_quote(pcap2ipfix()) + " -q -o tcp://nohostport " +
                            shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("bad collector address"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace ipfixweb::engine::test

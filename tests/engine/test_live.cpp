// Live export to tcp:// and udp:// collectors; the collected stream is checked with ipfixDump.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

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
    w.add(t + 10,
          ether4(ipv4("10.2.0.1", c, 17, udp(53, static_cast<std::uint16_t>(20000 + i), 60))));
  }
}

void check_collected(const std::string& bytes, const std::string& file) {
  ASSERT_FALSE(bytes.empty());
  std::ofstream(file, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  const DumpResult d = ipfix_dump(file);
  EXPECT_TRUE(d.stderr_text.empty()) << d.stderr_text;
  EXPECT_EQ(d.records.size(), 50u);
}

// Runs `pcap2ipfix -q OPTIONS -o tcp://127.0.0.1:PORT INPUT` against a collector listening on
// loopback: what the collector received (the run's result in *r).
std::string export_to_tcp_collector(const std::string& options, const std::string& input,
                                    RunResult* r) {
  Fd listener;
  const int port = bind_local(listener, SOCK_STREAM);
  if (port <= 0 || ::listen(listener.fd, 1) != 0) {
    ADD_FAILURE() << "cannot listen on loopback";
    return {};
  }
  std::string received;
  std::thread server([&] {
    pollfd p{listener.fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0) return;
    Fd conn;
    conn.fd = ::accept(listener.fd, nullptr, nullptr);
    if (conn.fd >= 0) received = collect(conn.fd, true);
  });
  *r = run(shell_quote(pcap2ipfix()) + " -q " + options +
           " -o tcp://127.0.0.1:" + std::to_string(port) + " " + shell_quote(input));
  server.join();
  return received;
}

TEST(LiveExport, Tcp) {
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed";
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  RunResult r;
  const std::string received = export_to_tcp_collector("", dir.file("in.pcap"), &r);
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
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -q -o udp://127.0.0.1:" + std::to_string(port) + " " +
          shell_quote(dir.file("in.pcap")));
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  check_collected(received, dir.file("udp.ipfix"));
}

// Receives datagrams until `quiet_ms` pass without one (at most 30 s).
std::vector<std::string> collect_datagrams(int fd, int quiet_ms) {
  std::vector<std::string> out;
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, quiet_ms) <= 0) {
      if (!out.empty()) break;
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.emplace_back(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::uint32_t be32(const std::string& s, std::size_t at) {
  return (std::uint32_t{static_cast<std::uint8_t>(s[at])} << 24) |
         (std::uint32_t{static_cast<std::uint8_t>(s[at + 1])} << 16) |
         (std::uint32_t{static_cast<std::uint8_t>(s[at + 2])} << 8) |
         std::uint32_t{static_cast<std::uint8_t>(s[at + 3])};
}
std::uint16_t be16(const std::string& s, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<std::uint8_t>(s[at]) << 8) |
                                    static_cast<std::uint8_t>(s[at + 1]));
}

// 50 two-packet UDP flows, one every 3 s of packet time (150 s in all), so with a 1 s idle
// timeout flows end while the capture is read.
void write_slow_capture(const std::string& path) {
  PcapWriter w(path);
  for (int i = 0; i < 50; ++i) {
    const std::string c = "10.1.0." + std::to_string(i + 1);
    const auto t = 1'650'000'000'000'000ULL + static_cast<std::uint64_t>(i) * 3'000'000;
    w.add(t, ether4(ipv4(c, "10.2.0.1", 17, udp(static_cast<std::uint16_t>(20000 + i), 53, 30))));
    w.add(t + 10,
          ether4(ipv4("10.2.0.1", c, 17, udp(53, static_cast<std::uint16_t>(20000 + i), 60))));
  }
}

// RFC 7011 8.4: templates are resent over UDP; records are not held until the end of the input.
TEST(LiveExport, UdpFlushesEverySecondOfPacketTimeAndResendsTemplates) {
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed";
  TempDir dir;
  write_slow_capture(dir.file("in.pcap"));
  Fd sock;
  const int port = bind_local(sock, SOCK_DGRAM);
  ASSERT_GT(port, 0);
  int rcvbuf = 4 << 20;
  ::setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  std::vector<std::string> grams;
  std::thread server([&] { grams = collect_datagrams(sock.fd, 1500); });
  const RunResult r = run(shell_quote(pcap2ipfix()) + " -q --idle-timeout 1 -o udp://127.0.0.1:" +
                          std::to_string(port) + " " + shell_quote(dir.file("in.pcap")));
  server.join();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::uint32_t> data_export_times;
  std::size_t template_messages = 0;
  std::string all;
  for (const auto& g : grams) {
    ASSERT_GE(g.size(), 16u);
    ASSERT_EQ(be16(g, 0), 10u);
    ASSERT_EQ(be16(g, 2), g.size());  // one message per datagram
    bool has_template = false;
    bool has_data = false;
    for (std::size_t at = 16; at + 4 <= g.size();) {
      const std::uint16_t id = be16(g, at);
      const std::uint16_t len = be16(g, at + 2);
      ASSERT_GE(len, 4u);
      has_template |= id == 2;
      has_data |= id >= 256;
      at += len;
    }
    if (has_template) ++template_messages;
    if (has_data) data_export_times.insert(be32(g, 4));
    all += g;
  }
  // Flows end every 3 s of packet time: the records leave in many messages over the 150 s.
  EXPECT_GE(data_export_times.size(), 40u) << grams.size() << " datagrams";
  // Templates at the start and again at least every 60 s of packet time (150 s: 3 or more).
  EXPECT_GE(template_messages, 3u);
  std::ofstream(dir.file("udp.ipfix"), std::ios::binary)
      .write(all.data(), static_cast<std::streamsize>(all.size()));
  const DumpResult d = ipfix_dump(dir.file("udp.ipfix"));
  EXPECT_TRUE(d.stderr_text.empty()) << d.stderr_text;
  EXPECT_EQ(d.records.size(), 50u);
}

// With metering threads (one shard per thread, docs/engine.md) a collector receives, while the
// capture is read, exactly the records that one thread writes to a file: same keys, times,
// counters and end reasons.
TEST(LiveExport, ThreadedTcpExportSendsTheRecordsOneThreadWritesToAFile) {
  if (!have_tool("ipfixDump")) GTEST_SKIP() << "ipfixDump not installed";
  TempDir dir;
  write_slow_capture(dir.file("in.pcap"));  // a flow ends every 3 s of packet time
  const RunResult file_run =
      run(shell_quote(pcap2ipfix()) + " -q --idle-timeout 1 -o " +
          shell_quote(dir.file("one.ipfix")) + " " + shell_quote(dir.file("in.pcap")));
  ASSERT_EQ(file_run.exit_code, 0) << file_run.err;
  RunResult r;
  const std::string received =
      export_to_tcp_collector("--threads 3 --idle-timeout 1", dir.file("in.pcap"), &r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_FALSE(received.empty());
  std::ofstream(dir.file("tcp.ipfix"), std::ios::binary)
      .write(received.data(), static_cast<std::streamsize>(received.size()));
  const DumpResult live = ipfix_dump(dir.file("tcp.ipfix"));
  EXPECT_TRUE(live.stderr_text.empty()) << live.stderr_text;
  const DumpResult file = ipfix_dump(dir.file("one.ipfix"));
  EXPECT_EQ(file.records.size(), 50u);
  EXPECT_EQ(record_lines(live.records), record_lines(file.records));
}

// A real collector: nfcapd (nfdump) on loopback; nfdump reads back what it stored.
TEST(LiveExport, NfcapdCollectorStoresEveryFlow) {
  if (!have_tool("nfcapd") || !have_tool("nfdump")) GTEST_SKIP() << "nfdump not installed";
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  std::filesystem::create_directories(dir.file("flows"));
  Fd probe;
  const int port = bind_local(probe, SOCK_DGRAM);  // a free port for nfcapd
  ASSERT_GT(port, 0);
  ::close(probe.fd);
  probe.fd = -1;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string p = std::to_string(port);
    const std::string w = dir.file("flows");
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execlp("nfcapd", "nfcapd", "-w", w.c_str(), "-p", p.c_str(), "-b", "127.0.0.1",
             static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until nfcapd has bound the port.
  bool listening = false;
  for (int i = 0; i < 100 && !listening; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Fd t;
    t.fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    listening = ::bind(t.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0;
  }
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -q -o udp://127.0.0.1:" + std::to_string(port) + " " +
          shell_quote(dir.file("in.pcap")));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(pid, SIGTERM);  // nfcapd writes its file on exit
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(listening) << "nfcapd did not start";
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const RunResult d = run("nfdump -R " + shell_quote(dir.file("flows")) +
                          " -q -o 'fmt:%pr %sa %sp %da %dp %pkt %byt %opkt %obyt'");
  ASSERT_EQ(d.exit_code, 0) << d.err;
  std::istringstream s(d.out);
  std::string line;
  std::set<std::string> rows;
  while (std::getline(s, line)) {
    std::istringstream f(line);
    std::string pr, sa, sp, da, dp, pkt, byt, opkt, obyt;
    if (!(f >> pr >> sa >> sp >> da >> dp >> pkt >> byt >> opkt >> obyt)) continue;
    rows.insert(pr + " " + sa + " " + sp + " " + da + " " + dp + " " + pkt + " " + byt + " " +
                opkt + " " + obyt);
  }
  ASSERT_EQ(rows.size(), 50u) << d.out;
  for (int i = 0; i < 50; ++i) {
    // Forward: 20 + 8 + 30 bytes; reverse 20 + 8 + 60.
    const std::string want = "UDP 10.1.0." + std::to_string(i + 1) + " " +
                             std::to_string(20000 + i) + " 10.2.0.1 53 1 58 1 88";
    EXPECT_TRUE(rows.count(want)) << want << "\n" << d.out;
  }
}

TEST(LiveExport, RefusedConnectionIsAnError) {
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  Fd s;
  const int port = bind_local(s, SOCK_STREAM);  // bound, not listening: connect is refused
  ASSERT_GT(port, 0);
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -q -o tcp://127.0.0.1:" + std::to_string(port) + " " +
          shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pcap2ipfix: error: "), std::string::npos) << r.err;
  const RunResult bad = run(shell_quote(pcap2ipfix()) + " -q -o tcp://nohostport " +
                            shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("bad collector address"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace ipfixweb::engine::test

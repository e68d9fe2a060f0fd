// Issue 12 (finding 1, worker side): the worker opens only files beneath its roots, whoever
// sent the task. The worker runs as a real process against a fake broker (a ZeroMQ ROUTER
// speaking the backend protocol, docs/protocol.md) that sends what a compromised broker or a
// rogue frontend client could get through: outputs outside the output root or on the network,
// links planted inside the roots, FIFOs and directories as inputs. Each task must fail with a
// clear error, nothing outside the roots may be created or changed, nothing may be sent
// anywhere, and the worker must go on serving valid tasks. Every case runs twice: with openat2
// and with the component walk that replaces it where openat2 is refused
// (IPFIXWEB_CONFINE_WALK=1).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "fake_peers.hpp"
#include "harness.hpp"
#include "ipfixweb/shared/protocol.hpp"

namespace fs = std::filesystem;
using namespace ipfixweb;
using namespace ipfixweb::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Param: true = the component walk is forced in the worker.
class WorkerConfinement : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ipfixweb-confine-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = fs::canonical(tmpl);
    data_ = base_ / "data";
    in_ = data_ / "input";
    out_ = data_ / "output";
    outside_ = base_ / "outside";
    fs::create_directories(in_);
    fs::create_directories(out_);
    fs::create_directories(outside_);
    fs::copy_file(test_data() + "/sample.pcap", in_ / "sample.pcap");
    fs::copy_file(test_data() + "/sample.pcap", outside_ / "secret.pcap");
    std::ofstream(data_ / "ipfixweb.db") << "the task database";
    std::ofstream(outside_ / "notes") << "someone else's file";
    std::map<std::string, std::string> env = {{"IPFIXWEB_DATA_DIR", data_.string()}};
    if (GetParam()) env["IPFIXWEB_CONFINE_WALK"] = "1";
    // The data directory through the environment: a worker without root options (before this
    // change) starts too, and shows what it does with such tasks.
    worker_ = std::make_unique<Process>(
        "worker",
        std::vector<std::string>{bin_dir() + "/ipfixweb-worker", "--broker", broker_.endpoint(),
                                 "--id", "wc", "--slots", "1", "--heartbeat", "0.2"},
        env, (base_ / "worker.log").string());
    ASSERT_TRUE(broker_.wait_ready(20s).has_value()) << slurp(base_ / "worker.log");
    if (GetParam()) {
      // The worker may reach the broker before its log line reaches the file (seen once in a
      // loaded CI run): wait for the line, up to 5 s.
      bool said = false;
      for (int i = 0; i < 100 && !said; ++i) {
        said = slurp(base_ / "worker.log").find("component walk") != std::string::npos;
        if (!said) std::this_thread::sleep_for(50ms);
      }
      EXPECT_TRUE(said) << "the worker did not say it opens files by component walk";
    }
  }

  void TearDown() override {
    worker_.reset();
    if (HasFailure()) {
      std::cerr << "===== worker.log =====\n" << slurp(base_ / "worker.log") << "\n";
      std::cerr << "kept " << base_ << "\n";
    } else {
      std::error_code ec;
      fs::remove_all(base_, ec);
    }
  }

  proto::TaskSpec spec(std::vector<std::string> inputs, std::string output) const {
    proto::TaskSpec s;
    s.inputs = std::move(inputs);
    s.output = std::move(output);
    return s;
  }
  std::string sample() const { return (in_ / "sample.pcap").string(); }

  // Every file and directory under the test's directory but the worker's log and the output
  // root's valid outputs: what a refused task must leave exactly as it was.
  std::map<std::string, std::string> snapshot() const {
    std::map<std::string, std::string> s;
    for (const auto& e : fs::recursive_directory_iterator(base_)) {
      const std::string p = e.path().string();
      if (e.path() == base_ / "worker.log" || e.path().filename().string().rfind("ok-", 0) == 0)
        continue;
      if (e.is_symlink())
        s[p] = "link:" + fs::read_symlink(e.path()).string();
      else if (e.is_directory())
        s[p] = "dir";
      else if (e.is_regular_file())
        s[p] = slurp(e.path());
      else
        s[p] = "other";
    }
    return s;
  }

  // Runs a task that must fail with `expect` in its error and change nothing.
  void expect_refused(const proto::TaskSpec& s, const std::string& expect) {
    SCOPED_TRACE("output " + s.output);
    const auto before = snapshot();
    const auto started = Clock::now();
    const auto d = broker_.run(s);
    ASSERT_TRUE(d) << "no result in time";
    EXPECT_EQ(d->state, Outcome::Failed) << d->error;
    EXPECT_NE(d->error.find(expect), std::string::npos) << d->error;
    EXPECT_LT(Clock::now() - started, 10s);
    EXPECT_EQ(snapshot(), before) << "a refused task changed files";
  }

  // The same worker still converts a valid task.
  void expect_next_task_succeeds() {
    const fs::path out = out_ / ("ok-" + std::to_string(++valid_) + ".ipfix");
    const auto d = broker_.run(spec({sample()}, out.string()));
    ASSERT_TRUE(d) << "no result in time";
    EXPECT_EQ(d->state, Outcome::Succeeded) << d->error;
    EXPECT_TRUE(fs::is_regular_file(out));
    EXPECT_GT(d->packets, 0u);
    EXPECT_TRUE(worker_->running());
  }

  FakeBroker broker_;
  std::unique_ptr<Process> worker_;
  fs::path base_, data_, in_, out_, outside_;
  int valid_ = 0;
};

TEST_P(WorkerConfinement, AnOutputOutsideTheOutputRootFailsAndTouchesNothing) {
  expect_next_task_succeeds();
  // The database beside the roots: replacing it was the reviewed attack.
  expect_refused(spec({sample()}, (data_ / "ipfixweb.db").string()), "outside the output root");
  expect_next_task_succeeds();
  expect_refused(spec({sample()}, (outside_ / "new.ipfix").string()), "outside the output root");
  expect_refused(spec({sample()}, (outside_ / "notes").string()), "outside the output root");
  expect_refused(spec({sample()}, (in_ / "sample.pcap").string()), "outside the output root");
  expect_refused(spec({sample()}, out_.string() + "/../ipfixweb.db"), "'..'");
  expect_refused(spec({sample()}, "relative.ipfix"), "not an absolute path");
  expect_refused(spec({sample()}, out_.string()), "root directory");
  // Inputs outside the input roots are refused the same way.
  expect_refused(spec({(outside_ / "secret.pcap").string()}, (out_ / "x.ipfix").string()),
                 "outside the input roots");
  expect_refused(spec({(data_ / "ipfixweb.db").string()}, (out_ / "x.ipfix").string()),
                 "outside the input roots");
  expect_next_task_succeeds();
}

TEST_P(WorkerConfinement, ANetworkOutputFailsAndNothingIsSent) {
  // A collector listening on loopback, TCP and UDP: it must get nothing.
  const int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(tcp, 16), 0);
  ASSERT_EQ(::getsockname(tcp, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string tcp_port = std::to_string(ntohs(a.sin_port));
  a.sin_port = 0;
  ASSERT_EQ(::bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  len = sizeof a;
  ASSERT_EQ(::getsockname(udp, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string udp_port = std::to_string(ntohs(a.sin_port));

  expect_refused(spec({sample()}, "tcp://127.0.0.1:" + tcp_port), "network destination");
  expect_refused(spec({sample()}, "udp://127.0.0.1:" + udp_port), "network destination");
  expect_next_task_succeeds();

  const int conn = ::accept(tcp, nullptr, nullptr);
  EXPECT_LT(conn, 0) << "the worker connected to the TCP collector";
  if (conn >= 0) ::close(conn);
  char buf[2048];
  EXPECT_LT(::recv(udp, buf, sizeof buf, MSG_DONTWAIT), 0) << "the worker sent UDP datagrams";
  ::close(tcp);
  ::close(udp);
}

TEST_P(WorkerConfinement, AnInputSymlinkLeadingOutsideFails) {
  fs::create_symlink(outside_ / "secret.pcap", in_ / "link.pcap");
  fs::create_directory_symlink(outside_, in_ / "linkdir");
  expect_refused(spec({(in_ / "link.pcap").string()}, (out_ / "c.ipfix").string()),
                 "symbolic link");
  expect_refused(spec({(in_ / "linkdir" / "secret.pcap").string()}, (out_ / "c.ipfix").string()),
                 "symbolic link");
  // One bad input among good ones fails the whole task.
  expect_refused(spec({sample(), (in_ / "link.pcap").string()}, (out_ / "c.ipfix").string()),
                 "symbolic link");
  EXPECT_FALSE(fs::exists(out_ / "c.ipfix"));
  expect_next_task_succeeds();
}

TEST_P(WorkerConfinement, AnOutputDirectorySymlinkLeadingOutsideFails) {
  fs::create_directory_symlink(outside_, out_ / "escape");
  expect_refused(spec({sample()}, (out_ / "escape" / "d.ipfix").string()), "symbolic link");
  expect_refused(spec({sample()}, (out_ / "escape" / "sub" / "d.ipfix").string()), "symbolic link");
  // A link at the final name is replaced by the output, the file it points to is untouched.
  fs::create_symlink(outside_ / "notes", out_ / "ok-planted.ipfix");
  const auto d = broker_.run(spec({sample()}, (out_ / "ok-planted.ipfix").string()));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, Outcome::Succeeded) << d->error;
  EXPECT_FALSE(fs::is_symlink(out_ / "ok-planted.ipfix"));
  EXPECT_EQ(slurp(outside_ / "notes"), "someone else's file");
  expect_next_task_succeeds();
}

TEST_P(WorkerConfinement, AFifoOrADirectoryAsInputFailsWithoutBlocking) {
  ASSERT_EQ(::mkfifo((in_ / "fifo.pcap").c_str(), 0600), 0);
  fs::create_directories(in_ / "dir.pcap");
  expect_refused(spec({(in_ / "fifo.pcap").string()}, (out_ / "e.ipfix").string()), "a FIFO");
  expect_refused(spec({(in_ / "dir.pcap").string()}, (out_ / "e.ipfix").string()),
                 "is a directory");
  EXPECT_FALSE(fs::exists(out_ / "e.ipfix"));
  expect_next_task_succeeds();
}

INSTANTIATE_TEST_SUITE_P(Modes, WorkerConfinement, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "walk" : "openat2"; });

}  // namespace

// Opening files beneath roots (shared/confine.hpp): every case runs twice, with openat2 and with
// the component walk that replaces it where openat2 is missing or refused (old kernels, seccomp
// in containers); both must refuse and accept exactly the same paths.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <set>
#include <sstream>

#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/util.hpp"

using namespace ipfixweb;
namespace fs = std::filesystem;

namespace {

std::string contents(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(out.size()))) > 0)
    out.append(buf, static_cast<std::size_t>(n));
  return out;
}

std::set<std::string> names(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

bool same_file(int fd, const fs::path& p) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(p.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// The error a call throws (confine::Error), or "" when it throws nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const confine::Error& e) {
    return e.what();
  }
  return {};
}

std::string sample_pcap() { return std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap"; }

// Param: true = the component walk is forced.
class Confine : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    confine::force_component_walk(GetParam());
    base = fs::temp_directory_path() / ("ipfixweb-confine-" + new_uuid());
    fs::create_directories(base / "in" / "sub");
    fs::create_directories(base / "out");
    fs::create_directories(base / "outside");
    base = fs::canonical(base);
    in = base / "in";
    out = base / "out";
    outside = base / "outside";
    std::ofstream(in / "a.pcap") << "capture a";
    std::ofstream(in / "sub" / "b.pcap") << "capture b";
    std::ofstream(outside / "secret") << "secret";
    roots = std::make_unique<confine::Roots>(std::vector<std::string>{in.string()}, out.string());
  }
  void TearDown() override {
    roots.reset();
    fs::remove_all(base);
    confine::force_component_walk(false);
  }
  std::string open_error(const fs::path& p) {
    return error_of([&] { roots->open_input(p.string()); });
  }
  std::string output_error(const std::string& p, bool create = true) {
    return error_of([&] { roots->output_target(p, create); });
  }

  fs::path base, in, out, outside;
  std::unique_ptr<confine::Roots> roots;
};

TEST_P(Confine, TheModeIsTheOneAskedFor) {
  // Without the walk forced, openat2 is used wherever the kernel has it (5.6+, no filter).
  if (GetParam()) {
    EXPECT_FALSE(confine::using_openat2());
  } else {
    std::cerr << "openat2 in use: " << confine::using_openat2() << "\n";
  }
}

TEST_P(Confine, OpensRegularFilesBeneathTheRoot) {
  confine::Fd fd = roots->open_input((in / "a.pcap").string());
  ASSERT_TRUE(fd);
  EXPECT_EQ(read_all(fd.get()), "capture a");
  EXPECT_EQ(read_all(roots->open_input((in / "sub" / "b.pcap").string()).get()), "capture b");
  // Normalised before matching: repeated slashes and "." components.
  EXPECT_EQ(read_all(roots->open_input(in.string() + "//sub/./b.pcap").get()), "capture b");
  EXPECT_EQ(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_P(Confine, DotDotIsRefusedEvenWhenItWouldStayInside) {
  EXPECT_NE(open_error(in / ".." / "outside" / "secret").find("contains '..'"), std::string::npos);
  EXPECT_NE(open_error(in / "sub" / ".." / "a.pcap").find("contains '..'"), std::string::npos);
  EXPECT_NE(output_error((out / ".." / "outside" / "x").string()).find("contains '..'"),
            std::string::npos);
  EXPECT_EQ(names(outside), std::set<std::string>{"secret"});
}

TEST_P(Confine, AbsolutePathsOutsideAndRelativePathsAreRefused) {
  EXPECT_NE(open_error(outside / "secret").find("outside the input roots"), std::string::npos);
  EXPECT_NE(open_error("/etc/passwd").find("outside the input roots"), std::string::npos);
  // A sibling whose name starts like the root is not inside it.
  fs::create_directories(base / "in2");
  std::ofstream(base / "in2" / "x.pcap") << "x";
  EXPECT_NE(open_error(base / "in2" / "x.pcap").find("outside"), std::string::npos);
  EXPECT_NE(open_error("a.pcap").find("not an absolute path"), std::string::npos);
  EXPECT_NE(open_error("").find("empty"), std::string::npos);
  EXPECT_NE(open_error(in).find("root directory"), std::string::npos);
  EXPECT_NE(output_error((outside / "x.ipfix").string()).find("outside the output root"),
            std::string::npos);
  EXPECT_NE(output_error(out.string()).find("root directory"), std::string::npos);
  EXPECT_EQ(names(outside), std::set<std::string>{"secret"});
}

TEST_P(Confine, ASymlinkToAFileOutsideIsRefused) {
  fs::create_symlink(outside / "secret", in / "link.pcap");
  EXPECT_NE(open_error(in / "link.pcap").find("symbolic link"), std::string::npos)
      << open_error(in / "link.pcap");
  // A relative link that climbs out is refused the same way.
  fs::create_symlink("../outside/secret", in / "rel.pcap");
  EXPECT_NE(open_error(in / "rel.pcap").find("symbolic link"), std::string::npos);
}

TEST_P(Confine, ASymlinkToADirectoryOutsideIsRefused) {
  fs::create_directory_symlink(outside, in / "dirlink");
  const std::string e = open_error(in / "dirlink" / "secret");
  EXPECT_NE(e.find("symbolic link"), std::string::npos) << e;
}

TEST_P(Confine, ASymlinkChainIsRefusedWhereverItEnds) {
  fs::create_symlink(outside / "secret", in / "c3");
  fs::create_symlink(in / "c3", in / "c2");
  fs::create_symlink("c2", in / "c1");
  EXPECT_NE(open_error(in / "c1").find("symbolic link"), std::string::npos);
  // Links below a root are never followed, also those that stay inside: the api sends resolved
  // paths, so a link here was planted after validation.
  fs::create_symlink("a.pcap", in / "i2");
  fs::create_symlink("i2", in / "i1");
  EXPECT_NE(open_error(in / "i1").find("symbolic link"), std::string::npos);
}

TEST_P(Confine, MagicLinksAreRefused) {
  // A root where /proc-style magic links live: /proc/self/root leads to "/" whatever the root.
  confine::Roots proc({"/proc/self"}, out.string());
  const std::string self = proc.inputs().front().path();  // /proc/<pid>
  const std::string e =
      error_of([&] { proc.open_input(self + "/root" + (outside / "secret").string()); });
  EXPECT_NE(e.find("symbolic link"), std::string::npos) << e;
  const std::string cwd = error_of([&] { proc.open_input(self + "/cwd/x"); });
  EXPECT_NE(cwd.find("symbolic link"), std::string::npos) << cwd;
  // A plain link to one, planted inside a root.
  fs::create_directory_symlink("/proc/self/root", in / "magic");
  EXPECT_NE(open_error(in / "magic" / outside.relative_path() / "secret").find("symbolic link"),
            std::string::npos);
  // A descriptor's magic link.
  const int fd = ::open((outside / "secret").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  fs::create_symlink("/proc/self/fd/" + std::to_string(fd), in / "fdlink");
  EXPECT_NE(open_error(in / "fdlink").find("symbolic link"), std::string::npos);
  ::close(fd);
}

TEST_P(Confine, AFifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo((in / "fifo").c_str(), 0600), 0);
  auto refused = std::async(std::launch::async, [&] { return open_error(in / "fifo"); });
  if (refused.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    // Unblock the open with a writer so the test ends, then fail.
    const int w = ::open((in / "fifo").c_str(), O_WRONLY | O_NONBLOCK);
    refused.wait();
    if (w >= 0) ::close(w);
    FAIL() << "opening a FIFO blocked";
  }
  EXPECT_NE(refused.get().find("a FIFO"), std::string::npos);
}

TEST_P(Confine, DirectoriesDevicesAndSocketsAreRefused) {
  EXPECT_NE(open_error(in / "sub").find("a directory"), std::string::npos)
      << open_error(in / "sub");
  // A device beneath a root (making one needs privileges; /dev has them all).
  confine::Roots dev({"/dev"}, out.string());
  const std::string e = error_of([&] { dev.open_input("/dev/null"); });
  EXPECT_NE(e.find("character device"), std::string::npos) << e;
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string sp = (in / "sock").string();
  ASSERT_LT(sp.size(), sizeof a.sun_path);
  std::copy(sp.begin(), sp.end(), a.sun_path);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_NE(open_error(in / "sock").find("a socket"), std::string::npos);
  ::close(s);
}

TEST_P(Confine, MissingFilesAreClearErrors) {
  EXPECT_NE(open_error(in / "nope.pcap").find("does not exist"), std::string::npos);
  EXPECT_NE(open_error(in / "a.pcap" / "x").find("not a directory"), std::string::npos)
      << open_error(in / "a.pcap" / "x");
}

TEST_P(Confine, OutputDirectoriesAreCreatedBeneathTheRoot) {
  auto t = roots->output_target((out / "x" / "y" / "z.ipfix").string());
  EXPECT_EQ(t.name, "z.ipfix");
  EXPECT_TRUE(fs::is_directory(out / "x" / "y"));
  EXPECT_TRUE(same_file(t.dir.get(), out / "x" / "y"));
  EXPECT_FALSE(fs::exists(out / "x" / "y" / "z.ipfix"));  // named only, not created
  auto top = roots->output_target((out / "top.ipfix").string());
  EXPECT_TRUE(same_file(top.dir.get(), out));
  // Without `create`, a missing directory is an error and nothing is made.
  const std::string e = output_error((out / "new" / "o.ipfix").string(), false);
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(out / "new"));
}

TEST_P(Confine, NetworkDestinationsAreRefused) {
  for (const std::string dest : {"tcp://127.0.0.1:4739", "udp://127.0.0.1:4739", "tcp://[::1]:1"}) {
    const std::string e = output_error(dest);
    EXPECT_NE(e.find("network destination"), std::string::npos) << e;
    EXPECT_NE(error_of([&] { roots->check_output(dest); }), "");
  }
  EXPECT_TRUE(fs::is_empty(out));
}

TEST_P(Confine, AnOutputDirectorySymlinkLeadingOutsideIsRefused) {
  fs::create_directory_symlink(outside, out / "escape");
  const std::string e = output_error((out / "escape" / "x.ipfix").string());
  EXPECT_NE(e.find("symbolic link"), std::string::npos) << e;
  const std::string deeper = output_error((out / "escape" / "new" / "x.ipfix").string());
  EXPECT_NE(deeper.find("symbolic link"), std::string::npos) << deeper;
  EXPECT_EQ(names(outside), std::set<std::string>{"secret"});
}

TEST_P(Confine, AnOutputThatIsADirectoryIsRefused) {
  fs::create_directories(out / "d");
  EXPECT_NE(output_error((out / "d").string()).find("is a directory"), std::string::npos);
}

// The engine writes through the output's directory descriptor: the temporary is never under the
// final name, and a symbolic link at the final name is replaced, not followed.
class ConfineOutput : public Confine {
 protected:
  nlohmann::json convert(const std::string& output, const engine::ProgressFn& progress = {}) {
    engine::Options o;
    o.inputs = {sample_pcap()};
    o.output = output;
    o.dpi = false;
    o.progress_every_packets = 1;
    auto target = roots->output_target(output);
    o.output_dir_fd = target.dir.get();
    o.output_name = target.name;
    return engine_.convert(o, progress);
  }
  engine::Engine engine_{false};
};

TEST_P(ConfineOutput, ASymlinkAtTheFinalNameIsReplacedNotFollowed) {
  fs::create_symlink(outside / "secret", out / "victim.ipfix");
  const auto j = convert((out / "victim.ipfix").string());
  EXPECT_GT(j["packets"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(contents(outside / "secret"), "secret");
  EXPECT_FALSE(fs::is_symlink(out / "victim.ipfix"));
  EXPECT_TRUE(fs::is_regular_file(out / "victim.ipfix"));
  EXPECT_GT(fs::file_size(out / "victim.ipfix"), 0u);
  EXPECT_EQ(names(out), std::set<std::string>{"victim.ipfix"});
}

TEST_P(ConfineOutput, TheTemporaryIsNeverUnderTheFinalName) {
  std::ofstream(out / "o.ipfix") << "the previous output";
  std::vector<bool> previous;  // per progress report: the final name held the previous file
  convert((out / "o.ipfix").string(), [&](const engine::Progress&) {
    previous.push_back(contents(out / "o.ipfix") == "the previous output");
    EXPECT_EQ(names(out), std::set<std::string>{"o.ipfix"});
  });
  // While the conversion writes (one report per packet), the final name holds the previous
  // file; the last report, after the rename, sees the new one.
  ASSERT_GT(previous.size(), 300u);
  EXPECT_EQ(std::count(previous.begin(), previous.end() - 1, false), 0);
  EXPECT_FALSE(previous.back());
  EXPECT_NE(contents(out / "o.ipfix"), "the previous output");
  EXPECT_EQ(names(out), std::set<std::string>{"o.ipfix"});
}

TEST_P(ConfineOutput, AnEngineGivenOpenInputsReadsThemAndNamesThemByTheirPaths) {
  fs::copy_file(sample_pcap(), in / "s.pcap");
  const std::string name = (in / "s.pcap").string();
  confine::Fd fd = roots->open_input(name);
  engine::Options o;
  o.inputs = {name};
  o.input_fds = {fd.get()};
  o.output = (out / "s.ipfix").string();
  o.dpi = false;
  auto target = roots->output_target(o.output);
  o.output_dir_fd = target.dir.get();
  o.output_name = target.name;
  // The file under the name is gone: only the descriptor is read.
  fs::remove(in / "s.pcap");
  const auto j = engine_.convert(o);
  EXPECT_EQ(j["packets"].get<std::uint64_t>(), 347u);
  EXPECT_EQ(j["inputs"][0]["path"], name);
  EXPECT_GE(::fcntl(fd.get(), F_GETFD), 0) << "the engine closed the caller's descriptor";
}

INSTANTIATE_TEST_SUITE_P(Modes, Confine, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "walk" : "openat2"; });
INSTANTIATE_TEST_SUITE_P(Modes, ConfineOutput, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "walk" : "openat2"; });

TEST(ConfineRelative, MatchesWholeComponentsAfterNormalising) {
  EXPECT_EQ(confine::relative_below("/r", "/r/a/b"), "a/b");
  EXPECT_EQ(confine::relative_below("/r", "//r//a/./b/"), "a/b");
  EXPECT_EQ(confine::relative_below("/", "/etc/x"), "etc/x");
  std::string why;
  EXPECT_EQ(confine::relative_below("/r", "/rx/a", &why), "");
  EXPECT_NE(why.find("outside"), std::string::npos);
  EXPECT_EQ(confine::relative_below("/r", "/r", &why), "");
  EXPECT_EQ(confine::relative_below("/r", "/r/a/../b", &why), "");
  EXPECT_NE(why.find(".."), std::string::npos);
  EXPECT_EQ(confine::relative_below("/r", "r/a", &why), "");
  EXPECT_NE(why.find("absolute"), std::string::npos);
  EXPECT_EQ(confine::relative_below("/r", std::string("/r/a\0b", 6), &why), "");
  EXPECT_NE(why.find("NUL"), std::string::npos);
}

TEST(ConfineBeneath, RefusesPathsThatAreNotPlainRelativeComponents) {
  const int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(root, 0);
  for (const char* bad : {"../etc/passwd", "/etc/passwd", "etc/../etc/passwd", "", "etc//passwd"}) {
    errno = 0;
    EXPECT_EQ(confine::open_beneath(root, bad, O_RDONLY), -1) << bad;
    EXPECT_EQ(errno, EXDEV) << bad;
  }
  ::close(root);
}

TEST(ConfineRoots, AMissingRootIsAClearErrorAtStart) {
  const std::string e = error_of([] { confine::Roots r({"/nonexistent-ipfixweb-root"}, "/tmp"); });
  EXPECT_NE(e.find("/nonexistent-ipfixweb-root"), std::string::npos) << e;
  EXPECT_NE(e.find("No such file or directory"), std::string::npos) << e;
}

}  // namespace

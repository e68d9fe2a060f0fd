// IpfixExporter's file handling: an output gets its name only when its data is on disk.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "exporter.hpp"
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

}  // namespace
}  // namespace ipfixweb::engine

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

}  // namespace
}  // namespace ipfixweb::engine

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/util.hpp"

using namespace ipfixweb;
namespace fs = std::filesystem;

class Paths : public ::testing::Test {
 protected:
  void SetUp() override {
    base = fs::temp_directory_path() / ("ipfixweb-paths-" + new_uuid());
    fs::create_directories(base / "in" / "sub");
    fs::create_directories(base / "out");
    fs::create_directories(base / "secret");
    std::ofstream(base / "in" / "a.pcap") << "x";
    std::ofstream(base / "in" / "sub" / "b.pcap") << "x";
    std::ofstream(base / "secret" / "s.pcap") << "x";
    fs::create_symlink(base / "secret", base / "in" / "escape");
    fs::create_symlink(base / "in" / "a.pcap", base / "in" / "alias.pcap");
    in = paths::canonical_dir((base / "in").string());
    out = paths::canonical_dir((base / "out").string());
  }
  void TearDown() override { fs::remove_all(base); }
  fs::path base;
  std::string in, out;
};

TEST_F(Paths, AcceptsFilesUnderTheRoot) {
  auto r = paths::resolve_input({in}, "a.pcap");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, in + "/a.pcap");
  EXPECT_TRUE(paths::resolve_input({in}, "sub/b.pcap").ok);
  EXPECT_TRUE(paths::resolve_input({in}, in + "/sub/b.pcap").ok);  // absolute inside
  EXPECT_TRUE(paths::resolve_input({in}, "alias.pcap").ok);        // link that stays inside
}

TEST_F(Paths, RefusesEscapes) {
  EXPECT_FALSE(paths::resolve_input({in}, "../secret/s.pcap").ok);
  EXPECT_FALSE(paths::resolve_input({in}, "sub/../../secret/s.pcap").ok);
  EXPECT_FALSE(paths::resolve_input({in}, (base / "secret" / "s.pcap").string()).ok);
  auto link = paths::resolve_input({in}, "escape/s.pcap");
  EXPECT_FALSE(link.ok);
  EXPECT_NE(link.error.find("outside"), std::string::npos) << link.error;
  EXPECT_FALSE(paths::resolve_input({in}, "").ok);
  EXPECT_FALSE(paths::resolve_input({in}, std::string("a\0b", 3)).ok);
}

TEST_F(Paths, ChecksExistenceTypeAndReadability) {
  auto missing = paths::resolve_input({in}, "nope.pcap");
  EXPECT_FALSE(missing.ok);
  EXPECT_NE(missing.error.find("does not exist"), std::string::npos);
  EXPECT_FALSE(paths::resolve_input({in}, "sub").ok);  // a directory
  if (::geteuid() != 0) {                              // root reads everything
    fs::permissions(base / "in" / "a.pcap", fs::perms::none);
    EXPECT_FALSE(paths::resolve_input({in}, "a.pcap").ok);
  }
}

TEST_F(Paths, TriesEveryInputRoot) {
  std::string other = paths::canonical_dir((base / "secret").string());
  auto r = paths::resolve_input({in, other}, "s.pcap");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, other + "/s.pcap");
}

TEST_F(Paths, OutputsMayCreateDirectoriesButStayInside) {
  auto r = paths::resolve_output(out, "new/dir/x.ipfix");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, out + "/new/dir/x.ipfix");
  EXPECT_TRUE(paths::resolve_output(out, out + "/y.ipfix").ok);
  EXPECT_FALSE(paths::resolve_output(out, "../x.ipfix").ok);
  EXPECT_FALSE(paths::resolve_output(out, "/tmp/x.ipfix").ok);
  EXPECT_FALSE(paths::resolve_output(out, "dir/").ok);
  fs::create_symlink(base / "secret", base / "out" / "link");
  EXPECT_FALSE(paths::resolve_output(out, "link/x.ipfix").ok);
  fs::create_symlink(base / "secret" / "s.pcap", base / "out" / "file-link.ipfix");
  EXPECT_FALSE(paths::resolve_output(out, "file-link.ipfix").ok);
  fs::create_directories(base / "out" / "adir");
  EXPECT_FALSE(paths::resolve_output(out, "adir").ok);
}

TEST(PathsWithin, ComparesWholeComponents) {
  EXPECT_TRUE(paths::is_within("/a/b", "/a/b"));
  EXPECT_TRUE(paths::is_within("/a/b", "/a/b/c"));
  EXPECT_FALSE(paths::is_within("/a/b", "/a/bc"));
  EXPECT_FALSE(paths::is_within("/a/b", "/a"));
  EXPECT_TRUE(paths::is_within("/", "/x"));
}

TEST_F(Paths, NamesThatAreNotUtf8AreRefused) {
  std::string latin1 = std::string("caf") + '\xe9' + ".pcap";  // "café" in Latin-1
  std::ofstream(base / "in" / latin1) << "x";
  auto r = paths::resolve_input({in}, latin1);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("UTF-8"), std::string::npos) << r.error;
  EXPECT_FALSE(paths::resolve_output(out, latin1).ok);
  // A link with a UTF-8 name that resolves to the Latin-1 one is refused too.
  fs::create_symlink(base / "in" / latin1, base / "in" / "ok.pcap");
  EXPECT_FALSE(paths::resolve_input({in}, "ok.pcap").ok);
  std::ofstream(base / "in" / "caf\xc3\xa9.pcap") << "x";  // UTF-8 is fine
  EXPECT_TRUE(paths::resolve_input({in}, "caf\xc3\xa9.pcap").ok);
}

// Paths without symlinks below the root take a shortcut (lstat per component
// instead of resolving the whole path); every other shape takes the general
// way. Both must give the same answers.
TEST_F(Paths, ShortcutAndGeneralResolutionAgree) {
  fs::create_symlink(base / "in" / "sub", base / "in" / "subalias");  // a directory link inside
  fs::create_symlink(base / "nowhere", base / "in" / "dangling.pcap");
  // Spellings of one file: plain, absolute, with "." and doubled slashes.
  for (std::string p : {std::string("sub/b.pcap"), in + "/sub/b.pcap", std::string("./sub/b.pcap"),
                        std::string("sub//b.pcap"), std::string("subalias/b.pcap")}) {
    auto r = paths::resolve_input({in}, p);
    ASSERT_TRUE(r.ok) << p << ": " << r.error;
    EXPECT_EQ(r.path, in + "/sub/b.pcap") << p;
  }
  EXPECT_FALSE(paths::resolve_input({in}, "a.pcap/x").ok);       // a file in the middle
  EXPECT_FALSE(paths::resolve_input({in}, "dangling.pcap").ok);  // link to nothing
  EXPECT_FALSE(paths::resolve_input({in}, "escape").ok);         // link to a directory outside
  EXPECT_FALSE(paths::resolve_input({in}, "sub/").ok);
  // The root itself given as an absolute path, or a sibling sharing its prefix.
  EXPECT_FALSE(paths::resolve_input({in}, in).ok);
  fs::create_directories(base / "in2");
  std::ofstream(base / "in2" / "c.pcap") << "x";
  auto sibling = paths::resolve_input({in}, in + "2/c.pcap");
  EXPECT_FALSE(sibling.ok);
  EXPECT_NE(sibling.error.find("outside"), std::string::npos) << sibling.error;

  // Outputs: an existing file may be replaced; missing directories are fine.
  std::ofstream(base / "out" / "old.ipfix") << "x";
  auto r = paths::resolve_output(out, "old.ipfix");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, out + "/old.ipfix");
  r = paths::resolve_output(out, out + "/a/b/c.ipfix");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, out + "/a/b/c.ipfix");
  EXPECT_FALSE(paths::resolve_output(out, "old.ipfix/x.ipfix").ok);  // parent is a file
  fs::create_directories(base / "out" / "real");
  fs::create_symlink(base / "out" / "real", base / "out" / "inside");  // stays inside: fine
  r = paths::resolve_output(out, "inside/x.ipfix");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.path, out + "/real/x.ipfix");
  fs::create_symlink(base / "secret", base / "out" / "real" / "deep");  // escape one level down
  EXPECT_FALSE(paths::resolve_output(out, "real/deep/x.ipfix").ok);
  EXPECT_FALSE(paths::resolve_output(out, "real/deep").ok);  // the target itself is a link
  EXPECT_FALSE(paths::resolve_output(out, out).ok);
}

TEST(PathsOverlap, OutputRootAndInputRootsMustBeApart) {
  EXPECT_EQ(paths::overlap_error({"/d/input"}, "/d/output"), "");
  EXPECT_EQ(paths::overlap_error({"/d/in", "/e/in"}, "/d/input"), "");  // a prefix, not a parent
  const std::string same = paths::overlap_error({"/d/input"}, "/d/input/");
  EXPECT_NE(same.find("also an input root"), std::string::npos) << same;
  const std::string inside = paths::overlap_error({"/a", "/d/input"}, "/d/input/out");
  EXPECT_NE(inside.find("inside the input root /d/input"), std::string::npos) << inside;
  const std::string contains = paths::overlap_error({"/d/input"}, "/d");
  EXPECT_NE(contains.find("contains the input root /d/input"), std::string::npos) << contains;
  EXPECT_NE(paths::overlap_error({"/d/input"}, "/"), "");
  EXPECT_NE(paths::overlap_error({"/d/./input"}, "/d/input/../input"), "");  // normalised
}

TEST(PathsOverlap, OutputRootMustNotHoldTheDatabaseOrLogs) {
  const std::vector<std::string> in = {"/d/input"};
  EXPECT_EQ(paths::overlap_error(in, "/d/output", {"/d/ipfixweb.db", "/d/logs", ""}), "");
  const std::string db = paths::overlap_error(in, "/d/output", {"/d/output/ipfixweb.db"});
  EXPECT_NE(db.find("contains /d/output/ipfixweb.db"), std::string::npos) << db;
  EXPECT_NE(paths::overlap_error(in, "/d/output", {"/d/output"}), "");  // logs in the root itself
  EXPECT_NE(paths::overlap_error(in, "/d/output", {"/d/output/a/logs"}), "");
}

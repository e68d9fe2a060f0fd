// The pure checks behind the broker's distrust of its peers: a spec's paths and ranges
// (spec_check.hpp), dispatch grants (grant.hpp) and the bound on a frame's objects.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "ipfixweb/shared/grant.hpp"
#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/spec_check.hpp"

namespace fs = std::filesystem;
using namespace ipfixweb;

namespace {

proto::TaskSpec good_spec() {
  proto::TaskSpec s;
  s.inputs = {"/data/input/a.pcap", "/data/more/b.pcap"};
  s.output = "/data/output/x/y.ipfix";
  return s;
}

const proto::SpecRoots kRoots = {{"/data/input", "/data/more"}, "/data/output"};

}  // namespace

TEST(SpecCheck, AcceptsAbsoluteNormalPathsInsideTheRoots) {
  EXPECT_EQ(proto::check_spec(good_spec(), kRoots), "");
}

TEST(SpecCheck, RefusesPathsThatAreNotAbsoluteAndNormal) {
  for (const std::string& p : std::vector<std::string>{
           "relative.pcap", "/data/input/../secret", "/data/input/./a.pcap", "/data/input//a.pcap",
           "/data/input/a.pcap/", "", std::string("/data/input/a\0b", 15)}) {
    auto s = good_spec();
    s.inputs = {p};
    EXPECT_EQ(proto::check_spec(s, kRoots), "inputs[0] is not an absolute, normalised path") << p;
  }
}

TEST(SpecCheck, RefusesPathsOutsideTheirRoots) {
  auto s = good_spec();
  s.inputs = {"/data/inputs-evil/a.pcap"};  // a prefix of the root's name is not inside it
  EXPECT_EQ(proto::check_spec(s, kRoots), "inputs[0] is outside every input root");
  s = good_spec();
  s.inputs = {"/data/input"};  // the root itself is not a file in it
  EXPECT_EQ(proto::check_spec(s, kRoots), "inputs[0] is outside every input root");
  s = good_spec();
  s.output = "/data/input/x.ipfix";
  EXPECT_EQ(proto::check_spec(s, kRoots), "output is outside the output root");
}

TEST(SpecCheck, RefusesAnInputNamedTwiceAndAnOutputThatIsAnInput) {
  auto s = good_spec();
  s.inputs.push_back(s.inputs[0]);
  EXPECT_EQ(proto::check_spec(s, kRoots), "inputs[2] names a capture twice");
}

TEST(SpecCheck, RefusesNumbersThatAreNotFiniteOrOutOfTheirRange) {
  auto s = good_spec();
  s.idle_timeout = std::numeric_limits<double>::infinity();
  EXPECT_EQ(proto::check_spec(s, kRoots), "idle_timeout is not a finite number");
  s = good_spec();
  s.idle_timeout = 0;
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "idle_timeout is out of range (0; allowed above 0 to 31536000)");
  s = good_spec();
  s.max_flows = 16777217;
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "max_flows is out of range (16777217; allowed from 1 to 16777216)");
  s = good_spec();
  s.inputs.assign(1001, "/data/input/a.pcap");
  EXPECT_EQ(proto::check_spec(s, kRoots), "inputs has more than 1000 items");
  EXPECT_EQ(proto::check_extras({101}), "priority is out of range (101; allowed from -100 to 100)");
  EXPECT_EQ(proto::check_extras({-100}), "");
}

TEST(SpecCheck, RefusesAnUnknownKindAndSelectorsThatDoNotParseOrDoNotBelong) {
  auto s = good_spec();
  s.kind = "transcode";
  EXPECT_EQ(proto::check_spec(s, kRoots), "kind is not a known task kind");
  s = good_spec();
  s.kind = "extract";
  EXPECT_EQ(proto::check_spec(s, kRoots), "flow is required for kind extract");
  s.flow = "tcp 10.0.0.1:1 <-> 10.0.0.2";
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "flow: not a flow selector: at 19: expected address:port");
  s.flow = "tcp 10.0.0.1:1 <-> 10.0.0.2:2";
  EXPECT_EQ(proto::check_spec(s, kRoots), "");
  s.kind = "convert";
  EXPECT_EQ(proto::check_spec(s, kRoots), "flow applies to kind extract only");
  s = good_spec();
  s.kind = "ingest";
  s.filter = "tcp";
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "filter applies to captures, not to kind ingest (whose inputs are IPFIX files)");
}

TEST(SpecCheck, ARootIsMadeAbsoluteAndNormal) {
  EXPECT_EQ(proto::normal_root("/tmp/./x/../"), fs::canonical("/tmp").string());
  EXPECT_TRUE(proto::is_normal_absolute(proto::normal_root("relative/dir")));
}

TEST(Grant, IsTheSameForTheSameTaskAndWorkerAndDiffersOtherwise) {
  const std::string g = grant::make("key", "task", "w1");
  EXPECT_EQ(g.size(), 32u);
  EXPECT_EQ(g, grant::make("key", "task", "w1"));
  EXPECT_NE(g, grant::make("key", "task", "w2"));
  EXPECT_NE(g, grant::make("key", "task2", "w1"));
  EXPECT_NE(g, grant::make("other key", "task", "w1"));
  // The separator keeps ("ab", "c") and ("a", "bc") apart.
  EXPECT_NE(grant::make("key", "ab", "c"), grant::make("key", "a", "bc"));
  EXPECT_TRUE(grant::valid("key", "task", "w1", g));
  EXPECT_FALSE(grant::valid("key", "task", "w2", g));
  EXPECT_FALSE(grant::valid("key", "task", "w1", g.substr(0, 31)));
  EXPECT_FALSE(grant::valid("key", "task", "w1", ""));
  EXPECT_FALSE(grant::valid("key", "task\nw1", "", g));
}

// The keyed context the Signer reuses gives what a one-shot HMAC-SHA256 (OpenSSL's
// EVP_Q_mac) of "task\nworker" gives, grant after grant.
TEST(Grant, IsTheFirstHalfOfHmacSha256OfTaskNewlineWorker) {
  grant::Signer signer("a key of some length");
  for (const auto& [task, worker] : std::vector<std::pair<std::string, std::string>>{
           {"t1", "w1"}, {"01a23634-4d4a-7389-83a2-313a2e488deb", "vm-123-abc"}, {"", ""}}) {
    const std::string data = task + "\n" + worker;
    unsigned char mac[EVP_MAX_MD_SIZE];
    std::size_t len = 0;
    const std::string key = "a key of some length";
    ASSERT_TRUE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac,
                          sizeof mac, &len));
    char hex[33];
    for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    EXPECT_EQ(signer.make(task, worker), std::string(hex)) << task;
  }
}

TEST(Grant, TheKeyIsCreatedOnceReadableByItsOwnerOnlyAndKept) {
  const fs::path dir = fs::temp_directory_path() / ("grant-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "grant.key").string();
  const std::string key = grant::load_or_create_key(path);
  EXPECT_EQ(key.size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(grant::load_or_create_key(path), key) << "a restart keeps the key";
  std::ofstream(dir / "short.key") << "too short";
  EXPECT_THROW(grant::load_or_create_key((dir / "short.key").string()), std::runtime_error);
  fs::remove_all(dir);
}

TEST(Frames, AFrameDeclaringMoreObjectsThanTheLimitIsRefusedBeforeUnpacking) {
  // An array announcing 10 million elements in a few bytes.
  const std::string announced = std::string("\x93\x01\xa6submit\xdd\x00\x98\x96\x80", 14);
  EXPECT_FALSE(proto::within_object_limit(announced.data(), announced.size(), 1000));
  // (Built by append: GCC 12's -Warray-bounds misreads operator+ of two temporaries at -O1.)
  std::string many("\xdd\x00\x00\x27\x10", 5);
  many.append(10000, '\x01');
  EXPECT_FALSE(proto::within_object_limit(many.data(), many.size(), 1000));
  EXPECT_TRUE(proto::within_object_limit(many.data(), many.size(), 20000));
  // The decoder applies the limit to large frames.
  std::string frame = std::string("\x93\x01\xa6submit\xdd", 10);
  const std::uint32_t n = static_cast<std::uint32_t>(proto::kMaxObjects) + 1;
  for (int shift = 24; shift >= 0; shift -= 8) frame.push_back(static_cast<char>(n >> shift));
  frame.append(n, '\x01');
  std::string error;
  EXPECT_FALSE(proto::decode(frame.data(), frame.size(), &error));
  EXPECT_NE(error.find("more than"), std::string::npos) << "[" << error << "]";
}

TEST(SpecCheck, APartitionIsOfAConversionAndBelowPartitions) {
  auto s = good_spec();
  s.partition = 1;
  s.partitions = 2;
  EXPECT_EQ(proto::check_spec(s, kRoots), "");
  s.partition = 2;
  EXPECT_EQ(proto::check_spec(s, kRoots), "partition must be less than partitions (2)");
  s.partition = 0;
  s.partitions = 257;
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "partitions is out of range (257; allowed from 1 to 256)");
  s.partitions = 2;
  s.kind = "ingest";
  EXPECT_EQ(proto::check_spec(s, kRoots), "partitions applies to kind convert only");
}

// A merge reads the outputs of its parts: files beneath the output root, never captures.
TEST(SpecCheck, AMergeReadsFilesBeneathTheOutputRootOnly) {
  auto s = good_spec();
  s.kind = "merge";
  EXPECT_EQ(proto::check_spec(s, kRoots), "inputs[0] is outside the output root");
  s.inputs = {"/data/output/big/part0.ipfix", "/data/output/big/part1.ipfix"};
  s.output = "/data/output/big.ipfix";
  EXPECT_EQ(proto::check_spec(s, kRoots), "");
  s.filter = "tcp";
  EXPECT_EQ(proto::check_spec(s, kRoots),
            "filter applies to captures, not to kind merge (whose inputs are IPFIX files)");
}

// Uploads of captures driven through CaptureRoutes and CaptureStore directly (no server), on a
// scratch directory: what the fuzz target tests/fuzz/fuzz_uploads.cpp found, kept as tests.
// (tests/integration/test_uploads.cpp runs the same routes through the api over HTTP.)
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ipfixweb/api/capture_routes.hpp"
#include "ipfixweb/api/captures.hpp"

using namespace ipfixweb::api;

namespace {

class Captures : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (std::filesystem::temp_directory_path() / "captures-test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(t.data()), nullptr);
    dir_ = t;
    CaptureOptions o;
    o.dir = dir_ + "/captures";
    o.quota = 1'000'000;
    store_ = std::make_unique<CaptureStore>(o);
    routes_ = std::make_unique<CaptureRoutes>(
        *store_,
        [](http::Response& res, int status, const std::string& detail,
           const std::vector<FieldError>&) {
          res.status = status;
          res.set_content(detail, "application/problem+json");
        },
        [](const std::string&) { return false; });
  }
  void TearDown() override {
    routes_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  static http::Request tus(std::string method, http::Fields headers) {
    http::Request r;
    r.method = std::move(method);
    r.headers = std::move(headers);
    r.headers.emplace_back("Tus-Resumable", "1.0.0");
    return r;
  }

  std::vector<std::string> uploads_dir_entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(store_->uploads_dir()))
      out.push_back(e.path().filename().string());
    return out;
  }

  std::string dir_;
  std::unique_ptr<CaptureStore> store_;
  std::unique_ptr<CaptureRoutes> routes_;
};

}  // namespace

// Fuzzing finding (fuzz_uploads, tests/fuzz/regressions/uploads/): Upload-Metadata is kept as
// it came in the upload's state (JSON text), and a value that was not UTF-8 (a header may
// carry any byte above 0x7f) made the state unwritable: nlohmann threw out of the creation,
// the api answered 500, and the upload's length stayed counted against the quota with its
// empty .part file left behind for good. Such metadata is refused before anything is made.
TEST_F(Captures, TusCreationWithMetadataThatIsNotUtf8IsRefusedAndLeavesNothing) {
  for (std::string meta : {"\xff\xfe x", "filename dGVzdA==,k\xe9y dGVzdA=="}) {
    SCOPED_TRACE(meta);
    http::Response res;
    std::unique_ptr<http::BodySink> sink;
    ASSERT_NO_THROW(sink = routes_->tus_create(
                        tus("POST", {{"Upload-Length", "1000"}, {"Upload-Metadata", meta}}), res));
    EXPECT_EQ(sink, nullptr);
    EXPECT_EQ(res.status, 400) << res.body;
    EXPECT_EQ(store_->used(), 0u) << "the refused upload's length is still counted";
    EXPECT_TRUE(uploads_dir_entries().empty()) << uploads_dir_entries().front();
  }
  // UTF-8 metadata (any key, base64 values) is taken.
  http::Response res;
  routes_->tus_create(
      tus("POST", {{"Upload-Length", "1000"}, {"Upload-Metadata", "filename dGVzdA==,clé eA=="}}),
      res);
  EXPECT_EQ(res.status, 201) << res.body;
  EXPECT_EQ(store_->used(), 1000u);
}

// The store alone: a state it cannot write is refused before anything is reserved or made.
TEST_F(Captures, AnUploadStateThatCannotBeStoredIsRefusedBeforeAnythingIsCounted) {
  auto made = store_->create_upload(500, "x.pcap", "", "\xc3(", "");
  ASSERT_TRUE(std::holds_alternative<CaptureRefusal>(made));
  EXPECT_EQ(std::get<CaptureRefusal>(made).status, 400);
  EXPECT_EQ(store_->used(), 0u);
  EXPECT_TRUE(uploads_dir_entries().empty());
}

// The drop folder (docs/drop-folder.md): its pure rules (ignored names, readiness, key and
// output name, what a file is, the journal line), then the watcher itself on real directories
// driven by a clock the test moves and a fake submit route in place of the broker.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <nlohmann/json.hpp>

#include "ipfixweb/api/drop_folder.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"

using namespace ipfixweb;
using namespace ipfixweb::api;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes,
                std::ios::openmode mode = std::ios::trunc) {
  std::ofstream out(path, std::ios::binary | mode);
  out << bytes;
}

std::string sample_pcap() {
  return read_file(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/sample.pcap");
}
std::string tiny_pcap() {
  return read_file(std::string(IPFIXWEB_SOURCE_DIR) + "/tests/data/tiny.pcap");
}

// One IPFIX message with one template (RFC 7011): what an exporter's file starts with.
std::string ipfix_message() {
  const unsigned char bytes[] = {0x00, 0x0a, 0x00, 0x1c,   // version 10, length 28
                                 0x65, 0x00, 0x00, 0x00,   // export time
                                 0x00, 0x00, 0x00, 0x01,   // sequence number
                                 0x00, 0x00, 0x00, 0x00,   // observation domain
                                 0x00, 0x02, 0x00, 0x0c,   // template set, length 12
                                 0x01, 0x00, 0x00, 0x01,   // template 256, one field
                                 0x00, 0x08, 0x00, 0x04};  // sourceIPv4Address, 4 bytes
  return {reinterpret_cast<const char*>(bytes), sizeof bytes};
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    hex += buf;
  }
  return hex;
}

drop::FileStat stat_of(std::uint64_t size, std::int64_t mtime_ns, std::uint64_t ino = 7) {
  return {1, ino, size, mtime_ns};
}

}  // namespace

// ---- the pure rules --------------------------------------------------------------------

TEST(DropNames, HiddenAndTemporaryNamesAreIgnored) {
  for (const char* name :
       {".capture.pcap", ".x.part", "a.pcap.part", "a.PART", "b.partial", "c.tmp", "c.TMP",
        "d.temp", "e.filepart", "f.crdownload", "g.download", "h.swp", "i.pcap~"})
    EXPECT_FALSE(drop::ignored_name(name).empty()) << name;
  for (const char* name :
       {"a.pcap", "b.pcapng.gz", "c.ipfix", "notes.txt", "part", "tmp.pcap", "a.part.pcap"})
    EXPECT_EQ(drop::ignored_name(name), "") << name;
}

TEST(DropSettle, AFileIsReadyOnceItsSizeAndTimeStayedTheSameForTheSettleTime) {
  drop::Settle s;
  EXPECT_TRUE(s.observe(stat_of(100, 1), 10.0));
  EXPECT_FALSE(s.ready(10.0, 5));
  EXPECT_FALSE(s.observe(stat_of(100, 1), 14.9));
  EXPECT_FALSE(s.ready(14.9, 5));
  EXPECT_TRUE(s.ready(15.0, 5));
  // It grew: the settle time starts again.
  EXPECT_TRUE(s.observe(stat_of(200, 2), 15.0));
  EXPECT_FALSE(s.ready(19.9, 5));
  EXPECT_TRUE(s.ready(20.0, 5));
  // Touched (same size, another time) or replaced (another inode): again.
  EXPECT_TRUE(s.observe(stat_of(200, 3), 20.0));
  EXPECT_FALSE(s.ready(24.0, 5));
  EXPECT_TRUE(s.observe(stat_of(200, 3, 8), 24.0));
  EXPECT_FALSE(s.ready(28.0, 5));
  EXPECT_TRUE(s.ready(29.0, 5));
  // A settle time of 0: ready when first seen.
  drop::Settle now;
  now.observe(stat_of(1, 1), 3.0);
  EXPECT_TRUE(now.ready(3.0, 0));
}

TEST(DropSettle, AWriterSeenByInotifyHoldsTheFileBackUntilItClosesIt) {
  drop::Settle s;
  s.observe(stat_of(100, 1), 10.0);
  s.written(11.0);  // IN_MODIFY, and nothing more for a long time: still open for writing
  EXPECT_TRUE(s.writing());
  EXPECT_FALSE(s.ready(1000.0, 5));
  s.closed();  // IN_CLOSE_WRITE: the settle time counts from the last write
  EXPECT_TRUE(s.ready(1000.0, 5));
  s.written(1000.0);
  s.closed();
  EXPECT_FALSE(s.ready(1004.0, 5));
  EXPECT_TRUE(s.ready(1005.0, 5));
  // When inotify lost events, only the settle time counts.
  s.written(2000.0);
  s.forget_writer();
  EXPECT_TRUE(s.ready(2005.0, 5));
}

TEST(DropSettle, AnEmptyFileIsNeverReady) {
  drop::Settle s;
  s.observe(stat_of(0, 1), 10.0);
  EXPECT_FALSE(s.ready(1e9, 5));
}

TEST(DropKey, TheKeyIsTheContentHashAndTheOutputKeepsTheFileName) {
  const std::string hash = sha256_hex("content");
  EXPECT_EQ(drop::idempotency_key(hash), "drop:sha256:" + hash);
  EXPECT_LE(drop::idempotency_key(hash).size(), 255u);  // an Idempotency-Key's limit
  const std::string h12 = hash.substr(0, 12);
  EXPECT_EQ(drop::output_path("drop", "incoming", "day1.pcap", hash),
            "drop/incoming/day1-" + h12 + ".ipfix");
  EXPECT_EQ(drop::output_path("drop/", "", "day1.pcapng.gz", hash), "drop/day1-" + h12 + ".ipfix");
  EXPECT_EQ(drop::output_path("drop", "a/b", "flows.IPFIX", hash),
            "drop/a/b/flows-" + h12 + ".ipfix");
  EXPECT_EQ(drop::output_path(".", "", "notes.v2.dat", hash), "notes.v2.dat-" + h12 + ".ipfix");
  EXPECT_EQ(drop::output_path("drop", "", ".pcap", hash), "drop/.pcap-" + h12 + ".ipfix");
  // A long name is cut between characters, within a file name's 255 bytes.
  std::string longname;
  for (int i = 0; i < 120; ++i) longname += "\xc3\xa9";  // é
  const std::string out = drop::output_path("drop", "", longname + ".pcap", hash);
  const std::string file = out.substr(out.rfind('/') + 1);
  EXPECT_LE(file.size(), 255u);
  EXPECT_EQ(file.substr(0, 200), longname.substr(0, 200));
  EXPECT_EQ(file.substr(200), "-" + h12 + ".ipfix");
}

TEST(DropKey, TheSameNameInTwoFoldersOrWithNewContentGetsAnotherOutput) {
  const std::string a = sha256_hex("capture one"), b = sha256_hex("capture two");
  EXPECT_NE(drop::output_path("drop", "site-a", "x.pcap", a),
            drop::output_path("drop", "site-b", "x.pcap", b));
  EXPECT_NE(drop::output_path("drop", "", "x.pcap", a), drop::output_path("drop", "", "x.pcap", b));
  // The same content under two names is one key: one task.
  EXPECT_EQ(drop::idempotency_key(a), drop::idempotency_key(sha256_hex("capture one")));
}

TEST(DropLog, NamesAreQuotedWithControlCharactersAndBytesThatAreNotUtf8Escaped) {
  EXPECT_EQ(drop::log_text("day1.pcap"), "\"day1.pcap\"");
  EXPECT_EQ(drop::log_text("a\nb\r\t\"q\"\\"), R"("a\nb\r\t\"q\"\\")");
  EXPECT_EQ(drop::log_text("\x1b[2J\x7f"), R"("\x1b[2J\x7f")");
  EXPECT_EQ(drop::log_text("caf\xc3\xa9 \xe2\x82\xac"), "\"caf\xc3\xa9 \xe2\x82\xac\"");  // é €
  EXPECT_EQ(drop::log_text("\xc2\x9b"
                           "31m"),
            R"("\xc2\x9b31m")");  // C1 CSI
  EXPECT_EQ(drop::log_text("\xff\xc3"), R"("\xff\xc3")");
}

TEST(DropDecide, CapturesAreConvertedIpfixIsIngestedAndAnythingElseIsSkipped) {
  EXPECT_EQ(drop::decide(capture::sniff(sample_pcap(), true)).kind, "convert");
  capture::Sniff ng;
  ng.format = capture::Format::PcapNg;
  EXPECT_EQ(drop::decide(ng).kind, "convert");
  EXPECT_EQ(drop::decide(capture::sniff(ipfix_message(), true)).kind, "ingest");
  EXPECT_EQ(drop::decide(capture::sniff(std::string("\x1f\x8b\x08\x00", 4), true)).kind, "convert");
  const auto text = drop::decide(capture::sniff("hello, this is not a capture\n", true));
  EXPECT_EQ(text.kind, "");
  EXPECT_NE(text.reason.find("not a capture"), std::string::npos) << text.reason;
  EXPECT_EQ(drop::decide(capture::sniff(std::string("\xa1\xb2", 2), true)).kind, "");
}

TEST(DropJournal, AnEntryRoundTripsAndATornLineIsNotAnEntry) {
  drop::Entry e;
  e.at = "2026-01-02T03:04:05.678Z";
  e.folder = "/data/input/drop";
  e.file = "a b.pcap";
  e.outcome = "submitted";
  e.task_id = "00000000-0000-4000-8000-000000000000";
  e.existing = true;
  e.sha256 = sha256_hex("x");
  e.key = drop::idempotency_key(e.sha256);
  e.format = "pcap";
  e.kind = "convert";
  e.output_path = "drop/a b-0123456789ab.ipfix";
  e.stat = {66306, 1234567, 424242, 1700000000123456789};
  const std::string line = drop::to_json(e).dump();
  auto back = drop::parse_entry(line);
  ASSERT_TRUE(back);
  EXPECT_EQ(drop::to_json(*back), drop::to_json(e));
  EXPECT_FALSE(drop::parse_entry(line.substr(0, line.size() / 2)));
  EXPECT_FALSE(drop::parse_entry(""));
  EXPECT_FALSE(drop::parse_entry(R"({"outcome":"skipped"})"));
  // A journal written before the ctime was recorded: the ctime is unknown.
  json old = drop::to_json(e);
  old.erase("ctime_ns");
  auto legacy = drop::parse_entry(old.dump());
  ASSERT_TRUE(legacy);
  EXPECT_EQ(legacy->stat.ctime_ns, drop::kUnknownCtime);
  EXPECT_TRUE(drop::to_json(*legacy)["ctime_ns"].is_null());
}

TEST(DropJournal, ALineWithWronglyTypedFieldsIsNotAnEntryAndSaysWhy) {
  const std::string good =
      R"({"outcome":"submitted","file":"x.pcap","size":1,"mtime_ns":-5,"dev":1,"ino":1)";
  ASSERT_TRUE(drop::parse_entry(good + "}"));
  EXPECT_EQ(drop::parse_entry(good + "}")->stat.mtime_ns, -5);  // before 1970: still a time
  for (const std::string& bad : std::vector<std::string>{
           good + R"(,"existing":"true"})", good + R"(,"existing":null})", good + R"(,"file":7})",
           good + R"(,"sha256":["a"]})", good + R"(,"task_id":{}})", good + R"(,"outcome":"won"})",
           R"({"outcome":"submitted","file":"x.pcap","size":-1,"mtime_ns":1,"dev":1,"ino":1})",
           R"({"outcome":"submitted","file":"x.pcap","size":1.5,"mtime_ns":1,"dev":1,"ino":1})",
           R"({"outcome":"submitted","file":"x.pcap","size":1,"mtime_ns":"1","dev":1,"ino":1})",
           R"({"outcome":"submitted","file":"x.pcap","size":1,"mtime_ns":1,"dev":-2,"ino":1})",
           R"({"outcome":"submitted","file":"x.pcap","size":1,"mtime_ns":18446744073709551615,)"
           R"("dev":1,"ino":1})"}) {
    std::string why;
    EXPECT_FALSE(drop::parse_entry(bad, &why)) << bad;
    EXPECT_NE(why, "") << bad;
  }
}

// ---- the watcher -------------------------------------------------------------------------

namespace {

class DropFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ipfixweb-drop-XXXXXX").string();
    ASSERT_TRUE(::mkdtemp(tmpl.data()));
    dir_ = fs::canonical(tmpl).string();
    fs::create_directories(dir_ + "/input/drop");
    fs::create_directories(dir_ + "/output");
    roots_.inputs = {dir_ + "/input"};
    roots_.output = dir_ + "/output";
    cfg_.folders = {"drop"};
    cfg_.settle_s = 5;
    cfg_.rescan_s = 30;
  }
  void TearDown() override {
    watcher_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string folder() const { return dir_ + "/input/drop"; }
  std::string journal() const { return dir_ + "/drop-journal.jsonl"; }

  DropFolder& start() {
    watcher_.reset();
    watcher_ = std::make_unique<DropFolder>(
        cfg_, roots_, dir_ + "/ipfixweb.db", [this](const json& body, const std::string& key) {
          calls_.push_back({body, key});
          if (auto during = std::exchange(during_submit_, nullptr)) during();
          http::Response res;
          if (!answers_.empty()) {
            res = answers_.front();
            answers_.erase(answers_.begin());
            return res;
          }
          res.status = 202;
          res.body = json{{"task_id", "task-" + std::to_string(calls_.size())}, {"state", "queued"}}
                         .dump();
          return res;
        });
    return *watcher_;
  }

  // Runs rounds from `from` to `to` in steps of `every` seconds.
  void run(double from, double to, double every = 0.5) {
    for (double t = from; t <= to + 1e-9; t += every) watcher_->step(t);
  }

  json entries() { return watcher_->listing(1000)["entries"]; }

  struct Call {
    json body;
    std::string key;
  };
  std::string dir_;
  Roots roots_;
  DropConfig cfg_;
  std::unique_ptr<DropFolder> watcher_;
  std::vector<Call> calls_;
  std::vector<http::Response> answers_;  // given in order; then 202
  std::function<void()> during_submit_;  // done once, while the next submission is under way
};

http::Response answer(int status, const std::string& detail, const std::string& retry_after = "") {
  http::Response r;
  r.status = status;
  r.body = json{{"status", status}, {"detail", detail}}.dump();
  if (!retry_after.empty()) r.set_header("Retry-After", retry_after);
  return r;
}

}  // namespace

TEST_F(DropFolderTest, ACaptureBecomesOneTaskOnlyAfterItSettled) {
  const std::string pcap = sample_pcap();
  write_file(folder() + "/day1.pcap", pcap);
  start();
  run(100, 104.5);
  EXPECT_TRUE(calls_.empty()) << "submitted before the settle time";
  run(105, 130);
  ASSERT_EQ(calls_.size(), 1u);
  const std::string hash = sha256_hex(pcap);
  EXPECT_EQ(calls_[0].key, "drop:sha256:" + hash);
  EXPECT_EQ(calls_[0].body["pcap_files"], json::array({folder() + "/day1.pcap"}));
  EXPECT_EQ(calls_[0].body["output_path"], "drop/drop/day1-" + hash.substr(0, 12) + ".ipfix");
  EXPECT_FALSE(calls_[0].body.contains("kind"));  // convert, the default
  auto e = entries();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["outcome"], "submitted");
  EXPECT_EQ(e[0]["task_id"], "task-1");
  EXPECT_EQ(e[0]["file"], "day1.pcap");
  EXPECT_EQ(e[0]["format"], "pcap");
  EXPECT_EQ(e[0]["sha256"], hash);
  EXPECT_EQ(e[0]["size"], pcap.size());
  // The journal holds the same line.
  auto lines = read_file(journal());
  EXPECT_EQ(json::parse(lines.substr(0, lines.find('\n')))["task_id"], "task-1");
}

TEST_F(DropFolderTest, AFileThatIsStillGrowingWaitsUntilItStopped) {
  const std::string pcap = sample_pcap();
  const std::string path = folder() + "/slow.pcap";
  start();
  write_file(path, pcap.substr(0, pcap.size() / 2));
  run(100, 104);
  write_file(path, pcap.substr(pcap.size() / 2), std::ios::app);
  run(104.5, 108.5);
  EXPECT_TRUE(calls_.empty()) << "the half file was submitted";
  run(109, 115);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].key, "drop:sha256:" + sha256_hex(pcap));
}

TEST_F(DropFolderTest, AWriterThatKeepsTheFileOpenHoldsItBackLongerThanTheSettleTime) {
  const std::string pcap = sample_pcap();
  const std::string path = folder() + "/open.pcap";
  start();
  {
    std::ofstream out(path, std::ios::binary);
    out << pcap.substr(0, 1000);
    out.flush();
    run(100, 160, 5);  // a minute without writes, the file still open
    EXPECT_TRUE(calls_.empty()) << "submitted while open for writing";
    out << pcap.substr(1000);
  }
  run(160, 170);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].key, "drop:sha256:" + sha256_hex(pcap));
}

namespace {
// Whether the kernel gives read leases on this file system (the drop folder's check for writers
// it did not see).
bool leases_work(const std::string& dir) {
  const std::string probe = dir + "/lease-probe";
  write_file(probe, "x");
  const int fd = ::open(probe.c_str(), O_RDONLY);
  const bool ok = fd >= 0 && ::fcntl(fd, F_SETLEASE, F_RDLCK) == 0;
  if (fd >= 0) ::close(fd);
  fs::remove(probe);
  return ok;
}
}  // namespace

TEST_F(DropFolderTest, AWriterThatOpenedTheFileBeforeTheApiStartedHoldsItBack) {
  if (!leases_work(dir_)) GTEST_SKIP() << "no read leases here";
  const std::string pcap = sample_pcap();
  const std::string path = folder() + "/live.pcap";
  {
    std::ofstream out(path, std::ios::binary);  // tcpdump -w, running before the api
    out << pcap.substr(0, 1000);
    out.flush();
    start();
    run(100, 160, 5);
    EXPECT_TRUE(calls_.empty()) << "half a capture was submitted";
    auto waiting = watcher_->listing(10)["waiting"];
    ASSERT_EQ(waiting.size(), 1u);
    EXPECT_EQ(waiting[0]["state"], "writing");
    out << pcap.substr(1000);
  }
  run(160, 175);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].key, "drop:sha256:" + sha256_hex(pcap));
}

TEST_F(DropFolderTest, AnotherOpenerClosingTheFileDoesNotReleaseTheWriter) {
  if (!leases_work(dir_)) GTEST_SKIP() << "no read leases here";
  const std::string pcap = sample_pcap();
  const std::string path = folder() + "/live.pcap";
  start();
  {
    std::ofstream out(path, std::ios::binary);
    out << pcap.substr(0, 1000);
    out.flush();
    run(100, 102);
    ::close(::open(path.c_str(), O_WRONLY));  // touch: opens for writing and closes
    run(102, 160, 2);
    EXPECT_TRUE(calls_.empty()) << "half a capture was submitted";
    out << pcap.substr(1000);
  }
  run(160, 175);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].key, "drop:sha256:" + sha256_hex(pcap));
}

TEST_F(DropFolderTest, ANonCaptureIsRecordedAsSkippedAndNeverSubmitted) {
  write_file(folder() + "/notes.txt", "not a capture at all\n");
  write_file(folder() + "/.hidden.pcap", sample_pcap());
  write_file(folder() + "/upload.pcap.part", sample_pcap());
  write_file(folder() + "/empty.pcap", "");
  fs::create_directories(folder() + "/subdir");
  start();
  run(100, 130);
  EXPECT_TRUE(calls_.empty());
  auto e = entries();
  ASSERT_EQ(e.size(), 1u) << e.dump();
  EXPECT_EQ(e[0]["file"], "notes.txt");
  EXPECT_EQ(e[0]["outcome"], "skipped");
  EXPECT_NE(e[0]["reason"].get<std::string>().find("not a capture"), std::string::npos);
  EXPECT_TRUE(e[0]["task_id"].is_null());
  // Skipped once: later rounds and rescans add nothing.
  run(130, 200, 10);
  EXPECT_EQ(entries().size(), 1u);
  // The empty file waits (it may still be written).
  auto waiting = watcher_->listing(10)["waiting"];
  ASSERT_EQ(waiting.size(), 1u) << waiting.dump();
  EXPECT_EQ(waiting[0]["file"], "empty.pcap");
}

TEST_F(DropFolderTest, AnIpfixFileBecomesAnIngestTask) {
  write_file(folder() + "/exporter.ipfix", ipfix_message());
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].body["kind"], "ingest");
  EXPECT_EQ(entries()[0]["format"], "ipfix");
}

TEST_F(DropFolderTest, TheOptionsGoIntoEveryTask) {
  cfg_.options = R"({"DPI": false, "analysis_list": ["tcp"], "priority": 5})";
  cfg_.output = "incoming";
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].body["DPI"], false);
  EXPECT_EQ(calls_[0].body["analysis_list"], json::array({"tcp"}));
  EXPECT_EQ(calls_[0].body["priority"], 5);
  EXPECT_EQ(calls_[0].body["output_path"].get<std::string>().rfind("incoming/drop/a-", 0), 0u);
}

TEST_F(DropFolderTest, ABusyBrokerIsAskedAgainWithBackoffAndTheFileIsSubmittedOnce) {
  answers_ = {answer(503, "queue full", "3"), answer(503, "the broker did not answer", "1"),
              answer(507, "disk nearly full", "1")};
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 105);  // ready at 105: first refusal, again after Retry-After 3 s
  ASSERT_EQ(calls_.size(), 1u);
  run(105.5, 107.5);
  EXPECT_EQ(calls_.size(), 1u);
  run(108, 108);  // second refusal: 2 s backoff
  EXPECT_EQ(calls_.size(), 2u);
  auto waiting = watcher_->listing(10)["waiting"];
  ASSERT_EQ(waiting.size(), 1u);
  EXPECT_EQ(waiting[0]["state"], "retrying");
  EXPECT_EQ(waiting[0]["attempts"], 2);
  run(108.5, 109.5);
  EXPECT_EQ(calls_.size(), 2u);
  run(110, 110);  // third refusal: 4 s
  EXPECT_EQ(calls_.size(), 3u);
  run(110.5, 113.5);
  EXPECT_EQ(calls_.size(), 3u);
  run(114, 200);
  ASSERT_EQ(calls_.size(), 4u);
  for (const auto& c : calls_) EXPECT_EQ(c.key, calls_[0].key);  // one key: one task at most
  auto e = entries();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["outcome"], "submitted");
  EXPECT_EQ(e[0]["task_id"], "task-4");
  EXPECT_TRUE(watcher_->listing(10)["waiting"].empty());
}

TEST_F(DropFolderTest, ABrokerThatIsAwayCostsOneAttemptPerBackoffNotOnePerFile) {
  for (int i = 0; i < 5; ++i)
    write_file(folder() + "/f" + std::to_string(i) + ".pcap", tiny_pcap() + std::to_string(i));
  for (int i = 0; i < 4; ++i) answers_.push_back(answer(503, "the broker did not answer"));
  start();
  run(100, 104.5);
  ASSERT_TRUE(calls_.empty());
  // Each attempt may cost a broker timeout: one per round, then 1, 2, 4, 8 s apart.
  const std::vector<std::pair<double, std::size_t>> expected = {
      {105, 1}, {105.5, 1}, {106, 2}, {107.5, 2}, {108, 3}, {111.5, 3}, {112, 4}, {119.5, 4}};
  for (const auto& [at, n] : expected) {
    watcher_->step(at);
    ASSERT_EQ(calls_.size(), n) << "at " << at;
    if (at == 105) {
      auto waiting = watcher_->listing(10)["waiting"];
      ASSERT_EQ(waiting.size(), 5u) << waiting.dump();
      for (const auto& w : waiting) EXPECT_EQ(w["state"], "retrying") << w.dump();
    }
  }
  watcher_->step(120);  // the broker is back: all files in one round
  EXPECT_EQ(calls_.size(), 9u);
  EXPECT_EQ(entries().size(), 5u);
  EXPECT_TRUE(watcher_->listing(10)["waiting"].empty());
}

TEST_F(DropFolderTest, TheWaitingListIsPublishedAfterEachFileNotAfterTheRound) {
  for (int i = 0; i < 3; ++i)
    write_file(folder() + "/f" + std::to_string(i) + ".pcap", tiny_pcap() + std::to_string(i));
  json seen;
  during_submit_ = [&] { during_submit_ = [&] { seen = watcher_->listing(10)["waiting"]; }; };
  start();
  run(100, 105);
  ASSERT_EQ(calls_.size(), 3u);
  // While the second file was submitted, the first was no longer waiting.
  ASSERT_EQ(seen.size(), 2u) << seen.dump();
  EXPECT_EQ(seen[0]["file"], "f1.pcap");
}

TEST_F(DropFolderTest, ARefusalByTheApiIsRecordedAndNotRetried) {
  http::Response refused = answer(422, "the task request is not valid");
  refused.body = json{{"detail", "the task request is not valid"},
                      {"errors", {{{"field", "pcap_files[0]"}, {"message", "is not readable"}}}}}
                     .dump();
  answers_ = {refused};
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 200, 1);
  ASSERT_EQ(calls_.size(), 1u);
  auto e = entries();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["outcome"], "refused");
  EXPECT_NE(e[0]["reason"].get<std::string>().find("pcap_files[0]: is not readable"),
            std::string::npos)
      << e[0].dump();
  // A new version of the file is looked at again.
  write_file(folder() + "/a.pcap", tiny_pcap());
  run(200, 210, 1);
  EXPECT_EQ(calls_.size(), 2u);
}

TEST_F(DropFolderTest, AFileRenamedWhileItIsSubmittedIsNotRefusedButTakenUnderItsNewName) {
  write_file(folder() + "/big.pcap", sample_pcap());
  // The api checks the request after the rename: the old path does not exist.
  answers_ = {answer(422, "the task request is not valid: pcap_files[0]: does not exist")};
  during_submit_ = [&] { fs::rename(folder() + "/big.pcap", folder() + "/site-a_big.pcap"); };
  start();
  run(100, 130);
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[0].body["pcap_files"][0], folder() + "/big.pcap");
  EXPECT_EQ(calls_[1].body["pcap_files"][0], folder() + "/site-a_big.pcap");
  EXPECT_EQ(calls_[1].key, calls_[0].key);
  auto e = entries();
  ASSERT_EQ(e.size(), 1u) << e.dump();
  EXPECT_EQ(e[0]["file"], "site-a_big.pcap");
  EXPECT_EQ(e[0]["outcome"], "submitted");
  run(130, 200, 5);
  EXPECT_EQ(calls_.size(), 2u) << "taken once under its new name";
}

TEST_F(DropFolderTest, ARestartWithTheSameJournalSubmitsNothingAgain) {
  write_file(folder() + "/a.pcap", sample_pcap());
  write_file(folder() + "/notes.txt", "text");
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  ASSERT_EQ(entries().size(), 2u);
  // A crash may leave a torn line at the end of the journal.
  write_file(journal(), "{\"at\":\"2026-", std::ios::app);
  start();  // a new process: what it knows comes from the journal
  EXPECT_EQ(entries().size(), 2u);
  run(0, 100, 1);
  EXPECT_EQ(calls_.size(), 1u);
  EXPECT_EQ(entries().size(), 2u);
  // A file dropped meanwhile is taken, and the journal stays readable after the torn line.
  write_file(folder() + "/b.pcap", tiny_pcap());
  run(100, 110);
  EXPECT_EQ(calls_.size(), 2u);
  start();
  EXPECT_EQ(entries().size(), 3u);
}

TEST_F(DropFolderTest, AJournalLineWithWronglyTypedFieldsIsSkippedNotFatal) {
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  // Someone edited the journal by hand; the next line (the api's own) must still count.
  const std::string ours = read_file(journal());
  write_file(journal(),
             R"({"outcome":"submitted","file":"x.pcap","size":1,"mtime_ns":1,"dev":1,"ino":1,)"
             R"("existing":"true"})"
             "\n" +
                 ours +
                 R"({"outcome":"skipped","file":"y.pcap","size":-1,"mtime_ns":1,"dev":1,"ino":1})"
                 "\n");
  ASSERT_NO_THROW(start());
  auto e = entries();
  ASSERT_EQ(e.size(), 1u) << e.dump();
  EXPECT_EQ(e[0]["file"], "a.pcap");
  run(0, 20);
  EXPECT_EQ(calls_.size(), 1u) << "the version the good line names was submitted again";
}

TEST_F(DropFolderTest, ARenameIsNotANewTaskButNewContentUnderTheSameNameIs) {
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  fs::rename(folder() + "/a.pcap", folder() + "/renamed.pcap");
  run(110, 130);
  EXPECT_EQ(calls_.size(), 1u);
  EXPECT_EQ(entries().size(), 1u) << "a rename is the same file";
  // Replaced by another capture under the same name: a new task, with another output.
  write_file(folder() + "/renamed.pcap", tiny_pcap());
  run(130, 140);
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[1].key, "drop:sha256:" + sha256_hex(tiny_pcap()));
  EXPECT_NE(calls_[1].body["output_path"], calls_[0].body["output_path"]);
}

TEST_F(DropFolderTest, NewContentWithTheSameInodeSizeAndModificationTimeIsANewTask) {
  const std::string a = sample_pcap();
  std::string b = a;
  b.back() = static_cast<char>(b.back() ^ 0x55);  // inside the last packet's data
  const std::string path = folder() + "/day1.pcap";
  write_file(path, a);
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  struct stat before {};
  ASSERT_EQ(::lstat(path.c_str(), &before), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // another ctime
  {
    // Rewritten in place, then its modification time set back (cp --preserve=timestamps,
    // rsync --inplace -t).
    std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
  }
  const timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  struct stat after {};
  ASSERT_EQ(::lstat(path.c_str(), &after), 0);
  ASSERT_EQ(after.st_ino, before.st_ino);
  ASSERT_EQ(after.st_size, before.st_size);
  ASSERT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  run(110, 130);
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[1].key, "drop:sha256:" + sha256_hex(b));
  // The same content touched back the same way: nothing new.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  run(130, 150);
  EXPECT_EQ(calls_.size(), 2u);
  EXPECT_EQ(entries().size(), 2u);
}

TEST_F(DropFolderTest, AFileRefusedAsUnreadableIsTakenOnceItsPermissionsAreFixed) {
  const std::string path = folder() + "/day1.pcap";
  write_file(path, sample_pcap());
  ::chmod(path.c_str(), 0600);
  // The journal of an api that could not open it (running as another user than the file's).
  struct stat sb {};
  ASSERT_EQ(::lstat(path.c_str(), &sb), 0);
  drop::Entry refused;
  refused.at = "2026-01-02T03:04:05.678Z";
  refused.folder = folder();
  refused.file = "day1.pcap";
  refused.outcome = "refused";
  refused.reason = "cannot be read: Permission denied";
  refused.stat = {static_cast<std::uint64_t>(sb.st_dev), static_cast<std::uint64_t>(sb.st_ino),
                  static_cast<std::uint64_t>(sb.st_size),
                  sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec,
                  sb.st_ctim.tv_sec * 1000000000LL + sb.st_ctim.tv_nsec};
  write_file(journal(), drop::to_json(refused).dump() + "\n");
  start();
  run(100, 130);
  EXPECT_TRUE(calls_.empty()) << "the refused version was tried again unchanged";
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::chmod(path.c_str(), 0644);  // the operator fixes the permission: only the ctime changes
  run(130, 150);
  ASSERT_EQ(calls_.size(), 1u);
  auto e = entries();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0]["outcome"], "submitted");
  // Once submitted, a chmod or a rename (both change the ctime only) is nothing new.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::chmod(path.c_str(), 0640);
  run(150, 170);
  fs::rename(path, folder() + "/day1-renamed.pcap");
  run(170, 190);
  EXPECT_EQ(calls_.size(), 1u);
  EXPECT_EQ(entries().size(), 2u);
  // Neither after a restart: the file is read again, silently.
  start();
  run(0, 20);
  EXPECT_EQ(calls_.size(), 1u);
  EXPECT_EQ(entries().size(), 2u);
}

TEST_F(DropFolderTest, JournalLinesWithoutACtimeStillCountButAnUnreadRefusalIsTriedOnceMore) {
  const std::string a = folder() + "/a.pcap", b = folder() + "/b.pcap";
  write_file(a, sample_pcap());
  write_file(b, tiny_pcap());
  std::string lines;
  for (const auto& [path, outcome] : {std::pair{a, "submitted"}, std::pair{b, "refused"}}) {
    struct stat sb {};
    ASSERT_EQ(::lstat(path.c_str(), &sb), 0);
    json j = {{"at", "2026-01-02T03:04:05.678Z"},
              {"folder", folder()},
              {"file", fs::path(path).filename().string()},
              {"outcome", outcome},
              {"size", sb.st_size},
              {"mtime_ns", sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec},
              {"dev", sb.st_dev},
              {"ino", sb.st_ino}};
    if (std::string(outcome) == "submitted") {
      j["task_id"] = "task-0";
      j["sha256"] = sha256_hex(sample_pcap());
    } else {
      j["reason"] = "cannot be read: Permission denied";
    }
    lines += j.dump() + "\n";
  }
  write_file(journal(), lines);
  start();
  run(100, 130);
  ASSERT_EQ(calls_.size(), 1u) << "a.pcap was submitted again";
  EXPECT_EQ(calls_[0].body["pcap_files"][0], b);
  EXPECT_EQ(entries().size(), 3u);
}

TEST_F(DropFolderTest, ACopyOfSubmittedContentIsRecordedAsADuplicateOfItsTask) {
  write_file(folder() + "/a.pcap", sample_pcap());
  start();
  run(100, 110);
  ASSERT_EQ(calls_.size(), 1u);
  write_file(folder() + "/copy-of-a.pcap", sample_pcap());
  run(110, 130);
  EXPECT_EQ(calls_.size(), 1u);
  auto e = entries();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0]["file"], "copy-of-a.pcap");  // newest first
  EXPECT_EQ(e[0]["outcome"], "duplicate");
  EXPECT_EQ(e[0]["task_id"], "task-1");
  EXPECT_EQ(e[0]["output_path"], e[1]["output_path"]);
  // Also after a restart.
  write_file(folder() + "/copy2.pcap", sample_pcap());
  start();
  run(0, 20);
  EXPECT_EQ(calls_.size(), 1u);
  EXPECT_EQ(entries()[0]["outcome"], "duplicate");
}

TEST_F(DropFolderTest, AFileNameCannotForgeLogLines) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto log = logger("api");
  log->sinks().push_back(sink);
  const std::string forged = "2026-12-05 13:00:00.000 critical [api:1] admin token leaked";
  write_file(folder() + "/x\n" + forged + "\ny.txt", "not a capture\n");
  write_file(folder() + "/\x1b]0;owned\x07.txt", "not a capture either\n");
  start();
  run(100, 110);
  log->sinks().pop_back();
  ASSERT_EQ(entries().size(), 2u);
  const std::string text = out.str();
  EXPECT_NE(text.find(R"(\n2026-12-05 13:00:00.000 critical)"), std::string::npos) << text;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.rfind("2026-12-05", 0), 0u) << "a forged line: " << line;
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << "a raw escape: " << line;
  }
}

TEST_F(DropFolderTest, SymbolicLinksAreSkippedNeverFollowed) {
  write_file(dir_ + "/input/elsewhere.pcap", sample_pcap());
  fs::create_symlink(dir_ + "/input/elsewhere.pcap", folder() + "/link.pcap");
  fs::create_symlink("/etc/passwd", folder() + "/passwd.pcap");
  start();
  run(100, 120);
  EXPECT_TRUE(calls_.empty());
  auto e = entries();
  ASSERT_EQ(e.size(), 2u);
  for (const auto& x : e) {
    EXPECT_EQ(x["outcome"], "skipped");
    EXPECT_NE(x["reason"].get<std::string>().find("symbolic link"), std::string::npos);
  }
}

TEST_F(DropFolderTest, AFolderReplacedByASymbolicLinkIsNotFollowedUntilItIsARealDirectoryAgain) {
  cfg_.rescan_s = 2;
  fs::create_directories(dir_ + "/outside");
  write_file(dir_ + "/outside/secret.pcap", sample_pcap());
  write_file(dir_ + "/outside/notes.txt", "not a capture\n");
  start();
  run(100, 102);
  fs::rename(folder(), folder() + ".old");
  fs::create_directory_symlink(dir_ + "/outside", folder());
  run(102, 130);
  EXPECT_TRUE(calls_.empty()) << calls_[0].body.dump();
  EXPECT_TRUE(entries().empty()) << entries().dump();
  EXPECT_TRUE(watcher_->listing(10)["waiting"].empty());
  // A real directory again: watched, and its files taken.
  fs::remove(folder());
  fs::create_directory(folder());
  write_file(folder() + "/a.pcap", tiny_pcap());
  run(130, 150);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].body["pcap_files"][0], folder() + "/a.pcap");
}

TEST_F(DropFolderTest, AFolderReachedThroughASymbolicLinkPutOnItsWayIsLetGo) {
  cfg_.folders = {"site/drop"};
  cfg_.rescan_s = 2;
  fs::create_directories(dir_ + "/input/site/drop");
  fs::create_directories(dir_ + "/outside/drop");
  write_file(dir_ + "/outside/drop/secret.pcap", sample_pcap());
  start();
  run(100, 102);
  // The folder itself is not moved (no event for it): its parent is replaced by a link.
  fs::rename(dir_ + "/input/site", dir_ + "/input/site.old");
  fs::create_directory_symlink(dir_ + "/outside", dir_ + "/input/site");
  write_file(dir_ + "/outside/drop/late.pcap", tiny_pcap());
  // A file in the directory that was watched: its path now leads outside the roots.
  write_file(dir_ + "/input/site.old/drop/a.pcap", tiny_pcap());
  run(102, 130);
  EXPECT_TRUE(calls_.empty()) << calls_[0].body.dump();
  EXPECT_TRUE(entries().empty()) << entries().dump();
  EXPECT_TRUE(watcher_->listing(10)["waiting"].empty());
}

TEST_F(DropFolderTest, StartRefusesFoldersOutsideTheInputRootsAndOptionsTheApiRefuses) {
  auto refused = [&](DropConfig c) -> std::string {
    try {
      DropFolder d(c, roots_, dir_ + "/ipfixweb.db",
                   [](const json&, const std::string&) { return http::Response{}; });
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return {};
  };
  DropConfig c = cfg_;
  c.folders = {dir_ + "/output/drop"};
  EXPECT_NE(refused(c).find("not inside an input root"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ + "/output/drop")) << "made before it was refused";
  c.folders = {dir_ + "/output"};
  EXPECT_NE(refused(c).find("not inside an input root"), std::string::npos);
  c.folders = {"../output"};
  EXPECT_NE(refused(c), "");
  fs::create_symlink(dir_ + "/output", dir_ + "/input/sneaky");
  c.folders = {"sneaky"};
  EXPECT_NE(refused(c).find("not inside an input root"), std::string::npos);
  c.folders = {"drop", folder()};
  EXPECT_NE(refused(c).find("twice"), std::string::npos);
  c = cfg_;
  c.options = "[1]";
  EXPECT_NE(refused(c).find("JSON object"), std::string::npos);
  c.options = R"({"output_path": "x.ipfix"})";
  EXPECT_NE(refused(c).find("output_path"), std::string::npos);
  c.options = R"({"idle_timout": 5})";
  EXPECT_NE(refused(c).find("idle_timout: is not a known field"), std::string::npos);
  c.options = R"({"max_flows": 0})";
  EXPECT_NE(refused(c).find("max_flows"), std::string::npos);
  c.options = R"({"filter": "not a (filter"})";
  EXPECT_NE(refused(c).find("filter"), std::string::npos);
  c = cfg_;
  c.output = "../escape";
  EXPECT_NE(refused(c).find("--drop-output"), std::string::npos);
  c = cfg_;
  c.journal = dir_ + "/output/journal.jsonl";
  EXPECT_NE(refused(c).find("output root"), std::string::npos);
  c.journal = folder() + "/journal.jsonl";
  EXPECT_NE(refused(c).find("inside the drop folder"), std::string::npos);
  // A folder that does not exist yet is made; an absolute one inside a root is fine.
  c = cfg_;
  c.folders = {"new/inbox", dir_ + "/input/other"};
  EXPECT_EQ(refused(c), "");
  EXPECT_TRUE(fs::is_directory(dir_ + "/input/new/inbox"));
}

TEST_F(DropFolderTest, TheWaitingListSaysHowManyFilesWaitWhenItIsCut) {
  const std::size_t n = drop::kMaxDropEntries + 5;
  for (std::size_t i = 0; i < n; ++i)
    write_file(folder() + "/f" + std::to_string(i) + ".pcap", "x");
  start();
  run(100, 101);  // still settling
  json l = watcher_->listing(1);
  EXPECT_EQ(l["waiting"].size(), drop::kMaxDropEntries);
  EXPECT_EQ(l["waiting_total"], n);
  EXPECT_EQ(l["waiting_truncated"], true);
  for (std::size_t i = 0; i < 5; ++i) fs::remove(folder() + "/f" + std::to_string(i) + ".pcap");
  run(101.5, 101.5);
  l = watcher_->listing(1);
  EXPECT_EQ(l["waiting"].size(), drop::kMaxDropEntries);
  EXPECT_EQ(l["waiting_total"], drop::kMaxDropEntries);
  EXPECT_EQ(l["waiting_truncated"], false);
}

TEST_F(DropFolderTest, TheRouteListsTheNewestEntriesFirstAndIsEmptyWhenOff) {
  for (int i = 0; i < 3; ++i)
    write_file(folder() + "/n" + std::to_string(i) + ".txt", "text " + std::to_string(i));
  start();
  run(100, 110);
  std::vector<std::string> problems;
  auto problem = [&](http::Response& r, int status, const std::string& detail,
                     const std::vector<FieldError>&) {
    r.status = status;
    problems.push_back(detail);
  };
  http::Request q;
  q.query = {{"limit", "2"}};
  http::Response r;
  drop_route(watcher_.get(), q, r, problem);
  ASSERT_EQ(r.status, 200);
  auto body = json::parse(r.body);
  EXPECT_EQ(body["enabled"], true);
  EXPECT_EQ(body["folders"][0]["path"], folder());
  ASSERT_EQ(body["entries"].size(), 2u);
  EXPECT_GE(body["entries"][0]["at"].get<std::string>(), body["entries"][1]["at"]);
  q.query = {{"limit", "0"}};
  drop_route(watcher_.get(), q, r, problem);
  EXPECT_EQ(r.status, 422);
  http::Response off;
  drop_route(nullptr, http::Request{}, off, problem);
  EXPECT_EQ(off.status, 200);
  EXPECT_EQ(json::parse(off.body)["enabled"], false);
  EXPECT_EQ(json::parse(off.body)["waiting_total"], 0);
  EXPECT_EQ(json::parse(off.body)["waiting_truncated"], false);
}

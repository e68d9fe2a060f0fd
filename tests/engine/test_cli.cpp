// pcap2ipfix command-line behaviour: exit codes, one-line errors, no partial output.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "pcap_writer.hpp"
#include "tool_helpers.hpp"

namespace ipfixweb::engine::test {
namespace {

namespace fs = std::filesystem;

std::size_t lines(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

bool dir_has_only(const std::string& dir, std::size_t n_files) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n == n_files;
}

void write_capture(const std::string& path) {
  PcapWriter w(path);
  for (int i = 0; i < 4; ++i) {
    w.add(1'650'000'000'000'000ULL + static_cast<std::uint64_t>(i) * 1000,
          ether4(ipv4(i % 2 ? "10.0.0.2" : "10.0.0.1", i % 2 ? "10.0.0.1" : "10.0.0.2", 17,
                      i % 2 ? udp(53, 3333, 40) : udp(3333, 53, 20))));
  }
}

struct BadInput {
  const char* name;
  const char* expect;  // fragment of the stderr line
};

class CliBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(CliBadInput, ExitsNonZeroWithOneLineAndNoOutput) {
  TempDir dir;
  const std::string in = dir.file("input");
  const std::string name = GetParam().name;
  if (name == "empty") {
    std::ofstream(in).close();
  } else if (name == "text") {
    std::ofstream(in) << "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
  } else if (name == "header_cut") {
    write_capture(in);
    fs::resize_file(in, 12);
  } else if (name == "directory") {
    fs::create_directory(in);
  }  // "missing": nothing
  const std::string out = dir.file("out.ipfix");
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -o " + shell_quote(out) + " " + shell_quote(in));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("pcap2ipfix: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(GetParam().expect), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(dir_has_only(dir.path(), name == "missing" ? 0 : 1)) << "temporary file left";
}

INSTANTIATE_TEST_SUITE_P(Inputs, CliBadInput,
                         ::testing::Values(BadInput{"missing", "No such file or directory"},
                                           BadInput{"empty", "is empty"},
                                           BadInput{"text", "not a readable pcap/pcapng capture"},
                                           BadInput{"header_cut",
                                                    "not a readable pcap/pcapng capture"},
                                           BadInput{"directory", "is a directory"}),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(Cli, BadFilterAndUnwritableOutput) {
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  RunResult r = run(shell_quote(pcap2ipfix()) + " --filter 'udp and' -o " +
                    shell_quote(dir.file("o.ipfix")) + " " + shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines(r.err), 1u);
  EXPECT_NE(r.err.find("bad BPF filter"), std::string::npos) << r.err;
  r = run(shell_quote(pcap2ipfix()) + " -o /nonexistent-dir/o.ipfix " +
          shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(lines(r.err), 1u);
  EXPECT_NE(r.err.find("cannot write output"), std::string::npos) << r.err;
  EXPECT_TRUE(dir_has_only(dir.path(), 1));
}

TEST(Cli, UsageErrorsExitTwo) {
  const RunResult r = run(shell_quote(pcap2ipfix()) + " --idle-timeout abc -o x.ipfix y.pcap");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_EQ(run(shell_quote(pcap2ipfix()) + " in.pcap").exit_code, 2);  // -o missing
}

TEST(Cli, TruncatedLastRecordSucceedsWithWarning) {
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  fs::resize_file(dir.file("in.pcap"), fs::file_size(dir.file("in.pcap")) - 5);
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " -q --summary-json - -o " +
          shell_quote(dir.file("o.ipfix")) + " " + shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cut short"), std::string::npos);
  EXPECT_NE(r.out.find("\"packets\": 3"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir.file("o.ipfix")));
}

TEST(Cli, SummaryFileAndQuiet) {
  TempDir dir;
  write_capture(dir.file("in.pcap"));
  const RunResult r =
      run(shell_quote(pcap2ipfix()) + " --quiet --no-dpi --uniflow --summary-json " +
          shell_quote(dir.file("s.json")) + " -o " + shell_quote(dir.file("o.ipfix")) + " " +
          shell_quote(dir.file("in.pcap")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const std::string text = read_text(dir.file("s.json"));
  EXPECT_NE(text.find("\"flows\": 2"), std::string::npos) << text;  // 2 directions
}

}  // namespace
}  // namespace ipfixweb::engine::test

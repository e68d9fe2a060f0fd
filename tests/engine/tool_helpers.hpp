// Helpers for golden tests: run external programs, locate the shared captures, and read IPFIX
// files through ipfixDump (an independent decoder, not the engine's code).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

// Skips the test when an oracle is not installed, or when the shared captures are absent
// (then defines `pcaps`, their directory).
#define REQUIRE_TOOL(name) \
  if (!have_tool(name)) GTEST_SKIP() << name << " not installed"
#define REQUIRE_PCAPS()                  \
  const std::string pcaps = pcaps_dir(); \
  if (pcaps.empty()) GTEST_SKIP() << "shared pcaps not found (set IPFIXWEB_PCAPS)"

namespace ipfixweb::engine::test {

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `cmd` through /bin/sh; stdout and stderr are captured separately.
RunResult run(const std::string& cmd);
bool have_tool(const std::string& name);
std::string shell_quote(const std::string& s);

// $IPFIXWEB_PCAPS or the compile-time default (<source>/../shared/pcaps); empty if absent.
std::string pcaps_dir();
std::string pcap2ipfix();

// One data record as ipfixDump prints it, keyed by element id ("8", "29305/2", "35632/122").
using Record = std::map<std::string, std::string>;
struct DumpResult {
  std::vector<Record> records;
  std::string stderr_text;
};
DumpResult ipfix_dump(const std::string& path);
// Records as sorted text lines (one per record, tab-separated id=value fields): two outputs hold
// the same records, in any order, when these are equal.
std::vector<std::string> record_lines(const std::vector<Record>& records);

// One data record as tshark decodes it (`tshark -T pdml`, one "Flow N" subtree): the first value
// of each field by display-filter name ("cflow.srcaddr" -> "10.0.0.1"), and the elements tshark
// 4.0 does not name (cflow.enterprise_private_entry) by "PEN/id" ("35632/509",
// "32473/1") with their raw bytes as the value.
std::vector<Record> tshark_records(const std::string& path, std::string* err = nullptr);
// Big-endian unsigned integer from raw bytes (an enterprise element of tshark_records).
std::uint64_t be_uint(const std::string& bytes);

std::string read_text(const std::string& path);
std::uint64_t capinfos_packets(const std::string& path);

}  // namespace ipfixweb::engine::test

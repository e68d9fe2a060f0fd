// Helpers for golden tests: run external programs, locate the shared captures, and read IPFIX
// files through ipfixDump (an independent decoder, not the engine's code).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

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

std::string read_text(const std::string& path);
std::uint64_t capinfos_packets(const std::string& path);

}  // namespace ipfixweb::engine::test

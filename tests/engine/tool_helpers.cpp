#include "tool_helpers.hpp"

#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ipfixweb::engine::test {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'')
      q += "'\\''";
    else
      q += c;
  }
  return q + "'";
}

RunResult run(const std::string& cmd) {
  char err_path[] = "/tmp/ipfixweb-stderr-XXXXXX";
  const int fd = mkstemp(err_path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  close(fd);
  RunResult r;
  FILE* p = popen((cmd + " 2>" + err_path).c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  char buf[65536];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = read_text(err_path);
  std::remove(err_path);
  return r;
}

std::string read_text(const std::string& path) {
  std::string text;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return text;
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

bool have_tool(const std::string& name) {
  return run("command -v " + shell_quote(name) + " >/dev/null").exit_code == 0;
}

std::string pcaps_dir() {
  std::string dir;
  if (const char* env = std::getenv("IPFIXWEB_PCAPS"); env && *env) {
    dir = env;
  } else {
    dir = IPFIXWEB_PCAPS_DEFAULT;
  }
  return std::filesystem::is_directory(dir) ? dir : std::string();
}

std::string pcap2ipfix() { return PCAP2IPFIX_PATH; }

DumpResult ipfix_dump(const std::string& path) {
  DumpResult d;
  const RunResult r = run("ipfixDump --in " + shell_quote(path));
  d.stderr_text = r.err;
  std::istringstream in(r.out);
  std::string line;
  Record* cur = nullptr;
  while (std::getline(in, line)) {
    if (line.rfind("--- data record", 0) == 0) {
      d.records.emplace_back();
      cur = &d.records.back();
      continue;
    }
    if (line.rfind("---", 0) == 0 || line.rfind("***", 0) == 0) {
      cur = nullptr;
      continue;
    }
    if (!cur || line.size() < 3 || line[0] != '\t' || line[1] != '(') continue;
    const auto close = line.find(')');
    const auto colon = line.find(" : ", close);
    if (close == std::string::npos || colon == std::string::npos) continue;
    std::string value = line.substr(colon + 3);
    if (value.rfind("(len: ", 0) == 0) {  // strings: "(len: 3) SSH"
      const auto end = value.find(") ");
      value = end == std::string::npos ? std::string() : value.substr(end + 2);
    }
    const std::string id = line.substr(2, close - 2);
    if (id == "27" || id == "28") {  // ipfixDump prints "2001:0db8::0001": canonicalise
      unsigned char a[16];
      char buf[INET6_ADDRSTRLEN];
      if (inet_pton(AF_INET6, value.c_str(), a) == 1 && inet_ntop(AF_INET6, a, buf, sizeof buf)) {
        value = buf;
      }
    }
    (*cur)[id] = value;
  }
  return d;
}

std::uint64_t capinfos_packets(const std::string& path) {
  const RunResult r = run("capinfos -M -c -T -r " + shell_quote(path));
  // Tab-separated: "<file>\t<count>"
  const auto tab = r.out.rfind('\t');
  if (r.exit_code != 0 || tab == std::string::npos) {
    throw std::runtime_error("capinfos failed on " + path + ": " + r.err);
  }
  return std::stoull(r.out.substr(tab + 1));
}

}  // namespace ipfixweb::engine::test

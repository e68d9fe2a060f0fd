#include "tool_helpers.hpp"

#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
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

std::vector<std::string> record_lines(const std::vector<Record>& records) {
  std::vector<std::string> out;
  for (const Record& r : records) {
    std::string line;
    for (const auto& [k, v] : r) line += k + "=" + v + "\t";
    out.push_back(line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// XML entities as tshark writes them in PDML attribute values.
std::string xml_unescape(const std::string& v) {
  std::string out;
  for (std::size_t k = 0; k < v.size(); ++k) {
    const std::size_t semi = v[k] == '&' ? v.find(';', k) : std::string::npos;
    const std::string ent = semi == std::string::npos ? "" : v.substr(k + 1, semi - k - 1);
    char c = v[k];
    if (ent == "quot")
      c = '"';
    else if (ent == "amp")
      c = '&';
    else if (ent == "lt")
      c = '<';
    else if (ent == "gt")
      c = '>';
    else if (ent == "apos")
      c = '\'';
    else if (ent.size() > 1 && ent[0] == '#')
      c = static_cast<char>(std::stoi(ent.substr(1)));
    if (c != v[k] || ent == "amp") k = semi;
    out += c;
  }
  return out;
}

// The attributes of one PDML `<field name="..." show="..." .../>` line.
std::map<std::string, std::string> xml_attributes(const std::string& line) {
  std::map<std::string, std::string> at;
  std::size_t i = line.find("<field ");
  if (i == std::string::npos) return at;
  i += 7;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    const std::size_t eq = line.find('=', i);
    if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') break;
    const std::size_t close = line.find('"', eq + 2);
    if (close == std::string::npos) break;
    at[line.substr(i, eq - i)] = xml_unescape(line.substr(eq + 2, close - eq - 2));
    i = close + 1;
  }
  return at;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

}  // namespace

std::vector<Record> tshark_records(const std::string& path, std::string* err) {
  const RunResult r = run("tshark -r " + shell_quote(path) + " -T pdml");
  if (err) *err = r.exit_code == 0 ? std::string() : "tshark exit " + std::to_string(r.exit_code);
  std::vector<Record> records;
  Record* cur = nullptr;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("<field ") == std::string::npos) {
      if (line.find("</packet>") != std::string::npos) cur = nullptr;
      continue;
    }
    auto at = xml_attributes(line);
    const std::string& name = at["name"];
    if (name.empty() && at["show"].rfind("Flow ", 0) == 0) {
      records.emplace_back();
      cur = &records.back();
      continue;
    }
    if (!cur || name.empty()) continue;
    if (name == "cflow.enterprise_private_entry") {
      // showname: "Enterprise Private entry: (ntop) Type 509: Value (hex bytes): ..."
      const std::string& sn = at["showname"];
      const auto open = sn.find('(');
      const auto close = sn.find(") Type ", open);
      if (open == std::string::npos || close == std::string::npos) continue;
      const std::string pen_name = sn.substr(open + 1, close - open - 1);
      const std::string pen = pen_name == "ntop" ? "35632"
                              : pen_name == "Example Enterprise Number for Documentation Use"
                                  ? "32473"
                                  : pen_name;
      const auto num_end = sn.find(':', close + 7);
      (*cur)[pen + "/" + sn.substr(close + 7, num_end - close - 7)] = unhex(at["value"]);
    } else if (!cur->count(name)) {
      (*cur)[name] = at["show"];
    }
  }
  return records;
}

std::uint64_t be_uint(const std::string& bytes) {
  std::uint64_t v = 0;
  for (const char c : bytes) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
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

#include "ipfixweb/cli/config.hpp"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "ipfixweb/cli/client.hpp"

namespace ipfixweb::cli {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::string default_config_path() {
  const std::string xdg = env("XDG_CONFIG_HOME");
  if (!xdg.empty() && xdg.front() == '/') return xdg + "/ipfixweb/ipfixctl.conf";
  const std::string home = env("HOME");
  if (!home.empty()) return home + "/.config/ipfixweb/ipfixctl.conf";
  return {};
}

std::string default_state_dir() {
  const std::string xdg = env("XDG_STATE_HOME");
  if (!xdg.empty() && xdg.front() == '/') return xdg + "/ipfixweb";
  const std::string home = env("HOME");
  return home.empty() ? std::string() : home + "/.local/state/ipfixweb";
}

std::map<std::string, std::string> read_config_file(const std::string& path, bool* exists,
                                                    std::vector<std::string>& warnings) {
  std::map<std::string, std::string> out;
  *exists = false;
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return out;
  *exists = true;
  std::ifstream in(path);
  if (!in) throw Failure(kExitUsage, "cannot read the config file " + path);
  std::string raw;
  int n = 0;
  while (std::getline(in, raw)) {
    ++n;
    const std::string l = trim(raw);
    if (l.empty() || l.front() == '#' || l.front() == ';') continue;
    const auto eq = l.find('=');
    if (eq == std::string::npos) {
      warnings.push_back(path + ":" + std::to_string(n) + ": not 'key = value', ignored");
      continue;
    }
    const std::string key = trim(l.substr(0, eq));
    std::string value = trim(l.substr(eq + 1));
    if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
      // Quoted: up to the closing quote (a comment may follow it).
      const auto close = value.find(value.front(), 1);
      if (close == std::string::npos) {
        warnings.push_back(path + ":" + std::to_string(n) + ": a quote is not closed, ignored");
        continue;
      }
      value = value.substr(1, close - 1);
    } else {
      // An unquoted value ends where a comment starts: the first '#' after a space or tab.
      for (auto h = value.find('#'); h != std::string::npos; h = value.find('#', h + 1)) {
        if (h > 0 && (value[h - 1] == ' ' || value[h - 1] == '\t')) {
          value = trim(value.substr(0, h));
          break;
        }
      }
    }
    if (key != "url" && key != "token") {
      warnings.push_back(path + ":" + std::to_string(n) + ": unknown key '" + key +
                         "' ignored (url, token)");
      continue;
    }
    out[key] = value;
  }
  if (out.count("token") && (st.st_mode & (S_IRWXG | S_IRWXO)))
    warnings.push_back(path + " holds a token but others may read it (chmod 600 " + path + ")");
  return out;
}

Settings resolve_settings(const std::optional<std::string>& flag_url,
                          const std::optional<std::string>& flag_token,
                          const std::string& config_path) {
  Settings s;
  s.config_file = config_path.empty() ? default_config_path() : config_path;
  bool exists = false;
  auto file = read_config_file(s.config_file, &exists, s.warnings);
  if (!config_path.empty() && !exists)
    throw Failure(kExitUsage, "the config file " + config_path + " does not exist");
  s.config_file_read = exists;

  if (flag_url) {
    s.url = *flag_url;
    s.url_from = "flag";
  } else if (!env("IPFIXWEB_URL").empty()) {
    s.url = env("IPFIXWEB_URL");
    s.url_from = "env";
  } else if (file.count("url") && !file["url"].empty()) {
    s.url = file["url"];
    s.url_from = "file";
  }
  if (flag_token) {
    s.token = *flag_token;
    s.token_from = "flag";
  } else if (!env("IPFIXWEB_TOKEN").empty()) {
    s.token = env("IPFIXWEB_TOKEN");
    s.token_from = "env";
  } else if (file.count("token") && !file["token"].empty()) {
    s.token = file["token"];
    s.token_from = "file";
  }
  while (s.url.size() > 1 && s.url.back() == '/') s.url.pop_back();
  return s;
}

}  // namespace ipfixweb::cli

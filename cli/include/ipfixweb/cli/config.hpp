// Where ipfixctl finds the server and its token: --url/--token, then IPFIXWEB_URL /
// IPFIXWEB_TOKEN, then the config file, then the default URL (docs/cli.md, "Configuration").
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace ipfixweb::cli {

// The api's default address (README: IPFIXWEB_HTTP_LISTEN, 127.0.0.1:8000).
inline constexpr const char* kDefaultUrl = "http://127.0.0.1:8000";

struct Settings {
  std::string url = kDefaultUrl;
  std::string token;
  std::string url_from = "default";  // flag, env, file or default
  std::string token_from = "none";   // flag, env, file or none
  std::string config_file;           // the file looked at ("" when none could be named)
  bool config_file_read = false;     // it existed and was read
  std::vector<std::string> warnings;
};

// $XDG_CONFIG_HOME/ipfixweb/ipfixctl.conf, else $HOME/.config/ipfixweb/ipfixctl.conf ("" when
// neither variable is set).
std::string default_config_path();

// Where ipfixctl keeps the state of interrupted uploads: $XDG_STATE_HOME/ipfixweb, else
// $HOME/.local/state/ipfixweb ("" when neither variable is set).
std::string default_state_dir();

// Reads `key = value` lines (`#` comments, blank lines, optional quotes around the value).
// Unknown keys and malformed lines become warnings; a missing file is an empty map (and
// *exists false). Throws Failure(kExitUsage) when the file exists but cannot be read.
std::map<std::string, std::string> read_config_file(const std::string& path, bool* exists,
                                                    std::vector<std::string>& warnings);

// Flags beat the environment, which beats the file. `config_path`: --config, or "" for the
// default path (a --config file that does not exist is a usage error).
Settings resolve_settings(const std::optional<std::string>& flag_url,
                          const std::optional<std::string>& flag_token,
                          const std::string& config_path);

}  // namespace ipfixweb::cli

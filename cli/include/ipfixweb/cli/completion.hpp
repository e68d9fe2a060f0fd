// The bash completion script of ipfixctl, generated from its command-line definition
// (`ipfixctl completion bash`; the same text is cli/ipfixctl.bash-completion).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace ipfixweb::cli {

struct CompletionCommand {
  std::string name;
  std::vector<std::string> flags;   // options without a value
  std::vector<std::string> valued;  // options that take a value
  std::string positional = "none";  // none, files, task or words:<w1 w2 ...>
};

struct CompletionSpec {
  std::vector<std::string> global_flags, global_valued;
  std::vector<CompletionCommand> commands;
  std::map<std::string, std::string> values;  // option -> its words ("table ndjson csv")
  std::vector<std::string> file_options;      // options whose value is a file name
};

std::string bash_completion(const CompletionSpec& spec);

}  // namespace ipfixweb::cli

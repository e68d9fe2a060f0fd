// ipfixctl: the command-line client of ipfixweb's public HTTP API (docs/cli.md); a thin entry
// point over ipfixweb_cli_lib.
#include "ipfixweb/cli/commands.hpp"

int main(int argc, char** argv) { return ipfixweb::cli::run(argc, argv); }

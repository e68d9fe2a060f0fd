// Stop signals for the long-running processes: SIGINT and SIGTERM set a flag
// the main loop watches (and interrupt its poll); SIGPIPE is ignored.
#pragma once

#include <atomic>

namespace ipfixweb {

const std::atomic<bool>& install_stop_handlers();

}  // namespace ipfixweb

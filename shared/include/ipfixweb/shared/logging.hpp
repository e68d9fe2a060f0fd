// One named spdlog logger per component ("api", "broker", "worker", "engine").
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "ipfixweb/shared/vocabulary.hpp"

// The vocabulary's enums log as their names.
template <class E>
requires requires { ipfixweb::Names<E>::kTable; }
struct fmt::formatter<E> : fmt::formatter<std::string_view> {
  template <class Context>
  auto format(E e, Context& ctx) const {
    return fmt::formatter<std::string_view>::format(ipfixweb::name(e), ctx);
  }
};

namespace ipfixweb {

struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error, critical, off
  bool json = false;           // JSON lines instead of human-readable text
  std::string dir;             // also write rotating files here when non-empty
};

// Creates (or replaces) the named logger, makes it the default, and returns it.
std::shared_ptr<spdlog::logger> setup_logging(const std::string& component, const LogOptions& opts);

// The component's logger; falls back to the default logger if not set up.
std::shared_ptr<spdlog::logger> logger(const std::string& component);

}  // namespace ipfixweb

#include "ipfixweb/shared/logging.hpp"

#include "ipfixweb/shared/json_escape.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <vector>

namespace ipfixweb {
namespace {

// %j: the message as a JSON string body (quotes, backslashes and control
// characters escaped), so JSON-lines output stays valid whatever is logged.
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    append_json_escaped(dest, std::string_view(msg.payload.data(), msg.payload.size()));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

std::unique_ptr<spdlog::formatter> make_formatter(bool json) {
  if (json) {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<JsonEscapedMessage>('j').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","logger":"%n","level":"%l","pid":%P,"msg":"%j"})");
    return f;
  }
  auto f = std::make_unique<spdlog::pattern_formatter>();
  { f->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n:%P] %v"); }
  return f;
}

}  // namespace

std::shared_ptr<spdlog::logger> setup_logging(const std::string& component,
                                              const LogOptions& opts) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!opts.dir.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
        opts.dir + "/" + component + ".log", 16u << 20, 5));
  }
  auto log = std::make_shared<spdlog::logger>(component, sinks.begin(), sinks.end());
  log->set_formatter(make_formatter(opts.json));
  log->set_level(spdlog::level::from_str(opts.level));
  log->flush_on(spdlog::level::warn);
  spdlog::drop(component);
  spdlog::register_logger(log);
  spdlog::set_default_logger(log);
  return log;
}

std::shared_ptr<spdlog::logger> logger(const std::string& component) {
  if (auto l = spdlog::get(component)) return l;
  return spdlog::default_logger();
}

}  // namespace ipfixweb

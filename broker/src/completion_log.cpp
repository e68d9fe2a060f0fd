#include "completion_log.hpp"

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::broker {

CompletionLog::CompletionLog(std::string dir, std::shared_ptr<spdlog::logger> log)
    : dir_(std::move(dir)), log_(std::move(log)) {}

void CompletionLog::add(const write::Finish& f, const TaskStore::Finished& row) {
  if (dir_.empty()) return;
  nlohmann::json line = {{"time", now_iso()},
                         {"task_id", f.task_id},
                         {"state", name(f.state)},
                         {"created_at", row.created_at},
                         {"started_at", row.started_at},
                         {"attempts", row.attempts},
                         {"worker", row.worker},
                         {"output_path", row.output_path}};
  if (!f.error.empty()) line["error"] = f.error;
  if (f.totals && f.state == TaskState::Succeeded)
    line["summary"] = {
        {"packets", f.totals->packets}, {"bytes", f.totals->bytes}, {"flows", f.totals->flows}};
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // The request is stored as the api's normalised JSON text: spliced in as it is.
  if (!row.request.empty()) {
    text.pop_back();
    text += ",\"request\":" + row.request + "}";
  }
  (f.state == TaskState::Succeeded ? ok_ : failed_) += text + '\n';
}

void CompletionLog::write(double now) {
  append(ok_, ok_file_, "successful_tasks.jsonl", now);
  append(failed_, failed_file_, "failed_tasks.jsonl", now);
}

void CompletionLog::append(std::string& lines, AppendFile& file, const char* name, double now) {
  if (lines.empty()) return;
  const std::string path = dir_ + "/" + name;
  if (!file.fp || now - file.opened > 1.0) {
    file.fp.reset(std::fopen(path.c_str(), "ae"));
    file.opened = now;
  }
  if (!file.fp || std::fwrite(lines.data(), 1, lines.size(), file.fp.get()) != lines.size() ||
      std::fflush(file.fp.get()) != 0) {
    log_->warn("cannot append to {}: {}", path, std::strerror(errno));
    file.fp.reset();
  }
  lines.clear();
}

}  // namespace ipfixweb::broker

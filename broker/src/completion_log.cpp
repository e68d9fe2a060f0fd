#include "completion_log.hpp"

#include <cerrno>
#include <cstring>

#include "ipfixweb/shared/json_writer.hpp"

#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::broker {

CompletionLog::CompletionLog(std::string dir, std::shared_ptr<spdlog::logger> log)
    : dir_(std::move(dir)), log_(std::move(log)) {}

void CompletionLog::add(const write::Finish& f, const TaskStore::Finished& row) {
  if (dir_.empty()) return;
  // Keys in byte order (what nlohmann wrote for it before), then the request: the api's
  // normalised JSON text, spliced in as it is.
  std::string& out = f.state == TaskState::Succeeded ? ok_ : failed_;
  JsonWriter w(out);
  w.begin_object();
  w.key("attempts").value(row.attempts);
  w.key("created_at").value(row.created_at);
  if (!f.error.empty()) w.key("error").value(f.error);
  w.key("output_path").value(row.output_path);
  w.key("started_at").value(row.started_at);
  w.key("state").value(name(f.state));
  if (f.totals && f.state == TaskState::Succeeded) {
    w.key("summary").begin_object();
    w.key("bytes").value(f.totals->bytes);
    w.key("flows").value(f.totals->flows);
    w.key("packets").value(f.totals->packets);
    w.end_object();
  }
  w.key("task_id").value(f.task_id);
  w.key("time").value(now_iso());
  w.key("worker").value(row.worker);
  if (!row.request.empty()) w.key("request").raw(row.request);
  w.end_object();
  out.push_back('\n');
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

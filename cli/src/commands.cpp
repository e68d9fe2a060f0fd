#include "ipfixweb/cli/commands.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <random>

#include "ipfixweb/cli/config.hpp"
#include "ipfixweb/cli/follow.hpp"
#include "ipfixweb/cli/output.hpp"
#include "ipfixweb/cli/upload.hpp"

namespace ipfixweb::cli {

using nlohmann::json;
namespace fs = std::filesystem;

// --- Context ---

bool Context::progress() const { return !g_.no_progress && stderr_is_tty(); }

const Settings& Context::settings() {
  if (!settings_) {
    settings_ = resolve_settings(g_.url, g_.token, g_.config);
    for (const auto& w : settings_->warnings) note("warning: " + w);
  }
  return *settings_;
}

Api& Context::api() {
  if (!api_) {
    const auto& s = settings();
    api_ = std::make_unique<Api>(s.url, s.token, g_.timeout_s);
  }
  return *api_;
}

void Context::note(const std::string& line) const {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

// --- A download's temporary file goes when the process is interrupted ---

namespace {

char g_cleanup[PATH_MAX];
std::atomic<bool> g_has_cleanup{false};
bool g_stderr_tty = false;

void on_signal(int sig) {
  if (g_has_cleanup.load()) ::unlink(g_cleanup);
  if (g_stderr_tty) {
    const char nl = '\n';
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, &nl, 1);
  }
  ::_exit(128 + sig);
}

class CleanupOnSignal {
 public:
  explicit CleanupOnSignal(const std::string& path) {
    if (path.size() < sizeof g_cleanup) {
      std::memcpy(g_cleanup, path.c_str(), path.size() + 1);
      g_has_cleanup = true;
    }
  }
  ~CleanupOnSignal() { g_has_cleanup = false; }
};

}  // namespace

void install_signal_handlers() {
  // A server that closes while we send must not kill us (cpp-httplib 0.11 sends without
  // MSG_NOSIGNAL); a closed stdout is reported by write_stdout instead.
  ::signal(SIGPIPE, SIG_IGN);
  g_stderr_tty = stderr_is_tty();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// --- Helpers ---

namespace {

std::string task_path(const std::string& id) { return "/api/v1/tasks/" + percent_encode(id); }

std::string str(const json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : "";
}

double num(const json& j, const char* k, double dflt = 0) {
  return j.is_object() && j.contains(k) && j[k].is_number() ? j[k].get<double>() : dflt;
}

std::string percent_text(const json& t) {
  if (!t.contains("progress") || !t["progress"].is_number()) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", t["progress"].get<double>() * 100);
  return buf;
}

std::string summary_text(const json& s) {
  if (!s.is_object()) return "";
  std::string out;
  auto add = [&](const char* k, const char* label, bool bytes) {
    if (!s.contains(k) || !s[k].is_number()) return;
    const double v = s[k].get<double>();
    out += (out.empty() ? "" : ", ") +
           (bytes ? human_bytes(v) : std::to_string(static_cast<long long>(v)) + " " + label);
  };
  add("packets", "packets", false);
  add("bytes", "bytes", true);
  add("flows", "flows", false);
  return out;
}

std::string inputs_text(const json& t) {
  const json req = t.value("request", json::object());
  if (!req.is_object() || !req.contains("pcap_files") || !req["pcap_files"].is_array()) return "-";
  const auto& files = req["pcap_files"];
  if (files.empty()) return "-";
  std::string first = files[0].is_string() ? files[0].get<std::string>() : files[0].dump();
  if (first.rfind("sha256:", 0) == 0 && first.size() > 19) first = first.substr(0, 19) + "…";
  if (files.size() > 1) first += " (+" + std::to_string(files.size() - 1) + ")";
  return first;
}

void print_task(const json& t) {
  Table tab({"FIELD", "VALUE"});
  auto row = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) tab.add({k, v});
  };
  row("task", str(t, "task_id"));
  row("state",
      str(t, "state") + (str(t, "state") == "running" ? " (" + percent_text(t) + ")" : ""));
  if (t.contains("request") && t["request"].is_object())
    row("kind", t["request"].value("kind", std::string("convert")));
  row("inputs", inputs_text(t));
  row("output", str(t, "output_path"));
  if (t.contains("parts") && t["parts"].is_number())
    row("parts", std::to_string(t["parts"].get<long long>()) + " (ipfixctl list --parent " +
                     str(t, "task_id") + ")");
  row("part of", str(t, "parent_id"));
  row("created", str(t, "created_at"));
  row("started", str(t, "started_at"));
  row("finished", str(t, "finished_at"));
  row("worker", str(t, "worker"));
  if (t.contains("attempts") && t["attempts"].is_number())
    row("attempts", std::to_string(t["attempts"].get<long long>()));
  row("summary", summary_text(t.value("summary", json())));
  row("error", str(t, "error"));
  // Two columns without a header line: a record, not a listing.
  std::string text = tab.render();
  text.erase(0, text.find('\n') + 1);
  write_stdout(text);
}

std::string state_line(const json& e) {
  std::string line = str(e, "at");
  line += (line.empty() ? "" : "  ") + str(e, "task_id") + "  " + str(e, "state");
  if (!str(e, "reason").empty()) line += "  " + str(e, "reason");
  if (!str(e, "worker").empty()) line += "  [" + str(e, "worker") + "]";
  return line;
}

UploadOptions upload_options(const UploadArgs& a, ProgressBar& bar) {
  UploadOptions o;
  if (!a.limit_rate.empty())
    o.limit_rate = static_cast<double>(parse_size(a.limit_rate, "--limit-rate"));
  o.chunk_size = parse_size(a.chunk_size, "--chunk-size");
  if (o.chunk_size == 0) throw Failure(kExitUsage, "--chunk-size must be above 0");
  o.retries = a.retries;
  o.state_dir = a.state_dir.empty() ? default_state_dir() : a.state_dir;
  o.reuse_existing = !a.no_reuse;
  auto start = std::make_shared<std::chrono::steady_clock::time_point>();
  auto start_done = std::make_shared<std::uint64_t>(0);
  auto phase_seen = std::make_shared<std::string>();
  o.progress = [&bar, start, start_done, phase_seen](const std::string& phase, std::uint64_t done,
                                                     std::uint64_t total) {
    if (!bar.enabled()) return;
    const auto now = std::chrono::steady_clock::now();
    if (*phase_seen != phase) {
      *phase_seen = phase;
      *start = now;
      *start_done = done;
    }
    const double secs = std::chrono::duration<double>(now - *start).count();
    std::string note = phase + " " + human_bytes(static_cast<double>(done)) + " / " +
                       human_bytes(static_cast<double>(total));
    if (secs > 0.5)
      note += "  " + human_bytes(static_cast<double>(done - *start_done) / secs) + "/s";
    bar.update(total ? static_cast<double>(done) / static_cast<double>(total) : -1, note,
               done == total);
  };
  o.note = [&bar](const std::string& s) { bar.line(s); };
  return o;
}

// Follows a task to its end, printing what happens; the exit code its final state means.
int follow_and_report(Context& ctx, const std::string& id, bool lines_to_stdout) {
  ProgressBar bar(ctx.progress());
  std::string state = "queued";
  std::string worker;
  auto on_event = [&](const json& e) {
    if (ctx.json()) print_json(e);
    const std::string ev = str(e, "event");
    if (ev == "state") {
      state = str(e, "state");
      if (!str(e, "worker").empty()) worker = str(e, "worker");
      if (!ctx.json()) {
        if (lines_to_stdout) {
          bar.finish();
          write_stdout(state_line(e) + "\n");
        } else {
          bar.line(state_line(e));
        }
      }
      bar.update(state == "succeeded" ? 1.0 : -1, state + (worker.empty() ? "" : " on " + worker),
                 true);
    } else if (ev == "progress") {
      bar.update(num(e, "progress"), state + (worker.empty() ? "" : " on " + worker));
    }
  };
  json final = follow_task(ctx.api(), id, on_event);
  bar.finish();
  const std::string end = str(final, "state");
  if (ctx.json()) {
    print_json({{"event", "task"}, {"task", final}});
  } else if (!lines_to_stdout) {
    print_task(final);
  } else {
    const std::string s = summary_text(final.value("summary", json()));
    write_stdout(id + " " + end + (s.empty() ? "" : ": " + s) +
                 (str(final, "error").empty() ? "" : ": " + str(final, "error")) + "\n");
  }
  if (end == "succeeded") return kExitOk;
  ctx.note("task " + id + " " + end +
           (str(final, "error").empty() ? "" : ": " + str(final, "error")));
  return kExitTaskFailed;
}

// A stream's data to stdout; a failing stdout ends the stream and is rethrown after it.
struct StdoutSink {
  std::optional<Failure> failure;
  bool operator()(const char* d, std::size_t n) {
    try {
      write_stdout(d, n);
      return true;
    } catch (const Failure& f) {
      failure = f;
      return false;
    }
  }
};

void end_of_stream(const Api::Streamed& s, const std::string& doing,
                   const std::optional<Failure>& sink_failure) {
  if (sink_failure) throw *sink_failure;
  if (!s.streamed) expect_ok(s.reply, doing);
  if (s.end == Api::End::Broken)
    throw Failure(kExitUnreachable, doing + ": the answer broke off (" + s.error + ")");
}

}  // namespace

std::string disposition_filename(const std::string& v) {
  std::string lower = v;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string name;
  if (const auto at = lower.find("filename*=utf-8''"); at != std::string::npos) {
    const auto end = v.find(';', at);
    const std::string enc = v.substr(at + 17, end == std::string::npos ? end : end - (at + 17));
    const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    for (std::size_t i = 0; i < enc.size(); ++i) {
      if (enc[i] == '%' && i + 2 < enc.size() && hex(enc[i + 1]) && hex(enc[i + 2])) {
        name.push_back(static_cast<char>(std::stoi(enc.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        name.push_back(enc[i]);
      }
    }
  } else if (const auto q = lower.find("filename=\""); q != std::string::npos) {
    for (std::size_t i = q + 10; i < v.size() && v[i] != '"'; ++i) {
      if (v[i] == '\\' && i + 1 < v.size()) ++i;
      name.push_back(v[i]);
    }
  } else {
    return {};
  }
  if (name.find('\0') != std::string::npos) return {};
  name = fs::path(name).filename().string();
  if (name == "." || name == "..") return {};
  return name;
}

std::uint64_t parse_size(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  double mult = 1;
  if (unit == "" || unit == "B" || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "K")
    mult = 1024;
  else if (unit == "m" || unit == "M")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "G")
    mult = 1024.0 * 1024 * 1024;
  else
    used = 0;
  if (used == 0 || v < 0)
    throw Failure(kExitUsage, what + ": '" + text + "' is not a size (e.g. 500k, 2M, 1G)");
  return static_cast<std::uint64_t>(v * mult);
}

// --- Commands ---

int cmd_upload(Context& ctx, const UploadArgs& a) {
  ProgressBar bar(ctx.progress());
  auto o = upload_options(a, bar);
  for (const auto& f : a.files) {
    auto r = upload_file(ctx.api(), f, o);
    bar.finish();
    if (r.existing)
      ctx.note(f + ": the server has this capture already");
    else if (r.resumed_from > 0)
      ctx.note(f + ": resumed at byte " + std::to_string(r.resumed_from));
    if (ctx.json())
      print_json(r.to_json());
    else
      write_stdout(r.ref + "  " + f + "\n");
  }
  return kExitOk;
}

int cmd_submit(Context& ctx, const SubmitArgs& a) {
  json refs = json::array(), uploads = json::array();
  std::string first_name;
  {
    ProgressBar bar(ctx.progress());
    std::optional<UploadOptions> o;
    for (const auto& in : a.inputs) {
      const bool reference = in.rfind("sha256:", 0) == 0 || in.rfind("upload:", 0) == 0;
      if (first_name.empty()) first_name = fs::path(in).filename().string();
      // A merge's inputs are the parts' outputs on the server (under its output root).
      if (a.server_path || reference || a.kind == "merge") {
        refs.push_back(in);
        continue;
      }
      std::error_code ec;
      const auto st = fs::status(in, ec);
      if (!ec && fs::is_regular_file(st)) {
        if (!o) o = upload_options(a.upload, bar);
        auto r = upload_file(ctx.api(), in, *o);
        bar.finish();
        if (!ctx.json())
          ctx.note(in + ": " + (r.existing ? "on the server already as " : "uploaded as ") + r.ref);
        refs.push_back(r.ref);
        uploads.push_back(r.to_json());
      } else if (!ec && fs::exists(st)) {
        throw Failure(kExitLocal, in + " is not a regular file");
      } else {
        if (!ctx.json()) ctx.note(in + ": no such local file; sent as a path on the server");
        refs.push_back(in);
      }
    }
  }
  std::string output = a.output;
  if (output.empty()) {
    std::string stem = first_name;
    if (stem.rfind("sha256:", 0) == 0) stem = "sha256-" + stem.substr(7, 12);
    if (stem.rfind("upload:", 0) == 0) stem = "upload-" + stem.substr(7);
    for (const char* ext : {".gz", ".zst", ".xz", ".bz2", ".pcapng", ".pcap", ".cap", ".ipfix"})
      if (stem.size() > std::strlen(ext) &&
          stem.compare(stem.size() - std::strlen(ext), std::string::npos, ext) == 0)
        stem.resize(stem.size() - std::strlen(ext));
    // A merge's inputs are IPFIX outputs: <stem>.ipfix would name its first input (refused).
    output = stem + (a.kind == "extract" ? ".pcap"
                     : a.kind == "merge" ? ".merged.ipfix"
                                         : ".ipfix");
  }
  json body = {{"pcap_files", refs}, {"output_path", output}, {"DPI", !a.no_dpi}};
  if (!a.analysis.empty()) body["analysis_list"] = a.analysis;
  if (!a.filter.empty()) body["filter"] = a.filter;
  if (a.uniflow) body["uniflow"] = true;
  if (a.no_flow_store) body["flow_store"] = false;
  if (a.overwrite) body["overwrite"] = true;
  if (!a.kind.empty()) body["kind"] = a.kind;
  if (a.priority) body["priority"] = *a.priority;
  if (a.idle_timeout) body["idle_timeout"] = *a.idle_timeout;
  if (a.active_timeout) body["active_timeout"] = *a.active_timeout;
  if (a.max_flows) body["max_flows"] = *a.max_flows;
  if (a.parallelism) body["parallelism"] = *a.parallelism;
  if (a.partition) {
    body["partition"] = a.partition->first;
    body["partitions"] = a.partition->second;
  }
  Headers h;
  if (!a.idempotency_key.empty()) h.emplace_back("Idempotency-Key", a.idempotency_key);
  auto r = ctx.api().post("/api/v1/tasks", h, body.dump(), "application/json");
  expect_ok(r, "submitting the task");
  json answer = r.json();
  answer["uploads"] = uploads;
  answer["output_path"] = output;
  const std::string id = str(answer, "task_id");
  if (!a.wait) {
    if (ctx.json())
      print_json(answer);
    else
      write_stdout(id + "\n");
    return kExitOk;
  }
  if (ctx.json()) {
    json e = {{"event", "submitted"}};
    e.update(answer);
    print_json(e);
  } else {
    ctx.note("task " + id + " submitted (output " + output + ")");
  }
  return follow_and_report(ctx, id, false);
}

int cmd_status(Context& ctx, const std::string& id) {
  auto r = ctx.api().get(task_path(id));
  expect_ok(r, "reading task " + id);
  if (ctx.json())
    print_json(r.json());
  else
    print_task(r.json());
  return kExitOk;
}

int cmd_list(Context& ctx, const ListArgs& a) {
  json tasks = json::array();
  json next = nullptr;
  while (static_cast<int>(tasks.size()) < a.limit) {
    const int page = std::min(1000, a.limit - static_cast<int>(tasks.size()));
    auto r = ctx.api().get("/api/v1/tasks" +
                           query({{"state", a.state},
                                  {"input", a.input},
                                  {"parent", a.parent},
                                  {"limit", std::to_string(page)},
                                  {"next", next.is_string() ? next.get<std::string>() : ""}}));
    expect_ok(r, "listing tasks");
    json j = r.json();
    for (auto& t : j.value("tasks", json::array())) tasks.push_back(std::move(t));
    next = j.value("next", json(nullptr));
    if (!next.is_string()) break;
  }
  if (ctx.json()) {
    print_json({{"tasks", tasks}, {"next", next}});
    return kExitOk;
  }
  if (a.quiet) {
    std::string out;
    for (const auto& t : tasks) out += str(t, "task_id") + "\n";
    write_stdout(out);
    return kExitOk;
  }
  Table tab({"TASK", "STATE", "PROGRESS", "CREATED", "INPUTS", "OUTPUT"});
  for (const auto& t : tasks)
    tab.add({str(t, "task_id"), str(t, "state"), percent_text(t), str(t, "created_at"),
             inputs_text(t), str(t, "output_path")});
  tab.print();
  if (next.is_string())
    ctx.note("more tasks match: --limit " + std::to_string(a.limit * 2) + " shows more");
  return kExitOk;
}

int cmd_watch(Context& ctx, const std::string& id) {
  if (!id.empty()) return follow_and_report(ctx, id, true);
  watch_tasks(ctx.api(), [&](const json& e) {
    if (ctx.json())
      print_json(e);
    else if (str(e, "event") == "state")
      write_stdout(state_line(e) + "\n");
  });
  return kExitOk;
}

int cmd_cancel(Context& ctx, const std::string& id) {
  auto r = ctx.api().del(task_path(id));
  expect_ok(r, "cancelling task " + id);
  json j = r.json();
  if (ctx.json()) {
    print_json(j);
  } else {
    const std::string result = str(j, "result");
    write_stdout(id + " " + (result.empty() ? "cancelled" : result) +
                 (result == "cancelling" ? " (its worker stops it)" : "") + "\n");
  }
  return kExitOk;
}

int cmd_flows(Context& ctx, const FlowsArgs& a) {
  const std::string base = task_path(a.id);
  if (a.format == "ndjson" || a.format == "csv") {
    StdoutSink sink;
    auto s = ctx.api().stream(
        base + "/flows." + a.format +
            query({{"filter", a.filter},
                   {"sort", a.sort},
                   {"fields", a.fields},
                   {"limit", a.limit ? std::to_string(*a.limit) : ""}}),
        {}, [](const Reply& r) { return r.status == 200; }, std::ref(sink));
    end_of_stream(s, "exporting the flows of task " + a.id, sink.failure);
    return kExitOk;
  }
  const long long want = a.limit.value_or(20);
  json rows = json::array();
  json next = nullptr;
  while (static_cast<long long>(rows.size()) < want) {
    const long long page = std::min<long long>(10000, want - static_cast<long long>(rows.size()));
    auto r = ctx.api().get(base + "/flows" +
                           query({{"filter", a.filter},
                                  {"sort", a.sort},
                                  {"fields", a.fields},
                                  {"limit", std::to_string(page)},
                                  {"next", next.is_string() ? next.get<std::string>() : ""}}));
    expect_ok(r, "reading the flows of task " + a.id);
    json j = r.json();
    for (auto& f : j.value("flows", json::array())) rows.push_back(std::move(f));
    next = j.value("next", json(nullptr));
    if (!next.is_string()) break;
  }
  if (ctx.json()) {
    print_json({{"flows", rows}, {"next", next}});
    return kExitOk;
  }
  std::vector<std::string> cols;
  if (!a.fields.empty()) {
    std::string f = a.fields;
    for (std::size_t at = 0; at <= f.size();) {
      const auto comma = f.find(',', at);
      std::string c = f.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      if (!c.empty()) cols.push_back(c);
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
  } else {
    for (const char* c : {"id", "start_time", "proto_name", "src", "sport", "dst", "dport",
                          "packets", "bytes", "app", "server_name"})
      if (rows.empty() || rows[0].contains(c)) cols.push_back(c);
  }
  if (rows.empty()) ctx.note("no flows match");
  std::vector<std::string> header;
  for (const auto& c : cols) {
    std::string u = c;
    for (auto& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    header.push_back(u);
  }
  Table tab(header);
  for (const auto& f : rows) {
    std::vector<std::string> row;
    for (const auto& c : cols) row.push_back(f.contains(c) ? cell(f[c]) : "-");
    tab.add(std::move(row));
  }
  tab.print();
  if (next.is_string())
    ctx.note("more flows match: --limit " + std::to_string(want * 2) +
             " shows more, --format ndjson or csv streams every one");
  return kExitOk;
}

int cmd_top(Context& ctx, const TopArgs& a) {
  auto r = ctx.api().get(task_path(a.id) + "/top" +
                         query({{"by", a.by},
                                {"metric", a.metric},
                                {"n", a.n ? std::to_string(*a.n) : ""},
                                {"filter", a.filter}}));
  expect_ok(r, "reading the top groups of task " + a.id);
  json j = r.json();
  if (ctx.json()) {
    print_json(j);
    return kExitOk;
  }
  json groups = j.value("groups", json::array());
  // The group's key columns in the api's order (JSON objects here sort their keys).
  std::vector<std::string> keys;
  const std::string by = str(j, "by");
  if (by == "pair")
    keys = {"src", "dst"};
  else if (by == "ja3")
    keys = {"ja3c"};
  else if (by == "port")
    keys = {"dport"};
  else if (by == "proto")
    keys = {"proto_name"};
  else if (!by.empty())
    keys = {by};
  if (!groups.empty()) {
    std::erase_if(keys, [&](const std::string& k) { return !groups[0].contains(k); });
    if (keys.empty())
      for (auto& [k, v] : groups[0].items())
        if (k != "bytes" && k != "packets" && k != "flows") keys.push_back(k);
  }
  std::vector<std::string> header;
  for (const auto& k : keys) {
    std::string u = k;
    for (auto& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    header.push_back(u);
  }
  for (const char* m : {"BYTES", "PACKETS", "FLOWS"}) header.push_back(m);
  Table tab(header);
  for (const auto& g : groups) {
    std::vector<std::string> row;
    for (const auto& k : keys) row.push_back(cell(g[k]));
    for (const char* m : {"bytes", "packets", "flows"})
      row.push_back(g.contains(m) ? cell(g[m]) : "-");
    tab.add(std::move(row));
  }
  tab.print();
  return kExitOk;
}

int cmd_download(Context& ctx, const DownloadArgs& a) {
  std::string route, ext;
  if (a.what == "ipfix") {
    route = "/output";
    ext = ".ipfix";
  } else if (a.what == "flows") {
    route = "/flows.sqlite";
    ext = ".flows.sqlite";
  } else if (a.what == "ndjson") {
    route = "/flows.ndjson";
    ext = ".ndjson";
  } else if (a.what == "csv") {
    route = "/flows.csv";
    ext = ".csv";
  } else {
    throw Failure(kExitUsage, "--what is ipfix, flows, ndjson or csv");
  }
  const std::string doing = "downloading the " + a.what + " of task " + a.id;
  if (a.output == "-") {
    StdoutSink sink;
    auto s = ctx.api().stream(
        task_path(a.id) + route, {}, [](const Reply& r) { return r.status == 200; },
        std::ref(sink));
    end_of_stream(s, doing, sink.failure);
    return kExitOk;
  }

  std::string dest, temp;
  int fd = -1;
  bool direct = false;  // written straight into `dest` (not a regular file)
  std::uint64_t bytes = 0;
  std::optional<Failure> local;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  std::unique_ptr<CleanupOnSignal> cleanup;
  ProgressBar bar(ctx.progress());
  std::uint64_t total = 0;
  auto on_head = [&](const Reply& r) {
    if (r.status != 200) return false;
    const std::string len = r.header("Content-Length");
    total = len.empty() ? 0 : std::stoull(len);
    std::string name = disposition_filename(r.header("Content-Disposition"));
    if (name.empty()) name = a.id + ext;
    std::error_code ec;
    if (a.output.empty())
      dest = name;
    else if (fs::is_directory(a.output, ec))
      dest = (fs::path(a.output) / name).string();
    else
      dest = a.output;
    // Something that is not a regular file (a device such as /dev/null, a FIFO, /dev/stdout) is
    // written to as it is: a temporary file renamed over it would replace the node.
    struct stat st {};
    if (::stat(dest.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
      fd = ::open(dest.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
      if (fd < 0) {
        local = Failure(kExitLocal, "cannot write " + dest + ": " + std::strerror(errno));
        return true;
      }
      direct = true;
      return true;
    }
    // A symbolic link: its target is written (as cp and curl do), not the link replaced.
    // (followed by hand: a link whose target does not exist yet is followed too)
    for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(dest, ec)); ++hops) {
      const fs::path target = fs::read_symlink(dest, ec);
      if (ec) break;
      dest = (target.is_absolute() ? target : fs::path(dest).parent_path() / target).string();
    }
    const fs::path dir = fs::absolute(dest).parent_path();
    std::string tmpl = (dir / ("." + fs::path(dest).filename().string() + ".XXXXXX")).string();
    fd = ::mkstemp(tmpl.data());
    if (fd < 0) {
      local = Failure(kExitLocal,
                      "cannot create a file in " + dir.string() + ": " + std::strerror(errno));
      return true;  // the data is then dropped; the failure reported after
    }
    ::fchmod(
        fd, 0644 & ~[] {
          const mode_t m = ::umask(0);
          ::umask(m);
          return m;
        }());
    temp = tmpl;
    cleanup = std::make_unique<CleanupOnSignal>(temp);
    return true;
  };
  auto on_data = [&](const char* d, std::size_t n) {
    if (local || fd < 0) return false;
    std::size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd, d + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        local = Failure(kExitLocal,
                        "cannot write " + (direct ? dest : temp) + ": " + std::strerror(errno));
        return false;
      }
      done += static_cast<std::size_t>(w);
    }
    EVP_DigestUpdate(md.get(), d, n);
    bytes += n;
    bar.update(total ? static_cast<double>(bytes) / static_cast<double>(total) : -1,
               "downloading " + human_bytes(static_cast<double>(bytes)));
    return true;
  };
  auto s = ctx.api().stream(task_path(a.id) + route, {}, on_head, on_data);
  bar.finish();
  auto discard = [&] {
    if (fd >= 0) ::close(fd);
    if (!temp.empty()) ::unlink(temp.c_str());
    cleanup.reset();
  };
  try {
    end_of_stream(s, doing, local);
    if (total && bytes != total)
      throw Failure(kExitUnreachable,
                    doing + ": " + std::to_string(bytes) + " bytes of " + std::to_string(total));
    if (direct) {  // a device or FIFO: nothing to sync or rename
      const int rc = ::close(fd);
      fd = -1;
      if (rc != 0) throw Failure(kExitLocal, "cannot write " + dest + ": " + std::strerror(errno));
    } else if (::fsync(fd) != 0 || ::close(fd) != 0) {
      fd = -1;
      throw Failure(kExitLocal, "cannot write " + temp + ": " + std::strerror(errno));
    }
    fd = -1;
    std::error_code ec;
    if (!direct) fs::rename(temp, dest, ec);
    if (ec)
      throw Failure(kExitLocal, "cannot rename " + temp + " to " + dest + ": " + ec.message());
    temp.clear();
    cleanup.reset();
  } catch (...) {
    discard();
    throw;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dn = 0;
  EVP_DigestFinal_ex(md.get(), digest, &dn);
  static const char* hexd = "0123456789abcdef";
  std::string sha;
  for (unsigned int i = 0; i < dn; ++i) {
    sha += hexd[digest[i] >> 4];
    sha += hexd[digest[i] & 15];
  }
  if (ctx.json())
    print_json(
        {{"task_id", a.id}, {"what", a.what}, {"path", dest}, {"bytes", bytes}, {"sha256", sha}});
  else
    write_stdout(dest + "  " + human_bytes(static_cast<double>(bytes)) + "\n");
  return kExitOk;
}

int cmd_workers(Context& ctx) {
  json doc;
  auto r = ctx.api().get("/api/v1/status");
  if (r.status == 404) {
    // An api without /api/v1/status: the broker's aggregate from /readyz (no per-worker rows).
    auto ready = ctx.api().get("/readyz");
    if (ready.status != 200 && ready.status != 503) expect_ok(ready, "reading /readyz");
    json checks = ready.json().value("checks", json::object());
    json broker = checks.value("broker", json());
    doc = {{"source", "readyz"}, {"workers", nullptr}, {"tasks", nullptr}};
    if (broker.is_object()) {
      broker["up"] = true;
      doc["broker"] = broker;
    } else {
      doc["broker"] = {{"up", false}};
    }
  } else {
    expect_ok(r, "reading the service status");
    doc = r.json();
    doc["source"] = "status";
  }
  if (ctx.json()) {
    print_json(doc);
    return kExitOk;
  }
  const json b = doc.value("broker", json::object());
  auto n = [&](const json& o, const char* k) {
    return o.contains(k) && o[k].is_number() ? std::to_string(o[k].get<long long>()) : "-";
  };
  std::string out;
  if (!b.value("up", false)) {
    out += "broker: unreachable\n";
  } else {
    out += "broker: up" + std::string(b.value("draining", false) ? " (draining)" : "") + ", " +
           n(b, "workers") + " workers, " + n(b, "slots") + " slots, " + n(b, "credit") +
           " free, " + n(b, "running") + " running, " + n(b, "queued") + " queued (max " +
           n(b, "max_queue") + ")\n";
    if (b.contains("accepting") && !b.value("accepting", true))
      out += "new tasks are refused at the moment (queue full, storage short, or draining)\n";
    if (b.contains("succeeded"))
      out += "since it started: " + n(b, "succeeded") + " succeeded, " + n(b, "failed") +
             " failed, " + n(b, "cancelled") + " cancelled, " + n(b, "requeued") + " requeued\n";
  }
  if (doc.contains("tasks") && doc["tasks"].is_object()) {
    const json& t = doc["tasks"];
    out += "tasks: " + n(t, "queued") + " queued, " + n(t, "running") + " running, " +
           n(t, "succeeded") + " succeeded, " + n(t, "failed") + " failed, " + n(t, "cancelled") +
           " cancelled\n";
  }
  write_stdout(out);
  if (doc.contains("workers") && doc["workers"].is_array()) {
    write_stdout("\n");
    Table tab({"WORKER", "HOST", "PID", "SLOTS", "RUNNING", "SEEN"});
    for (const auto& w : doc["workers"]) {
      std::string seen = "-";
      if (w.contains("last_seen_s") && w["last_seen_s"].is_number()) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1fs ago", w["last_seen_s"].get<double>());
        seen = buf;
      }
      tab.add({cell(w.value("id", json())), cell(w.value("host", json())),
               cell(w.value("pid", json())), cell(w.value("slots", json())),
               cell(w.value("running", json())), seen});
    }
    tab.print();
  } else {
    write_stdout("(this api has no /api/v1/status: per-worker rows are not available)\n");
  }
  return kExitOk;
}

int cmd_config(Context& ctx) {
  const auto& s = ctx.settings();
  json j = {{"url", s.url},
            {"url_from", s.url_from},
            {"token", s.token.empty() ? json(nullptr) : json("(set)")},
            {"token_from", s.token_from},
            {"config_file", s.config_file.empty() ? json(nullptr) : json(s.config_file)},
            {"config_file_read", s.config_file_read}};
  if (ctx.json()) {
    print_json(j);
    return kExitOk;
  }
  Table tab({"SETTING", "VALUE", "FROM"});
  tab.add({"url", s.url, s.url_from});
  tab.add({"token", s.token.empty() ? "-" : "(set)", s.token_from});
  tab.add({"config file", s.config_file.empty() ? "-" : s.config_file,
           s.config_file_read ? "read" : "absent"});
  tab.print();
  return kExitOk;
}

}  // namespace ipfixweb::cli

#include "ipfixweb/api/server.hpp"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/broker_client.hpp"
#include "ipfixweb/api/metrics.hpp"
#include "ipfixweb/api/openapi.hpp"
#include "ipfixweb/api/render.hpp"
#include "ipfixweb/api/submitter.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/shared/json_writer.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::api {

using nlohmann::json;

namespace {

const char* const kProblem = "application/problem+json";

json null_if_empty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

void problem(httplib::Response& res, int status, const std::string& title,
             const std::string& detail, const std::vector<FieldError>& errors = {}) {
  json body = {{"type", "about:blank"}, {"title", title}, {"status", status}, {"detail", detail}};
  if (!errors.empty()) {
    json list = json::array();
    for (auto& e : errors) list.push_back({{"field", e.field}, {"message", e.message}});
    body["errors"] = list;
  }
  res.status = status;
  res.set_content(body.dump(), kProblem);
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// Constant-time comparison: the time taken does not depend on where the
// strings differ.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace

struct Server::Impl {
  Config cfg;
  zmq::context_t& ctx;
  std::shared_ptr<spdlog::logger> log = logger("api");
  Roots roots;
  httplib::Server http;
  int bound_port = 0;
  int listen_fd = -1;
  std::atomic<bool> draining{false};

  // Per-thread resources: a broker socket and a read-only database connection.
  struct ThreadState {
    const Impl* owner = nullptr;
    std::unique_ptr<BrokerClient> broker;
    std::optional<TaskStore> store;
  };

  std::optional<curve::KeyPair> curve_keys;
  std::string curve_server;
  // Submissions go through one thread that batches them; cancel and ping use
  // the calling thread's own BrokerClient.
  std::unique_ptr<BatchSubmitter> submitter;

  Impl(Config c, zmq::context_t& z) : cfg(std::move(c)), ctx(z) {
    for (auto& r : cfg.input_roots) roots.inputs.push_back(paths::canonical_dir(r));
    roots.output = paths::canonical_dir(cfg.output_root);
    if (!cfg.curve_server_key.empty() || !cfg.curve_secret_key.empty()) {
      if (cfg.curve_server_key.empty() || cfg.curve_secret_key.empty())
        throw std::runtime_error("CURVE needs both --curve-server-key and --curve-secret-key");
      curve_keys = curve::load_secret(cfg.curve_secret_key);
      curve_server = curve::load_public(cfg.curve_server_key);
    }
    BatchSubmitter::Options so;
    so.timeout_s = cfg.broker_timeout_s;
    submitter = std::make_unique<BatchSubmitter>(ctx, cfg.broker, so,
                                                 curve_keys ? &*curve_keys : nullptr, curve_server);
  }

  ThreadState& local() {
    thread_local ThreadState ts;
    if (ts.owner != this) {
      ts.broker.reset();
      ts.store.reset();
      ts.owner = this;
    }
    return ts;
  }

  BrokerClient& broker() {
    auto& ts = local();
    if (!ts.broker)
      ts.broker = std::make_unique<BrokerClient>(ctx, cfg.broker, cfg.broker_timeout_s,
                                                 curve_keys ? &*curve_keys : nullptr, curve_server);
    return *ts.broker;
  }

  // nullptr when the database cannot be opened yet (the broker creates it).
  TaskStore* store() {
    auto& ts = local();
    if (!ts.store) {
      try {
        ts.store.emplace(TaskStore::open_reader(cfg.db_path));
      } catch (const std::exception& e) {
        log->warn("database not readable: {}", e.what());
        return nullptr;
      }
    }
    return &*ts.store;
  }

  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  using PostHandler =
      std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;
  Metrics metrics;
  void add(const std::string& method, const std::string& path_template, const std::string& pattern,
           Handler fn);
  void add_post(const std::string& path_template, const std::string& pattern, PostHandler fn);
  void routes();
  void metrics_text(httplib::Response& res);
  void download(const httplib::Request& req, httplib::Response& res);
  void submit(const httplib::Request& req, httplib::Response& res, const json& body,
              UnknownFields unknown);
  void submit_body(const httplib::Request& req, const std::string& body, httplib::Response& res,
                   UnknownFields unknown);
  std::optional<TaskRecord> find_task(const httplib::Request& req, httplib::Response& res);
  void get_task(const httplib::Request& req, httplib::Response& res);
  void list_tasks(const httplib::Request& req, httplib::Response& res);
  void cancel_task(const httplib::Request& req, httplib::Response& res);
  void task_events(const httplib::Request& req, httplib::Response& res);
  void readyz(httplib::Response& res);
};

void Server::Impl::submit_body(const httplib::Request& req, const std::string& raw,
                               httplib::Response& res, UnknownFields unknown) {
  std::string ctype = req.get_header_value("Content-Type");
  std::string base = ctype.substr(0, ctype.find(';'));
  base.erase(std::remove(base.begin(), base.end(), ' '), base.end());
  std::transform(base.begin(), base.end(), base.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (base != "application/json") {
    problem(res, 415, "Unsupported Media Type",
            "send the task as JSON with Content-Type: application/json");
    return;
  }
  json body = json::parse(raw, nullptr, false);
  if (body.is_discarded()) {
    problem(res, 400, "Bad Request", "the request body is not valid JSON");
    return;
  }
  submit(req, res, body, unknown);
}

void Server::Impl::submit(const httplib::Request& req, httplib::Response& res, const json& body,
                          UnknownFields unknown) {
  metrics.submitted.fetch_add(1, std::memory_order_relaxed);
  std::vector<FieldError> errors;
  auto parsed = parse_task_request(body, errors, unknown);
  proto::TaskSpec spec;
  if (!parsed || !resolve_paths(*parsed, roots, spec, errors)) {
    metrics.invalid.fetch_add(1, std::memory_order_relaxed);
    problem(res, 422, "Unprocessable Content", "the task request is not valid", errors);
    return;
  }
  std::string key = req.get_header_value("Idempotency-Key");
  if (key.size() > 255) {
    problem(res, 422, "Unprocessable Content", "Idempotency-Key is longer than 255 characters");
    return;
  }
  proto::Submit s;
  s.request = std::move(parsed->normalised);
  s.spec = std::move(spec);
  s.idempotency_key = key;
  s.fingerprint = fingerprint(s.request);
  s.priority = parsed->extras.priority;
  s.overwrite = parsed->extras.overwrite;
  auto reply = submitter->submit(std::move(s));
  if (!reply) {
    metrics.refused_unavailable.fetch_add(1, std::memory_order_relaxed);
    res.set_header("Retry-After", "1");
    problem(res, 503, "Service Unavailable", "the broker did not answer; try again");
    return;
  }
  if (!reply->accepted) {
    if (reply->code == Refusal::Conflict || reply->code == Refusal::Invalid) {
      metrics.invalid.fetch_add(1, std::memory_order_relaxed);
      problem(res, 422, "Unprocessable Content", reply->reason);
      return;
    }
    if (reply->code == Refusal::Taken) {
      metrics.invalid.fetch_add(1, std::memory_order_relaxed);
      problem(res, 409, "Conflict", reply->reason);
      return;
    }
    (reply->code == Refusal::Capacity ? metrics.refused_capacity : metrics.refused_unavailable)
        .fetch_add(1, std::memory_order_relaxed);
    long secs = std::max(1L, static_cast<long>(std::ceil(reply->retry_after)));
    res.set_header("Retry-After", std::to_string(secs));
    if (reply->code == Refusal::Storage)
      problem(res, 507, "Insufficient Storage", reply->reason);
    else
      problem(res, 503, "Service Unavailable", reply->reason);
    return;
  }
  metrics.accepted.fetch_add(1, std::memory_order_relaxed);
  std::string location = "/api/v1/tasks/" + reply->task_id;
  // Keys in byte order, as nlohmann writes them.
  std::string out;
  JsonWriter w(out);
  w.begin_object();
  if (reply->existing) w.key("existing").value(true);
  w.key("links").begin_object().key("self").value(location).end_object();
  w.key("state").value(name(reply->state.value_or(TaskState::Queued)));
  w.key("task_id").value(reply->task_id);
  w.end_object();
  res.set_header("Location", location);
  res.status = reply->existing ? 200 : 202;
  res.set_content(std::move(out), "application/json");
}

// The task named by the route's {id}; answers 503 or 404 itself when there is none.
std::optional<TaskRecord> Server::Impl::find_task(const httplib::Request& req,
                                                  httplib::Response& res) {
  std::string id = req.matches[1];
  auto* st = store();
  if (!st) {
    problem(res, 503, "Service Unavailable", "the task database is not available");
    return std::nullopt;
  }
  auto t = is_uuid(id) ? st->get(id) : std::nullopt;
  if (!t) problem(res, 404, "Not Found", "no task with id " + id);
  return t;
}

void Server::Impl::get_task(const httplib::Request& req, httplib::Response& res) {
  auto t = find_task(req, res);
  if (!t) return;
  std::string body;
  body.reserve(4096);
  append_task_json(body, *t, roots.output);
  res.status = 200;
  res.set_content(std::move(body), "application/json");
}

void Server::Impl::list_tasks(const httplib::Request& req, httplib::Response& res) {
  auto* st = store();
  if (!st) return problem(res, 503, "Service Unavailable", "the task database is not available");
  TaskFilter f;
  std::vector<FieldError> errors;
  if (req.has_param("state")) {
    const std::string value = req.get_param_value("state");
    f.state = parse_name<TaskState>(value);
    if (!f.state) errors.push_back({"state", "unknown state '" + value + "'"});
  }
  if (req.has_param("limit")) {
    try {
      f.limit = std::stoi(req.get_param_value("limit"));
    } catch (...) {
      f.limit = -1;
    }
    if (f.limit < 1 || f.limit > 1000) errors.push_back({"limit", "must be from 1 to 1000"});
  }
  if (req.has_param("next")) {
    try {
      f.before_seq = std::stoll(req.get_param_value("next"));
    } catch (...) {
      f.before_seq = -1;
    }
    if (f.before_seq < 1) errors.push_back({"next", "is not a cursor this server issued"});
  }
  f.created_after = req.get_param_value("created_after");
  f.created_before = req.get_param_value("created_before");
  f.input = req.get_param_value("input");
  if (!errors.empty())
    return problem(res, 422, "Unprocessable Content", "invalid query parameters", errors);
  ++f.limit;  // one extra row tells whether there is a next page
  auto rows = st->list(f);
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("tasks").begin_array();
  std::string next;  // the cursor of the next page: the last shown task's seq
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (static_cast<int>(i) == f.limit - 1) {
      next = std::to_string(rows[i - 1].seq);
      break;
    }
    write_task_json(w, rows[i], roots.output);
  }
  w.end_array().key("next").string_or_null(next).end_object();
  res.status = 200;
  res.set_content(std::move(body), "application/json");
}

void Server::Impl::cancel_task(const httplib::Request& req, httplib::Response& res) {
  std::string id = req.matches[1];
  if (!is_uuid(id)) return problem(res, 404, "Not Found", "no task with id " + id);
  auto reply = broker().cancel(id);
  if (!reply) {
    res.set_header("Retry-After", "1");
    return problem(res, 503, "Service Unavailable", "the broker did not answer; try again");
  }
  const std::string state{reply->state ? name(*reply->state) : ""};
  if (reply->result == CancelResult::NotFound)
    return problem(res, 404, "Not Found", "no task with id " + id);
  if (reply->result == CancelResult::Finished)
    return problem(res, 409, "Conflict", "task " + id + " already finished: " + state);
  send_json(res, reply->result == CancelResult::Cancelled ? 200 : 202,
            {{"task_id", id}, {"state", state}, {"result", name(reply->result)}});
}

void Server::Impl::task_events(const httplib::Request& req, httplib::Response& res) {
  auto t = find_task(req, res);
  if (!t) return;
  const std::string& id = t->id;
  json events = json::array();
  for (auto& e : store()->events(id))
    events.push_back({{"at", e.at},
                      {"state", name(e.state)},
                      {"reason", null_if_empty(e.reason)},
                      {"worker", null_if_empty(e.worker)}});
  send_json(res, 200, {{"task_id", id}, {"events", events}});
}

void Server::Impl::readyz(httplib::Response& res) {
  json checks;
  bool ok = true;
  if (draining) {
    ok = false;
    checks["draining"] = true;
  }
  auto* st = store();
  if (st) {
    try {
      st->count_by_state();
      checks["database"] = "ok";
    } catch (const std::exception& e) {
      ok = false;
      checks["database"] = e.what();
    }
  } else {
    ok = false;
    checks["database"] = "not available";
  }
  auto pong = broker().ping(std::min(cfg.broker_timeout_s, 1.0));
  if (pong) {
    checks["broker"] = {{"workers", pong->workers}, {"slots", pong->slots},
                        {"credit", pong->credit},   {"running", pong->running},
                        {"queued", pong->queued},   {"max_queue", pong->max_queue}};
    if (pong->draining) ok = false;
  } else {
    ok = false;
    checks["broker"] = "unreachable";
  }
  send_json(res, ok ? 200 : 503, {{"status", ok ? "ready" : "not ready"}, {"checks", checks}});
}

void Server::Impl::metrics_text(httplib::Response& res) {
  std::string out = metrics.render();
  char buf[256];
  auto gauge = [&](const char* name, const char* help, double v) {
    std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name,
                  v);
    out += buf;
  };
  std::snprintf(buf, sizeof buf,
                "# HELP ipfixweb_api_submit_batches_total Messages that carried submissions to the "
                "broker (each a batch of one or more).\n"
                "# TYPE ipfixweb_api_submit_batches_total counter\n"
                "ipfixweb_api_submit_batches_total %llu\n",
                static_cast<unsigned long long>(submitter->batches_sent()));
  out += buf;
  auto pong = broker().ping(std::min(cfg.broker_timeout_s, 0.5));
  gauge("ipfixweb_broker_up", "1 when the broker answered the api's ping.", pong ? 1 : 0);
  if (pong) {
    gauge("ipfixweb_broker_workers", "Workers registered with the broker.", pong->workers);
    gauge("ipfixweb_broker_slots", "Task slots granted by all workers.", pong->slots);
    gauge("ipfixweb_broker_credit", "Free task slots.", pong->credit);
    gauge("ipfixweb_broker_running", "Tasks running on workers.", pong->running);
    gauge("ipfixweb_broker_queue_depth", "Tasks waiting for credit.", pong->queued);
    gauge("ipfixweb_broker_queue_max", "Bound of the queue beyond credit.", pong->max_queue);
    out +=
        "# HELP ipfixweb_broker_tasks_finished_total Tasks finished since the broker started.\n"
        "# TYPE ipfixweb_broker_tasks_finished_total counter\n";
    for (auto [state, v] : {std::pair{TaskState::Succeeded, pong->succeeded},
                            {TaskState::Failed, pong->failed},
                            {TaskState::Cancelled, pong->cancelled}}) {
      std::snprintf(buf, sizeof buf, "ipfixweb_broker_tasks_finished_total{state=\"%s\"} %llu\n",
                    name(state).data(), static_cast<unsigned long long>(v));
      out += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "# HELP ipfixweb_broker_tasks_requeued_total Tasks put back in the queue "
                  "(worker lost, crash, shutdown).\n"
                  "# TYPE ipfixweb_broker_tasks_requeued_total counter\n"
                  "ipfixweb_broker_tasks_requeued_total %llu\n",
                  static_cast<unsigned long long>(pong->requeued));
    out += buf;
    const std::size_t nb = std::size(proto::kDurationBuckets);
    if (pong->duration_counts.size() == nb + 1) {
      out +=
          "# HELP ipfixweb_task_duration_seconds Time from dispatch to result, since the "
          "broker started.\n"
          "# TYPE ipfixweb_task_duration_seconds histogram\n";
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i <= nb; ++i) {
        cumulative += pong->duration_counts[i];
        if (i < nb)
          std::snprintf(buf, sizeof buf, "ipfixweb_task_duration_seconds_bucket{le=\"%g\"} %llu\n",
                        proto::kDurationBuckets[i], static_cast<unsigned long long>(cumulative));
        else
          std::snprintf(buf, sizeof buf,
                        "ipfixweb_task_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "ipfixweb_task_duration_seconds_sum %.6f\n"
                        "ipfixweb_task_duration_seconds_count %llu\n",
                        static_cast<unsigned long long>(cumulative), pong->duration_sum,
                        static_cast<unsigned long long>(cumulative));
        out += buf;
      }
    }
  }
  if (auto* st = store()) {
    out +=
        "# HELP ipfixweb_tasks Tasks in the database by state.\n"
        "# TYPE ipfixweb_tasks gauge\n";
    auto counts = st->count_by_state();
    for (const auto& [s, state_name] : Names<TaskState>::kTable) {
      std::snprintf(buf, sizeof buf, "ipfixweb_tasks{state=\"%s\"} %lld\n", state_name.data(),
                    static_cast<long long>(counts[s]));
      out += buf;
    }
  }
  res.status = 200;
  res.set_content(std::move(out), "text/plain; version=0.0.4");
}

void Server::Impl::download(const httplib::Request& req, httplib::Response& res) {
  auto t = find_task(req, res);
  if (!t) return;
  const std::string& id = t->id;
  if (t->state != TaskState::Succeeded)
    return problem(res, 409, "Conflict",
                   "task " + id + " is " + name_str(t->state) + ", not succeeded");
  // The stored path was confined at submission; check again on the resolved
  // path in case the tree changed since (e.g. a symlink put in its place).
  std::error_code ec;
  auto real = std::filesystem::canonical(t->output_path, ec);
  if (ec || !paths::is_within(roots.output, real.string()) ||
      !std::filesystem::is_regular_file(real))
    return problem(res, 404, "Not Found", "the output file of task " + id + " is gone");
  auto file = std::make_shared<std::ifstream>(real, std::ios::binary);
  auto size = std::filesystem::file_size(real, ec);
  if (!*file || ec) return problem(res, 404, "Not Found", "cannot read the output file");
  res.set_header("Content-Disposition",
                 "attachment; filename=\"" + real.filename().string() + "\"");
  res.set_content_provider(size, "application/ipfix",
                           [file](size_t offset, size_t length, httplib::DataSink& sink) {
                             char buf[65536];
                             file->seekg(static_cast<std::streamoff>(offset));
                             std::size_t want = std::min(length, sizeof buf);
                             file->read(buf, static_cast<std::streamsize>(want));
                             auto got = file->gcount();
                             if (got <= 0) return false;
                             sink.write(buf, static_cast<std::size_t>(got));
                             return true;
                           });
}

void Server::Impl::add(const std::string& method, const std::string& path_template,
                       const std::string& pattern, Handler fn) {
  int idx = metrics.route(method, path_template);
  auto wrapped = [this, idx, fn = std::move(fn)](const httplib::Request& q, httplib::Response& r) {
    auto t0 = std::chrono::steady_clock::now();
    fn(q, r);
    metrics.observe(idx, r.status,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  if (method == "GET")
    http.Get(pattern, wrapped);
  else if (method == "DELETE")
    http.Delete(pattern, wrapped);
}

// POST routes read their body themselves. A request without Content-Length
// or Transfer-Encoding has an empty body (RFC 9112 6.3), but httplib 0.11
// waits for one until its read timeout (5 s): `curl -X POST URL` without data,
// as the original service's README does, took 5 s and got 400.
void Server::Impl::add_post(const std::string& path_template, const std::string& pattern,
                            PostHandler fn) {
  int idx = metrics.route("POST", path_template);
  http.Post(pattern, [this, idx, fn = std::move(fn)](const httplib::Request& q,
                                                     httplib::Response& r,
                                                     const httplib::ContentReader& reader) {
    auto t0 = std::chrono::steady_clock::now();
    std::string body;
    bool too_large = false;
    if (q.has_header("Content-Length") || q.has_header("Transfer-Encoding")) {
      reader([&](const char* data, std::size_t len) {
        if (body.size() + len > cfg.max_body) {
          too_large = true;
          return false;
        }
        body.append(data, len);
        return true;
      });
    }
    if (too_large)
      problem(r, 413, "Content Too Large", "the request body is too large");
    else
      fn(q, body, r);
    metrics.observe(idx, r.status,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  });
}

void Server::Impl::routes() {
  const std::string id = "([^/]+)";
  using Q = const httplib::Request&;
  using R = httplib::Response&;
  add("GET", "/livez", "/livez", [](Q, R res) { send_json(res, 200, {{"status", "alive"}}); });
  add("GET", "/readyz", "/readyz", [this](Q, R res) { readyz(res); });
  add("GET", "/metrics", "/metrics", [this](Q, R res) { metrics_text(res); });
  add("GET", "/openapi.json", "/openapi.json",
      [](Q, R res) { res.set_content(openapi_document(), "application/json"); });
  auto post = [this](Q q, const std::string& body, R r) {
    submit_body(q, body, r, UnknownFields::Refuse);
  };
  // The original service's route ignores fields it does not know, as that service did.
  auto post_lenient = [this](Q q, const std::string& body, R r) {
    submit_body(q, body, r, UnknownFields::Ignore);
  };
  auto get = [this](Q q, R r) { get_task(q, r); };
  auto list = [this](Q q, R r) { list_tasks(q, r); };
  add_post("/api/v1/tasks", "/api/v1/tasks", post);
  add("GET", "/api/v1/tasks", "/api/v1/tasks", list);
  add("GET", "/api/v1/tasks/{id}", "/api/v1/tasks/" + id, get);
  add("DELETE", "/api/v1/tasks/{id}", "/api/v1/tasks/" + id,
      [this](Q q, R r) { cancel_task(q, r); });
  add("GET", "/api/v1/tasks/{id}/events", "/api/v1/tasks/" + id + "/events",
      [this](Q q, R r) { task_events(q, r); });
  add("GET", "/api/v1/tasks/{id}/output", "/api/v1/tasks/" + id + "/output",
      [this](Q q, R r) { download(q, r); });
  // Compatibility with the original service (IPyFIXweb).
  add_post("/api/export-task", "/api/export-task", post_lenient);
  add("GET", "/api/task-status/{id}", "/api/task-status/" + id, get);
  add("GET", "/api/tasks", "/api/tasks", list);
  add("GET", "/api/v1/test/health", "/api/v1/test/health", [](Q, R res) {
    send_json(res, 200, {{"status", "ok"}});
  });
  add_post("/api/v1/test/file_exporter/export_task", "/api/v1/test/file_exporter/export_task",
           [this](Q q, const std::string&, R r) {
             json body = {{"pcap_files", {cfg.sample_pcap}},
                          {"output_path", "test/" + new_uuid() + ".ipfix"},
                          {"DPI", true},
                          {"analysis_list", {"tcp", "udp"}}};
             submit(q, r, body, UnknownFields::Refuse);
           });
}

Server::Server(Config cfg, zmq::context_t& ctx)
    : impl_(std::make_unique<Impl>(std::move(cfg), ctx)) {
  auto& im = *impl_;
  int threads = std::max(1, im.cfg.threads);
  im.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Body size is enforced by the POST routes themselves (add_post), which
  // answer 413; httplib's own limit would turn a refused read into 400.
  im.http.set_read_timeout(5, 0);
  im.http.set_write_timeout(5, 0);
  im.http.set_keep_alive_max_count(100);
  // Responses go out in several writes: without TCP_NODELAY, Nagle plus the
  // peer's delayed ACK stalls each keep-alive request by up to 40 ms.
  im.http.set_tcp_nodelay(true);
  im.http.set_exception_handler(
      [&im](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        im.log->error("request failed: {}", what);
        problem(res, 500, "Internal Server Error", "the request failed; see the api log");
      });
  im.http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    switch (res.status) {
      case 404:
        problem(res, 404, "Not Found", "no such route");
        break;
      case 413:
        problem(res, 413, "Content Too Large", "the request body is too large");
        break;
      default:
        problem(res, res.status, "Error", "request failed");
    }
  });
  if (!im.cfg.tokens.empty()) {
    im.http.set_pre_routing_handler([&im](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/livez") return httplib::Server::HandlerResponse::Unhandled;
      std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      bool ok = false;
      if (auth.compare(0, prefix.size(), prefix) == 0) {
        std::string given = auth.substr(prefix.size());
        for (auto& t : im.cfg.tokens) ok |= same_secret(given, t);
      }
      if (ok) return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      problem(res, 401, "Unauthorized", "a valid bearer token is required");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  // Our own socket options: SO_REUSEADDR for quick restarts, but not
  // httplib's default SO_REUSEPORT, which would let a second stack silently
  // share this port. We also keep the fd to raise the listen backlog below.
  im.http.set_socket_options([&im](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    im.listen_fd = sock;
  });
  im.routes();
  if (im.cfg.port == 0) {
    im.bound_port = im.http.bind_to_any_port(im.cfg.host);
  } else {
    im.bound_port = im.http.bind_to_port(im.cfg.host, im.cfg.port) ? im.cfg.port : -1;
  }
  if (im.bound_port <= 0)
    throw std::runtime_error("cannot listen on " + im.cfg.host + ":" + std::to_string(im.cfg.port));
  // Debian's compiled cpp-httplib listens with a backlog of 5: a burst of
  // simultaneous clients overflowed it and waited for SYN retransmits (about
  // 1 s) or failed. Listening again on the same socket raises the backlog.
  if (im.listen_fd >= 0) ::listen(im.listen_fd, SOMAXCONN);
  im.log->info("api listening on http://{}:{} (broker {}, db {})", im.cfg.host, im.bound_port,
               im.cfg.broker, im.cfg.db_path);
}

Server::~Server() = default;
int Server::port() const { return impl_->bound_port; }
void Server::serve() { impl_->http.listen_after_bind(); }
void Server::stop() {
  impl_->draining = true;
  impl_->http.stop();
}

}  // namespace ipfixweb::api

#include "ipfixweb/api/server.hpp"

#include "ipfixweb/api/capture_routes.hpp"
#include "ipfixweb/api/captures.hpp"
#include "ipfixweb/api/flow_routes.hpp"
#include "ipfixweb/shared/spec_json.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/auth.hpp"
#include "ipfixweb/api/broker_client.hpp"
#include "ipfixweb/api/drop_folder.hpp"
#include "ipfixweb/api/events.hpp"
#include "ipfixweb/api/handler_pool.hpp"
#include "ipfixweb/api/http.hpp"
#include "ipfixweb/api/lease_pool.hpp"
#include "ipfixweb/api/metrics.hpp"
#include "ipfixweb/api/openapi.hpp"
#include "ipfixweb/api/render.hpp"
#include "ipfixweb/api/submitter.hpp"
#include "ipfixweb/api/ui_routes.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/json_writer.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/store.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::api {

using http::Request;
using http::Response;
using nlohmann::json;

namespace {

const char* const kProblem = "application/problem+json";

// A problem's title: the status's reason phrase (RFC 9110).
std::string title_of(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 507:
      return "Insufficient Storage";
    default:
      return "Error";
  }
}

json null_if_empty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

void problem(Response& res, int status, const std::string& detail,
             const std::vector<FieldError>& errors = {}) {
  json body = {
      {"type", "about:blank"}, {"title", title_of(status)}, {"status", status}, {"detail", detail}};
  if (!errors.empty()) {
    json list = json::array();
    for (auto& e : errors) list.push_back({{"field", e.field}, {"message", e.message}});
    body["errors"] = list;
  }
  res.status = status;
  res.set_content(body.dump(), kProblem);
}

void send_json(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

}  // namespace

struct Server::Impl {
  Config cfg;
  zmq::context_t& ctx;
  std::shared_ptr<spdlog::logger> log = logger("api");
  Roots roots;
  std::optional<confine::Root> output_dir;  // downloads open files beneath it
  std::optional<FlowRoutes> flow_routes;
  std::unique_ptr<CaptureStore> captures;
  std::optional<CaptureRoutes> capture_routes;
  // Broker sockets (cancel, ping) and read-only database connections, lent to one handler at
  // a time: only as many are open as were in use at once (lease_pool.hpp).
  // Before http, whose handler threads hold leases until it stops.
  LeasePool<BrokerClient> brokers;
  LeasePool<TaskStore> stores;
  // Before http and submitter: the submitter's destructor answers what still waits, and
  // those answers are counted here.
  Metrics metrics;
  std::unique_ptr<EventHub> event_hub;  // before http: streams may outlive it, not the server
  std::unique_ptr<http::Server> http;
  std::atomic<bool> draining{false};

  std::optional<curve::KeyPair> curve_keys;
  std::string curve_server;
  // Submissions go through one thread that batches them; cancel and ping lease a
  // BrokerClient.
  std::unique_ptr<BatchSubmitter> submitter;

  Impl(Config c, zmq::context_t& z) : cfg(std::move(c)), ctx(z) {
    for (auto& r : cfg.input_roots) roots.inputs.push_back(paths::canonical_dir(r));
    roots.output = paths::canonical_dir(cfg.output_root);
    // A task's output must never be a capture, nor hold the database (the api's own check of
    // the roots; the broker and the workers make theirs).
    const std::filesystem::path db(cfg.db_path);
    const std::string db_file =
        paths::canonical_dir(db.parent_path().empty() ? "." : db.parent_path().string()) + "/" +
        db.filename().string();
    if (auto why = paths::overlap_error(roots.inputs, roots.output, {db_file}); !why.empty())
      throw std::runtime_error(why);
    output_dir.emplace(roots.output);
    CaptureOptions co;
    co.dir = cfg.capture_dir.empty() ? roots.inputs.at(0) + "/uploads" : cfg.capture_dir;
    co.max_size = cfg.max_capture_size;
    co.quota = cfg.capture_quota;
    co.token_quota = cfg.capture_token_quota;
    co.upload_expiry_s = cfg.upload_expiry_s;
    captures = std::make_unique<CaptureStore>(co);
    // Workers read uploads like any input: the directory must be beneath an input root.
    if (std::none_of(roots.inputs.begin(), roots.inputs.end(),
                     [&](const std::string& r) { return paths::is_within(r, captures->dir()); }))
      throw std::runtime_error("the capture directory " + captures->dir() +
                               " is not inside an input root");
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
    // A dropped file is submitted as POST /api/v1/tasks would submit it.
    if (!cfg.drop.folders.empty())
      drop = std::make_unique<DropFolder>(
          cfg.drop, roots, cfg.db_path, [this](const json& body, const std::string& key) {
            Response res;
            submit(Request{}, res, body, UnknownFields::Refuse, key);
            return res;
          });
  }

  LeasePool<BrokerClient>::Lease broker() {
    return brokers.acquire([this] {
      return std::make_unique<BrokerClient>(ctx, cfg.broker, cfg.broker_timeout_s,
                                            curve_keys ? &*curve_keys : nullptr, curve_server);
    });
  }

  // Waits for the broker or the file system. The handler thread does not count as running
  // meanwhile, so that another handler may (handler_pool.hpp).
  std::optional<proto::SubmitReply> ask_broker_to_submit(proto::Submit s) {
    http::WaitScope waiting;
    return submitter->submit(std::move(s));
  }
  std::optional<proto::CancelReply> ask_broker_to_cancel(const std::string& id) {
    http::WaitScope waiting;
    return broker()->cancel(id);
  }
  std::optional<proto::Pong> ping_broker(double timeout_s) {
    http::WaitScope waiting;
    return broker()->ping(timeout_s);
  }
  // stat()s every input: on a network file system a wait too.
  bool resolve_under_roots(const ParsedRequest& p, proto::TaskSpec& spec,
                           std::vector<FieldError>& errors) {
    http::WaitScope waiting;
    return resolve_paths(p, roots, spec, errors);
  }

  // Empty when the database cannot be opened yet (the broker creates it).
  LeasePool<TaskStore>::Lease store() {
    return stores.acquire([this]() -> std::unique_ptr<TaskStore> {
      try {
        return std::make_unique<TaskStore>(TaskStore::open_reader(cfg.db_path));
      } catch (const std::exception& e) {
        log->warn("database not readable: {}", e.what());
        return nullptr;
      }
    });
  }

  http::Router router;
  std::string openapi;                        // the document served at /openapi.json
  std::vector<Server::RouteInfo> route_list;  // as registered
  std::unique_ptr<DropFolder> drop;  // last: its thread stops before what it submits through
  // blocking = false only for handlers that touch neither the database nor the broker.
  void add(const std::string& method, const std::string& path, Role role, http::Handler fn,
           bool blocking = true);
  void routes();
  void metrics_text(Response& res);
  void download(const Request& req, Response& res);
  void split_automatically(ParsedRequest& parsed, const proto::TaskSpec& spec);
  void add_deferred(const std::string& method, const std::string& path, Role role,
                    http::DeferredHandler fn);
  // What every route shares: method, path, role, the POST body limit, its metrics row.
  http::Route route_for(const std::string& method, const std::string& path, Role role, int& idx);
  // A task request as the broker takes it, or nullopt when `res` holds the refusal.
  // `default_key`: the Idempotency-Key when the request has none.
  std::optional<proto::Submit> submission(const Request& req, Response& res, const json& body,
                                          UnknownFields unknown, const std::string& default_key);
  // The broker's answer to a submission (nullopt: none in time) as the client gets it.
  void answer_submission(const std::optional<proto::SubmitReply>& reply, Response& res);
  // A submission answered once the broker has answered (the drop folder's).
  void submit(const Request& req, Response& res, const json& body, UnknownFields unknown,
              const std::string& default_key = {});
  // POST /api/v1/tasks: answered when the broker has answered, by the submitter's thread, so
  // that no handler thread waits for the broker.
  void submit_body(const Request& req, const http::Respond& respond, UnknownFields unknown);
  LeasePool<TaskStore>::Lease store_or_503(
      Response& res, const char* detail = "the task database is not available");
  std::optional<TaskRecord> find_task(const Request& req, Response& res);
  std::optional<TaskRecord> find_task(TaskStore& st, const Request& req, Response& res);
  void get_task(const Request& req, Response& res);
  void list_tasks(const Request& req, Response& res);
  void cancel_task(const Request& req, Response& res);
  void task_events(const Request& req, Response& res);
  void event_stream(const Request& req, Response& res, const std::string& task);
  void readyz(Response& res);
  void status(Response& res);
  // pcap_files entries "sha256:<hex>" and "upload:<id>" become the captures' paths.
  void resolve_capture_references(ParsedRequest& p, std::vector<FieldError>& errors) {
    for (std::size_t i = 0; i < p.spec.inputs.size(); ++i) {
      std::string error;
      auto path = capture_routes->resolve_reference(p.spec.inputs[i], error);
      if (!path) continue;
      if (!error.empty())
        errors.push_back({"pcap_files[" + std::to_string(i) + "]", error});
      else
        p.spec.inputs[i] = *path;
    }
  }
  // Whether a queued or running task reads this file.
  bool read_by_live_task(const std::string& path) {
    // No database yet (the broker creates it): no task at all. Unreadable: cannot tell, keep it.
    if (!std::filesystem::exists(cfg.db_path)) return false;
    auto st = store();
    if (!st) return true;
    for (auto state : {TaskState::Queued, TaskState::Running}) {
      TaskFilter f;
      f.state = state;
      f.input = path;
      f.limit = 1;
      if (!st->list(f).empty()) return true;
    }
    return false;
  }
  void add_sink(const std::string& method, const std::string& path, Role role,
                http::SinkFactory make);
};

void Server::Impl::submit_body(const Request& req, const http::Respond& respond,
                               UnknownFields unknown) {
  Response res;
  const auto refuse = [&] { respond(std::move(res)); };
  const std::string& raw = req.body;
  std::string ctype = req.header("Content-Type");
  std::string base = ctype.substr(0, ctype.find(';'));
  base.erase(std::remove(base.begin(), base.end(), ' '), base.end());
  std::transform(base.begin(), base.end(), base.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (base != "application/json") {
    problem(res, 415, "send the task as JSON with Content-Type: application/json");
    return refuse();
  }
  // nlohmann builds a value per nesting level: a 1 MiB body of '[' cost about 100 MB.
  bool too_deep = false;
  auto body = parse_json_body(raw, cfg.max_json_depth, too_deep);
  if (too_deep) {
    problem(res, 400,
            "the request body nests arrays or objects deeper than " +
                std::to_string(cfg.max_json_depth) + " levels");
    return refuse();
  }
  if (!body) {
    problem(res, 400, "the request body is not valid JSON");
    return refuse();
  }
  auto s = submission(req, res, *body, unknown, {});
  if (!s) return refuse();
  submitter->submit_async(std::move(*s), [this, respond](std::optional<proto::SubmitReply> r) {
    Response answer;
    answer_submission(r, answer);
    respond(std::move(answer));
  });
}

// --split-above: a conversion of large captures that does not say `parallelism` is split.
void Server::Impl::split_automatically(ParsedRequest& parsed, const proto::TaskSpec& spec) {
  if (cfg.split_above == 0 || spec.kind != proto::kKindConvert || spec.partitions > 1) return;
  std::uint64_t bytes = 0;
  for (const auto& in : spec.inputs) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(in, ec);
    if (!ec) bytes += size;
  }
  if (bytes < cfg.split_above) return;
  std::uint32_t workers = 0;
  if (cfg.split_parts == 0)
    if (auto pong = ping_broker(std::min(cfg.broker_timeout_s, 1.0)))
      for (const auto& w : pong->worker_list) workers += w.slots > 0;  // not draining
  const std::uint32_t n = auto_parallelism(bytes, cfg.split_above, cfg.split_parts, workers);
  if (n < 2) return;
  set_parallelism(parsed, n);
  log->info("a conversion of {} bytes of captures (--split-above {}) is split into {} parts", bytes,
            cfg.split_above, n);
}

void Server::Impl::submit(const Request& req, Response& res, const json& body,
                          UnknownFields unknown, const std::string& default_key) {
  auto s = submission(req, res, body, unknown, default_key);
  if (!s) return;
  answer_submission(ask_broker_to_submit(std::move(*s)), res);
}

std::optional<proto::Submit> Server::Impl::submission(const Request& req, Response& res,
                                                      const json& body, UnknownFields unknown,
                                                      const std::string& default_key) {
  metrics.submitted.fetch_add(1, std::memory_order_relaxed);
  std::vector<FieldError> errors;
  auto parsed = parse_task_request(body, errors, unknown);
  proto::TaskSpec spec;
  if (parsed) resolve_capture_references(*parsed, errors);
  if (!parsed || !errors.empty() || !resolve_under_roots(*parsed, spec, errors)) {
    metrics.invalid.fetch_add(1, std::memory_order_relaxed);
    problem(res, 422, "the task request is not valid", errors);
    return std::nullopt;
  }
  std::string key = req.header("Idempotency-Key");
  if (key.empty()) key = default_key;
  if (key.size() > 255) {
    problem(res, 422, "Idempotency-Key is longer than 255 characters",
            {{"Idempotency-Key", "is longer than 255 characters"}});
    return std::nullopt;
  }
  proto::Submit s;
  // Of the request as sent: a retry finds its task whatever the automatic split decides.
  s.fingerprint = fingerprint(parsed->normalised);
  if (!body.contains("parallelism")) split_automatically(*parsed, spec);
  s.request = std::move(parsed->normalised);
  s.spec = std::move(spec);
  s.idempotency_key = key;
  s.priority = parsed->extras.priority;
  s.overwrite = parsed->extras.overwrite;
  s.parallelism = parsed->extras.parallelism;
  return s;
}

void Server::Impl::answer_submission(const std::optional<proto::SubmitReply>& reply,
                                     Response& res) {
  if (!reply) {
    metrics.refused_unavailable.fetch_add(1, std::memory_order_relaxed);
    res.set_header("Retry-After", "1");
    problem(res, 503, "the broker did not answer; try again");
    return;
  }
  if (!reply->accepted) {
    if (reply->code == Refusal::Conflict || reply->code == Refusal::Invalid) {
      metrics.invalid.fetch_add(1, std::memory_order_relaxed);
      // Conflict: the key was used with another request; Invalid: the request as a whole.
      if (reply->code == Refusal::Conflict)
        problem(res, 422, reply->reason,
                {{"Idempotency-Key", "was already used with a different request"}});
      else
        problem(res, 422, "the task request is not valid", {{"", reply->reason}});
      return;
    }
    if (reply->code == Refusal::Taken) {
      metrics.invalid.fetch_add(1, std::memory_order_relaxed);
      problem(res, 409, reply->reason);
      return;
    }
    (reply->code == Refusal::Capacity ? metrics.refused_capacity : metrics.refused_unavailable)
        .fetch_add(1, std::memory_order_relaxed);
    long secs = std::max(1L, static_cast<long>(std::ceil(reply->retry_after)));
    res.set_header("Retry-After", std::to_string(secs));
    problem(res, reply->code == Refusal::Storage ? 507 : 503, reply->reason);
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
// A database connection, or none after answering 503 (the broker has not created the
// database yet, or it cannot be read).
LeasePool<TaskStore>::Lease Server::Impl::store_or_503(Response& res, const char* detail) {
  auto st = store();
  if (!st) {
    res.set_header("Retry-After", "1");
    problem(res, 503, detail);
  }
  return st;
}

std::optional<TaskRecord> Server::Impl::find_task(const Request& req, Response& res) {
  auto st = store_or_503(res);
  if (!st) return std::nullopt;
  return find_task(*st, req, res);
}

std::optional<TaskRecord> Server::Impl::find_task(TaskStore& st, const Request& req,
                                                  Response& res) {
  const std::string& id = req.path_params.at(0);
  auto t = is_uuid(id) ? st.get(id) : std::nullopt;
  if (!t) problem(res, 404, "no task with id " + id);
  return t;
}

void Server::Impl::get_task(const Request& req, Response& res) {
  auto t = find_task(req, res);
  if (!t) return;
  std::string body;
  body.reserve(4096);
  append_task_json(body, *t, roots.output);
  res.status = 200;
  res.set_content(std::move(body), "application/json");
}

void Server::Impl::list_tasks(const Request& req, Response& res) {
  auto st = store_or_503(res);
  if (!st) return;
  TaskFilter f;
  std::vector<FieldError> errors;
  if (req.has_query("state")) {
    const std::string value = req.query_value("state");
    f.state = parse_name<TaskState>(value);
    if (!f.state) errors.push_back({"state", "unknown state '" + value + "'"});
  }
  if (req.has_query("limit")) {
    try {
      f.limit = std::stoi(req.query_value("limit"));
    } catch (...) {
      f.limit = -1;
    }
    if (f.limit < 1 || f.limit > kMaxPageLimit)
      errors.push_back({"limit", "must be from 1 to " + std::to_string(kMaxPageLimit)});
  }
  if (req.has_query("next")) {
    try {
      f.before_seq = std::stoll(req.query_value("next"));
    } catch (...) {
      f.before_seq = -1;
    }
    if (f.before_seq < 1) errors.push_back({"next", "is not a cursor this server issued"});
  }
  f.created_after = req.query_value("created_after");
  f.created_before = req.query_value("created_before");
  f.input = req.query_value("input");
  f.parent = req.query_value("parent");
  if (!errors.empty()) return problem(res, 422, "invalid query parameters", errors);
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("tasks").begin_array();
  // Rows are read a chunk at a time, each with one extra row that tells whether more follow,
  // and the page stops at `limit` tasks or max_page_bytes, whichever comes first; the cursor
  // of the next page is the last shown task's seq.
  constexpr int kChunk = 100;
  TaskFilter chunk = f;
  int shown = 0;
  std::int64_t last = 0;
  bool more = false;
  while (!more) {
    chunk.limit = std::min(f.limit - shown, kChunk) + 1;
    const auto rows = st->list(chunk);
    const int usable = std::min(static_cast<int>(rows.size()), chunk.limit - 1);
    for (int i = 0; i < usable && !more; ++i) {
      if (shown > 0 && body.size() >= cfg.max_page_bytes) {
        more = true;
        break;
      }
      write_task_json(w, rows[i], roots.output);
      ++shown;
      last = rows[i].seq;
    }
    if (more || static_cast<int>(rows.size()) < chunk.limit) break;  // nothing beyond them
    more = shown == f.limit;
    chunk.before_seq = last;
  }
  w.end_array().key("next").string_or_null(more ? std::to_string(last) : "").end_object();
  res.status = 200;
  res.set_content(std::move(body), "application/json");
}

void Server::Impl::cancel_task(const Request& req, Response& res) {
  std::string id = req.path_params.at(0);
  if (!is_uuid(id)) return problem(res, 404, "no task with id " + id);
  auto reply = ask_broker_to_cancel(id);
  if (!reply) {
    res.set_header("Retry-After", "1");
    return problem(res, 503, "the broker did not answer; try again");
  }
  const std::string state{reply->state ? name(*reply->state) : ""};
  if (reply->result == CancelResult::NotFound) return problem(res, 404, "no task with id " + id);
  if (reply->result == CancelResult::Finished)
    return problem(res, 409, "task " + id + " already finished: " + state);
  send_json(res, reply->result == CancelResult::Cancelled ? 200 : 202,
            {{"task_id", id}, {"state", state}, {"result", name(reply->result)}});
}

// "Last-Event-ID" (what an EventSource sends when it reconnects) or ?since=: nullopt when
// neither is given; false when one is not a number.
bool event_cursor(const Request& req, std::optional<std::int64_t>& after) {
  std::string v = req.has_header("Last-Event-ID") ? req.header("Last-Event-ID") : "";
  if (v.empty() && req.has_query("since")) v = req.query_value("since");
  if (v.empty()) return true;
  std::int64_t n = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), n);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || n < 0) return false;
  after = n;
  return true;
}

bool wants_event_stream(const Request& req) {
  const std::string s = req.query_value("stream");
  if (s == "1" || s == "true") return true;
  return req.header("Accept").find("text/event-stream") != std::string::npos;
}

void Server::Impl::event_stream(const Request& req, Response& res, const std::string& task) {
  std::optional<std::int64_t> after;
  if (!event_cursor(req, after))
    return problem(res, 400, "Last-Event-ID (or since) must be a non-negative event id");
  auto st = store_or_503(res, "the task database is not available yet");
  if (!st) return;
  auto feed = event_hub->subscribe(*st, task, after);
  if (!feed) {
    res.set_header("Retry-After", "5");
    return problem(res, 503,
                   "too many event streams are open (" + std::to_string(cfg.max_event_streams) +
                       "); try again later");
  }
  res.status = 200;
  res.set_header("Content-Type", "text/event-stream; charset=utf-8");
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Accel-Buffering", "no");  // proxies: pass events on as they come
  res.feed = std::move(feed);
}

void Server::Impl::task_events(const Request& req, Response& res) {
  auto st = store_or_503(res);
  if (!st) return;
  auto t = find_task(*st, req, res);
  if (!t) return;
  const std::string& id = t->id;
  if (wants_event_stream(req)) {
    st = {};  // the stream leases its own
    return event_stream(req, res, id);
  }
  json events = json::array();
  for (auto& e : st->events(id))
    events.push_back({{"at", e.at},
                      {"state", name(e.state)},
                      {"reason", null_if_empty(e.reason)},
                      {"worker", null_if_empty(e.worker)}});
  send_json(res, 200, {{"task_id", id}, {"events", events}});
}

void Server::Impl::readyz(Response& res) {
  json checks;
  bool ok = true;
  if (draining) {
    ok = false;
    checks["draining"] = true;
  }
  auto st = store();
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
  auto pong = ping_broker(std::min(cfg.broker_timeout_s, 1.0));
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

// The service at a glance (the web page's service view, ipfixctl workers): the broker's
// admission state and workers, and the tasks by state.
void Server::Impl::status(Response& res) {
  json out;
  auto pong = ping_broker(std::min(cfg.broker_timeout_s, 1.0));
  if (pong) {
    out["broker"] = {{"up", true},
                     {"workers", pong->workers},
                     {"slots", pong->slots},
                     {"credit", pong->credit},
                     {"running", pong->running},
                     {"queued", pong->queued},
                     {"max_queue", pong->max_queue},
                     {"draining", pong->draining},
                     // the broker's own admission rule (draining, storage, slots + max_queue)
                     {"accepting", pong->accepting},
                     {"succeeded", pong->succeeded},
                     {"failed", pong->failed},
                     {"cancelled", pong->cancelled},
                     {"requeued", pong->requeued}};
    json workers = json::array();
    for (auto& w : pong->worker_list)
      workers.push_back({{"id", w.id},
                         {"host", w.host},
                         {"pid", w.pid},
                         {"slots", w.slots},
                         {"running", w.running},
                         {"last_seen_s", std::round(w.last_seen_s * 1000) / 1000}});
    out["workers"] = std::move(workers);
  } else {
    out["broker"] = {{"up", false}};
    out["workers"] = json::array();
  }
  json tasks = json::object();
  for (auto s : {TaskState::Queued, TaskState::Running, TaskState::Succeeded, TaskState::Failed,
                 TaskState::Cancelled})
    tasks[std::string(name(s))] = 0;
  if (auto st = store()) {
    try {
      for (auto& [s, n] : st->count_by_state()) tasks[std::string(name(s))] = n;
    } catch (const std::exception& e) {
      log->warn("status: {}", e.what());
    }
  }
  out["tasks"] = std::move(tasks);
  out["api"] = {{"event_streams", event_hub->streams()},
                {"max_event_streams", cfg.max_event_streams},
                {"draining", draining.load()},
                {"auth", !cfg.tokens.empty()}};
  send_json(res, 200, out);
}

void Server::Impl::metrics_text(Response& res) {
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
  gauge("ipfixweb_api_db_connections",
        "Read-only database connections the api holds open (lent to requests one at a time).",
        static_cast<double>(stores.open()));
  gauge("ipfixweb_api_broker_sockets",
        "Sockets to the broker the api holds open for cancels and pings (submissions have "
        "their own).",
        static_cast<double>(brokers.open()));
  auto pong = ping_broker(std::min(cfg.broker_timeout_s, 0.5));
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
  if (auto st = store()) {
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

namespace {
// Whether a task is of kind extract (its output a pcap, not an IPFIX file).
bool is_extract(const TaskRecord& t) {
  try {
    return proto::spec_from_json(json::parse(t.spec)).kind == proto::kKindExtract;
  } catch (const std::exception&) {
    return false;
  }
}
}  // namespace

void Server::Impl::download(const Request& req, Response& res) {
  auto t = find_task(req, res);
  if (!t) return;
  const std::string& id = t->id;
  if (t->state != TaskState::Succeeded)
    return problem(res, 409, "task " + id + " is " + name_str(t->state) + ", not succeeded");
  // Opened beneath the output root's descriptor, following no link (a link or a FIFO put in
  // its place since is refused, without blocking), and served only while it is the file the
  // task wrote: another task may have replaced it ("overwrite": true) or someone else.
  http::WaitScope waiting_for_the_file_system;
  const std::string rel = confine::relative_below(output_dir->path(), t->output_path);
  if (rel.empty()) return problem(res, 404, "the output file of task " + id + " is gone");
  confine::Fd fd(
      confine::open_beneath(output_dir->fd(), rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  struct stat st {};
  if (!fd && errno == ENOENT)
    return problem(res, 404, "the output file of task " + id + " is gone");
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return problem(res, 404, "cannot read the output file of task " + id);
  if (t->output_file && (static_cast<std::int64_t>(st.st_ino) != t->output_file->inode ||
                         static_cast<std::int64_t>(st.st_size) != t->output_file->size))
    return problem(res, 410,
                   "the output file of task " + id + " was replaced since the task finished");
  const std::string filename =
      rel.substr(rel.rfind('/') == std::string::npos ? 0 : rel.rfind('/') + 1);
  res.file = std::make_shared<http::File>(fd.release(), static_cast<std::uint64_t>(st.st_size));
  res.set_header("Content-Type",
                 is_extract(*t) ? "application/vnd.tcpdump.pcap" : "application/ipfix");
  res.set_header("Content-Disposition", http::attachment(filename));
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

http::Route Server::Impl::route_for(const std::string& method, const std::string& path, Role role,
                                    int& idx) {
  idx = metrics.route(method, path);
  http::Route route;
  route.method = method;
  route.path = path;
  route.role = role;
  if (method == "POST") route.max_body = cfg.max_body;
  return route;
}

// Every route's time and status go to the metrics, labelled by its template.
void Server::Impl::add(const std::string& method, const std::string& path, Role role,
                       http::Handler fn, bool blocking) {
  int idx = 0;
  http::Route route = route_for(method, path, role, idx);
  route.open = path == "/livez";
  route.blocking = blocking;
  route.handler = [this, idx, fn = std::move(fn)](const Request& q, Response& r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(q, r);
    metrics.observe(idx, r.status, seconds_since(t0));
  };
  router.add(std::move(route));
}

// A route answered later (http::Route::deferred): counted and timed when its answer is given.
void Server::Impl::add_deferred(const std::string& method, const std::string& path, Role role,
                                http::DeferredHandler fn) {
  int idx = 0;
  http::Route route = route_for(method, path, role, idx);
  // Counted once: with the status of the first answer, or as the 500 the HTTP layer answers
  // for a handler that threw or dropped its request.
  struct Observation {
    Observation(Metrics& m, int i) : metrics(m), idx(i) {}
    Metrics& metrics;
    int idx;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    std::atomic<bool> done{false};
    void operator()(int status) {
      if (!done.exchange(true)) metrics.observe(idx, status, seconds_since(t0));
    }
    ~Observation() { (*this)(500); }
  };
  route.deferred = [this, idx, fn = std::move(fn)](const Request& q, http::Respond respond) {
    auto observe = std::make_shared<Observation>(metrics, idx);
    fn(q, [observe, respond = std::move(respond)](Response r) {
      (*observe)(r.status);
      respond(std::move(r));
    });
  };
  router.add(std::move(route));
}

namespace {

// An upload's answer and time (from its header to its answer) in the route's metrics, like
// any other request's; an upload that never completes is not counted.
class MeteredSink : public http::BodySink {
 public:
  MeteredSink(std::unique_ptr<http::BodySink> inner, Metrics& m, int idx,
              std::chrono::steady_clock::time_point t0)
      : inner_(std::move(inner)), metrics_(m), idx_(idx), t0_(t0) {}
  bool write(std::string_view piece, Response& res) override {
    if (inner_->write(piece, res)) return true;
    metrics_.observe(idx_, res.status, seconds_since(t0_));
    return false;
  }
  void finish(Response& res) override {
    inner_->finish(res);
    metrics_.observe(idx_, res.status, seconds_since(t0_));
  }
  void abort() override { inner_->abort(); }

 private:
  std::unique_ptr<http::BodySink> inner_;
  Metrics& metrics_;
  int idx_;
  std::chrono::steady_clock::time_point t0_;
};
}  // namespace

// A route whose body streams to a sink (uploads): limited by the capture size, not max_body.
void Server::Impl::add_sink(const std::string& method, const std::string& path, Role role,
                            http::SinkFactory make) {
  int idx = 0;
  http::Route route = route_for(method, path, role, idx);
  // The multipart form's framing comes on top of the capture.
  route.max_body = static_cast<std::size_t>(std::min<std::uint64_t>(
      cfg.max_capture_size + (1u << 20), std::numeric_limits<std::size_t>::max()));
  route.sink = [this, idx, make = std::move(make)](const Request& q,
                                                   Response& r) -> std::unique_ptr<http::BodySink> {
    const auto t0 = std::chrono::steady_clock::now();
    auto sink = make(q, r);
    if (!sink) {
      metrics.observe(idx, r.status, seconds_since(t0));
      return nullptr;
    }
    return std::make_unique<MeteredSink>(std::move(sink), metrics, idx, t0);
  };
  router.add(std::move(route));
}

void Server::Impl::routes() {
  using Q = const Request&;
  using R = Response&;
  constexpr bool kNeverBlocks = false;
  auto livez = [](Q, R res) { send_json(res, 200, {{"status", "alive"}}); };
  auto serve_openapi = [this](Q, R res) { res.set_content(openapi, "application/json"); };
  auto health = [](Q, R res) { send_json(res, 200, {{"status", "ok"}}); };
  add("GET", "/livez", Role::Read, livez, kNeverBlocks);
  add("GET", "/readyz", Role::Read, [this](Q, R res) { readyz(res); });
  add("GET", "/metrics", Role::Read, [this](Q, R res) { metrics_text(res); });
  add("GET", "/openapi.json", Role::Read, serve_openapi, kNeverBlocks);
  using A = const http::Respond&;
  auto post = [this](Q q, A a) { submit_body(q, a, UnknownFields::Refuse); };
  // The original service's route ignores fields it does not know, as that service did.
  auto post_lenient = [this](Q q, A a) { submit_body(q, a, UnknownFields::Ignore); };
  auto get = [this](Q q, R r) { get_task(q, r); };
  auto list = [this](Q q, R r) { list_tasks(q, r); };
  add_deferred("POST", "/api/v1/tasks", Role::Submit, post);
  add("GET", "/api/v1/tasks", Role::Read, list);
  add("GET", "/api/v1/tasks/{id}", Role::Read, get);
  add("DELETE", "/api/v1/tasks/{id}", Role::Submit, [this](Q q, R r) { cancel_task(q, r); });
  add("GET", "/api/v1/tasks/{id}/events", Role::Read, [this](Q q, R r) { task_events(q, r); });
  add("GET", "/api/v1/events", Role::Read, [this](Q q, R r) { event_stream(q, r, ""); });
  add("GET", "/api/v1/status", Role::Read, [this](Q, R r) { status(r); });
  add("GET", "/api/v1/tasks/{id}/output", Role::Read, [this](Q q, R r) { download(q, r); });
  add(
      "GET", "/api/v1/drop", Role::Read,
      [this](Q q, R r) { drop_route(drop.get(), q, r, problem); }, kNeverBlocks);
  flow_routes.emplace(
      *output_dir, [this](Q q, R r) { return find_task(q, r); },
      [](R r, int status, const std::string& detail, const std::vector<FieldError>& errors) {
        problem(r, status, detail, errors);
      },
      FlowRoutes::Options{.query_budget = std::chrono::milliseconds(cfg.flow_query_ms),
                          .group_threads = static_cast<int>(
                              std::clamp(std::thread::hardware_concurrency(), 1u, 4u))});
  auto& fr = *flow_routes;
  add("GET", "/api/v1/tasks/{id}/flows", Role::Read, [&fr](Q q, R r) { fr.flows(q, r); });
  add("GET", "/api/v1/tasks/{id}/flows.ndjson", Role::Read,
      [&fr](Q q, R r) { fr.flows_ndjson(q, r); });
  add("GET", "/api/v1/tasks/{id}/flows.csv", Role::Read, [&fr](Q q, R r) { fr.flows_csv(q, r); });
  add("GET", "/api/v1/tasks/{id}/flows.sqlite", Role::Read,
      [&fr](Q q, R r) { fr.store_file(q, r); });
  add("GET", "/api/v1/tasks/{id}/top", Role::Read, [&fr](Q q, R r) { fr.top(q, r); });
  add("GET", "/api/v1/tasks/{id}/timeseries", Role::Read, [&fr](Q q, R r) { fr.timeseries(q, r); });
  // An extract task for one record's packets; asked twice, the same task answers (its key).
  add("POST", "/api/v1/tasks/{id}/flows/{flow}/pcap", Role::Submit, [this, &fr](Q q, R r) {
    if (auto x = fr.extract_request(q, r)) submit(q, r, x->body, UnknownFields::Refuse, x->key);
  });
  // Captures in: one-shot uploads and resumable ones (tus 1.0.0).
  capture_routes.emplace(
      *captures,
      [](R r, int status, const std::string& detail, const std::vector<FieldError>& errors) {
        problem(r, status, detail, errors);
      },
      [this](const std::string& path) { return read_by_live_task(path); });
  auto& cr = *capture_routes;
  add_sink("POST", "/api/v1/captures", Role::Submit,
           [&cr](Q q, R r) { return cr.post_capture(q, r); });
  add("GET", "/api/v1/captures", Role::Read, [&cr](Q q, R r) { cr.list(q, r); });
  add("GET", "/api/v1/captures/{sha256}", Role::Read, [&cr](Q q, R r) { cr.get(q, r); });
  add("DELETE", "/api/v1/captures/{sha256}", Role::Submit, [&cr](Q q, R r) { cr.remove(q, r); });
  add("OPTIONS", "/api/v1/uploads", Role::Read, [&cr](Q q, R r) { cr.tus_options(q, r); });
  add_sink("POST", "/api/v1/uploads", Role::Submit,
           [&cr](Q q, R r) { return cr.tus_create(q, r); });
  add("HEAD", "/api/v1/uploads/{id}", Role::Read, [&cr](Q q, R r) { cr.tus_head(q, r); });
  add("GET", "/api/v1/uploads/{id}", Role::Read, [&cr](Q q, R r) { cr.upload_state(q, r); });
  add_sink("PATCH", "/api/v1/uploads/{id}", Role::Submit,
           [&cr](Q q, R r) { return cr.tus_patch(q, r); });
  add("DELETE", "/api/v1/uploads/{id}", Role::Submit, [&cr](Q q, R r) { cr.tus_delete(q, r); });
  // Compatibility with the original service (IPyFIXweb).
  add_deferred("POST", "/api/export-task", Role::Submit, post_lenient);
  add("GET", "/api/task-status/{id}", Role::Read, get);
  add("GET", "/api/tasks", Role::Read, list);
  add("GET", "/api/v1/test/health", Role::Read, health, kNeverBlocks);
  add("POST", "/api/v1/test/file_exporter/export_task", Role::Submit, [this](Q q, R r) {
    json body = {{"pcap_files", {cfg.sample_pcap}},
                 {"output_path", "test/" + new_uuid() + ".ipfix"},
                 {"DPI", true},
                 {"analysis_list", {"tcp", "udp"}}};
    submit(q, r, body, UnknownFields::Refuse);
  });
  ui::add_routes(router, metrics);  // the web page (docs/ui.md): open, served from memory
  // The description of exactly these routes (throws when one is not described).
  openapi = openapi_document(router.routes());
  for (const http::Route* r : router.routes())
    route_list.push_back({r->method, r->path, r->role, r->open});
}

Server::Server(Config cfg, zmq::context_t& ctx)
    : impl_(std::make_unique<Impl>(std::move(cfg), ctx)) {
  auto& im = *impl_;
  EventHubOptions eo;
  eo.max_streams = im.cfg.max_event_streams;
  eo.poll_s = im.cfg.event_poll_s;
  im.event_hub = std::make_unique<EventHub>(im.cfg.db_path, eo);
  im.routes();
  http::Options o;
  o.host = im.cfg.host;
  o.port = im.cfg.port;
  o.io_threads = im.cfg.io_threads;
  o.handler_threads = im.cfg.threads;
  o.limits = im.cfg.limits;
  o.tokens = im.cfg.tokens;
  o.error = [](Response& res, int status, const std::string& detail) {
    problem(res, status, detail);
  };
  const bool auth = !o.tokens.empty();
  im.http = std::make_unique<http::Server>(std::move(o), std::move(im.router));
  im.log->info("api listening on http://{}:{} (broker {}, db {})", im.cfg.host, port(),
               im.cfg.broker, im.cfg.db_path);
  if (!auth && !im.http->loopback_only())
    im.log->warn(
        "listening beyond loopback without --tokens: anyone who reaches {}:{} can submit and "
        "cancel tasks",
        im.cfg.host, port());
}

Server::~Server() = default;
int Server::port() const { return impl_->http->port(); }
std::vector<Server::RouteInfo> Server::routes() const { return impl_->route_list; }
const std::string& Server::openapi() const { return impl_->openapi; }
void Server::serve() {
  impl_->event_hub->start();
  if (impl_->drop) impl_->drop->start();
  impl_->http->serve();
}
void Server::stop() {
  impl_->draining = true;
  impl_->http->stop();
}

}  // namespace ipfixweb::api

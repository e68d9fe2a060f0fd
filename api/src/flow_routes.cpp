#include "ipfixweb/api/flow_routes.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/handler_pool.hpp"
#include "ipfixweb/flows/export.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/selector.hpp"
#include "ipfixweb/flows/store.hpp"
#include "ipfixweb/shared/spec_json.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb::api {

using http::Request;
using http::Response;
using nlohmann::json;

namespace {

constexpr const char* kProblem = "application/problem+json";

// The schema indexes of result columns named by the query builder.
std::vector<int> column_indexes(const std::vector<std::string>& names) {
  std::vector<int> out;
  out.reserve(names.size());
  for (const auto& n : names) out.push_back(flows::column_index(n));
  return out;
}

// A 422 naming the parameter; a filter error also gives its position and what was expected.
void parameter_problem(Response& res, const flows::ParamError& e) {
  json err = {{"field", e.parameter}, {"message", e.message}};
  if (e.filter) {
    err["position"] = e.filter->position;
    if (!e.filter->expected.empty()) err["expected"] = e.filter->expected;
  }
  json body = {{"type", "about:blank"},
               {"title", "Unprocessable Content"},
               {"status", 422},
               {"detail", "invalid query parameter " + e.parameter},
               {"errors", json::array({err})}};
  res.status = 422;
  res.set_content(body.dump(), kProblem);
}

std::string sqlite_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// An export streamed as the answer's body. It owns the store (and so its descriptor) for as
// long as the transfer lasts; every piece is produced under the query budget.
class ExportProducer final : public http::Producer {
 public:
  ExportProducer(std::unique_ptr<flows::Store> store, flows::ListQuery q, flows::Format format,
                 std::chrono::milliseconds budget)
      : store_(std::move(store)), rows_(store_->handle(), std::move(q), format), budget_(budget) {
    more_ = rows_.fill(first_, http::kStreamPiece, budget_);  // errors before the header
  }                                                           // become an error answer

  bool next(std::string& out) override {
    if (!started_) {
      started_ = true;
      out.swap(first_);
      return more_;
    }
    return rows_.fill(out, http::kStreamPiece, budget_);
  }

 private:
  std::unique_ptr<flows::Store> store_;
  flows::RowExport rows_;
  std::chrono::milliseconds budget_;
  std::string first_;
  bool more_ = false;
  bool started_ = false;
};

}  // namespace

struct FlowRoutes::Opened {
  TaskRecord task;
  confine::Fd fd;  // the flow store file
  std::uint64_t size = 0;
  std::string file_name;
};

FlowRoutes::FlowRoutes(const confine::Root& output_root, FindTask find, Problem problem,
                       Options opts)
    : root_(output_root), find_(std::move(find)), problem_(std::move(problem)), opts_(opts) {}

std::optional<FlowRoutes::Opened> FlowRoutes::open(const Request& req, Response& res) {
  auto t = find_(req, res);
  if (!t) return std::nullopt;
  const std::string& id = t->id;
  if (t->state != TaskState::Succeeded) {
    problem_(res, 409, "task " + id + " is " + std::string(name(t->state)) + ", not succeeded", {});
    return std::nullopt;
  }
  http::WaitScope waiting_for_the_file_system;
  const std::string rel = confine::relative_below(root_.path(), t->output_path);
  if (rel.empty()) {
    problem_(res, 404, "the output of task " + id + " is gone", {});
    return std::nullopt;
  }
  constexpr int kFlags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  // The store goes with the IPFIX file the task wrote: when that was replaced (an
  // "overwrite" task, or someone else), so was the store.
  confine::Fd ipfix(confine::open_beneath(root_.fd(), rel, kFlags));
  struct stat st {};
  if (!ipfix || ::fstat(ipfix.get(), &st) != 0) {
    problem_(res, 404, "the output of task " + id + " is gone", {});
    return std::nullopt;
  }
  if (t->output_file && (static_cast<std::int64_t>(st.st_ino) != t->output_file->inode ||
                         static_cast<std::int64_t>(st.st_size) != t->output_file->size)) {
    problem_(res, 410,
             "the output of task " + id +
                 " (and its flow store) was replaced since the task "
                 "finished",
             {});
    return std::nullopt;
  }
  const std::string store_rel = flows::store_name_for(rel);
  confine::Fd fd(confine::open_beneath(root_.fd(), store_rel, kFlags));
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    problem_(res, 404,
             "task " + id +
                 " has no flow store: it was converted with \"flow_store\": false, or before "
                 "flow stores existed (docs/flow-store.md)",
             {});
    return std::nullopt;
  }
  Opened o;
  o.task = std::move(*t);
  o.fd = std::move(fd);
  o.size = static_cast<std::uint64_t>(st.st_size);
  const auto slash = store_rel.rfind('/');
  o.file_name = slash == std::string::npos ? store_rel : store_rel.substr(slash + 1);
  return o;
}

namespace {

// The flow store of an opened task as SQLite reads it; nullptr after answering 500.
std::unique_ptr<flows::Store> read_store(int fd, const std::string& task_id, Response& res,
                                         const FlowRoutes::Problem& problem) {
  try {
    return std::make_unique<flows::Store>(sqlite_path(fd));
  } catch (const flows::Error& e) {
    problem(res, 500, "the flow store of task " + task_id + " cannot be read: " + e.what(), {});
    return nullptr;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

FlowsFormat flows_format(std::string_view accept) {
  if (trim(accept).empty()) return FlowsFormat::Page;
  // For each format: the q of the most specific matching range (3 exact, 2 type/*, 1 */*).
  struct Best {
    int specificity = 0;
    double q = 0;
  };
  Best best[3];
  const std::string_view types[3][2] = {{"application/json", "application/json"},
                                        {"application/x-ndjson", "application/ndjson"},
                                        {"text/csv", "text/csv"}};
  while (!accept.empty()) {
    const auto comma = accept.find(',');
    std::string_view range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
    const auto semi = range.find(';');
    const std::string_view type = trim(range.substr(0, semi));
    double q = 1;
    for (std::string_view params = semi == std::string_view::npos ? "" : range.substr(semi + 1);
         !params.empty();) {
      const auto next = params.find(';');
      const std::string_view p = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
      if (p.size() > 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
        char* end = nullptr;
        const std::string v(p.substr(2));
        q = std::strtod(v.c_str(), &end);
        if (end == v.c_str() || q < 0 || q > 1) q = 0;
      }
    }
    for (int f = 0; f < 3; ++f) {
      const std::string_view exact = types[f][0];
      const std::string_view major = exact.substr(0, exact.find('/'));
      int specificity = 0;
      if (http::iequals(type, types[f][0]) || http::iequals(type, types[f][1]))
        specificity = 3;
      else if (type.size() == major.size() + 2 &&
               http::iequals(type.substr(0, major.size()), major) &&
               type.substr(major.size()) == "/*")
        specificity = 2;
      else if (type == "*/*")
        specificity = 1;
      if (specificity > best[f].specificity) best[f] = {specificity, q};
    }
  }
  int chosen = 0;
  for (int f = 1; f < 3; ++f)
    if (best[f].q > best[chosen].q) chosen = f;
  if (best[chosen].q <= 0) return FlowsFormat::Page;
  return chosen == 1 ? FlowsFormat::Ndjson : chosen == 2 ? FlowsFormat::Csv : FlowsFormat::Page;
}

void FlowRoutes::flows(const Request& req, Response& res) {
  switch (flows_format(req.header("Accept"))) {
    case FlowsFormat::Ndjson:
      return stream(req, res, false);
    case FlowsFormat::Csv:
      return stream(req, res, true);
    case FlowsFormat::Page:
      break;
  }
  auto o = open(req, res);
  if (!o) return;
  const std::string filter = req.query_value("filter"), fields = req.query_value("fields"),
                    sort = req.query_value("sort"), limit = req.query_value("limit"),
                    cursor = req.query_value("next");
  auto built = flows::build_list(
      {.filter = filter, .fields = fields, .sort = sort, .limit = limit, .cursor = cursor});
  if (auto* e = std::get_if<flows::ParamError>(&built)) {
    if (e->parameter == "cursor") e->parameter = "next";
    return parameter_problem(res, *e);
  }
  const auto& q = std::get<flows::ListQuery>(built);
  auto store = read_store(o->fd.get(), o->task.id, res, problem_);
  if (!store) return;
  const std::vector<int> columns = column_indexes(q.columns);
  std::string body = "{\"flows\":[";
  std::int64_t rows = 0;
  std::string next;
  bool more = false;
  flows::QueryBudget budget(store->handle(), opts_.query_budget);
  const auto outcome = flows::run_query(
      store->handle(), q.sql, q.binds,
      [&](sqlite3_stmt* s) {
        if (rows == q.limit) {
          more = true;
          return false;
        }
        if (rows++) body += ',';
        flows::append_json_object(body, s, columns);
        if (rows == q.limit) next = q.next_cursor(s);
        return true;
      },
      &budget);
  if (answered_failure(outcome, o->task.id, "narrow the filter or sort by an indexed column", res))
    return;
  body += "],\"next\":";
  body += more ? json(next).dump() : "null";
  body += '}';
  res.status = 200;
  res.set_content(std::move(body), "application/json");
}

bool FlowRoutes::answered_failure(const flows::QueryOutcome& outcome, const std::string& task_id,
                                  std::string_view hint, Response& res) const {
  if (outcome.status == flows::QueryStatus::TimedOut) {
    parameter_problem(
        res, {"filter",
              "the query ran longer than " + std::to_string(opts_.query_budget.count()) + " ms; " +
                  std::string(hint),
              std::nullopt});
    return true;
  }
  if (!outcome.ok()) {
    problem_(res, 500, "the flow store of task " + task_id + " cannot be read: " + outcome.message,
             {});
    return true;
  }
  return false;
}

void FlowRoutes::flows_ndjson(const Request& req, Response& res) { stream(req, res, false); }
void FlowRoutes::flows_csv(const Request& req, Response& res) { stream(req, res, true); }

void FlowRoutes::stream(const Request& req, Response& res, bool csv) {
  auto o = open(req, res);
  if (!o) return;
  // An export is the whole filtered set (in sort order, up to `limit`): a page's cursor would
  // be ignored, which a client should learn rather than get the set from its start again.
  if (req.has_query("next"))
    return parameter_problem(
        res, {"next", "an export streams the whole filtered set and takes no cursor", {}});
  const std::string filter = req.query_value("filter"), fields = req.query_value("fields"),
                    sort = req.query_value("sort"), limit = req.query_value("limit");
  auto built = flows::build_list(
      {.filter = filter, .fields = fields, .sort = sort, .limit = limit, .unbounded = true});
  if (auto* e = std::get_if<flows::ParamError>(&built)) return parameter_problem(res, *e);
  auto store = read_store(o->fd.get(), o->task.id, res, problem_);
  if (!store) return;
  try {
    res.stream = std::make_shared<ExportProducer>(
        std::move(store), std::move(std::get<flows::ListQuery>(built)),
        csv ? flows::Format::Csv : flows::Format::Ndjson, opts_.query_budget);
  } catch (const flows::Error& e) {
    const std::string what = e.what();
    if (what.find("longer than") != std::string::npos)
      return parameter_problem(res, {"filter", what, std::nullopt});
    return problem_(res, 500, "the flow store of task " + o->task.id + " cannot be read: " + what,
                    {});
  }
  res.status = 200;
  const std::string base = o->file_name.substr(0, o->file_name.size() - 7);  // "….flows"
  if (csv) {
    res.set_header("Content-Type", "text/csv; charset=utf-8; header=present");
    res.set_header("Content-Disposition", http::attachment(base + ".csv"));
  } else {
    res.set_header("Content-Type", "application/x-ndjson");
    res.set_header("Content-Disposition", http::attachment(base + ".ndjson"));
  }
}

void FlowRoutes::store_file(const Request& req, Response& res) {
  auto o = open(req, res);
  if (!o) return;
  res.file = std::make_shared<http::File>(o->fd.release(), o->size);
  res.set_header("Content-Type", "application/vnd.sqlite3");
  res.set_header("Content-Disposition", http::attachment(o->file_name));
}

namespace {

// The selector of stored record `id` ("" when there is none), read under the query budget.
flows::QueryOutcome record_selector(sqlite3* db, std::int64_t id, std::string& out,
                                    std::chrono::milliseconds budget_ms) {
  flows::QueryBudget budget(db, budget_ms);
  return flows::run_query(
      db,
      "SELECT ip_version, proto, src, sport, dst, dport, vlan, start_ms, end_ms, "
      "rev_packets IS NOT NULL FROM flow_rows WHERE id = ?1",
      {flows::SqlValue{id}},
      [&](sqlite3_stmt* s) {
        // Rebuilt from the text form and parsed back: the api never writes what the worker
        // would not read.
        const auto text = [s](int i) {
          const auto* p = sqlite3_column_text(s, i);
          return std::string(p ? reinterpret_cast<const char*>(p) : "");
        };
        const bool v6 = sqlite3_column_int(s, 0) == 6;
        const auto endpoint = [&](int addr, int port) {
          return (v6 ? "[" + text(addr) + "]" : text(addr)) + ":" +
                 std::to_string(sqlite3_column_int(s, port));
        };
        std::string sel = std::to_string(sqlite3_column_int(s, 1)) + " " + endpoint(2, 3) +
                          (sqlite3_column_int(s, 9) ? " <-> " : " -> ") + endpoint(4, 5) +
                          " vlan " + std::to_string(sqlite3_column_int(s, 6)) + " ms " +
                          std::to_string(sqlite3_column_int64(s, 7)) + "-" +
                          std::to_string(sqlite3_column_int64(s, 8));
        const auto parsed = flows::parse_selector(sel);
        if (const auto* ok = std::get_if<flows::Selector>(&parsed))
          out = flows::format_selector(*ok);
        return false;
      },
      &budget);
}

}  // namespace

std::optional<FlowRoutes::ExtractRequest> FlowRoutes::extract_request(const Request& req,
                                                                      Response& res) {
  auto o = open(req, res);
  if (!o) return std::nullopt;
  const std::string& id = o->task.id;
  const std::string& flow = req.path_params.at(1);
  std::int64_t row = 0;
  const auto [end, ec] = std::from_chars(flow.data(), flow.data() + flow.size(), row);
  if (ec != std::errc() || end != flow.data() + flow.size() || row < 1) {
    problem_(res, 404,
             "task " + id + " has no flow " + flow.substr(0, 40) +
                 " (flow ids are the "
                 "`id` of /flows, 1, 2, ...)",
             {});
    return std::nullopt;
  }
  proto::TaskSpec spec;
  try {
    spec = proto::spec_from_json(json::parse(o->task.spec));
  } catch (const std::exception&) {
    problem_(res, 500, "the stored request of task " + id + " cannot be read", {});
    return std::nullopt;
  }
  if (spec.kind != proto::kKindConvert) {
    problem_(res, 409,
             "task " + id + " is of kind " + spec.kind +
                 ": only a conversion of captures has packets to cut out",
             {});
    return std::nullopt;
  }
  auto store = read_store(o->fd.get(), id, res, problem_);
  if (!store) return std::nullopt;
  std::string selector;
  const auto outcome = record_selector(store->handle(), row, selector, opts_.query_budget);
  if (answered_failure(outcome, id, "", res)) return std::nullopt;
  if (selector.empty()) {
    problem_(res, 404, "task " + id + " has no flow " + flow, {});
    return std::nullopt;
  }
  // Named by the number, not by how the path spelled it ("007" is record 7).
  const std::string number = std::to_string(row);
  json body = {{"kind", proto::kKindExtract},
               {"pcap_files", spec.inputs},
               {"output_path", spec.output + ".flow-" + number + ".pcap"},
               {"flow", selector}};
  if (!spec.filter.empty()) body["filter"] = spec.filter;
  return ExtractRequest{std::move(body), "flow-pcap:" + id + ":" + number};
}

flows::GroupRun FlowRoutes::group_run(int store_fd) const {
  flows::GroupRun run;
  run.threads = opts_.group_threads;
  run.open = [store_fd] { return std::make_unique<flows::Store>(sqlite_path(store_fd)); };
  run.budget = opts_.query_budget;
  return run;
}

void FlowRoutes::top(const Request& req, Response& res) {
  auto o = open(req, res);
  if (!o) return;
  const std::string filter = req.query_value("filter"), by = req.query_value("by"),
                    metric = req.query_value("metric"), n = req.query_value("n");
  auto store = read_store(o->fd.get(), o->task.id, res, problem_);
  if (!store) return;
  const std::string top_dims = store->meta("top_dims");
  auto built = flows::build_top({.filter = filter,
                                 .by = by,
                                 .metric = metric,
                                 .n = n,
                                 .series_has_app = store->meta("dpi") == "1",
                                 .top_dims = top_dims,
                                 .top_k = static_cast<std::int64_t>(store->meta_u64("top_k"))});
  if (auto* e = std::get_if<flows::ParamError>(&built)) return parameter_problem(res, *e);
  const auto& q = std::get<flows::TopQuery>(built);
  std::vector<flows::TopGroup> found;
  const auto outcome = flows::run_top(store->handle(), q, group_run(o->fd.get()), found);
  if (answered_failure(outcome, o->task.id, "narrow the filter", res)) return;
  json groups = json::array();
  for (const auto& f : found) {
    json g = json::object();
    for (std::size_t i = 0; i < f.keys.size() && i < q.key_count; ++i)
      std::visit(
          [&](const auto& v) {
            using V = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<V, std::monostate>)
              g[q.columns[i]] = nullptr;
            else
              g[q.columns[i]] = v;  // a text is dumped with invalid UTF-8 replaced
          },
          f.keys[i]);
    g["bytes"] = f.bytes;
    g["packets"] = f.packets;
    g["flows"] = f.flows;
    groups.push_back(std::move(g));
  }
  json body = {{"by", q.by}, {"metric", q.metric}, {"groups", groups}};
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void FlowRoutes::timeseries(const Request& req, Response& res) {
  auto o = open(req, res);
  if (!o) return;
  auto store = read_store(o->fd.get(), o->task.id, res, problem_);
  if (!store) return;
  const std::string filter = req.query_value("filter"), by = req.query_value("by"),
                    metric = req.query_value("metric"), bucket = req.query_value("bucket_ms"),
                    top = req.query_value("top");
  flows::TimeseriesParams p{
      .filter = filter, .by = by, .metric = metric, .bucket_ms = bucket, .top = top};
  p.store_bucket_ms = static_cast<std::int64_t>(store->meta_u64("bucket_ms"));
  p.first_ms = static_cast<std::int64_t>(store->meta_u64("first_ms"));
  p.last_ms = store->meta_u64("flows") ? static_cast<std::int64_t>(store->meta_u64("last_ms")) : -1;
  auto built = flows::build_timeseries(p);
  if (auto* e = std::get_if<flows::ParamError>(&built)) return parameter_problem(res, *e);
  json body;
  const auto outcome = flows::run_timeseries(
      store->handle(), std::get<flows::TimeseriesQuery>(built), group_run(o->fd.get()), body);
  if (answered_failure(outcome, o->task.id, "narrow the filter", res)) return;
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

}  // namespace ipfixweb::api

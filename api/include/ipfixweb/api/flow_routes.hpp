// The routes that read a task's flow store (docs/flow-store.md, docs/flow-filter.md):
//   GET /api/v1/tasks/{id}/flows              a page of records (JSON), or the whole filtered
//                                             set as NDJSON / CSV when Accept asks for it
//   GET /api/v1/tasks/{id}/flows.ndjson       the filtered records, streamed
//   GET /api/v1/tasks/{id}/flows.csv          the same as CSV (header row)
//   GET /api/v1/tasks/{id}/flows.sqlite       the flow store file itself
//   GET /api/v1/tasks/{id}/top                the n largest groups (by app, src, dst, ...)
//   GET /api/v1/tasks/{id}/timeseries         packets/bytes/flows per time bucket, columnar
//   POST /api/v1/tasks/{id}/flows/{flow}/pcap the request of an `extract` task that cuts the
//                                             packets of one record out of the captures
// The store is opened beneath the output root (no link followed) and only while the task's
// IPFIX file is still the one the task wrote. Every query runs under a time budget; exports
// stream in constant memory.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/http.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/store.hpp"

namespace ipfixweb::api {

class FlowRoutes {
 public:
  // The task named by the route's {id}, or nullopt after answering (404, 503) itself.
  using FindTask = std::function<std::optional<TaskRecord>(const http::Request&, http::Response&)>;
  // An application/problem+json answer.
  using Problem = std::function<void(http::Response&, int status, const std::string& detail,
                                     const std::vector<FieldError>& errors)>;
  struct Options {
    // A query (a page, top, a time series, one piece of an export) that runs longer is
    // stopped: 422 for the request's filter, or the end of an export.
    std::chrono::milliseconds query_budget{5000};
    // Connections (threads) a /top or a filtered /timeseries that groups the flows uses at
    // once on a large store (flows::GroupRun).
    int group_threads = 2;
  };

  FlowRoutes(const confine::Root& output_root, FindTask find, Problem problem, Options opts);

  void flows(const http::Request& req, http::Response& res);
  void flows_ndjson(const http::Request& req, http::Response& res);
  void flows_csv(const http::Request& req, http::Response& res);
  void store_file(const http::Request& req, http::Response& res);
  void top(const http::Request& req, http::Response& res);
  void timeseries(const http::Request& req, http::Response& res);
  // POST .../flows/{flow}/pcap: the body of the `extract` task that writes the record's packets
  // (the same captures and BPF filter as the task, the record's selector, an output beside
  // the task's: "<output>.flow-<flow>.pcap"), to be submitted like any request; nullopt after
  // answering (404 no such record, 409 not a conversion of captures, ...). `key` is the
  // Idempotency-Key to use when the request has none (one task per record).
  struct ExtractRequest {
    nlohmann::json body;
    std::string key;
  };
  std::optional<ExtractRequest> extract_request(const http::Request& req, http::Response& res);

 private:
  // How a query that groups the flows of the store open as store_fd may run.
  flows::GroupRun group_run(int store_fd) const;
  struct Opened;
  std::optional<Opened> open(const http::Request& req, http::Response& res);
  void stream(const http::Request& req, http::Response& res, bool csv);
  // A query that timed out (422 naming the filter, with `hint`) or failed (500): answers and
  // returns true; false when the outcome is a success.
  bool answered_failure(const flows::QueryOutcome& outcome, const std::string& task_id,
                        std::string_view hint, http::Response& res) const;

  const confine::Root& root_;
  FindTask find_;
  Problem problem_;
  Options opts_;
};

// What GET /api/v1/tasks/{id}/flows answers for an Accept value: a JSON page, or the whole set
// as NDJSON or CSV. Media ranges and q-values as RFC 9110 reads them (q=0: not acceptable; the
// most specific range that matches a type gives its q); the highest q wins, a tie goes to the
// page, then NDJSON. No Accept, or none of the three acceptable: the page.
enum class FlowsFormat { Page, Ndjson, Csv };
FlowsFormat flows_format(std::string_view accept);

}  // namespace ipfixweb::api

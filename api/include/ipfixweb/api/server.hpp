// The HTTP front-end: validates requests, forwards them to the broker and
// reads task state from SQLite (read-only). It never converts anything.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "ipfixweb/api/drop_folder.hpp"
#include "ipfixweb/api/http.hpp"

namespace ipfixweb::api {

struct Config {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see Server::port())
  std::string broker = "tcp://127.0.0.1:5561";
  std::string db_path = "var/ipfixweb.db";
  std::vector<std::string> input_roots = {"var/input"};
  std::string output_root = "var/output";
  int threads = 64;     // handler threads: requests run there once read whole
  int io_threads = 2;   // HTTP I/O threads: accept, read, write (never a handler)
  http::Limits limits;  // header size, timeouts, connections, bodies of other routes
  double broker_timeout_s = 2.0;
  std::size_t max_body = 1u << 20;  // POST routes
  int max_json_depth = 64;          // nesting of arrays and objects in a request body
  // A task list page stops growing past this many bytes (its `next` cursor goes on from
  // there), whatever its `limit`: stored requests and summaries can be large.
  std::size_t max_page_bytes = 8u << 20;
  // A flow store query (a /flows page, /top, /timeseries, one piece of an export) is stopped
  // after this many milliseconds (422 naming the filter; an export ends cut short).
  int flow_query_ms = 5000;
  std::vector<Token> tokens;  // bearer tokens with their roles; empty: no authentication
  std::string sample_pcap = "sample.pcap";  // for the compatibility test route
  // Uploaded captures (docs/uploads.md): a directory inside an input root ("": the first
  // input root's "uploads"), the largest capture, quotas (0: none), upload expiry.
  std::string capture_dir;
  std::uint64_t max_capture_size = 100ull << 30;
  std::uint64_t capture_quota = 0;
  std::uint64_t capture_token_quota = 0;
  double upload_expiry_s = 24 * 3600;
  // Live event streams (docs/events.md): how many may be open at once, how often the
  // database is read for them.
  std::size_t max_event_streams = 1000;
  double event_poll_s = 0.25;
  std::string curve_server_key;  // CURVE: broker's public key file
  std::string curve_secret_key;  // CURVE: the api's secret key file
  DropConfig drop;               // drop folders (docs/drop-folder.md); none: off
  // A conversion whose inputs hold at least split_above bytes (0: never) and that does not say
  // `parallelism` is split into split_parts parts (0: as many as the broker has workers);
  // docs/api.md, Split tasks.
  std::uint64_t split_above = 0;
  std::uint32_t split_parts = 0;
};

class Server {
 public:
  Server(Config cfg, zmq::context_t& ctx);  // throws on bad roots or bind failure
  ~Server();
  int port() const;
  // Every route registered, in the order added.
  struct RouteInfo {
    std::string method;  // "GET"
    std::string path;    // the template: "/api/v1/tasks/{id}"
    Role role = Role::Read;
    bool open = false;  // needs no token
  };
  std::vector<RouteInfo> routes() const;
  // The OpenAPI document served at /openapi.json (openapi.hpp).
  const std::string& openapi() const;
  void serve();  // blocks until stop()
  void stop();   // safe from another thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::api

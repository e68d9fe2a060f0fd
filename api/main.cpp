// ipfixweb-api: thin entry point over ipfixweb_api_lib.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "ipfixweb/api/auth.hpp"
#include "ipfixweb/api/server.hpp"
#include "ipfixweb/shared/config.hpp"
#include "ipfixweb/shared/logging.hpp"

int main(int argc, char** argv) {
  using namespace ipfixweb;
  // glibc gives threads that allocate malloc arenas of their own, up to 8 per core, and an arena
  // keeps its peak: with 64 handler threads woken in turn, the api's memory crept up under a
  // steady load. Four arenas serve the handler threads, which spend their time in SQLite and the
  // broker, not in malloc (the hour-long soak in docs/reliability.md: +2.3 %, then flat).
  // MALLOC_ARENA_MAX in the environment still wins.
  if (!std::getenv("MALLOC_ARENA_MAX")) ::mallopt(M_ARENA_MAX, 4);
  api::Config cfg;
  LogOptions log_opts;
  RootOptions roots;
  std::string listen = "127.0.0.1:8000";
  std::string tokens;
  cfg.db_path.clear();
  CLI::App app{"ipfixweb api: HTTP front-end for conversion tasks"};
  add_root_options(app, roots);
  app.add_option("--listen", listen, "HTTP address HOST:PORT (port 0: any free port)")
      ->envname("IPFIXWEB_HTTP_LISTEN")
      ->capture_default_str();
  app.add_option("--broker", cfg.broker, "Broker frontend endpoint")
      ->envname("IPFIXWEB_BROKER_FRONTEND")
      ->capture_default_str();
  app.add_option("--db", cfg.db_path, "SQLite database (default <data-dir>/ipfixweb.db)")
      ->envname("IPFIXWEB_DB");
  app.add_option("--threads", cfg.threads,
                 "Handler threads: requests run there once read whole (SQLite, broker)")
      ->envname("IPFIXWEB_HTTP_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--io-threads", cfg.io_threads, "HTTP I/O threads (accept, read, write)")
      ->envname("IPFIXWEB_HTTP_IO_THREADS")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  auto& lim = cfg.limits;
  app.add_option("--max-header", lim.max_header,
                 "Largest request line + header fields in bytes (431 beyond)")
      ->envname("IPFIXWEB_HTTP_MAX_HEADER")
      ->check(CLI::Range(1024, 1 << 20))
      ->capture_default_str();
  app.add_option("--header-timeout", lim.header_timeout_s,
                 "Seconds from a request's first byte to the end of its header")
      ->envname("IPFIXWEB_HTTP_HEADER_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--idle-timeout", lim.idle_timeout_s,
                 "Seconds a connection may wait for its next request")
      ->envname("IPFIXWEB_HTTP_IDLE_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--body-timeout", lim.body_timeout_s,
                 "Seconds a request body may take (plus 1 s per --min-body-rate bytes received)")
      ->envname("IPFIXWEB_HTTP_BODY_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--min-body-rate", lim.min_body_rate,
                 "Bytes per second that earn a request body one more second (0: none)")
      ->envname("IPFIXWEB_HTTP_MIN_BODY_RATE")
      ->capture_default_str();
  app.add_option("--write-timeout", lim.write_timeout_s, "Seconds each write of an answer may take")
      ->envname("IPFIXWEB_HTTP_WRITE_TIMEOUT")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-connections", lim.max_connections,
                 "Open HTTP connections (beyond: the longest-idle one is closed, else 503)")
      ->envname("IPFIXWEB_HTTP_MAX_CONNECTIONS")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-other-body", lim.max_other_body,
                 "Largest body of a request to a route that takes none, or to no route "
                 "(read and ignored; beyond: 413, or 404 for no route, and close)")
      ->envname("IPFIXWEB_HTTP_MAX_OTHER_BODY")
      ->capture_default_str();
  app.add_option("--broker-timeout", cfg.broker_timeout_s, "Seconds to wait for the broker")
      ->envname("IPFIXWEB_BROKER_TIMEOUT")
      ->capture_default_str();
  app.add_option("--max-body", cfg.max_body, "Largest body of a POST in bytes (413 beyond)")
      ->envname("IPFIXWEB_MAX_BODY")
      ->capture_default_str();
  app.add_option("--split-above", cfg.split_above,
                 "Split a conversion whose captures hold at least this many bytes across workers "
                 "when its request does not say parallelism (0: never)")
      ->envname("IPFIXWEB_SPLIT_ABOVE")
      ->capture_default_str();
  app.add_option("--split-parts", cfg.split_parts,
                 "Parts of such a split (0: as many as the broker has workers)")
      ->envname("IPFIXWEB_SPLIT_PARTS")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  app.add_option("--max-page-bytes", cfg.max_page_bytes,
                 "Largest task list page in bytes; a page stops there and its cursor goes on")
      ->envname("IPFIXWEB_MAX_PAGE_BYTES")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--flow-query-ms", cfg.flow_query_ms,
                 "Longest time of one flow store query (a /flows page, /top, /timeseries, a "
                 "piece of an export) in ms; 422 beyond")
      ->envname("IPFIXWEB_FLOW_QUERY_MS")
      ->check(CLI::Range(10, 600000))
      ->capture_default_str();
  app.add_option("--max-event-streams", cfg.max_event_streams,
                 "Live event streams (GET /api/v1/events, …/events?stream=1) open at once; 503 "
                 "beyond")
      ->envname("IPFIXWEB_MAX_EVENT_STREAMS")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}))
      ->capture_default_str();
  app.add_option("--event-poll", cfg.event_poll_s,
                 "How often (seconds) the task database is read for new events while streams "
                 "are open")
      ->envname("IPFIXWEB_EVENT_POLL")
      ->check(CLI::Range(0.01, 10.0))
      ->capture_default_str();
  app.add_option("--max-json-depth", cfg.max_json_depth,
                 "Deepest nesting of arrays and objects in a request body (400 beyond)")
      ->envname("IPFIXWEB_MAX_JSON_DEPTH")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--tokens", tokens,
                 "Comma-separated bearer tokens, each [read:|submit:|admin:]SECRET (bare: "
                 "admin); empty: no authentication")
      ->envname("IPFIXWEB_API_TOKENS");
  app.add_option("--sample-pcap", cfg.sample_pcap, "Capture submitted by the test route")
      ->envname("IPFIXWEB_SAMPLE_PCAP")
      ->capture_default_str();
  app.add_option("--capture-dir", cfg.capture_dir,
                 "Where uploaded captures are kept, inside an input root (default: the first "
                 "input root's uploads/)")
      ->envname("IPFIXWEB_CAPTURE_DIR");
  app.add_option("--max-capture-size", cfg.max_capture_size,
                 "Largest uploaded capture in bytes (413 beyond)")
      ->envname("IPFIXWEB_MAX_CAPTURE_SIZE")
      ->capture_default_str();
  app.add_option("--capture-quota", cfg.capture_quota,
                 "Bytes of all uploaded captures and uploads in progress (0: no quota)")
      ->envname("IPFIXWEB_CAPTURE_QUOTA")
      ->capture_default_str();
  app.add_option("--capture-token-quota", cfg.capture_token_quota,
                 "Bytes of uploaded captures per bearer token (0: no quota)")
      ->envname("IPFIXWEB_CAPTURE_TOKEN_QUOTA")
      ->capture_default_str();
  app.add_option("--upload-expiry", cfg.upload_expiry_s,
                 "Seconds an unfinished upload is kept after its last byte")
      ->envname("IPFIXWEB_UPLOAD_EXPIRY")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--curve-server-key", cfg.curve_server_key, "CURVE: the broker's public key file")
      ->envname("IPFIXWEB_CURVE_SERVER_KEY");
  app.add_option("--curve-secret-key", cfg.curve_secret_key, "CURVE: the api's secret key file")
      ->envname("IPFIXWEB_API_SECRET_KEY");
  api::add_drop_options(app, cfg.drop);
  add_log_options(app, log_opts);
  add_print_config(app);
  CLI11_PARSE(app, argc, argv);
  if (cfg.db_path.empty()) cfg.db_path = roots.data_dir + "/ipfixweb.db";
  show_effective(app, "--db", cfg.db_path);
  finish_root_options(app, roots);
  cfg.input_roots = roots.input_roots;
  cfg.output_root = roots.output_root;
  if (handle_print_config(app)) return 0;
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "--listen must be HOST:PORT\n";
    return 2;
  }
  cfg.host = listen.substr(0, colon);
  try {
    cfg.port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    std::cerr << "--listen must be HOST:PORT\n";
    return 2;
  }
  try {
    cfg.tokens = api::parse_tokens(tokens);
  } catch (const std::invalid_argument& e) {
    std::cerr << "--tokens: " << e.what() << "\n";
    return 2;
  }

  auto log = setup_logging("api", log_opts);
  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Every connection is a descriptor: the soft limit (often 1024) would stop accepting long
  // before --max-connections.
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < cfg.limits.max_connections + 64)
      log->warn("only {} file descriptors (RLIMIT_NOFILE): fewer than --max-connections {}",
                static_cast<unsigned long long>(nofile.rlim_cur), cfg.limits.max_connections);
  }
  try {
    std::error_code ec;
    for (auto& r : cfg.input_roots) std::filesystem::create_directories(r, ec);
    std::filesystem::create_directories(cfg.output_root, ec);
    zmq::context_t ctx(1);
    api::Server server(cfg, ctx);
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&sigs, &sig);
      log->info("signal {}: draining", sig);
      server.stop();
    });
    server.serve();
    // serve() also returns if stop() came from elsewhere: release the waiter.
    pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
  } catch (const std::exception& e) {
    log->critical("api failed: {}", e.what());
    return 1;
  }
  log->info("api stopped");
  return 0;
}

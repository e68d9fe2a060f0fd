// ipfixweb-api: thin entry point over ipfixweb_api_lib.
#include <pthread.h>
#include <signal.h>

#include <filesystem>
#include <thread>

#include "ipfixweb/api/server.hpp"
#include "ipfixweb/shared/config.hpp"
#include "ipfixweb/shared/logging.hpp"

int main(int argc, char** argv) {
  using namespace ipfixweb;
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
  app.add_option("--threads", cfg.threads, "HTTP worker threads")
      ->envname("IPFIXWEB_HTTP_THREADS")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--broker-timeout", cfg.broker_timeout_s, "Seconds to wait for the broker")
      ->envname("IPFIXWEB_BROKER_TIMEOUT")
      ->capture_default_str();
  app.add_option("--max-body", cfg.max_body, "Largest request body in bytes")
      ->envname("IPFIXWEB_MAX_BODY")
      ->capture_default_str();
  app.add_option("--tokens", tokens, "Comma-separated bearer tokens; empty: no authentication")
      ->envname("IPFIXWEB_API_TOKENS");
  app.add_option("--sample-pcap", cfg.sample_pcap, "Capture submitted by the test route")
      ->envname("IPFIXWEB_SAMPLE_PCAP")
      ->capture_default_str();
  app.add_option("--curve-server-key", cfg.curve_server_key, "CURVE: the broker's public key file")
      ->envname("IPFIXWEB_CURVE_SERVER_KEY");
  app.add_option("--curve-secret-key", cfg.curve_secret_key, "CURVE: the api's secret key file")
      ->envname("IPFIXWEB_API_SECRET_KEY");
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
  for (std::size_t start = 0; start < tokens.size();) {
    auto end = tokens.find(',', start);
    if (end == std::string::npos) end = tokens.size();
    if (end > start) cfg.tokens.push_back(tokens.substr(start, end - start));
    start = end + 1;
  }

  auto log = setup_logging("api", log_opts);
  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
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

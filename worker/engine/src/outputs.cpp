#include "outputs.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "output_file.hpp"

namespace ipfixweb::engine {

ExporterConfig exporter_config(const Options& opts) {
  ExporterConfig ecfg;
  ecfg.output = opts.output;
  ecfg.dir_fd = opts.output_dir_fd;
  ecfg.name = opts.output_name;
  ecfg.dpi = opts.dpi;
  ecfg.biflow = opts.biflow;
  ecfg.observation_domain = opts.observation_domain;
  return ecfg;
}

std::unique_ptr<flows::Writer> open_store(const Options& opts, bool live, std::string_view source,
                                          bool dpi, bool indexes_last) {
  if (opts.flows_db.empty()) return nullptr;
  if (live) throw EngineError("a flow store needs a file output, not a network one");
  flows::WriterConfig cfg;
  cfg.dir_fd = opts.output_dir_fd;
  cfg.name = opts.flows_db;
  cfg.temp_suffix = temporary_output_name("", ::getpid());
  // The IPFIX file is renamed in the same directory right after and that directory synced.
  cfg.sync_dir = opts.output_dir_fd < 0;
  cfg.source = std::string(source);
  cfg.biflow = opts.biflow;
  cfg.dpi = dpi;
  cfg.indexes_last = indexes_last;
  try {
    return std::make_unique<flows::Writer>(std::move(cfg));
  } catch (const flows::Error& e) {
    throw EngineError(e.what());
  }
}

void publish_summary(const Options& opts, const std::string& summary) {
  OutputFileConfig cfg;
  cfg.path = opts.summary_file;
  cfg.dir_fd = opts.output_dir_fd;
  cfg.name = opts.summary_file;
  cfg.what = "summary";
  OutputFile file(cfg);  // removes its temporary unless committed
  if (std::fwrite(summary.data(), 1, summary.size(), file.file()) != summary.size())
    file.fail(std::strerror(errno));
  file.commit();
}

}  // namespace ipfixweb::engine

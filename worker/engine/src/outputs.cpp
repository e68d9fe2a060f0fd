#include "outputs.hpp"

#include <sys/stat.h>
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

std::uint32_t store_page_size(std::uint64_t input_bytes) {
  return input_bytes >= kLargeStoreInput ? flows::kLargeStorePageSize : 4096;
}

std::uint64_t store_input_bytes(const Options& opts) {
  std::uint64_t total = 0;
  const auto add = [&](bool known, const struct stat& st) {
    if (known && S_ISREG(st.st_mode)) total += static_cast<std::uint64_t>(st.st_size);
  };
  for (std::size_t i = 0; i < opts.inputs.size(); ++i) {
    struct stat st {};
    add(i < opts.input_fds.size() ? ::fstat(opts.input_fds[i], &st) == 0
                                  : ::stat(opts.inputs[i].c_str(), &st) == 0,
        st);
  }
  for (const auto& path : opts.part_stores) {
    struct stat st {};
    add(::stat(path.c_str(), &st) == 0, st);
  }
  return total;
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
  cfg.page_size = store_page_size(store_input_bytes(opts));
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

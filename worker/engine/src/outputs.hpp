// The outputs of a conversion and of an ingest: the IPFIX exporter's settings from the
// options, the flow store writer, and their publication in order.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "exporter.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/flows/writer.hpp"

namespace ipfixweb::engine {

ExporterConfig exporter_config(const Options& opts);

// The flow store's page size for inputs of `input_bytes` in all: flows::kLargeStorePageSize
// from kLargeStoreInput on, else SQLite's 4 KiB (a tiny task's store stays small).
inline constexpr std::uint64_t kLargeStoreInput = std::uint64_t{16} << 20;
std::uint32_t store_page_size(std::uint64_t input_bytes);
// What a conversion's store is written from, in bytes: its inputs (captures, IPFIX files, a
// merge's part files) and a merge's part stores (those that cannot be told count as nothing).
std::uint64_t store_input_bytes(const Options& opts);

// The flow store writer (docs/flow-store.md), or null when none was asked for. `source` and
// `dpi` go into its meta table ("pcap" or "ipfix"; whether nDPI labelled every record);
// `indexes_last`: flows::WriterConfig's.
std::unique_ptr<flows::Writer> open_store(const Options& opts, bool live, std::string_view source,
                                          bool dpi, bool indexes_last = false);

// The summary text as the file Options::summary_file (an OutputFile: temporary, fsync, rename,
// directory fsync). Throws EngineError.
void publish_summary(const Options& opts, const std::string& summary);

// The flow store first, then the IPFIX file, so that whoever sees the IPFIX file finds the
// store. The IPFIX file's last message and fsync run on a thread of their own while the store
// commits (its last rows, COMMIT, its own fsync and rename); then the IPFIX file is renamed
// into place. Neither replaces a file another writer put under its name meanwhile, and the
// store is not published when the IPFIX file's name holds such a file (OutputReplaced; the
// store's own check comes out as flows::Replaced and is thrown as OutputReplaced). Errors come
// back to the caller's thread and are thrown there.
inline void publish_outputs(IpfixExporter& exporter, flows::Writer* store) {
  if (!store) {
    exporter.commit();
    return;
  }
  std::string ipfix_error, store_error;
  std::exception_ptr replaced;
  std::thread finishing([&] {
    try {
      exporter.finish();
    } catch (const std::exception& e) {
      ipfix_error = e.what();
    }
  });
  try {
    store->commit([&exporter] { exporter.check_unreplaced(); });
  } catch (const OutputReplaced&) {
    replaced = std::current_exception();
  } catch (const flows::Replaced& e) {
    replaced = std::make_exception_ptr(OutputReplaced(e.what()));
  } catch (const std::exception& e) {
    store_error = e.what();
  }
  finishing.join();
  if (replaced) std::rethrow_exception(replaced);
  if (!store_error.empty()) throw EngineError(store_error);
  if (!ipfix_error.empty()) throw EngineError(ipfix_error);
  exporter.publish();
}

}  // namespace ipfixweb::engine

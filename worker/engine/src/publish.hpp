// Publishing a conversion's outputs (a conversion's and an ingest's): the flow store first, then
// the IPFIX file, so that whoever sees the IPFIX file finds the store. The IPFIX file's last
// message and fsync run on a thread of their own while the store commits (its last rows, COMMIT,
// its own fsync and rename); then the IPFIX file is renamed into place. Errors come back to the
// caller's thread as text and are thrown there.
#pragma once

#include <string>
#include <thread>

#include "exporter.hpp"
#include "ipfixweb/engine/engine.hpp"
#include "ipfixweb/flows/writer.hpp"

namespace ipfixweb::engine {

inline void publish_outputs(IpfixExporter& exporter, flows::Writer* store) {
  if (!store) {
    exporter.commit();
    return;
  }
  std::string ipfix_error, store_error;
  std::thread finishing([&] {
    try {
      exporter.finish();
    } catch (const std::exception& e) {
      ipfix_error = e.what();
    }
  });
  try {
    store->commit();
  } catch (const std::exception& e) {
    store_error = e.what();
  }
  finishing.join();
  if (!store_error.empty()) throw EngineError(store_error);
  if (!ipfix_error.empty()) throw EngineError(ipfix_error);
  exporter.publish();
}

}  // namespace ipfixweb::engine

// The rows of a listing (query.hpp's build_list) written out piece by piece as NDJSON or CSV:
// the one export loop behind the api's /flows.ndjson and /flows.csv and pcap2ipfix --ndjson /
// --csv.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ipfixweb/flows/query.hpp"
#include "ipfixweb/flows/store.hpp"

namespace ipfixweb::flows {

class RowExport {
 public:
  // Prepares the listing on `db` (borrowed: it must outlive the export). Throws Error.
  RowExport(sqlite3* db, ListQuery q, Format format);
  ~RowExport();
  RowExport(const RowExport&) = delete;
  RowExport& operator=(const RowExport&) = delete;

  // Appends rows (the CSV header first) until `out` holds at least `piece` bytes or the rows
  // end; false once the last row is written. With a budget, the rows of one call must come
  // within it. Throws Error ("export stopped: ...") when SQLite fails or the budget is spent.
  //
  // On a store with packed rows (format version 2) a thread of the export's own steps
  // SQLite and hands the packed rows over in batches of bounded size (at most a few ahead of
  // the caller), and fill() renders them: reading and rendering run on two cores. The
  // budget then applies to each batch the thread reads (the budget of the first call).
  bool fill(std::string& out, std::size_t piece,
            std::chrono::milliseconds budget = std::chrono::milliseconds::zero());

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfixweb::flows

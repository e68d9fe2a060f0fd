// libFuzzer target: IPFIX ingest (worker/engine/src/ipfix_ingest.cpp; docs/ipfix-ingest.md):
// an IPFIX file of any exporter read with libfixbuf (templates, options templates, variable
// length fields, every kind of time element, biflow and uniflow records, labels) and written
// again as the engine writes a conversion: an IPFIX file in our templates and, optionally, the
// flow store (SQLite).
//
// Input: byte 0 holds options (bit 0: write the flow store; bit 1: uniflow output), the rest is
// the IPFIX file (the seeds are real exporters' files, cut small).
//
// Properties checked besides "no crash, no sanitizer report":
//  - an input is refused only with EngineError, and a refusal leaves nothing in the output
//    directory;
//  - an accepted input's output is an IPFIX file that ingest reads again, with the same
//    number of records (our own output is ingested without loss), and the flow store has a
//    row per record.
#include <sqlite3.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_util.hpp"
#include "ipfix_ingest.hpp"
#include "ipfixweb/engine/engine.hpp"

namespace engine = ipfixweb::engine;
namespace fs = std::filesystem;

namespace {

std::string app_name(std::uint16_t id) { return id % 3 ? "P" + std::to_string(id) : ""; }

std::int64_t store_rows(const std::string& path) {
  sqlite3* db = nullptr;
  FUZZ_CHECK(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  FUZZ_CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM flows", -1, &s, nullptr) == SQLITE_OK,
             sqlite3_errmsg(db));
  FUZZ_CHECK(sqlite3_step(s) == SQLITE_ROW);
  const std::int64_t n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n;
}

struct Result {
  bool ok = false;
  engine::Conversion conversion;
  std::string error;
};

Result ingest(const std::string& in, const std::string& out, bool store, bool uniflow) {
  engine::Options o;
  o.mode = engine::Mode::Ingest;
  o.inputs = {in};
  o.output = out;
  o.biflow = !uniflow;
  o.dpi = false;
  if (store) o.flows_db = out + ".flows.sqlite";
  Result r;
  try {
    r.conversion = engine::ingest_ipfix(o, {}, nullptr, app_name);
    r.ok = true;
  } catch (const engine::EngineError& e) {
    r.error = e.what();
  }
  return r;
}

std::size_t entries(const std::string& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::TempDir dir("ipfix-ingest");
  if (size < 1) return 0;
  const bool store = data[0] & 1, uniflow = data[0] & 2;
  const std::string in = dir.path() + "/in.ipfix", outdir = dir.path() + "/out";
  fs::remove_all(outdir);
  fs::create_directory(outdir);
  {
    std::ofstream f(in, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data) + 1, static_cast<std::streamsize>(size - 1));
  }
  const std::string out = outdir + "/out.ipfix";
  const Result first = ingest(in, out, store, uniflow);
  if (!first.ok) {
    FUZZ_CHECK(entries(outdir) == 0, "a refused ingest left files behind: " + first.error);
    return 0;
  }
  FUZZ_CHECK(fs::exists(out));
  if (store) {
    FUZZ_CHECK(static_cast<std::uint64_t>(store_rows(out + ".flows.sqlite")) ==
               first.conversion.flows);
  }
  // Our own output, ingested again: every record comes back.
  const std::string again = outdir + "/again.ipfix";
  const Result second = ingest(out, again, false, uniflow);
  FUZZ_CHECK(second.ok, "our own output is refused: " + second.error);
  FUZZ_CHECK(second.conversion.flows == first.conversion.flows,
             std::to_string(first.conversion.flows) + " records, then " +
                 std::to_string(second.conversion.flows));
  FUZZ_CHECK(second.conversion.packets == first.conversion.packets &&
                 second.conversion.bytes == first.conversion.bytes,
             "packets " + std::to_string(first.conversion.packets) + " -> " +
                 std::to_string(second.conversion.packets) + ", bytes " +
                 std::to_string(first.conversion.bytes) + " -> " +
                 std::to_string(second.conversion.bytes));
  return 0;
}

#include "merge.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfix_ingest.hpp"
#include "ipfixweb/flows/store.hpp"
#include "ipfixweb/flows/writer.hpp"

namespace ipfixweb::engine {
namespace {

using json = nlohmann::json;

// What every part counted of the whole capture: taken from one part, and required equal in all.
constexpr const char* kWholeCapture[] = {"packets_read", "inputs", "first_packet",
                                         "last_packet",  "dpi",    "biflow"};
// Also of the whole capture, but not compared (equal whenever the fields above are).
constexpr const char* kAlsoWhole[] = {"packets",
                                      "bytes",
                                      "not_metered",
                                      "duration_s",
                                      "tunnelled_packets",
                                      "out_of_order_packets",
                                      "fragments_unmatched"};

struct Part {
  json summary;
  unsigned index = 0;
};

// The parts' summaries, checked to be partitions 0..N-1 of one conversion; ordered by index.
std::vector<Part> read_parts(const Options& opts) {
  const std::size_t n = opts.inputs.size();
  if (n == 0) throw EngineError("a merge needs the outputs of the parts");
  if (opts.part_summaries.size() != n)
    throw EngineError("a merge needs the summary of every part: " + std::to_string(n) + " parts, " +
                      std::to_string(opts.part_summaries.size()) + " summaries");
  std::vector<Part> parts(n);
  std::vector<bool> seen(n, false);
  for (std::size_t i = 0; i < n; ++i) {
    json s = json::parse(opts.part_summaries[i], nullptr, false);
    const auto p = s.is_object() ? s.find("partition") : s.end();
    if (!s.is_object() || p == s.end() || !p->is_object() || !p->value("of", json()).is_number() ||
        !p->value("index", json()).is_number_unsigned()) {
      throw EngineError("part '" + opts.inputs[i] +
                        "': its summary is not that of a flow partition of a conversion");
    }
    const auto of = (*p)["of"].get<std::uint64_t>();
    const auto index = (*p)["index"].get<std::uint64_t>();
    if (of != n) {
      throw EngineError("part '" + opts.inputs[i] + "' is partition " + std::to_string(index) +
                        " of " + std::to_string(of) + ", but " + std::to_string(n) +
                        " parts were given");
    }
    if (index >= n || seen[index])
      throw EngineError("partition " + std::to_string(index) + " was given twice");
    seen[index] = true;
    parts[index] = {std::move(s), static_cast<unsigned>(index)};
  }
  const json& base = parts[0].summary;
  for (const auto& part : parts) {
    for (const char* key : kWholeCapture) {
      if (part.summary.value(key, json()) != base.value(key, json())) {
        throw EngineError("partition " + std::to_string(part.index) +
                          " is not of the same conversion as partition 0: its \"" + key +
                          "\" differs");
      }
    }
  }
  return parts;
}

// The sum over the parts of the unsigned number at `path` (0 where a part has none).
std::uint64_t part_sum(const std::vector<Part>& parts, const json::json_pointer& path) {
  std::uint64_t sum = 0;
  for (const auto& part : parts)
    if (part.summary.contains(path) && part.summary[path].is_number_unsigned())
      sum += part.summary[path].get<std::uint64_t>();
  return sum;
}

// Uniflow parts: a conversation's two records are two flows to an ingest, one to the conversion
// that metered them. The conversation counts (biflows, end reasons, each protocol's and
// analysis family's flows) are the parts' sums instead; the "flows" of top lists stay record
// counts (docs/engine.md, Partitions).
void sum_conversation_counts(json& s, const std::vector<Part>& parts) {
  s["biflows"] = part_sum(parts, json::json_pointer("/biflows"));
  for (auto& [reason, v] : s["flow_end_reasons"].items())
    v = part_sum(parts, json::json_pointer("/flow_end_reasons/" + reason));
  for (const char* group : {"protocols", "analysis"}) {
    if (!s.contains(group) || !s[group].is_object()) continue;
    for (auto& [name, v] : s[group].items())
      if (v.is_object() && v.contains("flows"))
        v["flows"] =
            part_sum(parts, json::json_pointer("/" + std::string(group) + "/" + name + "/flows"));
  }
}

// The whole conversion's summary: the ingest's (records, labels, protocols, applications and
// end reasons of every record), with what each part counted of the whole capture from
// partition 0, and the parts' own work summed.
std::string merged_summary(const std::string& ingest_summary, const std::vector<Part>& parts,
                           double elapsed_s) {
  json s = json::parse(ingest_summary);
  const json& base = parts[0].summary;
  for (const char* key : kWholeCapture) s[key] = base.value(key, json());
  for (const char* key : kAlsoWhole) s[key] = base.value(key, json());
  s.erase("ipfix");
  s.erase("source");
  s.erase("warnings");
  std::uint64_t peak = 0;
  json dpi_stats;
  json warnings = json::array();
  for (const auto& part : parts) {
    peak += part.summary.value("peak_flows", std::uint64_t{0});
    if (auto d = part.summary.find("dpi_stats"); d != part.summary.end() && d->is_object()) {
      for (auto& [k, v] : d->items()) {
        if (!v.is_number_unsigned()) continue;
        json& sum = dpi_stats[k];
        sum = (sum.is_null() ? 0 : sum.get<std::uint64_t>()) + v.get<std::uint64_t>();
      }
    }
    if (auto w = part.summary.find("warnings"); w != part.summary.end() && w->is_array()) {
      for (const auto& text : *w)
        if (std::find(warnings.begin(), warnings.end(), text) == warnings.end())
          warnings.push_back(text);
    }
  }
  if (!base.value("biflow", true)) sum_conversation_counts(s, parts);
  s["peak_flows"] = peak;  // an upper bound of the whole run's: the parts peaked at other times
  if (!dpi_stats.is_null()) s["dpi_stats"] = dpi_stats;
  s["warnings"] = warnings;
  s["parts"] = parts.size();
  s["elapsed_s"] = elapsed_s;
  const auto read = base.value("packets_read", std::uint64_t{0});
  s["packets_per_s"] = elapsed_s > 0 ? static_cast<double>(read) / elapsed_s : 0.0;
  return s.dump(-1, ' ', false, json::error_handler_t::replace);
}

struct StmtCloser {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

// Adds every part's series to the merged store's: the cells of one bucket size, summed.
void sum_series(const Options& opts, flows::Writer& store) {
  std::uint64_t bucket = 0;
  for (const auto& path : opts.part_stores) {
    try {
      flows::Store part(path);
      const std::uint64_t b = part.meta_u64("bucket_ms");
      if (b == 0 || (b & (b - 1)) != 0)
        throw EngineError("flow store '" + path + "' has no valid bucket size");
      if (bucket != 0 && b != bucket) {
        throw EngineError("flow store '" + path + "' has buckets of " + std::to_string(b) +
                          " ms, another part's have " + std::to_string(bucket) +
                          " ms: the parts are not of one conversion");
      }
      bucket = b;
      const auto failed = [&] {
        return EngineError("flow store '" + path +
                           "': reading its series failed: " + sqlite3_errmsg(part.handle()));
      };
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v2(part.handle(),
                             "SELECT dim, key, bucket_ms, packets, bytes, flows FROM series", -1,
                             &raw, nullptr) != SQLITE_OK)
        throw failed();
      std::unique_ptr<sqlite3_stmt, StmtCloser> st(raw);
      int rc;
      while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
        const auto* dim = reinterpret_cast<const char*>(sqlite3_column_text(raw, 0));
        const auto* key = reinterpret_cast<const char*>(sqlite3_column_text(raw, 1));
        const flows::SeriesBuilder::Cell cell{
            static_cast<std::uint64_t>(sqlite3_column_int64(raw, 3)),
            static_cast<std::uint64_t>(sqlite3_column_int64(raw, 4)),
            static_cast<std::uint64_t>(sqlite3_column_int64(raw, 5))};
        const std::string_view d = dim ? dim : "";
        store.series().add_cell(
            d == "proto" ? flows::SeriesBuilder::kProto : flows::SeriesBuilder::kApp,
            key ? key : "", b, static_cast<std::uint64_t>(sqlite3_column_int64(raw, 2)), cell);
      }
      if (rc != SQLITE_DONE) throw failed();
    } catch (const flows::Error& e) {
      throw EngineError(e.what());
    }
  }
}

}  // namespace

Conversion merge_partitions(const Options& opts, const ProgressFn& progress,
                            const std::atomic<bool>* cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Part> parts = read_parts(opts);  // errors before touching the output
  if (!opts.flows_db.empty() && opts.part_stores.size() != opts.inputs.size()) {
    throw EngineError("a merge's flow store needs the flow store of every part: " +
                      std::to_string(opts.inputs.size()) + " parts, " +
                      std::to_string(opts.part_stores.size()) + " stores");
  }
  const json& base = parts[0].summary;
  Options in = opts;
  in.mode = Mode::Ingest;
  // The parts' labels are carried over as they are; without DPI they have none, and the
  // records are written without DPI elements, as the parts wrote them.
  in.dpi = base.value("dpi", false);
  in.biflow = base.value("biflow", true);
  IngestRole role;
  role.series_from_records = false;
  role.store_source = "pcap";
  role.store_dpi = base.value("dpi", false);
  // Nothing meters beside the store's thread: its indexes are built after the rows, sorted
  // (0.50 s against 0.69 s for the merge of 2 parts of the 2M-packet capture, 93,443 rows).
  role.store_indexes_last = true;
  role.before_publish = [&](flows::Writer* store) {
    if (store) sum_series(opts, *store);
  };
  // Labels of the parts are names already: no protocol id needs nDPI to name it.
  Conversion c = ingest_ipfix(in, progress, cancel, {}, role);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  c.summary = merged_summary(c.summary, parts, elapsed);
  c.packets = base.value("packets", std::uint64_t{0});
  c.bytes = base.value("bytes", std::uint64_t{0});
  return c;
}

}  // namespace ipfixweb::engine

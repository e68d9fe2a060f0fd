// The one definition of a conversion task's options. Everything that lists them is derived
// from kTaskSpecFields below: the api's request validation and the stored request text
// (api/src/validation.cpp), the msgpack codec (in this header), the stored spec JSON
// (spec_json.hpp), the OpenAPI schema (api/src/openapi.cpp), the worker's engine::Options
// (worker/src/engine_options.cpp, which fails to compile when a field is not mapped; its
// defaults are the engine's, tests/unit/test_task_spec.cpp) and the
// request table of docs/api.md (checked by tests/unit/test_task_spec.cpp).
//
// Adding an option: a member with its default in TaskSpec, an entry in kTaskSpecFields, a line
// in worker/src/engine_options.cpp; then run the unit tests, which print the docs table row.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <msgpack.hpp>

namespace ipfixweb::proto {

// Names accepted in "analysis_list": protocol families whose breakdown the task summary
// includes (docs/api.md).
inline constexpr std::array<std::string_view, 8> kAnalysisNames = {"tcp", "udp",  "icmp", "dns",
                                                                   "tls", "http", "quic", "other"};

// Task kinds ("kind"): what a task reads and writes (docs/api.md, "Task kinds").
inline constexpr std::string_view kKindConvert = "convert";  // captures -> IPFIX + flow store
inline constexpr std::string_view kKindIngest = "ingest";    // IPFIX files -> IPFIX + flow store
inline constexpr std::string_view kKindExtract = "extract";  // captures -> pcap of one flow
// Outputs of flow partitions 0..N-1 of one conversion -> the whole conversion's outputs.
inline constexpr std::string_view kKindMerge = "merge";
inline constexpr std::array<std::string_view, 4> kKindNames = {kKindConvert, kKindIngest,
                                                               kKindExtract, kKindMerge};

// What a worker needs to run a task: paths are resolved and checked by the api.
struct TaskSpec {
  static constexpr bool kDefaultDpi = true;
  static constexpr double kDefaultIdleTimeout = 300;
  static constexpr double kDefaultActiveTimeout = 1800;
  static constexpr std::uint64_t kDefaultMaxFlows = 1u << 20;

  std::vector<std::string> inputs;
  std::string output;
  bool dpi = kDefaultDpi;
  std::vector<std::string> analysis;
  double idle_timeout = kDefaultIdleTimeout;
  double active_timeout = kDefaultActiveTimeout;
  std::string filter;
  bool uniflow = false;
  std::uint64_t max_flows = kDefaultMaxFlows;
  bool flow_store = true;
  std::string kind = std::string(kKindConvert);
  std::string flow;           // kind extract: the flow selector (ipfixweb/flows/selector.hpp)
  std::uint32_t threads = 1;  // kind convert: metering threads (the worker caps them)
  // kind convert: meter only flow partition `partition` of `partitions` (engine::Options).
  std::uint32_t partition = 0;
  std::uint32_t partitions = 1;
};

// Request fields that are not part of the spec (they steer the broker, not the conversion).
struct RequestExtras {
  std::int32_t priority = 0;
  bool overwrite = false;
  std::uint32_t parallelism = 1;  // kind convert: parts on as many workers (split.hpp)
};

// Checks a field needs beyond its type and range; the api performs them.
enum class Check : std::uint8_t {
  None,
  InputPath,   // each string: an existing readable capture under an input root
  OutputPath,  // a file under the output root
  Bpf,         // compiles as a BPF filter
  Selector,    // parses as a flow selector (ipfixweb/flows/selector.hpp)
};

// How a field appears in requests, documents and messages.
struct FieldInfo {
  std::string_view key = {};          // msgpack map key and stored spec JSON key
  std::string_view request_key = {};  // key in the HTTP request body
  std::string_view alias = {};        // another accepted request key ("" when none)
  std::string_view type_text = {};    // for docs/api.md
  std::string_view meaning = {};      // for docs/api.md and the OpenAPI description
  bool required = false;
  // Numbers: the accepted range (min excluded when min_exclusive). Arrays: item counts.
  // Strings: max is the length limit (0: none).
  double min = 0, max = 0;
  bool min_exclusive = false;
  std::string_view range_error = {};  // the message when a number is out of range or of wrong type
  std::string_view empty_error = {};  // arrays: the message when empty (when min >= 1)
  std::string_view type_error = {};   // overrides "must be a ..., not <type>" ("" when none)
  // Strings and string arrays: the values accepted (lower case; requests may use any case).
  std::span<const std::string_view> allowed = {};
  std::string_view item_name = {};  // what an item of `allowed` is called in messages
  Check check = Check::None;
  // In the stored request text only when not at its default. Set on every field added after
  // the first release: a request that does not use it keeps the text, and so the
  // Idempotency-Key fingerprint, it had before the field existed.
  bool omit_default = false;
};

template <class Owner, class T>
struct Field {
  using owner_type = Owner;
  using value_type = T;
  T Owner::*member;
  FieldInfo info;
};

inline constexpr std::tuple kTaskSpecFields{
    Field<TaskSpec, std::vector<std::string>>{
        &TaskSpec::inputs,
        {.key = "inputs",
         .request_key = "pcap_files",
         .type_text = "array of strings, 1..1000",
         .meaning = "captures, relative to an input root (or absolute inside one); read as one "
                    "stream in time order",
         .required = true,
         .min = 1,
         .max = 1000,
         .range_error = "at most 1000 files",
         .empty_error = "must name at least one capture",
         .check = Check::InputPath}},
    Field<TaskSpec, std::string>{
        &TaskSpec::output,
        {.key = "output",
         .request_key = "output_path",
         .type_text = "string",
         .meaning = "IPFIX file, relative to the output root; missing directories are created",
         .required = true,
         .check = Check::OutputPath}},
    Field<TaskSpec, bool>{&TaskSpec::dpi,
                          {.key = "dpi",
                           .request_key = "DPI",
                           .alias = "dpi",
                           .type_text = "boolean",
                           .meaning = "label flows with nDPI"}},
    Field<TaskSpec, std::vector<std::string>>{
        &TaskSpec::analysis,
        {.key = "analysis",
         .request_key = "analysis_list",
         .type_text = "array of strings",
         .meaning = "protocol families whose breakdown the summary includes (case-insensitive; "
                    "duplicates dropped)",
         .allowed = kAnalysisNames,
         .item_name = "analysis"}},
    Field<TaskSpec, double>{
        &TaskSpec::idle_timeout,
        {.key = "idle_timeout",
         .request_key = "idle_timeout",
         .type_text = "seconds > 0",
         .meaning = "a flow ends after this long without packets, in packet time",
         .min = 0,
         .max = 31536000,
         .min_exclusive = true,
         .range_error = "must be a number of seconds greater than 0"}},
    Field<TaskSpec, double>{
        &TaskSpec::active_timeout,
        {.key = "active_timeout",
         .request_key = "active_timeout",
         .type_text = "seconds > 0",
         .meaning = "a longer flow is exported in parts of this length, in packet time",
         .min = 0,
         .max = 31536000,
         .min_exclusive = true,
         .range_error = "must be a number of seconds greater than 0"}},
    Field<TaskSpec, std::string>{
        &TaskSpec::filter,
        {.key = "filter",
         .request_key = "filter",
         .type_text = "string",
         .meaning = "BPF filter applied to the captures; compiled at submission (`422` when "
                    "invalid)",
         .max = 4096,
         .type_error = "must be a string (a BPF expression)",
         .check = Check::Bpf}},
    Field<TaskSpec, bool>{&TaskSpec::uniflow,
                          {.key = "uniflow",
                           .request_key = "uniflow",
                           .type_text = "boolean",
                           .meaning = "one record per direction instead of RFC 5103 biflows",
                           .omit_default = true}},
    Field<TaskSpec, std::uint64_t>{
        &TaskSpec::max_flows,
        {.key = "max_flows",
         .request_key = "max_flows",
         .type_text = "integer 1..16777216",
         .meaning = "flows kept in memory at once (about 260 bytes each); when full, the least "
                    "recently seen flow is exported early",
         .min = 1,
         .max = 16777216,
         .range_error = "must be an integer from 1 to 16777216",
         .omit_default = true}},
    Field<TaskSpec, bool>{
        &TaskSpec::flow_store,
        {.key = "flow_store",
         .request_key = "flow_store",
         .type_text = "boolean",
         .meaning = "also write the flow store (`<output>.flows.sqlite`: every record and the "
                    "time series, docs/flow-store.md) that the `/flows`, `/top` and "
                    "`/timeseries` routes read",
         .omit_default = true}},
    Field<TaskSpec, std::string>{
        &TaskSpec::kind,
        {.key = "kind",
         .request_key = "kind",
         .type_text = "string",
         .meaning = "what the task reads and writes (docs/api.md, Task kinds)",
         .allowed = kKindNames,
         .item_name = "task kind",
         .omit_default = true}},
    Field<TaskSpec, std::string>{
        &TaskSpec::flow,
        {.key = "flow",
         .request_key = "flow",
         .type_text = "string",
         .meaning = "kind `extract` only: the flow whose packets are written, e.g. `tcp "
                    "10.0.0.1:51234 <-> 10.0.0.2:443 vlan 5 ms 1700000000123-1700000004567` "
                    "(docs/api.md, Flow selectors)",
         .max = 512,
         .type_error = "must be a string (a flow selector)",
         .check = Check::Selector,
         .omit_default = true}},
    Field<TaskSpec, std::uint32_t>{
        &TaskSpec::threads,
        {.key = "threads",
         .request_key = "threads",
         .type_text = "integer 1..64",
         .meaning = "kind `convert`: threads that meter and label the flows (one more reads; "
                    "docs/engine.md, Threads), at most the worker's `--max-task-threads`; the "
                    "same records, with nDPI labels that may differ for a few flows",
         .min = 1,
         .max = 64,
         .range_error = "must be an integer from 1 to 64",
         .omit_default = true}},
    Field<TaskSpec, std::uint32_t>{
        &TaskSpec::partitions,
        {.key = "partitions",
         .request_key = "partitions",
         .type_text = "integer 1..256",
         .meaning = "kind `convert`: convert one of this many flow partitions (with "
                    "`partition`): every packet is read, only the flows of the partition are "
                    "metered; a `merge` task makes the outputs of partitions 0..N-1 into the "
                    "whole conversion's (docs/engine.md, Partitions)",
         .min = 1,
         .max = 256,
         .range_error = "must be an integer from 1 to 256",
         .omit_default = true}},
    Field<TaskSpec, std::uint32_t>{
        &TaskSpec::partition,
        {.key = "partition",
         .request_key = "partition",
         .type_text = "integer 0..255",
         .meaning = "kind `convert`: which flow partition to convert, 0 to `partitions` - 1",
         .min = 0,
         .max = 255,
         .range_error = "must be an integer from 0 to 255",
         .omit_default = true}},
};

inline constexpr std::tuple kRequestExtraFields{
    Field<RequestExtras, std::int32_t>{&RequestExtras::priority,
                                       {.key = "priority",
                                        .request_key = "priority",
                                        .type_text = "integer -100..100",
                                        .meaning = "higher runs first",
                                        .min = -100,
                                        .max = 100,
                                        .range_error = "must be an integer from -100 to 100"}},
    Field<RequestExtras, bool>{
        &RequestExtras::overwrite,
        {.key = "overwrite",
         .request_key = "overwrite",
         .type_text = "boolean",
         .meaning = "may replace the output of an earlier succeeded task (whose download then "
                    "answers `410`); an output a queued or running task writes is never taken",
         .omit_default = true}},
    Field<RequestExtras, std::uint32_t>{
        &RequestExtras::parallelism,
        {.key = "parallelism",
         .request_key = "parallelism",
         .type_text = "integer 1..64",
         .meaning = "kind `convert`: split the task into this many parts that run on different "
                    "workers (each meters one flow partition of the captures), then merge their "
                    "outputs into this task's (docs/api.md, Split tasks)",
         .min = 1,
         .max = 64,
         .range_error = "must be an integer from 1 to 64",
         .omit_default = true}},
};

// Calls f(field) for every field of the tuple, in order.
template <class Fields, class F>
constexpr void for_each_field(const Fields& fields, F&& f) {
  std::apply([&](const auto&... field) { (f(field), ...); }, fields);
}

inline constexpr std::size_t kTaskSpecFieldCount = std::tuple_size_v<decltype(kTaskSpecFields)>;

}  // namespace ipfixweb::proto

// TaskSpec on the wire: a map keyed by FieldInfo::key, in kTaskSpecFields order (what
// MSGPACK_DEFINE_MAP wrote before). Unknown keys are ignored and missing keys keep their
// defaults, so fields can be added without a new protocol version.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<ipfixweb::proto::TaskSpec> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o, const ipfixweb::proto::TaskSpec& v) const {
      o.pack_map(ipfixweb::proto::kTaskSpecFieldCount);
      ipfixweb::proto::for_each_field(ipfixweb::proto::kTaskSpecFields, [&](const auto& f) {
        o.pack(f.info.key);
        o.pack(v.*f.member);
      });
      return o;
    }
  };
  template <>
  struct convert<ipfixweb::proto::TaskSpec> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      ipfixweb::proto::TaskSpec& v) const {
      if (o.type != msgpack::type::MAP) throw msgpack::type_error();
      for (const auto& kv : std::span(o.via.map.ptr, o.via.map.size)) {
        if (kv.key.type != msgpack::type::STR) continue;
        const std::string_view k(kv.key.via.str.ptr, kv.key.via.str.size);
        ipfixweb::proto::for_each_field(ipfixweb::proto::kTaskSpecFields, [&](const auto& f) {
          if (f.info.key == k) kv.val.convert(v.*f.member);
        });
      }
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

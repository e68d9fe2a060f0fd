#include "ipfixweb/worker/engine_options.hpp"

#include "ipfixweb/flows/schema.hpp"

namespace ipfixweb::worker {

engine::Options to_engine_options(const proto::TaskSpec& spec) {
  static_assert(proto::kTaskSpecFieldCount == 15,
                "a TaskSpec field was added or removed: map it to engine::Options here, then "
                "update this count");
  engine::Options o;
  o.inputs = spec.inputs;
  o.output = spec.output;
  o.dpi = spec.dpi;
  o.analysis = spec.analysis;
  o.idle_timeout_s = spec.idle_timeout;
  o.active_timeout_s = spec.active_timeout;
  o.bpf_filter = spec.filter;
  o.biflow = !spec.uniflow;
  o.max_flows = spec.max_flows;
  o.mode = spec.kind == proto::kKindIngest    ? engine::Mode::Ingest
           : spec.kind == proto::kKindExtract ? engine::Mode::Extract
           : spec.kind == proto::kKindMerge   ? engine::Mode::Merge
                                              : engine::Mode::Convert;
  o.partition = spec.partition;
  o.partitions = spec.partitions;
  o.flow = spec.flow;
  o.threads = spec.threads;  // run_task caps it at the worker's --max-task-threads
  // named in run_task; an extract writes a pcap and no flow store
  if (spec.flow_store && o.mode != engine::Mode::Extract)
    o.flows_db = flows::store_name_for(spec.output);
  return o;
}

}  // namespace ipfixweb::worker

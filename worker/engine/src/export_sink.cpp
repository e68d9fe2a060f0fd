#include "export_sink.hpp"

#include <algorithm>
#include <mutex>

#include "community_id.hpp"

namespace ipfixweb::engine {

void store_endpoints(const FlowKey& k, flows::FlowRow& r) {
  if (k.ip_version == 4) {
    r.src = flows::v4_key(k.src.data());
    r.dst = flows::v4_key(k.dst.data());
  } else {
    r.src = k.src;
    r.dst = k.dst;
  }
  r.sport = k.sport;
  r.dport = k.dport;
}

void store_records(const Flow& f, EndReason reason, const FlowLabel& label, bool biflow,
                   flows::Writer& store) {
  flows::FlowRow r;
  r.ip_version = f.key.ip_version;
  r.proto = f.key.proto;
  r.vlan = f.key.vlan;
  r.end_reason = static_cast<std::uint8_t>(reason);
  r.community_id = label.community_id;
  if (label.name) {
    r.has_app = true;
    r.app_id = label.id;
    r.app = *label.name;
    if (label.server) r.server_name = *label.server;
    if (label.ja3c) r.ja3c = *label.ja3c;
    r.risk = label.risk;
    r.risk_score = label.risk_score;
    if (label.risks) r.risks = *label.risks;
  }
  const bool icmp = f.key.proto == 1 || f.key.proto == 58;
  const auto endpoints = [&](const FlowKey& k) { store_endpoints(k, r); };
  const auto forward = [&](const DirectionStats& d) {
    r.fwd_packets = d.packets;
    r.fwd_bytes = d.octets;
    r.tcp_flags = d.tcp_flags;
    r.tos = d.tos;
    r.icmp_type_code = icmp ? d.icmp_type_code : 0;
  };
  if (biflow) {
    endpoints(f.key);
    forward(f.fwd);
    r.start_ms = f.start_ms;
    r.end_ms = f.end_ms;
    r.has_rev = true;
    r.rev_packets = f.rev.packets;
    r.rev_bytes = f.rev.octets;
    r.rev_tcp_flags = f.rev.tcp_flags;
    r.rev_tos = f.rev.tos;
    r.rev_icmp_type_code = icmp ? f.rev.icmp_type_code : 0;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
    return;
  }
  if (f.fwd.packets) {
    endpoints(f.key);
    forward(f.fwd);
    r.start_ms = f.fwd.first_ms;
    r.end_ms = f.fwd.last_ms;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
  }
  if (f.rev.packets) {
    endpoints(f.key.reversed());
    forward(f.rev);
    r.start_ms = f.rev.first_ms;
    r.end_ms = f.rev.last_ms;
    store.add(r);
    store.series().count_record(r.start_ms, r.app, r.proto);
  }
}

void ExportSink::on_flow_end(Flow& f, EndReason reason) {
  FlowLabel label;
  label.community_id = community_id(f);
  const std::string* name = nullptr;
  if (dpi_) {
    dpi_->finish(f);
    name = &dpi_->name(f.master_proto, f.app_proto);
    label.name = name;
    label.id = Dpi::label_id(f);
    label.server = &f.host;
    label.server_kind = static_cast<FlowLabel::ServerKind>(Dpi::server_kind(f));
    ja3_ = Dpi::ja3c_hex(f);
    label.ja3c = &ja3_;
    label.risk = f.risk;
    label.risk_score = f.risk_score;
    label.risks = &dpi_->risk_names(f.risk);
  }
  if (lock_) {
    const std::lock_guard<SpinMutex> guard(*lock_);
    write(f, reason, label, name);
  } else {
    write(f, reason, label, name);
  }
}

void ExportSink::write(Flow& f, EndReason reason, const FlowLabel& label, const std::string* name) {
  const unsigned n = exporter_.write(f, reason, label, std::max(now_ms_, f.end_ms));
  summary_.on_record(f, reason, n, name);
  if (store_) {
    store_records(f, reason, label, biflow_, *store_);
    store_->series().on_flow(f.buckets, name ? std::string_view(*name) : std::string_view(),
                             f.key.proto);
  }
}

}  // namespace ipfixweb::engine

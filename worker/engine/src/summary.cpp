#include "summary.hpp"

#include "ipfixweb/shared/json_writer.hpp"

#include <netdb.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <initializer_list>
#include <string_view>

namespace ipfixweb::engine {
namespace {

constexpr std::size_t kTopN = 10;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string protocol_name(std::uint8_t p) {
  switch (p) {
    case 1:
      return "ICMP";
    case 6:
      return "TCP";
    case 17:
      return "UDP";
    case 58:
      return "ICMPv6";
    case 47:
      return "GRE";
    case 132:
      return "SCTP";
    case 2:
      return "IGMP";
    case 50:
      return "ESP";
    case 89:
      return "OSPF";
    default:
      return "IP-" + std::to_string(p);
  }
}

}  // namespace

std::string iso8601_ms(std::uint64_t ts_us) {
  const auto secs = static_cast<std::time_t>(ts_us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%.*s.%03uZ", static_cast<int>(n), buf,
                static_cast<unsigned>((ts_us / 1000) % 1000));
  return out;
}

namespace {

bool label_has_part(const std::string& label_lower, std::string_view part) {
  std::size_t start = 0;
  while (start <= label_lower.size()) {
    const std::size_t dot = label_lower.find('.', start);
    const std::size_t end = dot == std::string::npos ? label_lower.size() : dot;
    if (std::string_view(label_lower).substr(start, end - start) == part) return true;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return false;
}

bool either_port(const FlowKey& k, std::initializer_list<std::uint16_t> ports) {
  for (const std::uint16_t p : ports) {
    if (k.sport == p || k.dport == p) return true;
  }
  return false;
}

constexpr std::uint8_t kTcp = 6;
constexpr std::uint8_t kUdp = 17;

}  // namespace

bool analysis_family_match(const std::string& family, const FlowKey& key,
                           const std::string* label) {
  if (family == "tcp") return key.proto == kTcp;
  if (family == "udp") return key.proto == kUdp;
  if (family == "icmp") return key.proto == 1 || key.proto == 58;
  if (family == "other") return false;
  if (!label) {  // DPI off: well-known ports
    const bool tcp = key.proto == kTcp;
    const bool udp = key.proto == kUdp;
    if (family == "dns") return (tcp || udp) && either_port(key, {53});
    if (family == "tls") return tcp && either_port(key, {443, 465, 853, 993, 995, 8443});
    if (family == "http") return tcp && either_port(key, {80, 8000, 8080});
    if (family == "quic") return udp && either_port(key, {443});
    return false;
  }
  const std::string l = lower(*label);
  if (family == "http") {
    return label_has_part(l, "http") || label_has_part(l, "http_proxy") ||
           label_has_part(l, "http_connect");
  }
  return label_has_part(l, family);
}

std::size_t Summary::HostKeyHash::operator()(const HostKey& k) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (const std::uint8_t c : k) h = (h ^ c) * 1099511628211ULL;
  return static_cast<std::size_t>(h);
}

Summary::Summary(std::vector<std::string> analysis_families, bool dpi) : dpi_(dpi) {
  for (auto& f : analysis_families) {
    std::string l = lower(std::move(f));
    if (std::find(families_.begin(), families_.end(), l) == families_.end()) {
      families_.push_back(std::move(l));
    }
  }
  family_stats_.resize(families_.size());
  if (!dpi_) {
    for (const auto& f : families_) {
      if (f != "tcp" && f != "udp" && f != "icmp" && f != "other") {
        warn(
            "DPI is off: analysis families dns/tls/http/quic are matched by well-known ports "
            "(dns 53; tls TCP 443,465,853,993,995,8443; http TCP 80,8000,8080; quic UDP 443)");
        break;
      }
    }
  }
}

void Summary::on_packet(std::uint64_t ts_us, std::uint32_t ip_octets) {
  if (packets_ == 0) {
    first_us_ = last_us_ = ts_us;
  } else {
    first_us_ = std::min(first_us_, ts_us);
    last_us_ = std::max(last_us_, ts_us);
  }
  ++packets_;
  bytes_ += ip_octets;
}

void Summary::on_traffic(std::uint64_t first_us, std::uint64_t last_us, std::uint64_t packets,
                         std::uint64_t bytes) {
  if (last_us < first_us) last_us = first_us;
  if (!seen_traffic_) {
    first_us_ = first_us;
    last_us_ = last_us;
    seen_traffic_ = true;
  } else {
    first_us_ = std::min(first_us_, first_us);
    last_us_ = std::max(last_us_, last_us);
  }
  packets_ += packets;
  bytes_ += bytes;
}

void Summary::on_record(const Flow& f, EndReason reason, unsigned records, const std::string* app) {
  records_ += records;
  ++biflows_;
  const auto r = static_cast<std::size_t>(reason);
  if (r < reasons_.size()) ++reasons_[r];
  const std::uint64_t p = f.fwd.packets + f.rev.packets;
  const std::uint64_t b = f.fwd.octets + f.rev.octets;
  protocols_[f.key.proto].add(p, b);
  if (app) apps_[*app].add(p, b);
  if (families_.empty()) return;
  const std::string* label = dpi_ ? app : nullptr;
  bool in_any = false;
  std::size_t other = families_.size();
  for (std::size_t i = 0; i < families_.size(); ++i) {
    if (families_[i] == "other") {
      other = i;
      continue;
    }
    if (!analysis_family_match(families_[i], f.key, label)) continue;
    in_any = true;
    add_to_family(family_stats_[i], f, label, p, b);
  }
  if (other < families_.size() && !in_any) add_to_family(family_stats_[other], f, label, p, b);
}

void Summary::add_to_family(Family& fs, const Flow& f, const std::string* app, std::uint64_t p,
                            std::uint64_t b) {
  fs.total.add(p, b);
  HostKey h{};
  std::copy(f.key.src.begin(), f.key.src.end(), h.begin());
  h[16] = f.key.ip_version;
  fs.hosts[h].add(p, b);
  if (f.key.dst != f.key.src) {
    std::copy(f.key.dst.begin(), f.key.dst.end(), h.begin());
    fs.hosts[h].add(p, b);
  }
  if (app) fs.apps[*app].add(p, b);
  if (!f.host.empty()) fs.server_names[f.host].add(p, b);
}

namespace {

using Out = JsonWriter;  // what nlohmann's dump() writes, written directly

void counter_fields(Out& o, const Counter& c) {
  o.key("bytes").value(c.bytes);
  o.key("flows").value(c.flows);
  o.key("packets").value(c.packets);
}

// The top kTopN entries of `m` (by bytes or flows, then name) as objects: the counter and the
// name under `key_name`, keys in byte order.
template <typename Map>
void write_top(Out& o, const Map& m, bool by_bytes, const char* key_name) {
  std::vector<std::pair<const std::string*, const Counter*>> v;
  v.reserve(m.size());
  for (const auto& [name, c] : m) v.emplace_back(&name, &c);
  const auto before = [by_bytes](const auto& a, const auto& b) {
    const auto ka = by_bytes ? a.second->bytes : a.second->flows;
    const auto kb = by_bytes ? b.second->bytes : b.second->flows;
    return ka != kb ? ka > kb : *a.first < *b.first;
  };
  const std::size_t n = std::min(kTopN, v.size());
  std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), v.end(), before);
  const std::string_view kname(key_name);
  o.begin_array();
  for (std::size_t i = 0; i < n; ++i) {
    const auto& [name, c] = v[i];
    o.begin_object();
    // "application" < "bytes" < "flows" < "host" < "packets" < "server_name"
    if (kname < "bytes") o.key(kname).value(*name);
    o.key("bytes").value(c->bytes);
    o.key("flows").value(c->flows);
    if (kname > "flows" && kname < "packets") o.key(kname).value(*name);
    o.key("packets").value(c->packets);
    if (kname > "packets") o.key(kname).value(*name);
    o.end_object();
  }
  o.end_array();
}

}  // namespace

void Summary::write_analysis(JsonWriter& o) const {
  std::vector<std::size_t> order(families_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [this](std::size_t a, std::size_t b) { return families_[a] < families_[b]; });
  o.begin_object();
  for (const std::size_t i : order) {
    const Family& fs = family_stats_[i];
    o.key(families_[i]).begin_object();
    counter_fields(o, fs.total);
    o.key("top_applications");
    write_top(o, fs.apps, true, "application");
    std::unordered_map<std::string, Counter> hosts;
    for (const auto& [k, c] : fs.hosts) {
      std::array<std::uint8_t, 16> addr{};
      std::copy(k.begin(), k.begin() + 16, addr.begin());
      hosts.emplace(format_address(addr, k[16]), c);
    }
    o.key("top_hosts");
    write_top(o, hosts, true, "host");
    o.key("top_server_names");
    write_top(o, fs.server_names, true, "server_name");
    o.end_object();
  }
  o.end_object();
}

void Summary::write_inputs(JsonWriter& o) const {
  o.begin_array();
  for (const auto& i : inputs) {
    o.begin_object();
    if (!i.compression.empty()) o.key("compression").value(std::string_view(i.compression));
    o.key("file_bytes").value(i.file_bytes);
    o.key("link_name").value(std::string_view(i.link_name));
    o.key("link_type").value(static_cast<std::uint64_t>(i.link_type));
    if (i.ipfix) o.key("messages").value(i.messages);
    o.key("packets").value(i.packets);
    o.key("path").value(std::string_view(i.path));
    if (i.ipfix) o.key("records").value(i.records);
    o.key("truncated").value(i.truncated);
    o.end_object();
  }
  o.end_array();
}

void Summary::write_ipfix(JsonWriter& o) const {
  const IpfixIngestStats& s = *ipfix;
  o.begin_object();
  o.key("biflow_records").value(s.biflow_records);
  o.key("data_records").value(s.data_records);
  o.key("labelled_records").value(s.labelled_records);
  o.key("messages").value(s.messages);
  o.key("not_exported").value(s.not_exported);
  o.key("observation_domains").value(s.observation_domains);
  o.key("options_records").value(s.options_records);
  o.key("options_templates").value(s.options_templates);
  o.key("skipped_no_address").value(s.skipped_no_address);
  o.key("skipped_implausible_counts").value(s.skipped_implausible_counts);
  o.key("sysuptime_from_export_time").value(s.sysuptime_from_export_time);
  o.key("templates").value(s.templates);
  o.key("times_from_export_time").value(s.times_from_export_time);
  o.key("uniflow_records").value(s.uniflow_records);
  o.end_object();
}

void Summary::write_not_metered(JsonWriter& o) const {
  std::vector<std::pair<std::string_view, std::uint64_t>> nm;
  std::uint64_t total = 0;
  for (int i = 1; i < kDecodeStatusCount; ++i) {
    const auto n = not_metered_[static_cast<std::size_t>(i)];
    nm.emplace_back(decode_status_name(static_cast<DecodeStatus>(i)), n);
    total += n;
  }
  nm.emplace_back("total", total);
  std::sort(nm.begin(), nm.end());
  o.begin_object();
  for (const auto& [k, n] : nm) o.key(k).value(n);
  o.end_object();
}

void Summary::write_protocols(JsonWriter& o) const {
  std::vector<std::pair<std::string, const Counter*>> protos;
  for (const auto& [p, c] : protocols_) protos.emplace_back(protocol_name(p), &c);
  std::sort(protos.begin(), protos.end());
  o.begin_object();
  for (const auto& [name, c] : protos) {
    o.key(name).begin_object();
    counter_fields(o, *c);
    o.end_object();
  }
  o.end_object();
}

void Summary::write_json(std::string& out, const Extras& x) const {
  Out o(out);
  o.begin_object();
  if (!families_.empty()) {
    o.key("analysis");
    write_analysis(o);
    o.key("analysis_method").value(std::string_view(dpi_ ? "dpi" : "ports"));
  }
  o.key("applications_distinct").value(static_cast<std::uint64_t>(apps_.size()));
  o.key("biflow").value(x.biflow);
  o.key("biflows").value(biflows_);
  o.key("bytes").value(bytes_);
  o.key("dpi").value(x.dpi);
  if (x.has_dpi_stats) {
    o.key("dpi_stats").begin_object();
    o.key("classified").value(x.classified);
    o.key("guessed").value(x.guessed);
    o.key("packets_inspected").value(x.packets_inspected);
    o.key("unknown").value(x.unknown);
    o.end_object();
  }
  o.key("duration_s").value(packets_ ? static_cast<double>(last_us_ - first_us_) / 1e6 : 0.0);
  o.key("elapsed_s").value(elapsed_s);
  o.key("first_packet");
  if (packets_) {
    o.value(std::string_view(iso8601_ms(first_us_)));
  } else {
    o.null();
  }
  o.key("flow_end_reasons").begin_object();
  o.key("active_timeout").value(reasons_[2]);
  o.key("end_of_flow").value(reasons_[3]);
  o.key("end_of_input").value(reasons_[4]);
  o.key("idle_timeout").value(reasons_[1]);
  o.key("lack_of_resources").value(reasons_[5]);
  o.end_object();
  o.key("flows").value(records_);
  o.key("fragments_unmatched").value(fragments_unmatched);
  o.key("inputs");
  write_inputs(o);
  if (ipfix) {
    o.key("ipfix");
    write_ipfix(o);
  }
  o.key("last_packet");
  if (packets_) {
    o.value(std::string_view(iso8601_ms(last_us_)));
  } else {
    o.null();
  }
  o.key("not_metered");
  write_not_metered(o);
  o.key("out_of_order_packets").value(out_of_order_packets);
  o.key("output").value(std::string_view(x.output));
  o.key("packets").value(packets_);
  o.key("packets_per_s").value(elapsed_s > 0 ? static_cast<double>(packets_read) / elapsed_s : 0.0);
  o.key("packets_read").value(packets_read);
  if (x.partitions > 1) {
    o.key("partition").begin_object();
    o.key("index").value(static_cast<std::uint64_t>(x.partition));
    o.key("of").value(static_cast<std::uint64_t>(x.partitions));
    o.end_object();
  }
  o.key("peak_flows").value(peak_flows);
  o.key("protocols");
  write_protocols(o);
  if (ipfix) o.key("source").value(std::string_view("ipfix"));
  o.key("top_applications_by_bytes");
  write_top(o, apps_, true, "application");
  o.key("top_applications_by_flows");
  write_top(o, apps_, false, "application");
  o.key("tunnelled_packets").value(tunnelled_packets);
  o.key("warnings").begin_array();
  for (const auto& w : warnings_) o.value(std::string_view(w));
  o.end_array();
  o.end_object();
}

}  // namespace ipfixweb::engine

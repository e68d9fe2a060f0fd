#include "summary.hpp"

#include <netdb.h>

#include <algorithm>
#include <cctype>
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

nlohmann::json counter_json(const Counter& c) {
  return {{"flows", c.flows}, {"packets", c.packets}, {"bytes", c.bytes}};
}

template <typename Map>
nlohmann::json top(const Map& m, bool by_bytes, const char* key_name) {
  std::vector<std::pair<std::string, Counter>> v(m.begin(), m.end());
  std::sort(v.begin(), v.end(), [&](const auto& a, const auto& b) {
    const auto ka = by_bytes ? a.second.bytes : a.second.flows;
    const auto kb = by_bytes ? b.second.bytes : b.second.flows;
    return ka != kb ? ka > kb : a.first < b.first;
  });
  if (v.size() > kTopN) v.resize(kTopN);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, c] : v) {
    nlohmann::json j = counter_json(c);
    j[key_name] = name;
    out.push_back(std::move(j));
  }
  return out;
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

nlohmann::json Summary::to_json() const {
  using nlohmann::json;
  json j;
  j["packets"] = packets_;
  j["bytes"] = bytes_;
  j["flows"] = records_;
  j["biflows"] = biflows_;
  j["packets_read"] = packets_read;
  j["first_packet"] = packets_ ? json(iso8601_ms(first_us_)) : json(nullptr);
  j["last_packet"] = packets_ ? json(iso8601_ms(last_us_)) : json(nullptr);
  j["duration_s"] = packets_ ? static_cast<double>(last_us_ - first_us_) / 1e6 : 0.0;
  json nm = json::object();
  std::uint64_t nm_total = 0;
  for (int i = 1; i < kDecodeStatusCount; ++i) {
    nm[decode_status_name(static_cast<DecodeStatus>(i))] =
        not_metered_[static_cast<std::size_t>(i)];
    nm_total += not_metered_[static_cast<std::size_t>(i)];
  }
  nm["total"] = nm_total;
  j["not_metered"] = nm;
  j["fragments_unmatched"] = fragments_unmatched;
  j["tunnelled_packets"] = tunnelled_packets;
  j["out_of_order_packets"] = out_of_order_packets;
  j["peak_flows"] = peak_flows;
  j["flow_end_reasons"] = {{"idle_timeout", reasons_[1]},
                           {"active_timeout", reasons_[2]},
                           {"end_of_flow", reasons_[3]},
                           {"end_of_input", reasons_[4]},
                           {"lack_of_resources", reasons_[5]}};
  json protos = json::object();
  for (const auto& [p, c] : protocols_) protos[protocol_name(p)] = counter_json(c);
  j["protocols"] = protos;
  j["top_applications_by_bytes"] = top(apps_, true, "application");
  j["top_applications_by_flows"] = top(apps_, false, "application");
  j["applications_distinct"] = apps_.size();
  if (!families_.empty()) {
    json a = json::object();
    for (std::size_t i = 0; i < families_.size(); ++i) {
      const Family& fs = family_stats_[i];
      json fj = counter_json(fs.total);
      std::unordered_map<std::string, Counter> hosts;
      for (const auto& [k, c] : fs.hosts) {
        std::array<std::uint8_t, 16> addr{};
        std::copy(k.begin(), k.begin() + 16, addr.begin());
        hosts.emplace(format_address(addr, k[16]), c);
      }
      fj["top_hosts"] = top(hosts, true, "host");
      fj["top_applications"] = top(fs.apps, true, "application");
      fj["top_server_names"] = top(fs.server_names, true, "server_name");
      a[families_[i]] = std::move(fj);
    }
    j["analysis"] = a;
    j["analysis_method"] = dpi_ ? "dpi" : "ports";
  }
  json in = json::array();
  for (const auto& i : inputs) {
    in.push_back({{"path", i.path},
                  {"link_type", i.link_type},
                  {"link_name", i.link_name},
                  {"packets", i.packets},
                  {"file_bytes", i.file_bytes},
                  {"truncated", i.truncated}});
  }
  j["inputs"] = in;
  j["warnings"] = warnings_;
  j["elapsed_s"] = elapsed_s;
  j["packets_per_s"] = elapsed_s > 0 ? static_cast<double>(packets_read) / elapsed_s : 0.0;
  return j;
}

}  // namespace ipfixweb::engine

#include "summary.hpp"

#include <netdb.h>

#include <algorithm>
#include <cctype>
#include <ctime>

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
    case 1: return "ICMP";
    case 6: return "TCP";
    case 17: return "UDP";
    case 58: return "ICMPv6";
    case 47: return "GRE";
    case 132: return "SCTP";
    case 2: return "IGMP";
    case 50: return "ESP";
    case 89: return "OSPF";
    default: return "IP-" + std::to_string(p);
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

Summary::Summary(std::vector<std::string> analysis_families) {
  for (auto& f : analysis_families) families_.push_back(lower(std::move(f)));
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
  if (!app) return;
  apps_[*app].add(p, b);
  if (families_.empty()) return;
  // A flow belongs to family X when X is one of the dot-separated parts of its label.
  const std::string l = lower(*app);
  for (const auto& fam : families_) {
    std::size_t start = 0;
    bool match = false;
    while (start <= l.size()) {
      const std::size_t dot = l.find('.', start);
      const std::size_t end = dot == std::string::npos ? l.size() : dot;
      if (l.compare(start, end - start, fam) == 0) {
        match = true;
        break;
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (!match) continue;
    Family& fs = family_stats_[fam];
    fs.total.add(p, b);
    fs.hosts[f.host.empty() ? std::string("(none)") : f.host].add(p, b);
  }
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
    nm[decode_status_name(static_cast<DecodeStatus>(i))] = not_metered_[static_cast<std::size_t>(i)];
    nm_total += not_metered_[static_cast<std::size_t>(i)];
  }
  nm["total"] = nm_total;
  j["not_metered"] = nm;
  j["fragments_unmatched"] = fragments_unmatched;
  j["tunnelled_packets"] = tunnelled_packets;
  j["out_of_order_packets"] = out_of_order_packets;
  j["peak_flows"] = peak_flows;
  j["flow_end_reasons"] = {{"idle_timeout", reasons_[1]},     {"active_timeout", reasons_[2]},
                           {"end_of_flow", reasons_[3]},      {"end_of_input", reasons_[4]},
                           {"lack_of_resources", reasons_[5]}};
  json protos = json::object();
  for (const auto& [p, c] : protocols_) protos[protocol_name(p)] = counter_json(c);
  j["protocols"] = protos;
  j["top_applications_by_bytes"] = top(apps_, true, "application");
  j["top_applications_by_flows"] = top(apps_, false, "application");
  j["applications_distinct"] = apps_.size();
  if (!families_.empty()) {
    json a = json::object();
    for (const auto& fam : families_) {
      const auto it = family_stats_.find(fam);
      if (it == family_stats_.end()) {
        a[fam] = counter_json(Counter{});
        a[fam]["top_hosts"] = json::array();
        continue;
      }
      a[fam] = counter_json(it->second.total);
      a[fam]["top_hosts"] = top(it->second.hosts, true, "host");
    }
    j["analysis"] = a;
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

#include "ipfixweb/api/metrics.hpp"

#include <cstdio>

namespace ipfixweb::api {

int Metrics::route(const std::string& method, const std::string& path_template) {
  auto r = std::make_unique<Route>();
  r->method = method;
  r->path = path_template;
  routes_.push_back(std::move(r));
  return static_cast<int>(routes_.size() - 1);
}

void Metrics::observe(int route, int status, double seconds) {
  if (route < 0 || route >= static_cast<int>(routes_.size())) return;
  Route& r = *routes_[route];
  std::size_t ci = kCodes.size() - 1;
  for (std::size_t i = 0; i + 1 < kCodes.size(); ++i)
    if (kCodes[i] == status) ci = i;
  r.codes[ci].fetch_add(1, std::memory_order_relaxed);
  std::size_t bi = kBuckets.size();
  for (std::size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) {
      bi = i;
      break;
    }
  r.buckets[bi].fetch_add(1, std::memory_order_relaxed);
  r.count.fetch_add(1, std::memory_order_relaxed);
  r.sum_us.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

std::string Metrics::render() const {
  std::string out;
  char buf[512];
  out +=
      "# HELP ipfixweb_http_requests_total HTTP requests by route and status code.\n"
      "# TYPE ipfixweb_http_requests_total counter\n";
  for (auto& r : routes_) {
    for (std::size_t i = 0; i < kCodes.size(); ++i) {
      auto n = r->codes[i].load(std::memory_order_relaxed);
      if (!n) continue;
      std::string code = kCodes[i] ? std::to_string(kCodes[i]) : "other";
      std::snprintf(buf, sizeof buf,
                    "ipfixweb_http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %llu\n",
                    r->method.c_str(), r->path.c_str(), code.c_str(),
                    static_cast<unsigned long long>(n));
      out += buf;
    }
  }
  out +=
      "# HELP ipfixweb_http_request_duration_seconds Time to answer HTTP requests.\n"
      "# TYPE ipfixweb_http_request_duration_seconds histogram\n";
  for (auto& r : routes_) {
    auto count = r->count.load(std::memory_order_relaxed);
    if (!count) continue;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kBuckets.size(); ++i) {
      cumulative += r->buckets[i].load(std::memory_order_relaxed);
      std::string le = i < kBuckets.size() ? std::to_string(kBuckets[i]) : "+Inf";
      if (i < kBuckets.size()) {
        std::snprintf(buf, sizeof buf, "%g", kBuckets[i]);
        le = buf;
      }
      std::snprintf(buf, sizeof buf,
                    "ipfixweb_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                    "le=\"%s\"} %llu\n",
                    r->method.c_str(), r->path.c_str(), le.c_str(),
                    static_cast<unsigned long long>(cumulative));
      out += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "ipfixweb_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
                  "ipfixweb_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} "
                  "%llu\n",
                  r->method.c_str(), r->path.c_str(),
                  static_cast<double>(r->sum_us.load(std::memory_order_relaxed)) / 1e6,
                  r->method.c_str(), r->path.c_str(), static_cast<unsigned long long>(count));
    out += buf;
  }
  auto counter = [&](const char* name, const char* help, const char* labels, std::uint64_t v) {
    std::snprintf(buf, sizeof buf, "# HELP %s %s\n# TYPE %s counter\n%s%s %llu\n", name, help, name,
                  name, labels, static_cast<unsigned long long>(v));
    out += buf;
  };
  counter("ipfixweb_api_submissions_total", "Task submissions received by the api.", "",
          submitted.load());
  std::snprintf(buf, sizeof buf,
                "# HELP ipfixweb_api_submission_results_total Outcome of task submissions.\n"
                "# TYPE ipfixweb_api_submission_results_total counter\n"
                "ipfixweb_api_submission_results_total{result=\"accepted\"} %llu\n"
                "ipfixweb_api_submission_results_total{result=\"refused_capacity\"} %llu\n"
                "ipfixweb_api_submission_results_total{result=\"broker_unavailable\"} %llu\n"
                "ipfixweb_api_submission_results_total{result=\"invalid\"} %llu\n",
                static_cast<unsigned long long>(accepted.load()),
                static_cast<unsigned long long>(refused_capacity.load()),
                static_cast<unsigned long long>(refused_unavailable.load()),
                static_cast<unsigned long long>(invalid.load()));
  out += buf;
  return out;
}

}  // namespace ipfixweb::api

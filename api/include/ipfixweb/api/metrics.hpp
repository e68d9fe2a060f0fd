// Lock-free request metrics for the api's /metrics (Prometheus text format).
// Labels are route templates, never task ids.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ipfixweb::api {

class Metrics {
 public:
  static constexpr std::array<double, 13> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  static constexpr std::array<int, 18> kCodes = {200, 201, 202, 204, 400, 401, 403, 404, 409, 412,
                                                 413, 415, 422, 460, 500, 503, 507, 0 /* other */};

  // Registers a route label; returns its index (call before serving).
  int route(const std::string& method, const std::string& path_template);
  void observe(int route, int status, double seconds);

  // Task submissions as the api saw them.
  std::atomic<std::uint64_t> submitted{0}, accepted{0}, refused_capacity{0}, refused_unavailable{0},
      invalid{0};

  // Prometheus text exposition of the request metrics and the counters above.
  std::string render() const;

 private:
  struct Route {
    std::string method, path;
    std::array<std::atomic<std::uint64_t>, kCodes.size()> codes{};
    std::array<std::atomic<std::uint64_t>, kBuckets.size() + 1> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_us{0};
  };
  std::vector<std::unique_ptr<Route>> routes_;
};

}  // namespace ipfixweb::api

// What the broker counts since it started, reported in pongs (the api's /metrics), and the
// moving average of run times that its Retry-After estimate rests on.
#pragma once

#include <cstdint>
#include <iterator>
#include <vector>

#include "ipfixweb/shared/protocol.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

namespace ipfixweb::broker {

class Statistics {
 public:
  // A task reached a terminal state.
  void finished(TaskState st);
  // A task went back to the queue after a run that did not finish it.
  void requeued() { ++requeued_; }
  // A run reported by its worker took `seconds` from dispatch (or recovery) to result.
  void ran(double seconds);
  // Moving average of run times (seconds; 1 before the first result).
  double average_run_s() const { return average_run_s_; }
  // The counters and the histogram (bounds proto::kDurationBuckets) into a pong.
  void fill(proto::Pong& pong) const;

 private:
  std::uint64_t succeeded_ = 0, failed_ = 0, cancelled_ = 0, requeued_ = 0;
  std::vector<std::uint64_t> durations_ =
      std::vector<std::uint64_t>(std::size(proto::kDurationBuckets) + 1, 0);
  double duration_sum_ = 0;
  double average_run_s_ = 1.0;
};

}  // namespace ipfixweb::broker

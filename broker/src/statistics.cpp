#include "ipfixweb/broker/statistics.hpp"

#include <algorithm>

namespace ipfixweb::broker {

void Statistics::finished(TaskState st) {
  (st == TaskState::Succeeded ? succeeded_ : st == TaskState::Failed ? failed_ : cancelled_)++;
}

void Statistics::ran(double seconds) {
  average_run_s_ = 0.8 * average_run_s_ + 0.2 * std::max(0.001, seconds);
  std::size_t b = 0;
  while (b < std::size(proto::kDurationBuckets) && seconds > proto::kDurationBuckets[b]) ++b;
  ++durations_[b];
  duration_sum_ += seconds;
}

void Statistics::fill(proto::Pong& pong) const {
  pong.succeeded = succeeded_;
  pong.failed = failed_;
  pong.cancelled = cancelled_;
  pong.requeued = requeued_;
  pong.duration_counts = durations_;
  pong.duration_sum = duration_sum_;
}

}  // namespace ipfixweb::broker

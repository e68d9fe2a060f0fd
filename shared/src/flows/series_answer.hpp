// The time series answer built from (key, bucket, value) rows: shared by run_timeseries's SQL
// path (query.cpp) and its grouping path (grouping.cpp). Internal to the flows library.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/flows/query.hpp"

namespace ipfixweb::flows::detail {

struct SeriesRow {
  std::optional<std::string> key;  // nullopt: NULL
  std::int64_t t = 0;              // the bucket's start
  std::int64_t value = 0;
};

// The answer run_timeseries documents, from the rows of q (any order).
QueryOutcome build_series(const TimeseriesQuery& q, const std::vector<SeriesRow>& rows,
                          nlohmann::json& out);

}  // namespace ipfixweb::flows::detail

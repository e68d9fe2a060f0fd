// Rendering a row held as a FlowRow (a decoded packed row, packed.hpp) as NDJSON or CSV, byte
// for byte as append_row (store.hpp) renders the same row read column by column. Internal to
// ipfixweb_flows: the exports' fast path (export.cpp).
#pragma once

#include <climits>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ipfixweb/flows/schema.hpp"
#include "ipfixweb/flows/store.hpp"

namespace ipfixweb::flows::detail {

class RowRenderer {
 public:
  // `columns`: schema indexes of exported columns, in the order to render them.
  RowRenderer(std::span<const int> columns, Format format);
  // One line (NDJSON object + '\n', or CSV record + CRLF) of the row with id `id`.
  void append(std::string& out, std::int64_t id, const FlowRow& r);

 private:
  std::vector<int> columns_;
  std::vector<std::uint8_t> fields_;  // what each column is (store.cpp's Field)
  Format format_;
  std::vector<std::string> prefix_;  // before each value: `{"name":`, `,"name":`, "" or ","
  std::string suffix_;               // "}\n" or "\r\n"
  std::vector<char> scratch_;
  std::int64_t day_ = INT64_MIN;  // the day whose "YYYY-MM-DDT" date_ holds
  char date_[32] = {};
  std::size_t date_len_ = 0;
  char* time(char* p, std::int64_t ms);
};

}  // namespace ipfixweb::flows::detail

// A structural reader of IPFIX streams (RFC 7011 messages, one after the other, as in an RFC 5655
// file, a TCP stream or the concatenated UDP datagrams), written for the tests and independent of
// libfixbuf: it walks message and set headers, learns the (options) templates and counts the data
// records of every data set with them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ipfixweb::engine::test {

struct IpfixWalk {
  std::uint64_t messages = 0;
  std::uint64_t data_sets = 0;
  std::uint64_t records = 0;  // data records in all data sets
  // What is wrong, one line each ("message 19: data set 256 at offset 65484 holds no record"):
  // a data set without a record (RFC 7011 3.3.1 wants at least one), a data set with no template,
  // bytes after the last record of a set, lengths that run past their message or the input.
  std::vector<std::string> problems;
};

IpfixWalk walk_ipfix(std::string_view bytes);

}  // namespace ipfixweb::engine::test

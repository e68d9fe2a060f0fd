// nDPI flow risk as the engine keeps it: names and score of a risk bitmap.
#include <gtest/gtest.h>
#include <ndpi/ndpi_api.h>

#include <cstdint>

#include "dpi.hpp"

namespace ipfixweb::engine {
namespace {

TEST(RiskNames, JoinedLowestBitFirstAsNdpiReaderPrintsThem) {
  EXPECT_EQ(Dpi::join_risk_names(0), "");
  const std::uint64_t sqli_numeric = (std::uint64_t{1} << NDPI_URL_POSSIBLE_SQL_INJECTION) |
                                     (std::uint64_t{1} << NDPI_HTTP_NUMERIC_IP_HOST);
  // ndpiReader 4.2 prints "[Risk: ** SQL Injection **** HTTP Numeric IP Address **]".
  EXPECT_EQ(Dpi::join_risk_names(sqli_numeric), "SQL Injection,HTTP Numeric IP Address");
  const std::uint64_t ssh = (std::uint64_t{1} << NDPI_SSH_OBSOLETE_CLIENT_VERSION_OR_CIPHER) |
                            (std::uint64_t{1} << NDPI_SSH_OBSOLETE_SERVER_VERSION_OR_CIPHER);
  EXPECT_EQ(Dpi::join_risk_names(ssh),
            "SSH Obsolete Client Version/Cipher,SSH Obsolete Server Version/Cipher");
  std::uint16_t client = 0;
  std::uint16_t server = 0;
  // The score the engine keeps is ndpi_risk2score's total (= client + server), as ndpiReader's
  // "[Risk Score: 260]" for WebattackSQLinj.pcap.
  EXPECT_EQ(ndpi_risk2score(sqli_numeric, &client, &server), 260);
  EXPECT_EQ(client + server, 260);
}

}  // namespace
}  // namespace ipfixweb::engine

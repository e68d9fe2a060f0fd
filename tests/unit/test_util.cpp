#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "ipfixweb/shared/util.hpp"

using namespace ipfixweb;

TEST(Util, UuidsAreV4AndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto u = new_uuid();
    ASSERT_TRUE(is_uuid(u)) << u;
    EXPECT_EQ(u[14], '4');
    EXPECT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    seen.insert(u);
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_FALSE(is_uuid("not-a-uuid"));
  EXPECT_FALSE(is_uuid("../../../../etc/passwd-aaaaaaaaaaaaaa"));
}

TEST(Util, UuidV7SortInCreationOrderAndCarryTheTime) {
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::vector<std::string> ids;
  for (int i = 0; i < 20000; ++i) ids.push_back(new_uuid_v7());  // many per millisecond
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto& u = ids[i];
    ASSERT_TRUE(is_uuid(u)) << u;
    EXPECT_EQ(u[14], '7') << u;
    EXPECT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b') << u;
    if (i) {
      ASSERT_LT(ids[i - 1], u) << "not increasing at " << i;
    }
  }
  // The first 48 bits are the Unix time in milliseconds.
  const std::string hex = ids.front().substr(0, 8) + ids.front().substr(9, 4);
  const auto ms = static_cast<long long>(std::stoull(hex, nullptr, 16));
  EXPECT_GE(ms, before);
  EXPECT_LT(ms, before + 5000);
}

TEST(Util, AVersion7UuidTellsWhenItWasMade) {
  const auto before = static_cast<std::int64_t>(now_unix() * 1000);
  const auto made = uuid_v7_unix_ms(new_uuid_v7());
  const auto after = static_cast<std::int64_t>(now_unix() * 1000);
  ASSERT_TRUE(made);
  EXPECT_GE(*made, before - 1);
  EXPECT_LE(*made, after + 1);
  EXPECT_EQ(uuid_v7_unix_ms("01a23a16-6ac9-7159-9647-34e4176e9583"), 0x01a23a166ac9);
  EXPECT_FALSE(uuid_v7_unix_ms(new_uuid())) << "a version 4 UUID has no time";
  EXPECT_FALSE(uuid_v7_unix_ms("not an id"));
  EXPECT_FALSE(uuid_v7_unix_ms("01a23a16-6aX9-7159-9647-34e4176e9583"));
}

TEST(Util, IsoTimesAreUtcWithMilliseconds) {
  EXPECT_EQ(iso_time(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(iso_time(1700000002.5), "2023-11-14T22:13:22.500Z");
}

TEST(Util, FingerprintIsStable) {
  EXPECT_EQ(fingerprint("abc"), fingerprint("abc"));
  EXPECT_NE(fingerprint("abc"), fingerprint("abd"));
  EXPECT_EQ(fingerprint("").size(), 16u);
}

// Bearer tokens and their roles.
#include <gtest/gtest.h>

#include <stdexcept>

#include "ipfixweb/api/auth.hpp"

using namespace ipfixweb::api;

TEST(Tokens, ARolePrefixGivesThatRoleAndABareTokenIsAdmin) {
  auto t = parse_tokens("read:r1,submit:s1,admin:a1,bare,other:x,,read:with:colon");
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].secret, "r1");
  EXPECT_EQ(t[0].role, Role::Read);
  EXPECT_EQ(t[1].secret, "s1");
  EXPECT_EQ(t[1].role, Role::Submit);
  EXPECT_EQ(t[2].secret, "a1");
  EXPECT_EQ(t[2].role, Role::Admin);
  EXPECT_EQ(t[3].secret, "bare");  // as before roles existed: may do everything
  EXPECT_EQ(t[3].role, Role::Admin);
  EXPECT_EQ(t[4].secret, "other:x");  // not a role: the whole entry is the secret
  EXPECT_EQ(t[4].role, Role::Admin);
  EXPECT_EQ(t[5].secret, "with:colon");
  EXPECT_EQ(t[5].role, Role::Read);
  EXPECT_TRUE(parse_tokens("").empty());
}

TEST(Tokens, AnEmptySecretIsRefusedAtStart) {
  for (const char* bad : {"read:", "submit:", "admin:", "ok,read:"})
    EXPECT_THROW(parse_tokens(bad), std::invalid_argument) << bad;
}

TEST(Tokens, TheBearerHeaderNamesTheRole) {
  auto t = parse_tokens("read:r1,submit:s1,a1");
  EXPECT_EQ(role_of(t, "Bearer r1"), Role::Read);
  EXPECT_EQ(role_of(t, "Bearer s1"), Role::Submit);
  EXPECT_EQ(role_of(t, "Bearer a1"), Role::Admin);
  for (const char* bad : {"", "Bearer ", "Bearer r", "Bearer r1 ", "Bearer read:r1", "bearer r1",
                          "Basic r1", "r1", "Bearer  r1"})
    EXPECT_EQ(role_of(t, bad), std::nullopt) << "'" << bad << "'";
}

TEST(Tokens, RolesAreOrderedSoEachMayDoWhatTheOnesBeforeMay) {
  EXPECT_LT(Role::Read, Role::Submit);
  EXPECT_LT(Role::Submit, Role::Admin);
  EXPECT_EQ(role_name(Role::Read), "read");
  EXPECT_EQ(role_name(Role::Submit), "submit");
  EXPECT_EQ(role_name(Role::Admin), "admin");
}

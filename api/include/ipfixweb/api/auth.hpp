// Bearer tokens with roles (pure; unit-tested). `--tokens` is a comma-separated list; an
// entry `read:SECRET`, `submit:SECRET` or `admin:SECRET` has that role, a bare `SECRET` is
// an admin token (the meaning every token had before roles existed).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ipfixweb::api {

// Ordered: a role may do everything the roles before it may.
enum class Role : std::uint8_t {
  Read,    // GET (and HEAD) routes
  Submit,  // + submitting and cancelling tasks
  Admin,   // everything
};

std::string_view role_name(Role r);

struct Token {
  std::string secret;
  Role role = Role::Admin;
};

// One entry of the list. Throws std::invalid_argument when the secret is empty.
Token parse_token(std::string_view entry);
// The comma-separated list (empty entries are skipped). Throws like parse_token.
std::vector<Token> parse_tokens(std::string_view list);

// The role of the token in an `Authorization: Bearer TOKEN` header value; nullopt when the
// header is missing, is not a bearer token, or names no known token. Every token is
// compared, each in constant time, so the time taken tells nothing about the secrets.
std::optional<Role> role_of(const std::vector<Token>& tokens, std::string_view authorization);

}  // namespace ipfixweb::api

#include "ipfixweb/api/auth.hpp"

#include <array>
#include <stdexcept>
#include <utility>

namespace ipfixweb::api {

namespace {

constexpr std::array<std::pair<Role, std::string_view>, 3> kRoles = {
    {{Role::Read, "read"}, {Role::Submit, "submit"}, {Role::Admin, "admin"}}};

// Constant-time comparison: the time taken does not depend on where the strings differ.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace

std::string_view role_name(Role r) {
  for (auto& [role, name] : kRoles)
    if (role == r) return name;
  return "?";
}

Token parse_token(std::string_view entry) {
  Token t{std::string(entry), Role::Admin};
  const auto colon = entry.find(':');
  for (auto& [role, name] : kRoles)
    if (colon != std::string_view::npos && entry.substr(0, colon) == name)
      t = {std::string(entry.substr(colon + 1)), role};
  if (t.secret.empty())
    throw std::invalid_argument("token '" + std::string(entry) + "' has an empty secret");
  return t;
}

std::vector<Token> parse_tokens(std::string_view list) {
  std::vector<Token> out;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto entry = list.substr(0, comma);
    if (!entry.empty()) out.push_back(parse_token(entry));
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

std::optional<Role> role_of(const std::vector<Token>& tokens, std::string_view authorization) {
  constexpr std::string_view prefix = "Bearer ";
  if (authorization.substr(0, prefix.size()) != prefix) return std::nullopt;
  const auto given = authorization.substr(prefix.size());
  std::optional<Role> found;
  for (auto& t : tokens)
    if (same_secret(given, t.secret) && !found) found = t.role;
  return found;
}

}  // namespace ipfixweb::api

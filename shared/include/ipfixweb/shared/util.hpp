// Small helpers shared by every component: time stamps, ids, hashing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ipfixweb {

// Wall-clock time as seconds since the epoch (fractional).
double now_unix();
// Monotonic seconds, for timeouts and intervals.
double now_mono();
// ISO 8601 UTC with milliseconds, e.g. 2026-11-27T11:39:07.123Z (sortable as text,
// understood by SQLite's date functions).
std::string iso_time(double unix_seconds);
inline std::string now_iso() { return iso_time(now_unix()); }

// Random RFC 4122 version 4 UUID, lower-case.
std::string new_uuid();
// A time-ordered UUID (RFC 9562 version 7): ids made by one thread sort in creation order.
std::string new_uuid_v7();
// The Unix time in milliseconds a version 7 UUID was made at; nullopt for anything else.
std::optional<std::int64_t> uuid_v7_unix_ms(std::string_view id);
// True if s looks like what new_uuid() returns.
bool is_uuid(std::string_view s);

// 64-bit FNV-1a of the bytes, as 16 hex digits (not cryptographic; used for
// idempotency fingerprints).
std::string fingerprint(std::string_view data);

// Value of an environment variable, or fallback when unset or empty.
std::string env_or(const char* name, std::string fallback);

}  // namespace ipfixweb

#include "ipfixweb/shared/util.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>

namespace ipfixweb {

double now_unix() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

double now_mono() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string iso_time(double unix_seconds) {
  auto whole = static_cast<std::time_t>(unix_seconds);
  int ms = static_cast<int>((unix_seconds - static_cast<double>(whole)) * 1000.0);
  if (ms < 0) ms = 0;
  if (ms > 999) ms = 999;
  std::tm tm{};
  gmtime_r(&whole, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

namespace {

std::mt19937_64& thread_rng() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }()};
  return rng;
}

// The 8-4-4-4-12 hex form of a UUID's two 64-bit halves.
std::string format_uuid(std::uint64_t hi, std::uint64_t lo) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xFFFF),
                static_cast<unsigned long long>(hi & 0xFFFF),
                static_cast<unsigned long long>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

constexpr std::uint64_t kVariantMask = 0x3FFFFFFFFFFFFFFFULL;  // variant 10 in the top bits
constexpr std::uint64_t kVariantBits = 0x8000000000000000ULL;

}  // namespace

std::string new_uuid() {
  auto& rng = thread_rng();
  std::uint64_t hi = rng(), lo = rng();
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & kVariantMask) | kVariantBits;
  return format_uuid(hi, lo);
}

std::optional<std::int64_t> uuid_v7_unix_ms(std::string_view id) {
  if (id.size() != 36 || id[8] != '-' || id[14] != '7') return std::nullopt;
  std::int64_t ms = 0;
  for (std::size_t i = 0; i < 13; ++i) {
    if (i == 8) continue;
    const char c = id[i];
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else
      return std::nullopt;
    ms = ms * 16 + v;
  }
  return ms;
}

std::string new_uuid_v7() {
  // RFC 9562 version 7: 48-bit Unix time in ms, then 12 bits used as a counter within the
  // millisecond (method 1 of section 6.2), then 62 random bits. Ids made by one thread sort
  // in the order they were made, so B-tree indexes keyed by them (tasks.id,
  // task_events.task_id) grow at one end instead of touching a random page per insert.
  auto& rng = thread_rng();
  thread_local std::uint64_t last_ms = 0;
  thread_local std::uint64_t counter = 0;
  auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  if (ms <= last_ms) {  // same millisecond (or the clock stepped back): count on
    ms = last_ms;
    if (++counter > 0xFFF) {
      ++ms;
      counter = 0;
    }
  } else {
    counter = rng() & 0x3FF;  // random start, leaving room to count
  }
  last_ms = ms;
  const std::uint64_t hi = ((ms & 0xFFFFFFFFFFFFULL) << 16) | 0x7000ULL | counter;
  const std::uint64_t lo = (rng() & kVariantMask) | kVariantBits;
  return format_uuid(hi, lo);
}

bool is_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string fingerprint(std::string_view data) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : fallback;
}

}  // namespace ipfixweb

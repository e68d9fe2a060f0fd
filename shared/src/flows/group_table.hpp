// A hash table of groups keyed by short byte strings, for the top table the writer ranks and
// for /top's grouping of filtered flows (grouping.cpp). Internal to the flows library.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ipfixweb::flows::detail {

// 64-bit hash of a key, eight bytes at a time.
inline std::uint64_t hash_key(std::string_view k) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (k.size() * 0xff51afd7ed558ccdull);
  const char* p = k.data();
  std::size_t n = k.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  std::uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0x94d049bb133111ebull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

// Values per key (the keys kept in one arena): open addressing over slots that hold the entry's
// index and the upper half of its key's hash, which also places the slot: a probe rarely
// touches another entry's key, and growing moves slots without reading a key. A group costs
// its key plus sizeof(Value) + about 20 bytes.
template <class Value>
class GroupTable {
 public:
  // The value of `key` (`hash` = hash_key(key)), made Value{} when new; nullptr when the key
  // is new and the table already holds `limit` groups (or 2^32 - 2, or 4 GiB of keys).
  Value* upsert(std::string_view key, std::uint64_t hash, std::size_t limit = kUnlimited) {
    if ((entries_.size() + 1) * 4 > slots_.size() * 3) grow();
    const auto tag = static_cast<std::uint32_t>(hash >> 32);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = tag & mask;; i = (i + 1) & mask) {
      std::uint64_t& s = slots_[i];
      if (s == 0) {
        // Entry indexes and key offsets are 32 bits: a table that would need more is full.
        if (entries_.size() >= limit || entries_.size() >= kUnlimited - 1 ||
            arena_.size() + key.size() > kUnlimited)
          return nullptr;
        entries_.push_back({static_cast<std::uint32_t>(arena_.size()),
                            static_cast<std::uint32_t>(key.size()), Value{}});
        arena_.append(key);
        s = std::uint64_t{tag} << 32 | entries_.size();
        return &entries_.back().value;
      }
      if (static_cast<std::uint32_t>(s >> 32) != tag) continue;
      Entry& e = entries_[(s & 0xffffffffu) - 1];
      if (e.len == key.size() && std::memcmp(arena_.data() + e.off, key.data(), key.size()) == 0)
        return &e.value;
    }
  }
  Value* upsert(std::string_view key) { return upsert(key, hash_key(key)); }

  // Room for n groups without growing.
  void reserve(std::size_t n) {
    std::size_t slots = 256;
    while (slots * 3 < n * 4) slots *= 2;
    if (slots > slots_.size()) {
      if (entries_.empty()) {
        slots_.assign(slots, 0);
      } else {
        while (slots_.size() < slots) grow();
      }
    }
    entries_.reserve(n);
  }

  std::size_t size() const { return entries_.size(); }
  std::string_view key(std::size_t i) const {
    return {arena_.data() + entries_[i].off, entries_[i].len};
  }
  const Value& value(std::size_t i) const { return entries_[i].value; }
  Value& value(std::size_t i) { return entries_[i].value; }
  // Memory held, in bytes (capacity, not size).
  std::size_t footprint() const {
    return entries_.capacity() * sizeof(Entry) + slots_.capacity() * sizeof(std::uint64_t) +
           arena_.capacity();
  }
  void clear() {
    entries_ = {};
    slots_ = {};
    arena_ = {};
  }

  static constexpr std::size_t kUnlimited = 0xffffffffu;

 private:
  struct Entry {
    std::uint32_t off, len;
    Value value;
  };
  void grow() {
    std::vector<std::uint64_t> old = std::move(slots_);
    slots_.assign(old.empty() ? 256 : old.size() * 2, 0);
    const std::size_t mask = slots_.size() - 1;
    for (std::uint64_t s : old) {
      if (!s) continue;
      std::size_t i = (s >> 32) & mask;
      while (slots_[i]) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Entry> entries_;
  std::vector<std::uint64_t> slots_;  // tag << 32 | (entry index + 1); 0: empty
  std::string arena_;
};

}  // namespace ipfixweb::flows::detail

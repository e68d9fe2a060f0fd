#include "ipfix_walk.hpp"

#include <map>

namespace ipfixweb::engine::test {
namespace {

constexpr std::uint16_t kVarlen = 65535;

std::uint16_t u16(std::string_view b, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(b[at]) << 8) |
                                    static_cast<unsigned char>(b[at + 1]));
}

// Template and options template records of one set (id 2 or 3); false when malformed.
bool read_templates(std::string_view set, bool options,
                    std::map<std::uint16_t, std::vector<std::uint16_t>>& templates) {
  std::size_t p = 4;
  while (set.size() - p >= 4) {
    const std::uint16_t tid = u16(set, p);
    const std::uint16_t count = u16(set, p + 2);
    p += 4;
    if (count == 0) {  // withdrawal
      templates.erase(tid);
      continue;
    }
    if (options) {
      if (set.size() - p < 2) return false;
      p += 2;  // scope field count
    }
    std::vector<std::uint16_t> lengths;
    for (std::uint16_t i = 0; i < count; ++i) {
      if (set.size() - p < 4) return false;
      const std::uint16_t id = u16(set, p);
      lengths.push_back(u16(set, p + 2));
      p += 4;
      if (id & 0x8000) {
        if (set.size() - p < 4) return false;
        p += 4;  // enterprise number
      }
    }
    templates[tid] = std::move(lengths);
  }
  return p == set.size();
}

}  // namespace

IpfixWalk walk_ipfix(std::string_view bytes) {
  IpfixWalk w;
  std::map<std::uint16_t, std::vector<std::uint16_t>> templates;
  std::size_t off = 0;
  const auto problem = [&](const std::string& what) {
    w.problems.push_back("message " + std::to_string(w.messages) + " (at " + std::to_string(off) +
                         "): " + what);
  };
  while (off < bytes.size()) {
    ++w.messages;
    if (bytes.size() - off < 16 || u16(bytes, off) != 10) {
      problem("no IPFIX message header");
      break;
    }
    const std::uint16_t mlen = u16(bytes, off + 2);
    if (mlen < 16 || mlen > bytes.size() - off) {
      problem("message length " + std::to_string(mlen) + " runs past the input");
      break;
    }
    const std::string_view msg = bytes.substr(off, mlen);
    std::size_t p = 16;
    while (p < msg.size()) {
      if (msg.size() - p < 4) {
        problem(std::to_string(msg.size() - p) + " bytes after the last set");
        break;
      }
      const std::uint16_t sid = u16(msg, p);
      const std::uint16_t slen = u16(msg, p + 2);
      if (slen < 4 || slen > msg.size() - p) {
        problem("set " + std::to_string(sid) + " at offset " + std::to_string(p) + " has length " +
                std::to_string(slen));
        break;
      }
      const std::string_view set = msg.substr(p, slen);
      const std::string where = " at offset " + std::to_string(p);
      if (sid == 2 || sid == 3) {
        if (!read_templates(set, sid == 3, templates)) problem("malformed template set" + where);
      } else if (sid >= 256) {
        ++w.data_sets;
        const auto t = templates.find(sid);
        if (t == templates.end()) {
          problem("data set " + std::to_string(sid) + where + " has no template");
        } else {
          std::size_t min_len = 0;
          for (const std::uint16_t len : t->second) min_len += len == kVarlen ? 1 : len;
          std::uint64_t n = 0;
          std::size_t q = 4;
          bool broken = false;
          while (!broken && set.size() - q >= min_len && (min_len > 0 || q < set.size())) {
            for (const std::uint16_t len : t->second) {
              std::size_t field = len;
              if (len == kVarlen) {
                if (set.size() - q < 1) {
                  broken = true;
                  break;
                }
                field = static_cast<unsigned char>(set[q]);
                q += 1;
                if (field == 255) {
                  if (set.size() - q < 2) {
                    broken = true;
                    break;
                  }
                  field = u16(set, q);
                  q += 2;
                }
              }
              if (set.size() - q < field) {
                broken = true;
                break;
              }
              q += field;
            }
            if (!broken) ++n;
          }
          w.records += n;
          if (broken) {
            problem("data set " + std::to_string(sid) + where + ": a record runs past the set");
          } else if (n == 0) {
            problem("data set " + std::to_string(sid) + where + " (length " + std::to_string(slen) +
                    ") holds no record");
          } else if (q != set.size()) {
            problem("data set " + std::to_string(sid) + where + ": " +
                    std::to_string(set.size() - q) + " bytes after the last record");
          }
        }
      } else {
        problem("reserved set id " + std::to_string(sid) + where);
      }
      p += slen;
    }
    off += mlen;
  }
  return w;
}

}  // namespace ipfixweb::engine::test

#include "ipfix_ingest.hpp"

#include <fcntl.h>
#include <fixbuf/public.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "community_id.hpp"
#include "export_sink.hpp"
#include "exporter.hpp"
#include "fixbuf_util.hpp"
#include "flow_table.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/flows/writer.hpp"
#include "outputs.hpp"
#include "summary.hpp"

namespace ipfixweb::engine {
namespace {

using fixbuf::FbufDeleter;
using fixbuf::kCertPen;
using fixbuf::kCommunityIdPen;
using fixbuf::kNtopPen;
using fixbuf::kReversePen;
using fixbuf::take_error;
constexpr std::uint16_t kCertReverseBit = 0x4000;        // CERT's reverse elements: number | 0x4000
constexpr std::uint64_t kNtpUnixOffset = 2208988800ULL;  // 1900-01-01 to 1970-01-01, seconds
constexpr std::uint64_t kMaxIngestCount = std::uint64_t{1} << 53;  // packets or bytes per record

// ---- the elements read ---------------------------------------------------------------------

// What ingest reads from a record. Every external template is mapped once to the slots it
// carries; the rest of its elements are never transcoded.
enum Slot : std::uint8_t {
  kOctets,
  kPackets,
  kOctetsTotal,
  kPacketsTotal,
  kInitiatorOctets,
  kInitiatorPackets,
  kRevOctets,
  kRevPackets,
  kRevOctetsTotal,
  kRevPacketsTotal,
  kResponderOctets,
  kResponderPackets,
  kSrc4,
  kDst4,
  kSrc6,
  kDst6,
  kSport,
  kDport,
  kProto,
  kIpVersion,
  kVlan,
  kDot1qVlan,
  kTcpFlags,
  kRevTcpFlags,
  kTos,
  kRevTos,
  kIcmp4,
  kIcmp6,
  kRevIcmp4,
  kRevIcmp6,
  kIcmpType4,
  kIcmpCode4,
  kIcmpType6,
  kIcmpCode6,
  kEndReason,
  kStartS,
  kEndS,
  kStartMs,
  kEndMs,
  kStartUs,
  kEndUs,
  kStartNs,
  kEndNs,
  kStartUptime,
  kEndUptime,
  kSysInitMs,
  kDurationMs,
  kDurationUs,
  kStartDeltaUs,
  kEndDeltaUs,
  kAppId,
  kAppName,
  kNtopL7Proto,
  kNtopL7ProtoName,
  kServerName,
  kHttpHost,
  kSslServerName,
  kDnsQuery,
  kJa3c,
  kRisk,
  kRiskNames,
  kRiskScore,
  kCommunityId,
  kYafAppLabel,
  kYafRevDeltaMs,
  kYafInitialFlags,
  kYafUnionFlags,
  kYafRevInitialFlags,
  kYafRevUnionFlags,
  kSlotCount
};

struct SlotSpec {
  Slot slot;
  std::uint32_t pen;
  std::uint16_t num;
};

constexpr SlotSpec kSlotSpecs[] = {
    {kOctets, 0, 1},
    {kPackets, 0, 2},
    {kOctetsTotal, 0, 85},
    {kPacketsTotal, 0, 86},
    {kInitiatorOctets, 0, 231},
    {kInitiatorPackets, 0, 298},
    {kRevOctets, kReversePen, 1},
    {kRevPackets, kReversePen, 2},
    {kRevOctetsTotal, kReversePen, 85},
    {kRevPacketsTotal, kReversePen, 86},
    {kResponderOctets, 0, 232},
    {kResponderPackets, 0, 299},
    {kSrc4, 0, 8},
    {kDst4, 0, 12},
    {kSrc6, 0, 27},
    {kDst6, 0, 28},
    {kSport, 0, 7},
    {kDport, 0, 11},
    {kProto, 0, 4},
    {kIpVersion, 0, 60},
    {kVlan, 0, 58},
    {kDot1qVlan, 0, 243},
    {kTcpFlags, 0, 6},
    {kRevTcpFlags, kReversePen, 6},
    {kTos, 0, 5},
    {kRevTos, kReversePen, 5},
    {kIcmp4, 0, 32},
    {kIcmp6, 0, 139},
    {kRevIcmp4, kReversePen, 32},
    {kRevIcmp6, kReversePen, 139},
    {kIcmpType4, 0, 176},
    {kIcmpCode4, 0, 177},
    {kIcmpType6, 0, 178},
    {kIcmpCode6, 0, 179},
    {kEndReason, 0, 136},
    {kStartS, 0, 150},
    {kEndS, 0, 151},
    {kStartMs, 0, 152},
    {kEndMs, 0, 153},
    {kStartUs, 0, 154},
    {kEndUs, 0, 155},
    {kStartNs, 0, 156},
    {kEndNs, 0, 157},
    {kStartUptime, 0, 22},
    {kEndUptime, 0, 21},
    {kSysInitMs, 0, 160},
    {kDurationMs, 0, 161},
    {kDurationUs, 0, 162},
    {kStartDeltaUs, 0, 158},
    {kEndDeltaUs, 0, 159},
    {kAppId, 0, 95},
    {kAppName, 0, 96},
    {kNtopL7Proto, kNtopPen, 118},
    {kNtopL7ProtoName, kNtopPen, 119},
    {kServerName, kNtopPen, 122},
    {kHttpHost, kNtopPen, 187},
    {kSslServerName, kNtopPen, 188},
    {kDnsQuery, kNtopPen, 205},
    {kJa3c, kNtopPen, 489},
    {kRisk, kNtopPen, 509},
    {kRiskNames, kNtopPen, 510},
    {kRiskScore, kNtopPen, 527},
    {kCommunityId, kCommunityIdPen, 1},
    {kYafAppLabel, kCertPen, 33},
    {kYafRevDeltaMs, kCertPen, 21},
    {kYafInitialFlags, kCertPen, 14},
    {kYafUnionFlags, kCertPen, 15},
    {kYafRevInitialFlags, kCertPen, 14 | kCertReverseBit},
    {kYafRevUnionFlags, kCertPen, 15 | kCertReverseBit},
};

std::optional<Slot> slot_of(std::uint32_t pen, std::uint16_t num) {
  for (const auto& s : kSlotSpecs)
    if (s.pen == pen && s.num == num) return s.slot;
  return std::nullopt;
}

// Enterprise elements the collection model gets beside libfixbuf's IANA and RFC 5103 ones and
// those our exporter writes (add_enterprise_elements): unknown elements become libfixbuf
// "alien" elements, octet arrays read as they come.
struct ModelElement {
  const char* name;
  std::uint32_t pen;
  std::uint16_t num;
  std::uint16_t len;
  std::uint8_t type;
};
constexpr ModelElement kModelElements[] = {
    {"ntopL7Proto", kNtopPen, 118, 2, FB_UINT_16},
    {"ntopL7ProtoName", kNtopPen, 119, FB_IE_VARLEN, FB_STRING},
    {"initialTCPFlags", kCertPen, 14, 2, FB_UINT_16},
    {"unionTCPFlags", kCertPen, 15, 2, FB_UINT_16},
    {"reverseInitialTCPFlags", kCertPen, 14 | kCertReverseBit, 2, FB_UINT_16},
    {"reverseUnionTCPFlags", kCertPen, 15 | kCertReverseBit, 2, FB_UINT_16},
    {"reverseFlowDeltaMilliseconds", kCertPen, 21, 4, FB_UINT_32},
    {"silkAppLabel", kCertPen, 33, 2, FB_UINT_16},
    {"flowAttributes", kCertPen, 40, 2, FB_UINT_16},
    {"reverseFlowAttributes", kCertPen, 40 | kCertReverseBit, 2, FB_UINT_16},
};

struct ModelDeleter {
  void operator()(fbInfoModel_t* m) const noexcept { fbInfoModelFree(m); }
};
using ModelPtr = std::unique_ptr<fbInfoModel_t, ModelDeleter>;

// An ingest's own model (0.6 ms to build): libfixbuf adds the alien elements of the files it
// reads to it, so it is not shared with the exporter's, nor with another ingest at the same
// time (ModelPool).
std::atomic<std::uint64_t> g_models_made{0};
ModelPtr make_model() {
  g_models_made.fetch_add(1, std::memory_order_relaxed);
  ModelPtr m(fbInfoModelAlloc());
  add_enterprise_elements(m.get());
  for (const auto& e : kModelElements) {
    fbInfoElement_t ie{};
    ie.ref.name = e.name;
    ie.ent = e.pen;
    ie.num = e.num;
    ie.len = e.len;
    ie.type = e.type;
    if (e.type != FB_STRING) ie.flags = FB_IE_F_ENDIAN;
    fbInfoModelAddElement(m.get(), &ie);
  }
  return m;
}

// Models are reused: an ingest takes one and gives it back, and the next ingest reads with it
// unless reading added elements to it (libfixbuf adds the "alien" elements of templates it
// does not know; nothing else changes a model while automatic element insertion is off).
// A model is used by one ingest at a time.
class ModelPool {
 public:
  static ModelPool& instance() {
    static ModelPool pool;
    return pool;
  }
  ModelPtr take() {
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        ModelPtr m = std::move(free_.back());
        free_.pop_back();
        return m;
      }
    }
    ModelPtr m = make_model();
    std::lock_guard lock(mu_);
    if (!pristine_) pristine_ = fbInfoModelCountElements(m.get());
    return m;
  }
  void give(ModelPtr m) noexcept {
    if (!m) return;
    std::lock_guard lock(mu_);
    if (fbInfoModelCountElements(m.get()) == pristine_ && free_.size() < kKeep)
      free_.push_back(std::move(m));
  }

 private:
  static constexpr std::size_t kKeep = 4;
  std::mutex mu_;
  std::vector<ModelPtr> free_;
  guint pristine_ = 0;  // elements of a model as made
};

// An ingest's model, given back to the pool when the ingest ends.
class PooledModel {
 public:
  PooledModel() : m_(ModelPool::instance().take()) {}
  ~PooledModel() { ModelPool::instance().give(std::move(m_)); }
  PooledModel(const PooledModel&) = delete;
  PooledModel& operator=(const PooledModel&) = delete;
  fbInfoModel_t* get() const { return m_.get(); }

 private:
  ModelPtr m_;
};

bool is_list_type(std::uint8_t type) {
  return type == FB_BASIC_LIST || type == FB_SUB_TMPL_LIST || type == FB_SUB_TMPL_MULTI_LIST;
}

// ---- libfixbuf's log messages -----------------------------------------------------------------

// libfixbuf reports some problems of the input only through GLib warnings (a message out of
// sequence, a data set without its template, a template element of an odd length). While an
// ingest reads a file, those of its thread go to the file's list and end up in the summary's
// warnings; the others go where they always go.
struct LogSink {
  std::vector<std::pair<std::string, std::uint64_t>> messages;  // distinct, in order
  std::uint64_t dropped = 0;                                    // beyond kMaxDistinct
  static constexpr std::size_t kMaxDistinct = 20;
  void add(const char* m) {
    const std::string_view text(m ? m : "");
    for (auto& [t, n] : messages) {
      if (t == text) {
        ++n;
        return;
      }
    }
    if (messages.size() < kMaxDistinct) {
      messages.emplace_back(std::string(text), 1);
    } else {
      ++dropped;
    }
  }
};

thread_local LogSink* t_log_sink = nullptr;
std::mutex g_log_mutex;
int g_log_users = 0;
guint g_log_handler = 0;

void fixbuf_log(const gchar* domain, GLogLevelFlags level, const gchar* message, gpointer) {
  if (t_log_sink) {
    t_log_sink->add(message);
    return;
  }
  g_log_default_handler(domain, level, message, nullptr);
}

class LogCapture {
 public:
  explicit LogCapture(LogSink& sink) : prev_(t_log_sink) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_log_users++ == 0) {
      const auto levels = static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                                                      G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG);
      g_log_handler = g_log_set_handler(nullptr, levels, fixbuf_log, nullptr);
    }
    t_log_sink = &sink;
  }
  ~LogCapture() {
    t_log_sink = prev_;
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (--g_log_users == 0) g_log_remove_handler(nullptr, g_log_handler);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

 private:
  LogSink* prev_;
};

// ---- input files --------------------------------------------------------------------------------

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((std::uint16_t{p[0]} << 8) | p[1]);
}
std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

std::string hex16(std::uint16_t v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%04x", v);
  return b;
}

// One input file, cut into IPFIX messages (RFC 7011 section 3.1 headers; RFC 5655 files are
// messages one after another). Read with pread() from the start through a duplicate of the
// caller's descriptor, whose offset is left alone.
class InputFile {
 public:
  InputFile(const std::string& path, int fd) : path_(path) {
    if (fd >= 0) {
      fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    } else {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    if (fd_ < 0) throw EngineError("cannot open input '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      ::close(fd_);
      throw EngineError("cannot open input '" + path + "': " + std::strerror(e));
    }
    if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw EngineError("cannot open input '" + path +
                        "': " + (S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file"));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    try {
      check_start();
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }
  ~InputFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  // Bytes of the file taken as complete messages so far.
  std::uint64_t consumed() const { return consumed_; }
  bool truncated() const { return !truncation_.empty(); }
  const std::string& truncation() const { return truncation_; }

  // The next complete message; false at the end of the file (truncated() then says whether a
  // message was cut short). The bytes stay valid until the next call.
  bool next(const std::uint8_t*& msg, std::size_t& len) {
    if (done_) return false;
    if (!ensure(16)) {
      const std::size_t avail = end_ - begin_;
      if (avail) {
        truncation_ = std::to_string(avail) + " bytes at offset " + std::to_string(consumed_) +
                      " are shorter than a message header";
      }
      return finish();
    }
    const std::uint8_t* h = buf_.get() + begin_;
    const std::uint16_t version = be16(h);
    const std::uint16_t mlen = be16(h + 2);
    if (version != 10 || mlen < 16) {
      throw EngineError("input '" + path_ + "': no IPFIX message at offset " +
                        std::to_string(consumed_) + " (version " + hex16(version) + ", length " +
                        std::to_string(mlen) +
                        "): the file is damaged or has other data after its messages");
    }
    if (!ensure(mlen)) {
      truncation_ = "the message at offset " + std::to_string(consumed_) + " has " +
                    std::to_string(end_ - begin_) + " of its " + std::to_string(mlen) + " bytes";
      return finish();
    }
    msg = buf_.get() + begin_;
    len = mlen;
    begin_ += mlen;
    consumed_ += mlen;
    return true;
  }

 private:
  static constexpr std::size_t kBufferSize = 1u << 20;  // at least 64 KiB (one message) + more

  bool finish() {  // the end: the buffer is not needed any more
    done_ = true;
    buf_.reset();
    buf_size_ = 0;
    begin_ = end_ = 0;
    return false;
  }

  // The file must start with an IPFIX message header (read now: all inputs are checked before
  // the output is created; the buffer comes with the first message).
  void check_start() {
    if (size_ == 0) throw EngineError("input '" + path_ + "' is empty, not an IPFIX file");
    std::uint8_t h[16];
    std::size_t avail = 0;
    while (avail < sizeof h) {
      const ssize_t r = ::pread(fd_, h + avail, sizeof h - avail, static_cast<off_t>(avail));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw EngineError("cannot read input '" + path_ + "': " + std::strerror(errno));
      if (r == 0) break;
      avail += static_cast<std::size_t>(r);
    }
    if (avail >= 4) {
      const std::uint32_t magic = be32(h);
      if (magic == 0xa1b2c3d4 || magic == 0xd4c3b2a1 || magic == 0xa1b23c4d ||
          magic == 0x4d3cb2a1) {
        throw EngineError("input '" + path_ + "' is a pcap capture, not an IPFIX file");
      }
      if (magic == 0x0a0d0d0a) {
        throw EngineError("input '" + path_ + "' is a pcapng capture, not an IPFIX file");
      }
    }
    const capture::Compression c =
        capture::sniff_compression(std::string_view(reinterpret_cast<const char*>(h), avail));
    if (c != capture::Compression::None) {
      throw EngineError("input '" + path_ + "' is " + std::string(capture::name(c)) +
                        "-compressed: an IPFIX ingest reads uncompressed IPFIX files only "
                        "(decompress it first)");
    }
    if (avail < 16) {
      throw EngineError("input '" + path_ + "' is not an IPFIX file (" + std::to_string(avail) +
                        " bytes, shorter than an IPFIX message header)");
    }
    if (be16(h) != 10 || be16(h + 2) < 16) {
      throw EngineError("input '" + path_ +
                        "' is not an IPFIX file (it does not start with an IPFIX message "
                        "header: version " +
                        hex16(be16(h)) + ", length " + std::to_string(be16(h + 2)) + ")");
    }
  }

  // At least `n` unread bytes in the buffer, or false at the end of the file.
  bool ensure(std::size_t n) {
    if (!buf_) {  // not zero-filled: only the pages a file's bytes reach are touched
      buf_ = std::make_unique_for_overwrite<std::uint8_t[]>(kBufferSize);
      buf_size_ = kBufferSize;
    }
    while (end_ - begin_ < n) {
      if (eof_) return false;
      if (buf_size_ - begin_ < n || buf_size_ - end_ < 65536) {
        std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      const ssize_t r =
          ::pread(fd_, buf_.get() + end_, buf_size_ - end_, static_cast<off_t>(file_off_));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw EngineError("cannot read input '" + path_ + "': " + std::strerror(errno));
      }
      if (r == 0) {
        eof_ = true;
        continue;
      }
      end_ += static_cast<std::size_t>(r);
      file_off_ += static_cast<std::uint64_t>(r);
    }
    return true;
  }

  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::unique_ptr<std::uint8_t[]> buf_;
  std::size_t buf_size_ = 0;
  std::size_t begin_ = 0, end_ = 0;
  std::uint64_t file_off_ = 0;  // bytes read from the file
  std::uint64_t consumed_ = 0;  // bytes of complete messages handed out
  bool eof_ = false;
  bool done_ = false;
  std::string truncation_;
};

// What libfixbuf 2.4 must not be given. It aborts on template ids below 256 and loops for ever
// over the records of a template whose records have no length: refused. Its reader also takes a
// data set too short for one record of its template (an empty set, which libfixbuf 2.4's own
// exporter writes, ours included) for a record, then reads the next set's record in its place:
// such sets are dropped before it sees the message. Knows the minimum record length of the
// templates of one file (by observation domain and template id) from the template sets it saw.
class MessageCheck {
 public:
  // Why the message is unusable ("" when its structure is sound; libfixbuf checks the rest).
  // `drop`: the (offset, length) of the data sets to leave out, in order.
  std::string check(const std::uint8_t* m, std::size_t len,
                    std::vector<std::pair<std::size_t, std::size_t>>& drop) {
    drop.clear();
    const std::uint32_t domain = be32(m + 12);
    std::size_t off = 16;
    while (len - off >= 4) {
      const std::uint16_t set_id = be16(m + off);
      const std::uint16_t set_len = be16(m + off + 2);
      if (set_len < 4 || set_len > len - off) {
        return "set at +" + std::to_string(off) + " has length " + std::to_string(set_len) + " (" +
               std::to_string(len - off) + " bytes left in the message)";
      }
      if (set_id < 256 && set_id != 2 && set_id != 3) {
        return "set at +" + std::to_string(off) + " has the reserved set id " +
               std::to_string(set_id);
      }
      if (set_id == 2 || set_id == 3) {
        std::string why = templates(m + off + 4, set_len - 4u, set_id == 3, domain);
        if (!why.empty()) return why;
      } else {
        const auto it = min_len_.find(key(domain, set_id));
        if (it != min_len_.end() && set_len - 4u < it->second) drop.emplace_back(off, set_len);
      }
      off += set_len;
    }
    return {};
  }

 private:
  static std::uint64_t key(std::uint32_t domain, std::uint16_t tid) {
    return (std::uint64_t{domain} << 16) | tid;
  }
  // The template records of one set, as libfixbuf reads them.
  std::string templates(const std::uint8_t* s, std::size_t rem, bool options,
                        std::uint32_t domain) {
    std::size_t p = 0;
    while (rem - p >= 4) {  // what is left below 4 bytes is padding
      const std::uint16_t tid = be16(s + p);
      const std::uint16_t count = be16(s + p + 2);
      p += 4;
      if (tid < 256) return "template record with the reserved template id " + std::to_string(tid);
      if (count == 0) {  // a withdrawal
        min_len_.erase(key(domain, tid));
        continue;
      }
      if (options) {
        if (rem - p < 2) return "options template " + std::to_string(tid) + " cut short";
        p += 2;
      }
      std::uint64_t min = 0;
      for (std::uint16_t i = 0; i < count; ++i) {
        if (rem - p < 4) return "template " + std::to_string(tid) + " cut short";
        const std::uint16_t num = be16(s + p);
        const std::uint16_t flen = be16(s + p + 2);
        p += 4;
        if (num & 0x8000) {
          if (rem - p < 4) return "template " + std::to_string(tid) + " cut short";
          p += 4;
        }
        min += flen == FB_IE_VARLEN ? 1 : flen;
      }
      if (min == 0) return "template " + std::to_string(tid) + " describes records of no length";
      min_len_[key(domain, tid)] = min;
    }
    return {};
  }
  std::unordered_map<std::uint64_t, std::uint64_t> min_len_;
};

// ---- templates and records ----------------------------------------------------------------

struct Field {
  std::uint32_t offset = 0;
  std::uint16_t len = 0;
  bool varlen = false;
  bool host_order = false;  // libfixbuf turned it into host byte order (integer types)
};

// The internal template that one kind of external template is read with: the selected elements
// at their external lengths (so libfixbuf only copies them, or swaps their bytes), in the
// external order.
struct Layout {
  std::uint16_t int_tid = 0;
  std::size_t size = 0;
  std::array<std::int16_t, kSlotCount> at{};  // index into fields, -1 = absent
  std::vector<Field> fields;
};

struct Selected {
  Slot slot;
  std::uint32_t ent;
  std::uint16_t num;
  std::uint16_t len;
};

// Attached to each external template (libfixbuf's template context) when it arrives.
struct TemplateInfo {
  std::vector<Selected> selected;
  bool options = false;
  std::uint32_t elements = 0;
  const Layout* layout = nullptr;  // made on its first record
};

// A record as read through a Layout.
class RecordView {
 public:
  RecordView(const Layout& l, const std::uint8_t* rec) : l_(l), rec_(rec) {}
  bool has(Slot s) const { return l_.at[s] >= 0; }
  // An unsigned value (reduced-length encodings included); nullopt when absent or empty.
  std::optional<std::uint64_t> num(Slot s) const {
    const std::int16_t i = l_.at[s];
    if (i < 0) return std::nullopt;
    const Field& f = l_.fields[static_cast<std::size_t>(i)];
    const std::uint8_t* b = nullptr;
    std::size_t n = 0;
    bool le = false;
    if (f.varlen) {
      const std::string_view v = var(f);
      b = reinterpret_cast<const std::uint8_t*>(v.data());
      n = v.size();
    } else {
      b = rec_ + f.offset;
      n = f.len;
      le = f.host_order;
    }
    if (n == 0) return std::nullopt;
    std::uint64_t v = 0;
    if (le) {
      for (std::size_t k = std::min<std::size_t>(n, 8); k-- > 0;) v = (v << 8) | b[k];
    } else {
      for (std::size_t k = n > 8 ? n - 8 : 0; k < n; ++k) v = (v << 8) | b[k];
    }
    return v;
  }
  std::uint64_t num_or(Slot s, std::uint64_t dflt) const { return num(s).value_or(dflt); }
  bool is_varlen(Slot s) const {
    return l_.at[s] >= 0 && l_.fields[static_cast<std::size_t>(l_.at[s])].varlen;
  }
  // Raw bytes (strings, octet arrays, addresses).
  std::string_view bytes(Slot s) const {
    const std::int16_t i = l_.at[s];
    if (i < 0) return {};
    const Field& f = l_.fields[static_cast<std::size_t>(i)];
    if (f.varlen) return var(f);
    return {reinterpret_cast<const char*>(rec_ + f.offset), f.len};
  }
  // A string, without the NUL padding of fixed-length strings.
  std::string_view text(Slot s) const {
    std::string_view v = bytes(s);
    while (!v.empty() && v.back() == '\0') v.remove_suffix(1);
    return v;
  }

 private:
  std::string_view var(const Field& f) const {
    fbVarfield_t vf;
    std::memcpy(&vf, rec_ + f.offset, sizeof vf);
    if (!vf.buf || vf.len == 0) return {};
    return {reinterpret_cast<const char*>(vf.buf), vf.len};
  }
  const Layout& l_;
  const std::uint8_t* rec_;
};

// ---- labels -------------------------------------------------------------------------------------

// YAF's application labels (silkAppLabel) are the well-known port of the protocol it found.
std::string yaf_label_name(std::uint64_t label) {
  static const std::map<std::uint64_t, const char*> names = {
      {0, "Unknown"},     {21, "FTP"},          {22, "SSH"},      {25, "SMTP"},
      {53, "DNS"},        {67, "DHCP"},         {69, "TFTP"},     {80, "HTTP"},
      {110, "POP3"},      {119, "NNTP"},        {123, "NTP"},     {137, "NetBIOS"},
      {139, "SMB"},       {143, "IMAP"},        {161, "SNMP"},    {179, "BGP"},
      {194, "IRC"},       {389, "LDAP"},        {427, "SLP"},     {443, "TLS"},
      {502, "Modbus"},    {554, "RTSP"},        {646, "LDP"},     {1080, "SOCKS"},
      {1723, "PPTP"},     {1863, "MSN"},        {2427, "MGCP"},   {3306, "MySQL"},
      {3389, "RDP"},      {3544, "Teredo"},     {5004, "RTP"},    {5050, "Yahoo"},
      {5060, "SIP"},      {5190, "AIM"},        {5222, "Jabber"}, {6000, "X11"},
      {6346, "Gnutella"}, {6881, "BitTorrent"}, {20000, "DNP3"},  {44818, "EtherNetIP"},
      {51443, "QUIC"},
  };
  const auto it = names.find(label);
  return it != names.end() ? it->second : "silkAppLabel:" + std::to_string(label);
}

// RFC 6759 classification engine ids (IANA registry).
std::string engine_name(std::uint8_t id) {
  switch (id) {
    case 1:
      return "IANA-L3";
    case 2:
      return "PANA-L3";
    case 3:
      return "IANA-L4";
    case 4:
      return "PANA-L4";
    case 6:
      return "USER-Defined";
    case 12:
      return "PANA-L2";
    case 13:
      return "PANA-L7";
    case 18:
      return "ETHERTYPE";
    case 19:
      return "LLC";
    case 20:
      return "PANA-L7-PEN";
    case 22:
      return "nDPI";
    default:
      return "engine-" + std::to_string(id);
  }
}

std::string selector_text(std::string_view sel) {
  if (sel.empty()) return "0";
  if (sel.size() <= 8) {
    std::uint64_t v = 0;
    for (const char c : sel) v = (v << 8) | static_cast<unsigned char>(c);
    return std::to_string(v);
  }
  std::string hex = "0x";
  char b[4];
  for (const char c : sel) {
    std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(c));
    hex += b;
  }
  return hex;
}

// "PANA-L7-PEN:35632:188", "IANA-L4:443", ...
std::string application_id_text(std::string_view id) {
  if (id.empty()) return {};
  const auto engine = static_cast<std::uint8_t>(id[0]);
  std::string_view sel = id.substr(1);
  std::string out = engine_name(engine) + ":";
  if (engine == 20 && sel.size() >= 4) {
    out += std::to_string(be32(reinterpret_cast<const std::uint8_t*>(sel.data()))) + ":";
    sel.remove_prefix(4);
  }
  return out + selector_text(sel);
}

// ---- the ingest ---------------------------------------------------------------------------------

std::uint64_t ntp_to_ms(std::uint64_t ntp) {
  std::uint64_t sec = ntp >> 32;
  const std::uint64_t frac = ntp & 0xffffffffULL;
  // Era 1 (from 2036-02-07) wraps the seconds: a value before 1970 is taken as after 2036.
  if (sec < kNtpUnixOffset) sec += 1ULL << 32;
  return (sec - kNtpUnixOffset) * 1000 + ((frac * 1000) >> 32);
}

std::shared_ptr<spdlog::logger> logger() {
  if (auto lg = spdlog::get("engine")) return lg;
  return spdlog::default_logger();
}

class Ingest {
 public:
  Ingest(const Options& opts, const ProtocolNameFn& ndpi_name, Summary& summary,
         IpfixExporter& exporter, flows::Writer* store, bool series_from_records)
      : opts_(opts),
        ndpi_name_(ndpi_name),
        summary_(summary),
        stats_(*summary.ipfix),
        exporter_(exporter),
        store_(store),
        series_from_records_(series_from_records) {}

  // Reads one file, message by message. `on_message` runs after each one.
  template <class OnMessage>
  void read_file(InputFile& in, InputInfo& info, OnMessage&& on_message) {
    info_ = &info;
    path_ = &in.path();
    LogSink sink;
    {
      LogCapture capture(sink);
      FileSession fs(*this);
      const std::uint8_t* msg = nullptr;
      std::size_t len = 0;
      while (true) {
        const std::uint64_t at = in.consumed();
        if (!in.next(msg, len)) break;
        ++info.messages;
        ++stats_.messages;
        read_message(fs, msg, len, at);
        on_message();
      }
    }
    for (const auto& [text, n] : sink.messages) {
      summary_.warn("input '" + in.path() + "': libfixbuf: " + text +
                    (n > 1 ? " (" + std::to_string(n) + " times)" : std::string()));
    }
    if (sink.dropped) {
      summary_.warn("input '" + in.path() + "': " + std::to_string(sink.dropped) +
                    " more libfixbuf messages");
    }
    if (in.truncated()) {
      info.truncated = true;
      summary_.warn("input '" + in.path() + "': last message cut short (" + in.truncation() +
                    "); the " + std::to_string(info.records) + " records before it were read");
    }
    info_ = nullptr;
  }

  std::uint64_t domains() const { return domains_.size(); }

 private:
  // One input's libfixbuf session (templates are per file and observation domain) and the
  // internal templates made for it.
  struct FileSession {
    explicit FileSession(Ingest& ing) {
      fbSession_t* s = fbSessionAlloc(ing.model_.get());
      fbSessionAddNewTemplateCallback(s, &Ingest::on_new_template, &ing);
      fbuf.reset(fBufAllocForCollection(s, nullptr));  // owns the session
      fBufSetAutomaticMode(fbuf.get(), FALSE);
    }
    // Destroyed after fbuf, whose templates point at them.
    std::map<std::string, std::unique_ptr<Layout>> layouts;
    MessageCheck check;
    std::unique_ptr<fBuf_t, FbufDeleter> fbuf;
    std::uint16_t current_int = 0;
  };

  static void on_new_template(fbSession_t*, std::uint16_t, fbTemplate_t* tmpl, void* app_ctx,
                              void** tmpl_ctx, fbTemplateCtxFree_fn* free_fn) {
    auto* self = static_cast<Ingest*>(app_ctx);
    try {
      auto info = std::make_unique<TemplateInfo>();
      info->elements = fbTemplateCountElements(tmpl);
      info->options = fbTemplateGetOptionsScope(tmpl) > 0;
      std::array<bool, kSlotCount> taken{};
      for (std::uint32_t i = 0; i < info->elements; ++i) {
        const fbInfoElement_t* ie = fbTemplateGetIndexedIE(tmpl, i);
        if (!ie || ie->len == 0 || is_list_type(ie->type)) continue;
        const auto slot = slot_of(ie->ent, ie->num);
        if (!slot || taken[*slot]) continue;
        taken[*slot] = true;
        info->selected.push_back({*slot, ie->ent, ie->num, ie->len});
      }
      if (info->elements) {
        ++self->stats_.templates;
        if (info->options) ++self->stats_.options_templates;
      }
      *tmpl_ctx = info.release();
      *free_fn = [](void* ctx, void*) { delete static_cast<TemplateInfo*>(ctx); };
    } catch (...) {  // out of memory: the template has no context; its records are refused
      *tmpl_ctx = nullptr;
    }
  }

  [[noreturn]] void bad_message(std::uint64_t at, const std::string& why) const {
    throw EngineError("input '" + *path_ + "': bad IPFIX message at offset " + std::to_string(at) +
                      ": " + why);
  }

  const Layout& layout_for(FileSession& fs, TemplateInfo& ti, std::uint64_t at) {
    if (ti.layout) return *ti.layout;
    std::string key;
    for (const auto& s : ti.selected) {
      key += static_cast<char>(s.slot);
      key += static_cast<char>(s.len >> 8);
      key += static_cast<char>(s.len & 0xff);
    }
    auto& slot = fs.layouts[key];
    if (!slot) {
      auto l = std::make_unique<Layout>();
      l->at.fill(-1);
      GError* err = nullptr;
      fbTemplate_t* t = fbTemplateAlloc(model_.get());
      for (const auto& s : ti.selected) {
        fbInfoElement_t ie{};
        ie.ent = s.ent;
        ie.num = s.num;
        ie.len = s.len;
        if (!fbTemplateAppend(t, &ie, &err)) {
          fbTemplateFreeUnused(t);
          bad_message(at, "cannot read a template: " + take_error(err));
        }
      }
      for (std::size_t i = 0; i < ti.selected.size(); ++i) {
        const fbInfoElement_t* ie = fbTemplateGetIndexedIE(t, static_cast<std::uint32_t>(i));
        Field f;
        f.offset = static_cast<std::uint32_t>(l->size);
        f.varlen = ie->len == FB_IE_VARLEN;
        f.len = f.varlen ? 0 : ie->len;
        f.host_order = (ie->flags & FB_IE_F_ENDIAN) != 0;
        l->size += f.varlen ? sizeof(fbVarfield_t) : ie->len;
        l->at[ti.selected[i].slot] = static_cast<std::int16_t>(l->fields.size());
        l->fields.push_back(f);
      }
      l->int_tid = fbSessionAddTemplate(fBufGetSession(fs.fbuf.get()), TRUE, FB_TID_AUTO, t, &err);
      if (l->int_tid == 0) {
        fbTemplateFreeUnused(t);
        bad_message(at, "cannot read a template: " + take_error(err));
      }
      slot = std::move(l);
    }
    ti.layout = slot.get();
    return *ti.layout;
  }

  void read_message(FileSession& fs, const std::uint8_t* msg, std::size_t len, std::uint64_t at) {
    if (const std::string why = fs.check.check(msg, len, drop_); !why.empty()) bad_message(at, why);
    if (!drop_.empty()) {  // a copy without the sets libfixbuf would misread
      copy_.assign(msg, msg + 16);
      std::size_t from = 16;
      for (const auto& [off, n] : drop_) {
        copy_.insert(copy_.end(), msg + from, msg + off);
        from = off + n;
      }
      copy_.insert(copy_.end(), msg + from, msg + len);
      len = copy_.size();
      copy_[2] = static_cast<std::uint8_t>(len >> 8);
      copy_[3] = static_cast<std::uint8_t>(len & 0xff);
      msg = copy_.data();
    }
    export_s_ = be32(msg + 4);
    domain_ = be32(msg + 12);
    domains_.insert(domain_);
    fBuf_t* fbuf = fs.fbuf.get();
    GError* err = nullptr;
    fBufSetBuffer(fbuf, const_cast<std::uint8_t*>(msg), len);
    if (!fBufNextMessage(fbuf, &err)) bad_message(at, take_error(err));
    std::size_t records = 0;
    while (true) {
      std::uint16_t tid = 0;
      fbTemplate_t* t = fBufNextCollectionTemplate(fbuf, &tid, &err);
      if (!t) {
        if (g_error_matches(err, FB_ERROR_DOMAIN, FB_ERROR_EOM)) {
          g_clear_error(&err);
          return;
        }
        bad_message(at, take_error(err));
      }
      auto* ti = static_cast<TemplateInfo*>(fbTemplateGetContext(t));
      if (!ti || ti->elements == 0) {
        // A data set of a withdrawn template: libfixbuf would read empty records from it for
        // ever. The rest of the message is left out.
        summary_.warn("input '" + *path_ + "': message at offset " + std::to_string(at) +
                      " has a data set of template " + std::to_string(tid) +
                      ", which was withdrawn; the rest of the message was skipped");
        return;
      }
      if (++records > len) bad_message(at, "more records than bytes");
      const Layout& l = layout_for(fs, *ti, at);
      if (fs.current_int != l.int_tid) {
        if (!fBufSetInternalTemplate(fbuf, l.int_tid, &err)) bad_message(at, take_error(err));
        fs.current_int = l.int_tid;
      }
      if (rec_.size() < l.size + 1) rec_.resize(l.size + 1);
      std::size_t rlen = rec_.size();
      if (!fBufNext(fbuf, rec_.data(), &rlen, &err)) {
        bad_message(at, "record of template " + std::to_string(tid) + ": " + take_error(err));
      }
      if (fBufGetCollectionTemplate(fbuf, nullptr) != t) {  // read with another's layout
        bad_message(at, "a data set of template " + std::to_string(tid) +
                            " is too short for one of its records");
      }
      ++info_->records;
      on_record(*ti, RecordView(l, rec_.data()));
    }
  }

  void on_record(const TemplateInfo& ti, const RecordView& r) {
    if (ti.options) {
      ++stats_.options_records;
      if (auto init = r.num(kSysInitMs)) domain_init_ms_[domain_] = *init;
      return;
    }
    ++stats_.data_records;
    if (!decode(r)) {
      ++stats_.skipped_no_address;
      return;
    }
    // A count of 2^53 packets or bytes (9 PB) in one record is an exporter's error (or a
    // hostile file): beyond it JSON readers lose digits, and the store's signed 64-bit columns
    // and sums would turn 2^63 and more negative.
    if (std::max({flow_.fwd.packets, flow_.fwd.octets, flow_.rev.packets, flow_.rev.octets}) >
        kMaxIngestCount) {
      ++stats_.skipped_implausible_counts;
      return;
    }
    emit();
  }

  // The record's start and end (ms since 1970) from whichever time elements it has.
  void decode_times(const RecordView& r, std::uint64_t& start, std::uint64_t& end) {
    const std::uint64_t export_ms = std::uint64_t{export_s_} * 1000;
    const auto absolute = [&](Slot s, Slot ms, Slot us, Slot ns) -> std::optional<std::uint64_t> {
      if (auto v = r.num(ms)) return *v;
      // An NTP time of 0 is an exporter's "not set", not 2036.
      if (auto v = r.num(us); v && *v) return ntp_to_ms(*v);
      if (auto v = r.num(ns); v && *v) return ntp_to_ms(*v);
      if (auto v = r.num(s)) return *v * 1000;
      return std::nullopt;
    };
    std::optional<std::uint64_t> s = absolute(kStartS, kStartMs, kStartUs, kStartNs);
    std::optional<std::uint64_t> e = absolute(kEndS, kEndMs, kEndUs, kEndNs);
    const auto up_s = r.num(kStartUptime), up_e = r.num(kEndUptime);
    if ((!s && up_s) || (!e && up_e)) {
      // sysUpTime: relative to the exporter's start, from the record or from an options record
      // of its observation domain, else placed so that the record ends at its message's export
      // time.
      std::optional<std::uint64_t> init = r.num(kSysInitMs);
      if (!init) {
        const auto it = domain_init_ms_.find(domain_);
        if (it != domain_init_ms_.end()) init = it->second;
      }
      if (!init) {
        const std::uint64_t last = std::max(up_s.value_or(0), up_e.value_or(0));
        init = export_ms >= last ? export_ms - last : 0;
        ++stats_.sysuptime_from_export_time;
      }
      if (!s && up_s) s = *init + *up_s;
      if (!e && up_e) e = *init + *up_e;
    }
    if (!s) {
      if (auto d = r.num(kStartDeltaUs); d && *d / 1000 <= export_ms) s = export_ms - *d / 1000;
    }
    if (!e) {
      if (auto d = r.num(kEndDeltaUs); d && *d / 1000 <= export_ms) e = export_ms - *d / 1000;
    }
    std::optional<std::uint64_t> dur = r.num(kDurationMs);
    if (!dur) {
      if (auto us = r.num(kDurationUs)) dur = *us / 1000;
    }
    if (s && !e && dur) e = *s + *dur;
    if (!s && e && dur && *dur <= *e) s = *e - *dur;
    if (!s && !e) {
      s = e = export_ms;
      ++stats_.times_from_export_time;
    }
    start = s ? *s : *e;
    end = e ? *e : *s;
    if (end < start) end = start;
  }

  // The current record into flow_ and label_; false when it has no usable addresses.
  bool decode(const RecordView& r) {
    Flow& f = flow_;
    FlowKey& k = f.key;
    k = FlowKey{};
    const bool has4 = r.has(kSrc4) && r.has(kDst4);
    const bool has6 = r.bytes(kSrc6).size() == 16 && r.bytes(kDst6).size() == 16;
    const auto ipver = r.num(kIpVersion);
    int version = 0;
    if (has4 && has6) {
      if (ipver == 4u || ipver == 6u) {
        version = static_cast<int>(*ipver);
      } else {
        const std::string_view a = r.bytes(kSrc6), b = r.bytes(kDst6);
        const bool v6_set = std::any_of(a.begin(), a.end(), [](char c) { return c != 0; }) ||
                            std::any_of(b.begin(), b.end(), [](char c) { return c != 0; });
        version = v6_set ? 6 : 4;
      }
    } else if (has4) {
      version = 4;
    } else if (has6) {
      version = 6;
    } else {
      return false;
    }
    k.ip_version = static_cast<std::uint8_t>(version);
    if (version == 4) {
      const auto put = [](std::array<std::uint8_t, 16>& a, std::uint64_t v) {
        a[0] = static_cast<std::uint8_t>(v >> 24);
        a[1] = static_cast<std::uint8_t>(v >> 16);
        a[2] = static_cast<std::uint8_t>(v >> 8);
        a[3] = static_cast<std::uint8_t>(v);
      };
      put(k.src, r.num_or(kSrc4, 0));
      put(k.dst, r.num_or(kDst4, 0));
    } else {
      std::memcpy(k.src.data(), r.bytes(kSrc6).data(), 16);
      std::memcpy(k.dst.data(), r.bytes(kDst6).data(), 16);
    }
    k.proto = static_cast<std::uint8_t>(r.num_or(kProto, 0));
    k.sport = static_cast<std::uint16_t>(r.num_or(kSport, 0));
    k.dport = static_cast<std::uint16_t>(r.num_or(kDport, 0));
    k.vlan = static_cast<std::uint16_t>(r.num(kVlan).value_or(r.num_or(kDot1qVlan, 0)) & 0xfff);

    const auto first = [&](std::initializer_list<Slot> slots) -> std::optional<std::uint64_t> {
      for (const Slot s : slots)
        if (auto v = r.num(s)) return v;
      return std::nullopt;
    };
    f.fwd = DirectionStats{};
    f.rev = DirectionStats{};
    f.fwd.packets = first({kPackets, kPacketsTotal, kInitiatorPackets}).value_or(0);
    f.fwd.octets = first({kOctets, kOctetsTotal, kInitiatorOctets}).value_or(0);
    biflow_ = r.has(kRevOctets) || r.has(kRevPackets) || r.has(kRevOctetsTotal) ||
              r.has(kRevPacketsTotal) || r.has(kResponderOctets) || r.has(kResponderPackets);
    if (biflow_) {
      f.rev.packets = first({kRevPackets, kRevPacketsTotal, kResponderPackets}).value_or(0);
      f.rev.octets = first({kRevOctets, kRevOctetsTotal, kResponderOctets}).value_or(0);
      ++stats_.biflow_records;
    } else {
      ++stats_.uniflow_records;
    }

    // TCP flags: tcpControlBits, or YAF's initial | union flags.
    const auto flags = [&](Slot control, Slot initial, Slot uni) -> std::uint16_t {
      if (auto v = r.num(control)) return static_cast<std::uint16_t>(*v);
      return static_cast<std::uint16_t>(r.num_or(initial, 0) | r.num_or(uni, 0));
    };
    f.fwd.tcp_flags = flags(kTcpFlags, kYafInitialFlags, kYafUnionFlags);
    f.rev.tcp_flags = flags(kRevTcpFlags, kYafRevInitialFlags, kYafRevUnionFlags);
    f.fwd.tos = static_cast<std::uint8_t>(r.num_or(kTos, 0));
    f.rev.tos = static_cast<std::uint8_t>(r.num_or(kRevTos, 0));
    const bool v6 = version == 6;
    const Slot icmp = v6 ? kIcmp6 : kIcmp4, rev_icmp = v6 ? kRevIcmp6 : kRevIcmp4;
    const Slot itype = v6 ? kIcmpType6 : kIcmpType4, icode = v6 ? kIcmpCode6 : kIcmpCode4;
    bool has_icmp = r.has(icmp) || r.has(itype) || r.has(icode);
    if (auto v = r.num(icmp)) {
      f.fwd.icmp_type_code = static_cast<std::uint16_t>(*v);
    } else {
      f.fwd.icmp_type_code =
          static_cast<std::uint16_t>((r.num_or(itype, 0) << 8) | (r.num_or(icode, 0) & 0xff));
    }
    f.rev.icmp_type_code = static_cast<std::uint16_t>(r.num_or(rev_icmp, 0));
    const bool is_icmp = k.proto == 1 || k.proto == 58;
    if (is_icmp && !has_icmp && k.sport == 0 && k.dport != 0) {
      // YAF and SiLK put ICMP type << 8 | code into destinationTransportPort.
      f.fwd.icmp_type_code = k.dport;
      k.dport = 0;
      has_icmp = true;
    }
    if (!is_icmp) f.fwd.icmp_type_code = f.rev.icmp_type_code = 0;
    has_flags_ = r.has(kTcpFlags) || r.has(kYafInitialFlags) || r.has(kYafUnionFlags) ||
                 r.has(kTos) || has_icmp;

    std::uint8_t reason = static_cast<std::uint8_t>(r.num_or(kEndReason, 0));
    if ((reason & 0x80) && (reason & 0x7f) >= 1 && (reason & 0x7f) <= 5) reason &= 0x7f;  // YAF
    reason_ = static_cast<EndReason>(reason);

    decode_times(r, f.start_ms, f.end_ms);
    f.fwd.first_ms = f.rev.first_ms = f.start_ms;
    f.fwd.last_ms = f.rev.last_ms = f.end_ms;
    if (auto d = r.num(kYafRevDeltaMs)) f.rev.first_ms = std::min(f.start_ms + *d, f.end_ms);

    decode_label(r);
    const std::string_view cid = r.text(kCommunityId);
    if (!cid.empty()) {
      label_.community_id.assign(cid);
    } else {
      label_.community_id = community_id(f);
    }
    return true;
  }

  void decode_label(const RecordView& r) {
    label_ = FlowLabel{};
    app_.clear();
    server_.clear();
    ja3c_.clear();
    risks_.clear();
    flow_.host.clear();
    has_label_ = false;
    if (!opts_.dpi) return;

    // The nDPI protocol id, when the exporter gave one: our applicationId (engine 22), ntop's
    // (PANA-L7-PEN 35632) or ntop's L7_PROTO.
    std::optional<std::uint16_t> ndpi_id;
    const std::string_view app_id = r.bytes(kAppId);
    if (app_id.size() >= 2) {
      const auto engine = static_cast<std::uint8_t>(app_id[0]);
      const std::string_view sel = app_id.substr(1);
      const auto* u = reinterpret_cast<const std::uint8_t*>(sel.data());
      if (engine == 22 && sel.size() <= 2) {
        ndpi_id = static_cast<std::uint16_t>(sel.size() == 2 ? be16(u) : u[0]);
      } else if (engine == 20 && sel.size() >= 5 && sel.size() <= 8 && be32(u) == kNtopPen) {
        std::uint64_t v = 0;
        for (std::size_t i = 4; i < sel.size(); ++i) v = (v << 8) | u[i];
        if (v <= 0xffff) ndpi_id = static_cast<std::uint16_t>(v);
      }
    }
    if (!ndpi_id && r.has(kNtopL7Proto)) {
      const std::string_view t = r.text(kNtopL7Proto);
      if (r.is_varlen(kNtopL7Proto)) {
        // A textual "master.app" (some nProbe versions): the app part, else the master.
        const auto dot = t.find('.');
        const std::string_view a = dot == std::string_view::npos ? t : t.substr(dot + 1);
        const std::string_view m = dot == std::string_view::npos ? t : t.substr(0, dot);
        const std::string_view use = (a.empty() || a == "0") ? m : a;
        if (!use.empty() && use.size() <= 5 &&
            use.find_first_not_of("0123456789") == std::string_view::npos) {
          unsigned long v = 0;
          for (const char c : use) v = v * 10 + static_cast<unsigned long>(c - '0');
          if (v <= 0xffff) ndpi_id = static_cast<std::uint16_t>(v);
        }
      } else if (auto v = r.num(kNtopL7Proto); v && *v <= 0xffff) {
        ndpi_id = static_cast<std::uint16_t>(*v);
      }
    }

    const std::string_view name = r.text(kAppName);
    const std::string_view ntop_name = r.text(kNtopL7ProtoName);
    if (!name.empty()) {
      app_.assign(name);
    } else if (!ntop_name.empty()) {
      app_.assign(ntop_name);
    } else if (r.has(kAppName)) {
      // Present but empty: no label (what the engine writes for records it has none for).
    } else if (ndpi_id && ndpi_name_) {
      auto it = ndpi_names_.find(*ndpi_id);
      if (it == ndpi_names_.end()) it = ndpi_names_.emplace(*ndpi_id, ndpi_name_(*ndpi_id)).first;
      app_ = it->second;
    } else if (!app_id.empty()) {
      app_ = application_id_text(app_id);
    } else if (ndpi_id) {
      app_ = "ndpi:" + std::to_string(*ndpi_id);
    } else if (auto yaf = r.num(kYafAppLabel)) {
      app_ = yaf_label_name(*yaf);
    } else if (r.has(kYafAppLabel)) {
      app_ = "Unknown";
    }

    // Server name: ntop's FLOW_SERVER_NAME, and which kind of name it is from the specific ones.
    const std::string_view generic = r.text(kServerName), tls = r.text(kSslServerName),
                           http = r.text(kHttpHost), dns = r.text(kDnsQuery);
    if (!tls.empty()) {
      label_.server_kind = FlowLabel::kTls;
    } else if (!http.empty()) {
      label_.server_kind = FlowLabel::kHttp;
    } else if (!dns.empty()) {
      label_.server_kind = FlowLabel::kDns;
    }
    const std::string_view server = !generic.empty() ? generic
                                    : !tls.empty()   ? tls
                                    : !http.empty()  ? http
                                                     : dns;
    server_.assign(server);
    flow_.host = server_;
    label_.server = &server_;
    ja3c_.assign(r.text(kJa3c));
    label_.ja3c = &ja3c_;

    if (app_.empty()) return;
    has_label_ = true;
    ++stats_.labelled_records;
    label_.name = &app_;
    label_.id = ndpi_id.value_or(0);
    label_.risk = r.num_or(kRisk, 0);
    label_.risk_score = static_cast<std::uint16_t>(r.num_or(kRiskScore, 0));
    risks_.assign(r.text(kRiskNames));
    label_.risks = &risks_;
  }

  // One store row (and its series) for direction `d` of flow_ with key `k`.
  void store_row(const FlowKey& k, const DirectionStats& d, const DirectionStats* rev,
                 std::uint64_t start, std::uint64_t end) {
    flows::FlowRow row;
    row.ip_version = k.ip_version;
    row.proto = k.proto;
    row.vlan = k.vlan;
    row.end_reason = static_cast<std::uint8_t>(reason_);
    row.community_id = label_.community_id;
    row.server_name = server_;
    row.ja3c = ja3c_;
    if (has_label_) {
      row.has_app = true;
      row.app_id = label_.id;
      row.app = app_;
      row.risk = label_.risk;
      row.risk_score = label_.risk_score;
      row.risks = risks_;
    }
    store_endpoints(k, row);
    row.start_ms = start;
    row.end_ms = end;
    row.fwd_packets = d.packets;
    row.fwd_bytes = d.octets;
    row.has_flags = has_flags_;
    row.tcp_flags = d.tcp_flags;
    row.tos = d.tos;
    row.icmp_type_code = d.icmp_type_code;
    std::uint64_t packets = d.packets, bytes = d.octets;
    if (rev) {
      row.has_rev = true;
      row.rev_packets = rev->packets;
      row.rev_bytes = rev->octets;
      row.rev_tcp_flags = rev->tcp_flags;
      row.rev_tos = rev->tos;
      row.rev_icmp_type_code = rev->icmp_type_code;
      packets += rev->packets;
      bytes += rev->octets;
    }
    store_->add(row);
    if (series_from_records_)
      store_->series().on_spread_record(start, end, packets, bytes,
                                        has_label_ ? std::string_view(app_) : std::string_view(),
                                        k.proto);
  }

  // Writes the decoded record: IPFIX, store rows, summary.
  void emit() {
    Flow& f = flow_;
    unsigned expected = 1;
    if (!opts_.biflow) expected = (f.fwd.packets ? 1u : 0u) + (f.rev.packets ? 1u : 0u);
    if (expected == 0) {
      ++stats_.not_exported;
      return;
    }
    now_ms_ = std::max(now_ms_, f.end_ms);
    const unsigned n = exporter_.write(f, reason_, label_, now_ms_);
    if (exporter_.is_network()) exporter_.tick(now_ms_);
    summary_.on_record(f, reason_, n, has_label_ ? &app_ : nullptr);
    const auto traffic = [&](const DirectionStats& d, std::uint64_t s, std::uint64_t e) {
      summary_.on_traffic(s * 1000, e * 1000, d.packets, d.octets);
      info_->packets += d.packets;
    };
    if (opts_.biflow) {
      DirectionStats both = f.fwd;
      both.packets += f.rev.packets;
      both.octets += f.rev.octets;
      traffic(both, f.start_ms, f.end_ms);
      if (store_) store_row(f.key, f.fwd, biflow_ ? &f.rev : nullptr, f.start_ms, f.end_ms);
      return;
    }
    if (f.fwd.packets) {
      traffic(f.fwd, f.fwd.first_ms, f.fwd.last_ms);
      if (store_) store_row(f.key, f.fwd, nullptr, f.fwd.first_ms, f.fwd.last_ms);
    }
    if (f.rev.packets) {
      traffic(f.rev, f.rev.first_ms, f.rev.last_ms);
      if (store_) store_row(f.key.reversed(), f.rev, nullptr, f.rev.first_ms, f.rev.last_ms);
    }
  }

  const Options& opts_;
  const ProtocolNameFn& ndpi_name_;
  Summary& summary_;
  IpfixIngestStats& stats_;
  IpfixExporter& exporter_;
  flows::Writer* store_;
  const bool series_from_records_;
  PooledModel model_;  // outlives every FileSession
  InputInfo* info_ = nullptr;
  const std::string* path_ = nullptr;
  std::vector<std::uint8_t> rec_;
  std::vector<std::pair<std::size_t, std::size_t>> drop_;
  std::vector<std::uint8_t> copy_;
  std::uint32_t export_s_ = 0;
  std::uint32_t domain_ = 0;
  std::set<std::uint32_t> domains_;
  std::map<std::uint32_t, std::uint64_t> domain_init_ms_;  // systemInitTimeMilliseconds
  std::uint64_t now_ms_ = 0;
  std::unordered_map<std::uint16_t, std::string> ndpi_names_;
  // The current record.
  Flow flow_;
  FlowLabel label_;
  EndReason reason_ = EndReason::kForcedEnd;
  bool biflow_ = false;
  bool has_flags_ = false;
  bool has_label_ = false;
  std::string app_, server_, ja3c_, risks_;
};

}  // namespace

Conversion ingest_ipfix(const Options& opts, const ProgressFn& progress,
                        const std::atomic<bool>* cancel, const ProtocolNameFn& ndpi_name,
                        const IngestRole& role) {
  const auto t0 = std::chrono::steady_clock::now();
  auto cancelled = [cancel] { return cancel && cancel->load(std::memory_order_relaxed); };
  if (cancelled()) throw Cancelled();
  if (opts.inputs.empty()) throw EngineError("no input file given");
  if (opts.output.empty()) throw EngineError("no output given");
  if (!opts.input_fds.empty() && opts.input_fds.size() != opts.inputs.size())
    throw EngineError("internal error: open inputs and input names do not match");

  // Input errors before touching the output.
  std::vector<std::unique_ptr<InputFile>> files;
  for (std::size_t i = 0; i < opts.inputs.size(); ++i) {
    files.push_back(std::make_unique<InputFile>(opts.inputs[i],
                                                opts.input_fds.empty() ? -1 : opts.input_fds[i]));
  }
  Summary summary(opts.analysis, opts.dpi);
  summary.ipfix = std::make_unique<IpfixIngestStats>();
  if (!opts.bpf_filter.empty()) {
    summary.warn("the BPF filter does not apply to IPFIX records: every record was read");
  }
  Progress prog;
  for (const auto& f : files) {
    InputInfo info;
    info.path = f->path();
    info.link_name = "IPFIX";
    info.file_bytes = f->size();
    info.ipfix = true;
    summary.inputs.push_back(info);
    prog.bytes_total += f->size();
  }

  IpfixExporter exporter(exporter_config(opts));  // removes its temporary file unless committed
  // meta 'dpi' says nDPI labelled every record in this task (the api then answers top-N by
  // application from the series). Ingested records carry whatever labels their exporter gave,
  // possibly none for some records: false.
  std::unique_ptr<flows::Writer> store =
      open_store(opts, exporter.is_network(), role.store_source, role.store_dpi,
                 role.store_indexes_last);  // likewise
  Ingest ingest(opts, ndpi_name, summary, exporter, store.get(), role.series_from_records);

  std::uint64_t done_bytes = 0;  // of the files before the current one
  std::uint64_t messages = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    InputFile& in = *files[i];
    ingest.read_file(in, summary.inputs[i], [&] {
      if (cancelled()) throw Cancelled();
      if (progress && (++messages & 63) == 0) {
        prog.packets = summary.packets();
        prog.bytes_read = done_bytes + in.consumed();
        progress(prog);
      }
    });
    done_bytes += in.size();
  }
  if (cancelled()) throw Cancelled();

  IpfixIngestStats& st = *summary.ipfix;
  st.observation_domains = ingest.domains();
  summary.packets_read = summary.packets();
  if (st.skipped_no_address) {
    summary.warn(std::to_string(st.skipped_no_address) +
                 " records had no source and destination addresses of one IP version and "
                 "were skipped");
  }
  if (st.skipped_implausible_counts) {
    summary.warn(std::to_string(st.skipped_implausible_counts) +
                 " records counted more than 2^53 packets or bytes (not plausible) and were "
                 "skipped");
  }
  if (st.not_exported) {
    summary.warn(std::to_string(st.not_exported) +
                 " records count no packets in either direction: a uniflow output has no "
                 "record for them");
  }
  if (st.times_from_export_time) {
    summary.warn(std::to_string(st.times_from_export_time) +
                 " records have no time elements: their start and end are their message's "
                 "export time");
  }
  if (st.sysuptime_from_export_time) {
    summary.warn(std::to_string(st.sysuptime_from_export_time) +
                 " records have sysUpTime times and no systemInitTimeMilliseconds: they were "
                 "placed to end at their message's export time");
  }
  if (summary.records() == 0) summary.warn("the input contains no flow records");
  if (role.before_publish) role.before_publish(store.get());

  publish_outputs(exporter, store.get());  // the store, then the IPFIX file

  if (progress) {
    prog.packets = summary.packets();
    prog.bytes_read = prog.bytes_total;
    progress(prog);
  }
  summary.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Summary::Extras x;
  x.output = opts.output;
  x.dpi = opts.dpi;
  x.biflow = opts.biflow;
  Conversion c;
  c.summary.reserve(4096);
  summary.write_json(c.summary, x);
  c.packets = summary.packets();
  c.bytes = summary.bytes();
  c.flows = summary.records();
  logger()->info("ingested {} IPFIX records ({} options records) into {} records in {:.3f} s",
                 st.data_records, st.options_records, summary.records(), summary.elapsed_s);
  return c;
}

std::uint64_t ingest_models_made() { return g_models_made.load(std::memory_order_relaxed); }

}  // namespace ipfixweb::engine

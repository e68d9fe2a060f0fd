#include "ipfixweb/api/capture_routes.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/handler_pool.hpp"
#include "ipfixweb/api/multipart.hpp"
#include "ipfixweb/capture/format.hpp"
#include "ipfixweb/shared/json_escape.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::api {

using http::Request;
using http::Response;
using nlohmann::json;

namespace {

constexpr const char* kTusVersion = "1.0.0";
constexpr const char* kOffsetType = "application/offset+octet-stream";
// A capture's first bytes are kept (at most this many) until its format is known: enough for
// a bzip2 block (up to 900 kB) to yield the decompressed start.
constexpr std::size_t kSniffLimit = 2u << 20;

struct EvpCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// A running digest (OpenSSL's libcrypto).
class Digest {
 public:
  explicit Digest(const EVP_MD* md = EVP_sha256()) : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), md, nullptr) != 1)
      throw std::runtime_error("cannot start a digest");
  }
  void update(std::string_view d) { EVP_DigestUpdate(ctx_.get(), d.data(), d.size()); }
  std::string raw() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), out, &n);
    return std::string(reinterpret_cast<char*>(out), n);
  }
  std::string hex() {
    static const char* d = "0123456789abcdef";
    std::string r = raw(), out;
    for (unsigned char c : r) {
      out += d[c >> 4];
      out += d[c & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, EvpCtxFree> ctx_;
};

// A Digest updated on a thread of its own while the caller writes the same bytes to disk:
// hashing (about 1 GB/s) and writing then overlap instead of adding up. start() hands over a
// piece (which must stay valid until wait() returns); wait() waits for it. The thread lives as
// long as the BackgroundDigest; release() gives the digest back (to be kept between the
// requests of a resumable upload without a thread, and resumed by the next one).
class BackgroundDigest {
 public:
  explicit BackgroundDigest(std::unique_ptr<Digest> resumed = nullptr)
      : digest_(resumed ? std::move(resumed) : std::make_unique<Digest>()),
        thread_([this] { run(); }) {}
  ~BackgroundDigest() { stop(); }
  void start(std::string_view piece) {
    {
      std::lock_guard lock(mu_);
      piece_ = piece;
      busy_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return !busy_; });
  }
  std::string hex() {
    wait();
    return digest_->hex();
  }
  // Stops the thread: the digest of every piece given so far.
  std::unique_ptr<Digest> release() {
    stop();
    return std::move(digest_);
  }

 private:
  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || busy_; });
      if (busy_) {
        const std::string_view p = piece_;
        lock.unlock();
        digest_->update(p);
        lock.lock();
        busy_ = false;
        cv_.notify_all();
        continue;
      }
      if (stop_) return;
    }
  }
  std::unique_ptr<Digest> digest_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string_view piece_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.empty()) return std::string();
  if (in.size() % 4 != 0 || in.size() > 4096) return std::nullopt;
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  if (in.size() >= 1 && in[in.size() - 1] == '=') --len;
  if (in.size() >= 2 && in[in.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string hex_of(std::string_view raw) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

std::string http_date(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::optional<std::uint64_t> parse_u64(const std::string& s) {
  std::uint64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "text/plain; charset=x" -> "text/plain"
std::string media_type(const std::string& ctype) {
  std::string base = lower(ctype.substr(0, ctype.find(';')));
  base.erase(std::remove(base.begin(), base.end(), ' '), base.end());
  return base;
}

// The expected SHA-256 of a one-shot upload: ?sha256=HEX, or Repr-Digest / Content-Digest
// (RFC 9530) "sha-256=:BASE64:". "" when none; nullopt when one is given but malformed.
std::optional<std::string> expected_digest(const Request& req) {
  if (req.has_query("sha256")) return parse_sha256(req.query_value("sha256"));
  for (const char* h : {"Repr-Digest", "Content-Digest"}) {
    const std::string v = req.header(h);
    if (v.empty()) continue;
    const auto at = lower(v).find("sha-256=:");
    if (at == std::string::npos) continue;
    const auto start = at + 9;
    const auto end = v.find(':', start);
    if (end == std::string::npos) return std::nullopt;
    auto raw = base64_decode(std::string_view(v).substr(start, end - start));
    if (!raw || raw->size() != 32) return std::nullopt;
    return hex_of(*raw);
  }
  return std::string();
}

// filename="x" (or filename*=UTF-8''x) of a Content-Disposition value.
std::string disposition_filename(const std::string& v) {
  const std::string l = lower(v);
  if (auto at = l.find("filename*=utf-8''"); at != std::string::npos) {
    std::string enc = v.substr(at + 17);
    enc = enc.substr(0, enc.find(';'));
    if (auto dec = http::percent_decode(enc, false)) return *dec;
  }
  auto at = l.find("filename=");
  if (at == std::string::npos) return "";
  std::string rest = v.substr(at + 9);
  if (!rest.empty() && rest.front() == '"') {
    const auto end = rest.find('"', 1);
    return rest.substr(1, end == std::string::npos ? std::string::npos : end - 1);
  }
  return rest.substr(0, rest.find(';'));
}

CaptureRefusal io_refusal(int e, const char* what) {
  if (e == ENOSPC || e == EDQUOT) return {507, "the capture disk is full"};
  return {500, std::string(what) + ": " + std::strerror(e)};
}

// Writes a capture's bytes at an offset of its file, hashing them and keeping the head
// until the format is known.
class Incoming {
 public:
  Incoming(int fd, std::uint64_t offset) : fd_(fd), offset_(offset) {}
  ~Incoming() {
    if (fd_ >= 0) ::close(fd_);
  }
  Incoming(const Incoming&) = delete;
  Incoming& operator=(const Incoming&) = delete;

  int fd() const { return fd_; }
  std::uint64_t offset() const { return offset_; }

  CaptureRefusal write(std::string_view piece) {
    const char* p = piece.data();
    std::size_t left = piece.size();
    while (left > 0) {
      const ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(offset_));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return io_refusal(n < 0 ? errno : ENOSPC, "cannot write the upload");
      p += n;
      left -= static_cast<std::size_t>(n);
      offset_ += static_cast<std::uint64_t>(n);
    }
    // Writeback starts as the data comes (every 64 MiB) (not all at the final fsync, which then has
    // little left to do); SYNC_FILE_RANGE_WRITE does not wait for it.
    if (offset_ - flushed_ >= kFlushEvery) {
      ::sync_file_range(fd_, static_cast<off_t>(flushed_), static_cast<off_t>(offset_ - flushed_),
                        SYNC_FILE_RANGE_WRITE);
      flushed_ = offset_;
    }
    return {};
  }

 private:
  static constexpr std::uint64_t kFlushEvery = 64u << 20;
  int fd_;
  std::uint64_t offset_;
  std::uint64_t flushed_ = offset_;
};

// The format, from the head of a capture: decided once sniff() says so.
struct Sniffer {
  std::string head;
  std::optional<capture::Sniff> decided;

  // Bytes from the capture's start. A refusal (415) once it is known not to be a capture.
  CaptureRefusal feed(std::string_view piece) {
    if (decided) return {};
    head.append(piece.substr(0, kSniffLimit - std::min(kSniffLimit, head.size())));
    return decide(head.size() >= kSniffLimit);
  }
  CaptureRefusal decide(bool complete) {
    if (decided) return {};
    auto s = capture::sniff(head, complete);
    if (s.need_more && !complete) return {};
    decided = s;
    head.clear();
    head.shrink_to_fit();
    if (s.format == capture::Format::Unknown)
      return {415, s.compression == capture::Compression::None
                       ? std::string("the upload is not a capture: pcap, pcapng or IPFIX, plain or "
                                     "compressed with gzip, zstd, xz or bzip2")
                       : "the upload is " + std::string(capture::name(s.compression)) +
                             "-compressed but holds no pcap, pcapng or IPFIX data (or is corrupt)"};
    return {};
  }
  std::string format() const { return decided ? capture::describe(*decided) : "unknown"; }
};

json capture_value(const CaptureInfo& c) {
  return {{"sha256", c.sha256},
          {"name", c.name},
          {"size", c.size},
          {"format", c.format},
          {"uploaded_at", c.uploaded_at},
          {"path", c.path},
          {"ref", "sha256:" + c.sha256},
          {"links", {{"self", "/api/v1/captures/" + c.sha256}}}};
}

}  // namespace

std::string capture_json(const CaptureInfo& c) { return capture_value(c).dump(); }

std::string owner_of(const Request& req) {
  const std::string auth = req.header("Authorization");
  if (auth.size() <= 7 || lower(auth.substr(0, 7)) != "bearer ") return "";
  Digest d;
  d.update(std::string_view(auth).substr(7));
  return "t-" + d.hex().substr(0, 12);
}

struct CaptureRoutes::Impl {
  CaptureStore& store;
  Problem problem;
  InUse in_use;
  std::shared_ptr<spdlog::logger> log = logger("api");

  // The running SHA-256 of resumable uploads between their requests, by id (no thread: a
  // request hashes on a thread of its own while it lasts): valid while it has hashed exactly
  // the upload's bytes (`at`); otherwise the file is hashed again when the upload completes.
  // Dropped with the upload (CaptureStore's removal callback).
  struct Running {
    std::unique_ptr<Digest> digest;
    std::uint64_t at = 0;
  };
  std::mutex mu;
  std::map<std::string, Running> running;
  std::set<std::string> waiting;  // uploads a PATCH waits for (one each)

  Impl(CaptureStore& s, Problem p, InUse u)
      : store(s), problem(std::move(p)), in_use(std::move(u)) {}

  void fail(Response& res, const CaptureRefusal& r) {
    if (r.status == 422) return problem(res, r.status, r.detail, {{r.field, r.detail}});
    problem(res, r.status, r.detail, {});
  }

  // A complete temp file → a capture: the answer (201 new, 200 existing) or a refusal.
  bool publish(Response& res, int fd, const std::string& temp, const std::string& sha256,
               const std::string& expected, const std::string& format, const std::string& name,
               const std::string& owner, std::uint64_t reserved) {
    if (!expected.empty() && expected != sha256) {
      ::unlink(temp.c_str());
      store.release(owner, reserved);
      const std::string why = "the upload's SHA-256 is " + sha256 + ", not " + expected +
                              " as the client said: nothing was kept";
      problem(res, 422, why, {{"sha256", why}});
      return false;
    }
    auto r = store.publish(fd, temp, sha256, format, name, owner, reserved);
    if (auto* refusal = std::get_if<CaptureRefusal>(&r)) {
      fail(res, *refusal);
      return false;
    }
    auto& p = std::get<CaptureStore::Published>(r);
    json body = capture_value(p.info);
    if (p.existing) body["existing"] = true;
    res.status = p.existing ? 200 : 201;
    res.set_header("Location", "/api/v1/captures/" + p.info.sha256);
    res.set_content(body.dump(), "application/json");
    return true;
  }

  std::string sha_of_file(int fd) {
    Digest d;
    std::string buf(1 << 20, '\0');
    off_t at = 0;
    for (;;) {
      const ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        throw std::runtime_error(std::string("cannot read the upload: ") + std::strerror(errno));
      if (n == 0) break;
      d.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
      at += n;
    }
    return d.hex();
  }

  static void tus_headers(Response& res) { res.set_header("Tus-Resumable", kTusVersion); }
  bool tus_checked(const Request& req, Response& res) {
    tus_headers(res);
    if (req.header("Tus-Resumable") == kTusVersion) return true;
    res.set_header("Tus-Version", kTusVersion);
    problem(res, 412, "send Tus-Resumable: 1.0.0 (this server speaks tus 1.0.0)", {});
    return false;
  }
  void upload_headers(Response& res, const UploadState& u) {
    res.set_header("Upload-Offset", std::to_string(u.offset));
    if (u.length)
      res.set_header("Upload-Length", std::to_string(*u.length));
    else
      res.set_header("Upload-Defer-Length", "1");
    res.set_header("Upload-Expires", http_date(u.expires));
    res.set_header("Cache-Control", "no-store");
    if (!u.capture.empty()) res.set_header("Content-Location", "/api/v1/captures/" + u.capture);
  }
};

// --- One-shot uploads: POST /api/v1/captures ---

namespace {

// The body of POST /api/v1/captures: raw, or a multipart form whose "file" part is the
// capture (a "sha256" field may come before or after it).
class PostSink : public http::BodySink {
 public:
  PostSink(CaptureRoutes::Impl& im, std::string temp, int fd, std::string name,
           std::string expected, std::string owner, std::uint64_t reserved,
           std::optional<std::string> boundary)
      : im_(im),
        temp_(std::move(temp)),
        out_(fd, 0),
        name_(std::move(name)),
        expected_(std::move(expected)),
        owner_(std::move(owner)),
        reserved_(reserved) {
    if (boundary) form_.emplace(*boundary);
  }
  ~PostSink() override {
    if (!done_) abort();
  }

  bool write(std::string_view piece, Response& res) override {
    if (!form_) return take(piece, res);
    bool ok = true;
    const bool parsed = form_->feed(piece, [&](const MultipartParser::Event& e) {
      if (!ok) return;
      ok = on_form(e, res);
    });
    if (!ok) return false;
    if (!parsed) return refuse(res, {400, "the multipart form is malformed: " + form_->error()});
    return true;
  }

  void finish(Response& res) override {
    done_ = true;
    if (form_) {
      if (!form_->complete())
        return refuse_at_end(res, {400, "the multipart form ends before its closing boundary"});
      if (!file_seen_)
        return refuse_at_end(res, {422, "the multipart form has no \"file\" part", "file"});
    }
    if (auto r = sniffer_.decide(true)) return refuse_at_end(res, r);
    if (auto why = capture_name_problem(name_))
      return refuse_at_end(res, {422, "the capture's name " + *why, "name"});
    im_.publish(res, out_.fd(), temp_, digest_.hex(), expected_, sniffer_.format(), name_, owner_,
                reserved_);
  }

  void abort() override {
    done_ = true;
    discard();
  }

 private:
  bool take(std::string_view piece, Response& res) {
    const std::uint64_t after = out_.offset() + piece.size();
    if (after > im_.store.options().max_size)
      return refuse(res, {413, "the capture is larger than the limit of " +
                                   std::to_string(im_.store.options().max_size) + " bytes"});
    if (after > reserved_) {  // a chunked body: counted as it comes
      if (auto r = im_.store.reserve(owner_, after - reserved_)) return refuse(res, r);
      reserved_ = after;
    }
    if (auto r = sniffer_.feed(piece)) return refuse(res, r);
    digest_.start(piece);
    auto r = out_.write(piece);
    digest_.wait();
    if (r) return refuse(res, r);
    return true;
  }

  bool on_form(const MultipartParser::Event& e, Response& res) {
    using K = MultipartParser::Event::Kind;
    switch (e.kind) {
      case K::PartStart:
        in_file_ = false;
        field_.clear();
        if (e.name == "file" || !e.filename.empty()) {
          if (file_seen_)
            return refuse(res, {422, "the multipart form has more than one file", "file"});
          in_file_ = file_seen_ = true;
          if (!e.filename.empty() && name_ == "upload") name_ = e.filename;
        } else {
          field_name_ = e.name;
        }
        return true;
      case K::Data:
        if (in_file_) return take(e.data, res);
        if (field_.size() + e.data.size() > 1024)
          return refuse(res,
                        {422, "the form field \"" + field_name_ + "\" is too long", field_name_});
        field_.append(e.data);
        return true;
      case K::PartEnd:
        if (!in_file_ && field_name_ == "sha256") {
          auto d = parse_sha256(field_);
          if (!d) return refuse(res, {422, "the form field sha256 is not 64 hex digits", "sha256"});
          expected_ = *d;
        } else if (!in_file_ && field_name_ == "name") {
          name_ = field_;
        }
        in_file_ = false;
        return true;
    }
    return true;
  }

  bool refuse(Response& res, const CaptureRefusal& r) {
    done_ = true;
    discard();
    im_.fail(res, r);
    return false;
  }
  void refuse_at_end(Response& res, const CaptureRefusal& r) {
    discard();
    im_.fail(res, r);
  }
  void discard() {
    if (discarded_) return;
    discarded_ = true;
    ::unlink(temp_.c_str());
    im_.store.release(owner_, reserved_);
    reserved_ = 0;
  }

  CaptureRoutes::Impl& im_;
  std::string temp_;
  Incoming out_;
  std::string name_;
  std::string expected_;
  std::string owner_;
  std::uint64_t reserved_;
  BackgroundDigest digest_;
  Sniffer sniffer_;
  std::optional<MultipartParser> form_;
  bool in_file_ = false, file_seen_ = false;
  std::string field_name_, field_;
  bool done_ = false, discarded_ = false;
};

}  // namespace

std::unique_ptr<http::BodySink> CaptureRoutes::post_capture(const Request& req, Response& res) {
  auto& im = *impl_;
  const auto& o = im.store.options();
  const std::string type = media_type(req.header("Content-Type"));
  std::optional<std::string> boundary;
  if (type == "multipart/form-data") {
    boundary = multipart_boundary(req.header("Content-Type"));
    if (!boundary) {
      im.problem(res, 400, "multipart/form-data without a boundary", {});
      return nullptr;
    }
  }
  std::string name = req.query_value("name");
  if (name.empty()) name = disposition_filename(req.header("Content-Disposition"));
  if (name.empty()) name = "upload";
  if (auto why = capture_name_problem(name)) {
    im.problem(res, 422, "the capture's name " + *why, {{"name", *why}});
    return nullptr;
  }
  auto expected = expected_digest(req);
  if (!expected) {
    const std::string why =
        "the expected digest is malformed: give ?sha256=<64 hex digits> or Repr-Digest: "
        "sha-256=:<base64>:";
    im.problem(res, 422, why, {{req.has_query("sha256") ? "sha256" : "Repr-Digest", why}});
    return nullptr;
  }
  std::uint64_t reserve = 0;
  if (req.has_header("Content-Length")) {
    auto len = parse_u64(req.header("Content-Length")).value_or(0);
    if (!boundary && len > o.max_size) {
      im.problem(res, 413,
                 "the capture is larger than the limit of " + std::to_string(o.max_size) + " bytes",
                 {});
      return nullptr;
    }
    if (!boundary && len == 0) {
      im.problem(res, 422, "the upload is empty", {{"Content-Length", "is 0"}});
      return nullptr;
    }
    reserve = boundary ? 0 : len;
  }
  const std::string owner = owner_of(req);
  if (reserve) {
    if (auto r = im.store.reserve(owner, reserve)) {
      im.fail(res, r);
      return nullptr;
    }
  }
  const std::string temp = im.store.uploads_dir() + "/post-" + new_uuid() + ".part";
  const int fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    im.store.release(owner, reserve);
    im.fail(res, io_refusal(errno, "cannot create the upload"));
    return nullptr;
  }
  return std::make_unique<PostSink>(im, temp, fd, name, *expected, owner, reserve, boundary);
}

namespace {

// The capture list's cursor names the last capture of a page ("<uploaded_at>~<sha256>"), not
// a position, so that captures uploaded or removed between pages neither come twice nor are
// skipped. The list's order is uploaded_at descending, then sha256 ascending.
std::string list_cursor(const CaptureInfo& c) { return c.uploaded_at + "~" + c.sha256; }

std::optional<std::pair<std::string, std::string>> parse_list_cursor(const std::string& v) {
  const auto tilde = v.rfind('~');
  if (tilde == std::string::npos || tilde == 0 || tilde > 64) return std::nullopt;
  std::string at = v.substr(0, tilde);
  for (unsigned char ch : at)
    if (!std::isalnum(ch) && ch != ':' && ch != '.' && ch != '-' && ch != '+') return std::nullopt;
  auto sha = parse_sha256(std::string_view(v).substr(tilde + 1));
  if (!sha) return std::nullopt;
  return std::make_pair(std::move(at), std::move(*sha));
}

}  // namespace

void CaptureRoutes::list(const Request& req, Response& res) {
  auto& im = *impl_;
  std::size_t limit = 100;
  std::optional<std::pair<std::string, std::string>> after;
  std::vector<FieldError> errors;
  if (req.has_query("limit")) {
    auto v = parse_u64(req.query_value("limit"));
    if (!v || *v < 1 || *v > static_cast<std::uint64_t>(kMaxPageLimit))
      errors.push_back({"limit", "must be from 1 to " + std::to_string(kMaxPageLimit)});
    else
      limit = *v;
  }
  if (req.has_query("next")) {
    after = parse_list_cursor(req.query_value("next"));
    if (!after) errors.push_back({"next", "is not a cursor this server issued"});
  }
  if (!errors.empty()) return im.problem(res, 422, "invalid query parameters", errors);
  const auto all = im.store.list();
  json items = json::array();
  std::size_t i = 0;
  if (after) {
    while (i < all.size() &&
           (all[i].uploaded_at > after->first ||
            (all[i].uploaded_at == after->first && all[i].sha256 <= after->second)))
      ++i;
  }
  const std::size_t from = i;
  for (; i < all.size() && items.size() < limit; ++i) items.push_back(capture_value(all[i]));
  json body = {
      {"captures", items},
      {"next", i < all.size() && i > from ? json(list_cursor(all[i - 1])) : json(nullptr)},
      {"used_bytes", im.store.used()},
      {"quota_bytes", im.store.options().quota ? json(im.store.options().quota) : json(nullptr)}};
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

void CaptureRoutes::get(const Request& req, Response& res) {
  auto& im = *impl_;
  auto sha = parse_sha256(req.path_params.at(0));
  auto c = sha ? im.store.find(*sha) : std::nullopt;
  if (!c) return im.problem(res, 404, "no capture " + req.path_params.at(0), {});
  res.status = 200;
  res.set_content(capture_json(*c), "application/json");
}

void CaptureRoutes::remove(const Request& req, Response& res) {
  auto& im = *impl_;
  auto sha = parse_sha256(req.path_params.at(0));
  if (!sha) return im.problem(res, 404, "no capture " + req.path_params.at(0), {});
  switch (im.store.remove(*sha, im.in_use)) {
    case CaptureStore::Removed::Yes:
      res.status = 204;
      return;
    case CaptureStore::Removed::NotFound:
      return im.problem(res, 404, "no capture " + *sha, {});
    case CaptureStore::Removed::InUse:
      return im.problem(res, 409, "capture " + *sha + " is read by a queued or running task", {});
  }
}

// --- Resumable uploads (tus 1.0.0) ---

namespace {

// The body of a PATCH (or of a creation-with-upload POST): bytes at the upload's offset.
class PatchSink : public http::BodySink {
 public:
  PatchSink(CaptureRoutes::Impl& im, UploadState u, int fd, int created_status,
            std::unique_ptr<Digest> checksum, std::string checksum_expected)
      : im_(im),
        u_(std::move(u)),
        out_(fd, u_.offset),
        start_(u_.offset),
        created_status_(created_status),
        checksum_(std::move(checksum)),
        checksum_expected_(std::move(checksum_expected)) {
    std::unique_ptr<Digest> resumed;
    {
      std::lock_guard lock(im_.mu);
      if (auto it = im_.running.find(u_.id); it != im_.running.end()) {
        if (it->second.at == start_) resumed = std::move(it->second.digest);
        im_.running.erase(it);
      }
    }
    if (resumed || start_ == 0) digest_ = std::make_unique<BackgroundDigest>(std::move(resumed));
  }
  ~PatchSink() override {
    if (!done_) abort();
  }

  bool write(std::string_view piece, Response& res) override {
    const std::uint64_t after = out_.offset() + piece.size();
    if (u_.length && after > *u_.length)
      return refuse(res,
                    {413, "the body goes beyond the upload's length of " +
                              std::to_string(*u_.length) + " bytes"},
                    true);
    if (!u_.length) {
      if (after > im_.store.options().max_size)
        return refuse(res,
                      {413, "the capture is larger than the limit of " +
                                std::to_string(im_.store.options().max_size) + " bytes"},
                      true);
      if (auto r = im_.store.reserve_for_upload(u_, piece.size())) return refuse(res, r, true);
      reserved_here_ += piece.size();
    }
    if (digest_) digest_->start(piece);  // hashed beside the write
    auto written = out_.write(piece);
    if (digest_) digest_->wait();
    if (auto r = written) {
      // A full disk: the whole upload goes (partial data removed), as the client is told.
      done_ = true;
      im_.store.remove_upload(u_.id);
      im_.store.unlock_upload(u_.id);
      im_.fail(res, r);
      return false;
    }
    if (checksum_) checksum_->update(piece);
    return true;
  }

  void finish(Response& res) override {
    done_ = true;
    if (checksum_ && hex_of(checksum_->raw()) != checksum_expected_) {
      rollback();
      im_.tus_headers(res);
      if (created_status_ == 201) res.set_header("Location", "/api/v1/uploads/" + u_.id);
      res.status = 460;
      res.set_content(
          R"({"type":"about:blank","title":"Checksum Mismatch","status":460,"detail":"the body's checksum does not match Upload-Checksum: the bytes were not kept"})",
          "application/problem+json");
      return;
    }
    if (::fsync(out_.fd()) != 0) {
      const int e = errno;
      im_.store.remove_upload(u_.id);
      im_.store.unlock_upload(u_.id);
      return im_.fail(res, io_refusal(e, "cannot write the upload"));
    }
    u_.offset = out_.offset();
    im_.tus_headers(res);
    if (created_status_ == 201) res.set_header("Location", "/api/v1/uploads/" + u_.id);
    if (u_.length && u_.offset == *u_.length) return complete(res);
    // Not a capture: known as soon as its head is here, refused then (not at the end).
    if (auto r = sniff(false)) return refuse_upload(res, r);
    keep_digest();
    im_.store.unlock_upload(u_.id);
    auto fresh = im_.store.upload(u_.id);
    im_.upload_headers(res, fresh ? *fresh : u_);
    res.status = created_status_;
  }

  void abort() override {
    if (done_) return;
    done_ = true;
    // A request that carried Upload-Checksum is kept whole and verified, or not at all: its
    // bytes cannot be checked when it breaks off.
    if (checksum_) return rollback();
    ::fsync(out_.fd());  // what arrived is kept: the client resumes from it
    keep_digest();
    im_.store.unlock_upload(u_.id);
  }

 private:
  void complete(Response& res) {
    if (auto r = sniff(true)) return refuse_upload(res, r);
    std::string sha;
    try {
      sha = digest_ ? digest_->hex() : im_.sha_of_file(out_.fd());
    } catch (const std::exception& e) {
      im_.store.unlock_upload(u_.id);
      return im_.fail(res, {500, e.what()});
    }
    auto name = u_.name.empty() ? std::string("upload") : u_.name;
    const std::uint64_t reserved = im_.store.take_upload_reservation(u_.id);
    const std::string part = im_.store.uploads_dir() + "/" + u_.id + ".part";
    Response pub;
    if (!im_.publish(pub, out_.fd(), part, sha, u_.expected_sha256, format_, name, u_.owner,
                     reserved)) {
      im_.store.remove_upload(u_.id);
      im_.store.unlock_upload(u_.id);
      res = std::move(pub);
      im_.tus_headers(res);
      return;
    }
    u_.capture = sha;
    im_.store.save_upload(u_);
    im_.store.unlock_upload(u_.id);
    auto fresh = im_.store.upload(u_.id);
    im_.upload_headers(res, fresh ? *fresh : u_);
    res.status = created_status_;
  }

  // The format from the file's head, once enough of it is here (or it is complete).
  CaptureRefusal sniff(bool complete) {
    std::string head(std::min<std::uint64_t>(kSniffLimit, out_.offset()), '\0');
    const ssize_t n = ::pread(out_.fd(), head.data(), head.size(), 0);
    head.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    Sniffer s;
    s.head = std::move(head);
    auto r = s.decide(complete || out_.offset() >= kSniffLimit);
    format_ = s.format();
    return r;
  }

  void refuse_upload(Response& res, const CaptureRefusal& r) {
    im_.store.remove_upload(u_.id);
    im_.store.unlock_upload(u_.id);
    im_.fail(res, r);
    im_.tus_headers(res);
  }

  // A refused body: the upload goes back to where this request started. A creation's upload
  // goes altogether: the refusal does not tell the client its address.
  bool refuse(Response& res, const CaptureRefusal& r, bool roll_back) {
    done_ = true;
    if (created_status_ == 201) {
      im_.store.remove_upload(u_.id);
      digest_.reset();
    } else if (roll_back) {
      rollback();
    }
    im_.store.unlock_upload(u_.id);
    im_.fail(res, r);
    im_.tus_headers(res);
    return false;
  }
  // This request's bytes are dropped, and no longer counted (a deferred length counts them as
  // they come).
  void rollback() {
    if (::ftruncate(out_.fd(), static_cast<off_t>(start_)) == 0) ::fsync(out_.fd());
    im_.store.release_for_upload(u_, reserved_here_);
    reserved_here_ = 0;
    digest_.reset();
    im_.store.unlock_upload(u_.id);
  }

  void keep_digest() {
    if (!digest_) return;
    auto d = digest_->release();
    digest_.reset();
    std::lock_guard lock(im_.mu);
    im_.running[u_.id] = {std::move(d), out_.offset()};
  }

  CaptureRoutes::Impl& im_;
  UploadState u_;
  Incoming out_;
  std::uint64_t start_;
  int created_status_;
  std::unique_ptr<Digest> checksum_;
  std::string checksum_expected_;
  std::unique_ptr<BackgroundDigest> digest_;
  std::string format_;
  std::uint64_t reserved_here_ = 0;  // counted by this request (a deferred length)
  bool done_ = false;
};

// tus's Upload-Metadata: "key base64,key2 base64".
std::map<std::string, std::string> parse_metadata(const std::string& v, bool& ok) {
  std::map<std::string, std::string> out;
  ok = true;
  std::size_t at = 0;
  while (at < v.size()) {
    auto comma = v.find(',', at);
    std::string pair = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? v.size() : comma + 1;
    pair.erase(0, pair.find_first_not_of(' '));
    if (pair.empty()) continue;
    const auto sp = pair.find(' ');
    const std::string key = pair.substr(0, sp);
    auto value = sp == std::string::npos ? std::optional<std::string>("")
                                         : base64_decode(pair.substr(sp + 1));
    if (!value) {
      ok = false;
      return out;
    }
    out[key] = *value;
  }
  return out;
}

// Upload-Checksum ("<sha1|sha256|md5> <base64>", tus's checksum extension): the digest to run
// over the request's body and the hex value it must end at; {nullptr, ""} when the request has
// none; false (answered 400) when it is malformed.
bool upload_checksum(CaptureRoutes::Impl& im, const Request& req, Response& res,
                     std::unique_ptr<Digest>& digest, std::string& expected) {
  if (!req.has_header("Upload-Checksum")) return true;
  const std::string v = req.header("Upload-Checksum");
  const auto sp = v.find(' ');
  const std::string alg = lower(v.substr(0, sp));
  const EVP_MD* md = alg == "sha1"     ? EVP_sha1()
                     : alg == "sha256" ? EVP_sha256()
                     : alg == "md5"    ? EVP_md5()
                                       : nullptr;
  auto raw = sp == std::string::npos ? std::nullopt : base64_decode(v.substr(sp + 1));
  if (!md || !raw) {
    im.problem(res, 400, "Upload-Checksum must be '<sha1|sha256|md5> <base64>'", {});
    return false;
  }
  digest = std::make_unique<Digest>(md);
  expected = hex_of(*raw);
  return true;
}

}  // namespace

void CaptureRoutes::tus_options(const Request&, Response& res) {
  auto& im = *impl_;
  im.tus_headers(res);
  res.set_header("Tus-Version", kTusVersion);
  res.set_header("Tus-Max-Size", std::to_string(im.store.options().max_size));
  res.set_header("Tus-Extension",
                 "creation,creation-with-upload,creation-defer-length,termination,expiration,"
                 "checksum");
  res.set_header("Tus-Checksum-Algorithm", "sha1,sha256,md5");
  res.status = 204;
}

std::unique_ptr<http::BodySink> CaptureRoutes::tus_create(const Request& req, Response& res) {
  auto& im = *impl_;
  if (!im.tus_checked(req, res)) return nullptr;
  const auto& o = im.store.options();
  std::optional<std::uint64_t> length;
  if (req.has_header("Upload-Length")) {
    length = parse_u64(req.header("Upload-Length"));
    if (!length) {
      im.problem(res, 400, "Upload-Length is not a number of bytes", {});
      return nullptr;
    }
    if (*length > o.max_size) {
      im.problem(res, 413,
                 "the capture is larger than the limit of " + std::to_string(o.max_size) + " bytes",
                 {});
      return nullptr;
    }
    if (*length == 0) {
      im.problem(res, 422, "the upload is empty", {{"Upload-Length", "is 0"}});
      return nullptr;
    }
  } else if (req.header("Upload-Defer-Length") != "1") {
    im.problem(res, 400, "send Upload-Length (or Upload-Defer-Length: 1)", {});
    return nullptr;
  }
  bool ok = true;
  const std::string metadata = req.header("Upload-Metadata");
  if (!is_valid_utf8(metadata)) {  // it is kept with the upload's state, as JSON text
    im.problem(res, 400, "Upload-Metadata must be UTF-8 (keys, and values in base64)", {});
    return nullptr;
  }
  auto meta = parse_metadata(metadata, ok);
  if (!ok) {
    im.problem(res, 400, "Upload-Metadata values must be base64", {});
    return nullptr;
  }
  std::string name = meta.count("filename") ? meta["filename"] : meta["name"];
  if (name.empty()) name = "upload";
  if (auto why = capture_name_problem(name)) {
    im.problem(res, 422, "the capture's name " + *why, {{"filename", *why}});
    return nullptr;
  }
  std::string expected;
  if (meta.count("sha256")) {
    auto d = parse_sha256(meta["sha256"]);
    if (!d) {
      im.problem(res, 422, "the sha256 metadata is not 64 hex digits", {{"sha256", "malformed"}});
      return nullptr;
    }
    expected = *d;
  }
  const bool with_body = req.has_header("Transfer-Encoding") ||
                         parse_u64(req.header("Content-Length")).value_or(0) > 0;
  if (with_body && media_type(req.header("Content-Type")) != kOffsetType) {
    im.problem(res, 415, std::string("an upload's data is sent as ") + kOffsetType, {});
    return nullptr;
  }
  if (length && parse_u64(req.header("Content-Length")).value_or(0) > *length) {
    im.problem(res, 413,
               "the body goes beyond the upload's length of " + std::to_string(*length) + " bytes",
               {});
    return nullptr;
  }
  std::unique_ptr<Digest> checksum;
  std::string checksum_expected;
  if (with_body && !upload_checksum(im, req, res, checksum, checksum_expected)) return nullptr;
  auto made = im.store.create_upload(length, name, expected, metadata, owner_of(req));
  if (auto* r = std::get_if<CaptureRefusal>(&made)) {
    im.fail(res, *r);
    return nullptr;
  }
  auto u = std::get<UploadState>(std::move(made));
  res.set_header("Location", "/api/v1/uploads/" + u.id);
  im.upload_headers(res, u);
  if (!with_body) {
    res.status = 201;
    return nullptr;  // answered: no body to take
  }
  im.store.lock_upload(u.id);
  const std::string part = im.store.uploads_dir() + "/" + u.id + ".part";
  const int fd = ::open(part.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    im.store.remove_upload(u.id);
    im.store.unlock_upload(u.id);
    res = Response{};
    im.fail(res, io_refusal(errno, "cannot open the upload"));
    return nullptr;
  }
  return std::make_unique<PatchSink>(im, u, fd, 201, std::move(checksum), checksum_expected);
}

void CaptureRoutes::tus_head(const Request& req, Response& res) {
  auto& im = *impl_;
  if (!im.tus_checked(req, res)) return;
  auto u = im.store.upload(req.path_params.at(0));
  if (!u) {
    res.status = 404;
    res.set_header("Cache-Control", "no-store");
    return;
  }
  im.upload_headers(res, *u);
  res.status = 200;
}

std::unique_ptr<http::BodySink> CaptureRoutes::tus_patch(const Request& req, Response& res) {
  auto& im = *impl_;
  if (!im.tus_checked(req, res)) return nullptr;
  const std::string id = req.path_params.at(0);
  if (media_type(req.header("Content-Type")) != kOffsetType) {
    im.problem(res, 415, std::string("PATCH an upload's data as ") + kOffsetType, {});
    return nullptr;
  }
  auto offset = parse_u64(req.header("Upload-Offset"));
  if (!offset) {
    im.problem(res, 400, "Upload-Offset is missing or not a number", {});
    return nullptr;
  }
  std::unique_ptr<Digest> checksum;
  std::string checksum_expected;
  if (!upload_checksum(im, req, res, checksum, checksum_expected)) return nullptr;
  // A client resuming right after its connection broke may come before the api has seen the
  // old request end (and released the upload): wait a little for it. The wait is a WaitScope:
  // the handler pool runs other requests meanwhile (clients retrying against an upload still
  // held would otherwise take every handler thread for up to 2 s each).
  // At most one request waits per upload; others are answered at once.
  bool locked = im.store.lock_upload(id);
  bool first_waiter = false;
  if (!locked) {
    std::lock_guard lock(im.mu);
    first_waiter = im.waiting.insert(id).second;
  }
  if (first_waiter) {
    {
      http::WaitScope waiting;
      for (int i = 0; !locked && i < 100; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        locked = im.store.lock_upload(id);
      }
    }
    std::lock_guard lock(im.mu);
    im.waiting.erase(id);
  }
  if (!locked) {
    im.problem(res, 409, "another request is writing upload " + id + " now", {});
    return nullptr;
  }
  auto u = im.store.upload(id);
  auto refuse = [&](int status, const std::string& detail) -> std::unique_ptr<http::BodySink> {
    im.store.unlock_upload(id);
    im.problem(res, status, detail, {});
    im.tus_headers(res);
    return nullptr;
  };
  if (!u) return refuse(404, "no upload " + id + " (it may have expired)");
  if (!u->capture.empty())
    return refuse(409, "upload " + id + " is complete: it is capture " + u->capture);
  if (*offset != u->offset) {
    res.set_header("Upload-Offset", std::to_string(u->offset));
    return refuse(409, "Upload-Offset is " + std::to_string(*offset) + " but the upload is at " +
                           std::to_string(u->offset) + ": resume from there");
  }
  if (req.has_header("Upload-Length")) {
    auto len = parse_u64(req.header("Upload-Length"));
    if (!len || (u->length && *len != *u->length) || *len < u->offset)
      return refuse(400, "Upload-Length may only be set once, to at least the offset");
    if (*len > im.store.options().max_size)
      return refuse(413, "the capture is larger than the limit of " +
                             std::to_string(im.store.options().max_size) + " bytes");
    if (!u->length) {
      // The upload counts its bytes so far: the whole length is counted from now on, or, when
      // the quota refuses it, nothing changes.
      const std::uint64_t held = im.store.upload_reservation(id);
      if (*len > held) {
        if (auto r = im.store.reserve_for_upload(*u, *len - held))
          return refuse(r.status, r.detail);
      } else {
        im.store.release_for_upload(*u, held - *len);
      }
      u->length = len;
      im.store.save_upload(*u);
    }
  }
  if (u->length && req.has_header("Content-Length") &&
      u->offset + parse_u64(req.header("Content-Length")).value_or(0) > *u->length)
    return refuse(413, "the body goes beyond the upload's length of " + std::to_string(*u->length) +
                           " bytes");
  const std::string part = im.store.uploads_dir() + "/" + id + ".part";
  const int fd = ::open(part.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return refuse(404, "no upload " + id + " (it may have expired)");
  return std::make_unique<PatchSink>(im, *u, fd, 204, std::move(checksum), checksum_expected);
}

void CaptureRoutes::tus_delete(const Request& req, Response& res) {
  auto& im = *impl_;
  if (!im.tus_checked(req, res)) return;
  const std::string id = req.path_params.at(0);
  if (!im.store.lock_upload(id))
    return im.problem(res, 409, "another request is writing upload " + id + " now", {});
  const bool had = im.store.remove_upload(id);
  im.store.unlock_upload(id);
  if (!had) return im.problem(res, 404, "no upload " + id, {});
  im.tus_headers(res);
  res.status = 204;
}

void CaptureRoutes::upload_state(const Request& req, Response& res) {
  auto& im = *impl_;
  auto u = im.store.upload(req.path_params.at(0));
  if (!u) return im.problem(res, 404, "no upload " + req.path_params.at(0), {});
  json body = {{"id", u->id},
               {"offset", u->offset},
               {"length", u->length ? json(*u->length) : json(nullptr)},
               {"name", u->name},
               {"created_at", u->created_at},
               {"expires", http_date(u->expires)},
               {"complete", !u->capture.empty()}};
  if (!u->capture.empty()) {
    if (auto c = im.store.find(u->capture)) body["capture"] = capture_value(*c);
  }
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

std::optional<std::string> CaptureRoutes::resolve_reference(const std::string& entry,
                                                            std::string& error) {
  auto& im = *impl_;
  if (entry.rfind("sha256:", 0) == 0) {
    auto sha = parse_sha256(entry);
    auto c = sha ? im.store.find(*sha) : std::nullopt;
    if (!c) {
      error = "no capture " + entry;
      return std::string();
    }
    return c->path;
  }
  if (entry.rfind("upload:", 0) == 0) {
    auto u = im.store.upload(entry.substr(7));
    if (!u) {
      error = "no upload " + entry.substr(7) + " (it may have expired)";
      return std::string();
    }
    if (u->capture.empty()) {
      error = "upload " + u->id + " is not complete";
      return std::string();
    }
    auto c = im.store.find(u->capture);
    if (!c) {
      error = "the capture of upload " + u->id + " was removed";
      return std::string();
    }
    return c->path;
  }
  return std::nullopt;
}

CaptureRoutes::CaptureRoutes(CaptureStore& store, Problem problem, InUse in_use)
    : impl_(std::make_unique<Impl>(store, std::move(problem), std::move(in_use))) {
  // An upload that goes (completed, terminated, expired, refused) takes its running digest.
  store.on_upload_removed([im = impl_.get()](const std::string& id) {
    std::lock_guard lock(im->mu);
    im->running.erase(id);
  });
}
CaptureRoutes::~CaptureRoutes() { impl_->store.on_upload_removed(nullptr); }

}  // namespace ipfixweb::api

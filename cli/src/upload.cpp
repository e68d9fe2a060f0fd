#include "ipfixweb/cli/upload.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

namespace ipfixweb::cli {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOffsetType = "application/offset+octet-stream";

std::string hex(const unsigned char* d, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[d[i] >> 4];
    out += digits[d[i] & 15];
  }
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw Failure(kExitLocal, "cannot set up SHA-256 (libcrypto)");
  }
  void update(const void* d, std::size_t n) { EVP_DigestUpdate(ctx_.get(), d, n); }
  std::string hex_digest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &n);
    return hex(md, n);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string errno_text() { return std::strerror(errno); }

std::optional<std::uint64_t> parse_u64(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

Headers tus(const Headers& extra = {}) {
  Headers h;
  h.reserve(extra.size() + 1);
  h.emplace_back("Tus-Resumable", "1.0.0");
  h.insert(h.end(), extra.begin(), extra.end());
  return h;
}

// The local record of an unfinished upload: which server upload holds this file's bytes.
class Record {
 public:
  Record(const std::string& dir, const std::string& url, const std::string& sha,
         std::uint64_t size) {
    if (dir.empty()) return;
    Sha256 key;
    const std::string k = url + "\n" + sha + "\n" + std::to_string(size);
    key.update(k.data(), k.size());
    path_ = dir + "/uploads/" + key.hex_digest().substr(0, 32) + ".json";
  }
  std::string location() const {
    if (path_.empty()) return {};
    std::ifstream in(path_);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object() || !j.contains("location") || !j["location"].is_string()) return {};
    return j["location"];
  }
  // False (with a note) when the record cannot be written: the upload goes on, but a later run
  // cannot resume it.
  bool save(const nlohmann::json& j, std::string& why) const {
    if (path_.empty()) return false;
    std::error_code ec;
    fs::create_directories(fs::path(path_).parent_path(), ec);
    const std::string tmp = path_ + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << j.dump() << "\n";
      if (!out) {
        why = "cannot write " + tmp;
        return false;
      }
    }
    fs::rename(tmp, path_, ec);
    if (ec) why = ec.message();
    return !ec;
  }
  void remove() const {
    std::error_code ec;
    if (!path_.empty()) fs::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Keeps the average rate at or below `rate` bytes per second.
class Throttle {
 public:
  explicit Throttle(double rate) : rate_(rate), start_(std::chrono::steady_clock::now()) {}
  void account(std::size_t n) {
    if (rate_ <= 0) return;
    sent_ += n;
    const auto due =
        start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(static_cast<double>(sent_) / rate_));
    std::this_thread::sleep_until(due);
  }
  std::size_t piece() const { return rate_ > 0 && rate_ < (1 << 20) ? 16384 : 256 * 1024; }

 private:
  double rate_;
  std::chrono::steady_clock::time_point start_;
  std::uint64_t sent_ = 0;
};

}  // namespace

nlohmann::json UploadResult::to_json() const {
  return {{"file", file},
          {"ref", ref},
          {"sha256", sha256},
          {"size", size},
          {"upload_id", upload_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(upload_id)},
          {"existing", existing},
          {"resumed_from", resumed_from},
          {"sent", sent},
          {"requests", attempts},
          {"capture", capture}};
}

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  return out;
}

std::string sha256_file(const std::string& path,
                        const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw Failure(kExitLocal, "cannot open " + path + ": " + errno_text());
  struct stat st {};
  ::fstat(f.fd, &st);
  const auto total = static_cast<std::uint64_t>(st.st_size);
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  std::uint64_t done = 0;
  for (;;) {
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Failure(kExitLocal, "cannot read " + path + ": " + errno_text());
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
    if (progress) progress(done, total);
  }
  return h.hex_digest();
}

UploadResult upload_file(Api& api, const std::string& path, const UploadOptions& o) {
  UploadResult res;
  res.file = path;
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw Failure(kExitLocal, "cannot open " + path + ": " + errno_text());
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw Failure(kExitLocal, path + " is not a regular file");
  if (st.st_size == 0) throw Failure(kExitLocal, path + " is empty");
  res.size = static_cast<std::uint64_t>(st.st_size);
  const auto note = [&](const std::string& s) {
    if (o.note) o.note(s);
  };

  res.sha256 = sha256_file(path, [&](std::uint64_t done, std::uint64_t total) {
    if (o.progress) o.progress("hashing", done, total);
  });
  res.ref = "sha256:" + res.sha256;

  const Record record(o.state_dir, api.url(), res.sha256, res.size);
  if (o.reuse_existing) {
    auto r = api.get("/api/v1/captures/" + res.sha256);
    if (r.status == 200) {
      res.existing = true;
      res.capture = r.json();
      record.remove();  // an upload of it that a run left unfinished is not needed any more
      return res;
    }
    if (r.status != 404) expect_ok(r, "looking up capture " + res.sha256);
  }

  std::string location;
  std::uint64_t offset = 0;
  bool resumed = false;
  if (const std::string loc = record.location(); !loc.empty()) {
    auto h = api.head(loc, tus());
    const auto len = parse_u64(h.header("Upload-Length"));
    const auto off = parse_u64(h.header("Upload-Offset"));
    if (h.status == 200 && off && len && *len == res.size) {
      location = loc;
      offset = *off;
      resumed = true;
      note("resuming " + path + " at byte " + std::to_string(offset) + " of " +
           std::to_string(res.size) + " (" + loc + ")");
    } else {
      record.remove();
    }
  }

  const std::string name = fs::path(path).filename().string();
  auto create = [&] {
    const std::string meta = "filename " + base64(name) + ",sha256 " + base64(res.sha256);
    auto r = api.post("/api/v1/uploads",
                      tus({{"Upload-Length", std::to_string(res.size)}, {"Upload-Metadata", meta}}),
                      "", kOffsetType);
    expect_ok(r, "creating an upload of " + path);
    location = r.header("Location");
    if (location.rfind("/api/v1/uploads/", 0) != 0)
      throw Failure(kExitUnreachable, "the server's upload has no usable Location");
    offset = 0;
    std::string why;
    if (!o.state_dir.empty() && !record.save({{"location", location},
                                              {"url", api.url()},
                                              {"file", fs::absolute(path).string()},
                                              {"sha256", res.sha256},
                                              {"size", res.size}},
                                             why))
      note("cannot remember the upload for a later resume: " + why);
  };
  if (location.empty()) create();
  res.upload_id = location.substr(std::string("/api/v1/uploads/").size());
  res.resumed_from = offset;
  (void)resumed;

  Throttle throttle(o.limit_rate);
  int failures = 0;
  bool recreated = false;
  // A file that changes while it is sent is the user's problem to fix, not the network's: it
  // is refused with exit 5 however the change shows (a short read, the server's digest check).
  const auto changed = [&] {
    struct stat now {};
    return ::fstat(f.fd, &now) != 0 || now.st_size != st.st_size ||
           now.st_mtim.tv_sec != st.st_mtim.tv_sec || now.st_mtim.tv_nsec != st.st_mtim.tv_nsec;
  };
  const auto refuse_changed = [&] {
    record.remove();
    throw Failure(kExitLocal, path + " changed while it was uploaded");
  };
  bool complete = false;
  std::string buf;
  while (!complete) {
    if (offset >= res.size) break;
    const std::uint64_t len = std::min<std::uint64_t>(o.chunk_size, res.size - offset);
    const std::uint64_t start = offset;
    std::uint64_t sent_now = 0;
    auto next = [&](std::uint64_t at, std::string& chunk) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(throttle.piece(), len - at));
      chunk.resize(want);
      ssize_t n;
      do {
        n = ::pread(f.fd, chunk.data(), want, static_cast<off_t>(start + at));
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return false;
      chunk.resize(static_cast<std::size_t>(n));
      throttle.account(chunk.size());
      sent_now = at + chunk.size();
      if (o.progress) o.progress("uploading", start + sent_now, res.size);
      return true;
    };
    Reply r;
    std::string error;
    ++res.attempts;
    const bool answered =
        api.send_body("PATCH", location, tus({{"Upload-Offset", std::to_string(offset)}}), len,
                      kOffsetType, next, r, &error);
    res.sent += sent_now;
    if (!(answered && r.status == 204) && changed()) refuse_changed();
    if (answered && r.status == 204) {
      const auto off = parse_u64(r.header("Upload-Offset"));
      if (!off) throw Failure(kExitUnreachable, "the server's PATCH answer has no Upload-Offset");
      offset = *off;
      failures = 0;
      continue;
    }
    if (answered && r.status == 409 && r.has_header("Upload-Offset")) {
      // Not where we thought: the server says where it is (e.g. bytes of a broken request that
      // reached it after our HEAD).
      offset = parse_u64(r.header("Upload-Offset")).value_or(offset);
      note("the server is at byte " + std::to_string(offset) + "; going on from there");
      if (++failures > o.retries) expect_ok(r, "uploading " + path);
      continue;
    }
    if (answered && r.status == 404 && !recreated) {
      note("upload " + res.upload_id + " is gone (expired?); starting it again");
      record.remove();
      recreated = true;
      create();
      res.upload_id = location.substr(std::string("/api/v1/uploads/").size());
      res.resumed_from = 0;
      continue;
    }
    const bool transient =
        !answered || r.status == 409 || (r.status >= 500 && r.status != 507) || r.status == 429;
    if (!transient) {
      record.remove();
      expect_ok(r, "uploading " + path);
      throw Failure(kExitUnreachable,
                    "uploading " + path + ": unexpected answer " + std::to_string(r.status));
    }
    if (++failures > o.retries) {
      if (answered) expect_ok(r, "uploading " + path);
      throw Failure(kExitUnreachable, "uploading " + path + ": " + error + " (gave up after " +
                                          std::to_string(failures) +
                                          " attempts; run the same command again to resume)");
    }
    const double wait = o.backoff_s * static_cast<double>(1u << std::min(failures - 1, 6));
    note("upload of " + path + " interrupted (" + (answered ? std::to_string(r.status) : error) +
         "); retrying in " + std::to_string(static_cast<int>(wait * 1000)) + " ms");
    std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    try {
      auto h = api.head(location, tus());
      if (h.status == 200) {
        if (auto off = parse_u64(h.header("Upload-Offset"))) offset = *off;
      }
    } catch (const Failure&) {
      // unreachable for now: the next PATCH tries again
    }
  }

  if (changed()) refuse_changed();

  auto state = api.get(location);
  expect_ok(state, "reading upload " + res.upload_id);
  auto j = state.json();
  if (!j.value("complete", false) || !j.contains("capture") || !j["capture"].is_object())
    throw Failure(kExitUnreachable, "upload " + res.upload_id + " did not complete: " + j.dump());
  res.capture = j["capture"];
  const std::string server_sha = res.capture.value("sha256", "");
  record.remove();
  if (server_sha != res.sha256)
    throw Failure(kExitLocal, "the server's SHA-256 of " + path + " is " + server_sha + ", not " +
                                  res.sha256 + " as computed here");
  return res;
}

}  // namespace ipfixweb::cli

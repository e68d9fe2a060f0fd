#include "ipfixweb/api/captures.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "ipfixweb/shared/json_escape.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::api {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

// Writes `text` to `path` through a temporary in the same directory: fsync, rename, fsync of
// the directory. false (errno set) on failure, with nothing left behind.
bool write_durably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp-" + new_uuid();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const char* p = text.data();
  std::size_t left = text.size();
  bool ok = true;
  while (ok && left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      ok = false;
    else {
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  ok = ok && ::fsync(fd) == 0;
  const int e = errno;
  ::close(fd);
  if (ok && ::rename(tmp.c_str(), path.c_str()) == 0) {
    const int dfd =
        ::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return true;
  }
  ::unlink(tmp.c_str());
  errno = ok ? errno : e;
  return false;
}

void fsync_dir(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::optional<json> read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream s;
  s << in.rdbuf();
  json j = json::parse(s.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

std::string extension(const std::string& format) {
  // "pcapng+zstd" -> "pcapng.zst"
  static const std::pair<const char*, const char*> kSuffix[] = {
      {"gzip", "gz"}, {"zstd", "zst"}, {"xz", "xz"}, {"bzip2", "bz2"}};
  const auto plus = format.find('+');
  std::string ext = format.substr(0, plus);
  if (plus != std::string::npos) {
    const std::string c = format.substr(plus + 1);
    for (auto [from, to] : kSuffix)
      if (c == from) ext += std::string(".") + to;
  }
  return ext;
}

json info_json(const CaptureInfo& c) {
  return {{"sha256", c.sha256},           {"name", c.name},  {"format", c.format}, {"size", c.size},
          {"uploaded_at", c.uploaded_at}, {"owner", c.owner}};
}

json upload_json(const UploadState& u) {
  json j = {{"id", u.id},
            {"length", u.length ? json(*u.length) : json(nullptr)},
            {"name", u.name},
            {"expected_sha256", u.expected_sha256},
            {"metadata", u.metadata},
            {"owner", u.owner},
            {"created_at", u.created_at},
            {"capture", u.capture}};
  return j;
}

std::optional<UploadState> upload_from_json(const json& j) {
  try {
    UploadState u;
    u.id = j.at("id").get<std::string>();
    if (!j.at("length").is_null()) u.length = j.at("length").get<std::uint64_t>();
    u.name = j.value("name", "");
    u.expected_sha256 = j.value("expected_sha256", "");
    u.metadata = j.value("metadata", "");
    u.owner = j.value("owner", "");
    u.created_at = j.value("created_at", "");
    u.capture = j.value("capture", "");
    return u;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::uint64_t file_size(const std::string& path,
                        std::chrono::system_clock::time_point* mtime = nullptr) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  if (mtime)
    *mtime = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  return static_cast<std::uint64_t>(st.st_size);
}

bool valid_upload_id(std::string_view id) { return is_uuid(std::string(id)); }

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4 && n % 1024 == 0) {
    v /= 1024;
    n /= 1024;
    ++u;
  }
  std::ostringstream s;
  s << static_cast<std::uint64_t>(v) << " " << units[u];
  return s.str();
}

// An upload marked as being written (CaptureStore::lock_upload) for as long as this lives.
class UploadLock {
 public:
  UploadLock(CaptureStore& store, std::string id)
      : store_(store), id_(std::move(id)), held_(store.lock_upload(id_)) {}
  ~UploadLock() {
    if (held_) store_.unlock_upload(id_);
  }
  UploadLock(const UploadLock&) = delete;
  UploadLock& operator=(const UploadLock&) = delete;
  explicit operator bool() const { return held_; }  // false: someone else is writing it

 private:
  CaptureStore& store_;
  const std::string id_;  // a copy: the caller's id may be moved away before this ends
  const bool held_;
};

}  // namespace

std::optional<std::string> capture_name_problem(const std::string& name) {
  if (name.empty()) return "is empty";
  if (name.size() > 255) return "is longer than 255 bytes";
  if (!is_valid_utf8(name)) return "is not UTF-8";
  if (name == "." || name == "..") return "must not be '.' or '..'";
  for (std::size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7f) return "holds a control character";
    if (c == '/' || c == '\\') return "must be a file name, without '/' or '\\'";
    // The code point of a multi-byte sequence (valid UTF-8, checked above).
    if (c < 0xc0) continue;
    const std::size_t n = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    char32_t cp = c & (0x7f >> n);
    for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (name[i + k] & 0x3f);
    i += n - 1;
    if (cp >= 0x80 && cp <= 0x9f) return "holds a control character";
    // Bidirectional formatting: "\u202Egpj.exe" is shown as "exe.jpg".
    if (cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
        (cp >= 0x2066 && cp <= 0x2069))
      return "holds a bidirectional formatting character";
  }
  return std::nullopt;
}

std::optional<std::string> parse_sha256(std::string_view s) {
  if (s.rfind("sha256:", 0) == 0) s.remove_prefix(7);
  if (!is_hex64(s)) return std::nullopt;
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

CaptureStore::CaptureStore(CaptureOptions opts) : opts_(std::move(opts)), log_(logger("api")) {
  std::error_code ec;
  fs::create_directories(uploads_dir(), ec);
  if (ec)
    throw std::runtime_error("cannot create the capture directory " + opts_.dir + ": " +
                             ec.message());
  opts_.dir = fs::canonical(opts_.dir).string();
  load();
  sweeper_ = std::thread([this] { sweeper(); });
}

CaptureStore::~CaptureStore() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

std::string CaptureStore::data_path(const CaptureInfo& c) const {
  return opts_.dir + "/" + c.sha256 + "." + extension(c.format);
}

std::optional<CaptureInfo> CaptureStore::read_info(const std::string& sha256) const {
  auto j = read_json(opts_.dir + "/" + sha256 + ".json");
  if (!j) return std::nullopt;
  CaptureInfo c;
  try {
    c.sha256 = sha256;
    c.name = j->value("name", "");
    c.format = j->value("format", "");
    c.size = j->value("size", std::uint64_t{0});
    c.uploaded_at = j->value("uploaded_at", "");
    c.owner = j->value("owner", "");
  } catch (const std::exception&) {
    return std::nullopt;
  }
  c.path = data_path(c);
  return c;
}

// The captures and uploads on disk (this api may have restarted); leftovers removed.
void CaptureStore::load() {
  std::lock_guard lock(mu_);
  for (const auto& e : fs::directory_iterator(opts_.dir)) {
    const std::string fname = e.path().filename().string();
    if (fname.size() == 64 + 5 && fname.substr(64) == ".json" && is_hex64(fname.substr(0, 64))) {
      auto c = read_info(fname.substr(0, 64));
      struct stat st {};
      if (!c || ::stat(c->path.c_str(), &st) != 0) {  // a crash before the data's rename
        log_->warn("removing {}: its capture never appeared", e.path().string());
        ::unlink(e.path().c_str());
        continue;
      }
      c->size = static_cast<std::uint64_t>(st.st_size);
      total_ += c->size;
      by_owner_[c->owner] += c->size;
      captures_[c->sha256] = *c;
    } else if (fname.find(".tmp-") != std::string::npos) {
      ::unlink(e.path().c_str());
    }
  }
  for (const auto& e : fs::directory_iterator(uploads_dir())) {
    const std::string fname = e.path().filename().string();
    if (fname.rfind("post-", 0) == 0 || fname.find(".tmp-") != std::string::npos) {
      ::unlink(e.path().c_str());  // a one-shot upload cut off by a restart: never resumable
      continue;
    }
    if (fname.size() <= 5 || fname.substr(fname.size() - 5) != ".json") continue;
    auto j = read_json(e.path().string());
    auto u = j ? upload_from_json(*j) : std::nullopt;
    if (!u || !valid_upload_id(u->id)) continue;
    if (!u->capture.empty()) continue;  // complete: its capture is counted
    const std::string part = uploads_dir() + "/" + u->id + ".part";
    struct stat st {};
    if (::stat(part.c_str(), &st) != 0) {
      // Its data is gone (a crash while it was removed, data first): nothing to resume.
      ::unlink(e.path().c_str());
      continue;
    }
    const std::uint64_t held =
        std::max(static_cast<std::uint64_t>(st.st_size), u->length.value_or(0));
    total_ += held;
    by_owner_[u->owner] += held;
    upload_reserved_[u->id] = {u->owner, held};
  }
  log_->info("captures in {}: {} ({} bytes with uploads in progress)", opts_.dir, captures_.size(),
             total_);
}

std::vector<CaptureInfo> CaptureStore::list() {
  std::vector<CaptureInfo> out;
  {
    std::lock_guard lock(mu_);
    out.reserve(captures_.size());
    for (auto& [k, c] : captures_) out.push_back(c);
  }
  std::sort(out.begin(), out.end(), [](const CaptureInfo& a, const CaptureInfo& b) {
    return a.uploaded_at != b.uploaded_at ? a.uploaded_at > b.uploaded_at : a.sha256 < b.sha256;
  });
  return out;
}

std::optional<CaptureInfo> CaptureStore::find(const std::string& sha256) {
  std::lock_guard lock(mu_);
  auto it = captures_.find(sha256);
  if (it == captures_.end()) return std::nullopt;
  return it->second;
}

std::uint64_t CaptureStore::used() const {
  std::lock_guard lock(mu_);
  return total_;
}

CaptureRefusal CaptureStore::reserve(const std::string& owner, std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  if (opts_.quota && total_ + bytes > opts_.quota)
    return {413, "the capture quota of " + human_bytes(opts_.quota) + " would be exceeded (" +
                     std::to_string(total_) + " bytes used)"};
  if (opts_.token_quota && by_owner_[owner] + bytes > opts_.token_quota)
    return {413, "this token's capture quota of " + human_bytes(opts_.token_quota) +
                     " would be exceeded (" + std::to_string(by_owner_[owner]) + " bytes used)"};
  total_ += bytes;
  by_owner_[owner] += bytes;
  return {};
}

void CaptureStore::release(const std::string& owner, std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  total_ -= std::min(total_, bytes);
  auto& o = by_owner_[owner];
  o -= std::min(o, bytes);
}

std::variant<CaptureStore::Published, CaptureRefusal> CaptureStore::publish(
    int fd, const std::string& temp, const std::string& sha256, const std::string& format,
    const std::string& name, const std::string& owner, std::uint64_t reserved) {
  struct stat st {};
  if (::fsync(fd) != 0 || ::fstat(fd, &st) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    release(owner, reserved);
    if (e == ENOSPC || e == EDQUOT) return CaptureRefusal{507, "the capture disk is full"};
    return CaptureRefusal{500, std::string("cannot write the capture: ") + std::strerror(e)};
  }
  CaptureInfo c;
  c.sha256 = sha256;
  c.name = name;
  c.format = format;
  c.size = static_cast<std::uint64_t>(st.st_size);
  c.uploaded_at = now_iso();
  c.owner = owner;
  c.path = data_path(c);
  std::unique_lock lock(mu_);
  auto settle = [&](std::uint64_t keep) {  // under mu_
    total_ = total_ - std::min(total_, reserved) + keep;
    auto& o = by_owner_[owner];
    o = o - std::min(o, reserved) + keep;
  };
  // One request publishes a given content at a time (the others then find it published);
  // the store's lock is not held over the writes and fsyncs below, which would hold up every
  // listing, reservation and reference lookup meanwhile.
  for (;;) {
    if (auto it = captures_.find(sha256); it != captures_.end()) {
      ::unlink(temp.c_str());
      settle(0);
      return Published{it->second, true};
    }
    if (publishing_.insert(sha256).second) break;
    published_.wait(lock);
  }
  lock.unlock();
  const auto refuse = [&](CaptureRefusal r) -> std::variant<Published, CaptureRefusal> {
    std::lock_guard again(mu_);
    publishing_.erase(sha256);
    published_.notify_all();
    settle(0);
    return r;
  };
  json meta = info_json(c);
  if (!write_durably(opts_.dir + "/" + sha256 + ".json", meta.dump())) {
    const int e = errno;
    ::unlink(temp.c_str());
    if (e == ENOSPC || e == EDQUOT) return refuse({507, "the capture disk is full"});
    return refuse({500, std::string("cannot write the capture's record: ") + std::strerror(e)});
  }
  if (::rename(temp.c_str(), c.path.c_str()) != 0) {
    const int e = errno;
    ::unlink(temp.c_str());
    ::unlink((opts_.dir + "/" + sha256 + ".json").c_str());
    return refuse({500, std::string("cannot store the capture: ") + std::strerror(e)});
  }
  fsync_dir(opts_.dir);
  fsync_dir(uploads_dir());
  lock.lock();
  publishing_.erase(sha256);
  published_.notify_all();
  settle(c.size);
  captures_[sha256] = c;
  lock.unlock();
  log_->info("capture {} stored: {} bytes, {}, '{}'", sha256, c.size, format, name);
  return Published{c, false};
}

CaptureStore::Removed CaptureStore::remove(const std::string& sha256,
                                           const std::function<bool(const std::string&)>& in_use) {
  std::lock_guard lock(mu_);
  auto it = captures_.find(sha256);
  if (it == captures_.end()) return Removed::NotFound;
  if (in_use(it->second.path)) return Removed::InUse;
  // The data first: a capture without data is never listed again (load() drops the record).
  ::unlink(it->second.path.c_str());
  ::unlink((opts_.dir + "/" + sha256 + ".json").c_str());
  fsync_dir(opts_.dir);
  total_ -= std::min(total_, it->second.size);
  auto& o = by_owner_[it->second.owner];
  o -= std::min(o, it->second.size);
  log_->info("capture {} removed ('{}')", sha256, it->second.name);
  captures_.erase(it);
  return Removed::Yes;
}

std::variant<UploadState, CaptureRefusal> CaptureStore::create_upload(
    std::optional<std::uint64_t> length, std::string name, std::string expected_sha256,
    std::string metadata, std::string owner) {
  UploadState u;
  u.id = new_uuid();
  u.length = length;
  u.name = std::move(name);
  u.expected_sha256 = std::move(expected_sha256);
  u.metadata = std::move(metadata);
  u.owner = std::move(owner);
  u.created_at = now_iso();
  // Marked as being written while its files are made, so that the sweeper leaves them alone.
  const UploadLock writing(*this, u.id);
  // The state's text before anything is reserved or created: a state that cannot be stored
  // (JSON strings are UTF-8) leaves nothing behind.
  std::string text;
  try {
    text = upload_json(u).dump();
  } catch (const json::exception&) {
    return CaptureRefusal{400, "the upload's metadata is not UTF-8"};
  }
  if (length) {
    if (auto r = reserve(u.owner, *length)) return r;
  }
  const std::string part = uploads_dir() + "/" + u.id + ".part";
  const int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  const bool made = fd >= 0 && ::fsync(fd) == 0;
  int e = errno;
  if (fd >= 0) ::close(fd);
  if (made && write_durably(uploads_dir() + "/" + u.id + ".json", text)) {
    std::lock_guard lock(mu_);
    upload_reserved_[u.id] = {u.owner, length.value_or(0)};
    u.expires = std::chrono::system_clock::now() +
                std::chrono::duration_cast<std::chrono::system_clock::duration>(
                    std::chrono::duration<double>(opts_.upload_expiry_s));
    return u;
  }
  e = made ? errno : e;
  ::unlink(part.c_str());
  if (length) release(u.owner, *length);
  if (e == ENOSPC || e == EDQUOT) return CaptureRefusal{507, "the capture disk is full"};
  return CaptureRefusal{500, std::string("cannot create the upload: ") + std::strerror(e)};
}

std::optional<UploadState> CaptureStore::upload(const std::string& id) {
  if (!valid_upload_id(id)) return std::nullopt;
  auto j = read_json(uploads_dir() + "/" + id + ".json");
  auto u = j ? upload_from_json(*j) : std::nullopt;
  if (!u || u->id != id) return std::nullopt;
  std::chrono::system_clock::time_point touched;
  const std::string part = uploads_dir() + "/" + id + ".part";
  if (u->capture.empty()) {
    struct stat st {};
    if (::stat(part.c_str(), &st) != 0) return std::nullopt;
    u->offset = file_size(part, &touched);
  } else {
    file_size(uploads_dir() + "/" + id + ".json", &touched);
    u->offset = u->length.value_or(0);
  }
  u->expires = touched + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                             std::chrono::duration<double>(opts_.upload_expiry_s));
  // Past its expiry an upload is gone, whether or not the sweeper came by yet.
  if (u->expires <= std::chrono::system_clock::now()) return std::nullopt;
  return u;
}

bool CaptureStore::save_upload(const UploadState& st) {
  return write_durably(uploads_dir() + "/" + st.id + ".json", upload_json(st).dump());
}

CaptureRefusal CaptureStore::reserve_for_upload(const UploadState& st, std::uint64_t bytes) {
  if (auto r = reserve(st.owner, bytes)) return r;
  std::lock_guard lock(mu_);
  Held& h = upload_reserved_[st.id];
  h.owner = st.owner;
  h.bytes += bytes;
  return {};
}

void CaptureStore::release_for_upload(const UploadState& st, std::uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    auto it = upload_reserved_.find(st.id);
    if (it == upload_reserved_.end()) return;
    bytes = std::min(bytes, it->second.bytes);
    it->second.bytes -= bytes;
  }
  release(st.owner, bytes);
}

std::uint64_t CaptureStore::upload_reservation(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = upload_reserved_.find(id);
  return it == upload_reserved_.end() ? 0 : it->second.bytes;
}

void CaptureStore::on_upload_removed(std::function<void(const std::string&)> f) {
  std::lock_guard lock(mu_);
  on_upload_removed_ = std::move(f);
}

std::uint64_t CaptureStore::take_upload_reservation(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = upload_reserved_.find(id);
  if (it == upload_reserved_.end()) return 0;
  const std::uint64_t n = it->second.bytes;
  upload_reserved_.erase(it);
  return n;
}

bool CaptureStore::remove_upload(const std::string& id) {
  if (!valid_upload_id(id)) return false;
  const std::string base = uploads_dir() + "/" + id;
  // The data first: a crash between the two leaves a state file without data, which reads as
  // no upload and which the sweeper removes; the other order could leave data nobody owns.
  ::unlink((base + ".part").c_str());
  const bool had = ::unlink((base + ".json").c_str()) == 0;
  Held held;
  {
    std::lock_guard lock(mu_);
    if (auto it = upload_reserved_.find(id); it != upload_reserved_.end()) {
      held = std::move(it->second);
      upload_reserved_.erase(it);
    }
  }
  if (held.bytes) release(held.owner, held.bytes);
  std::lock_guard lock(mu_);
  if (on_upload_removed_) on_upload_removed_(id);
  return had;
}

bool CaptureStore::lock_upload(const std::string& id) {
  std::lock_guard lock(mu_);
  return writing_.insert(id).second;
}

void CaptureStore::unlock_upload(const std::string& id) {
  std::lock_guard lock(mu_);
  writing_.erase(id);
}

void CaptureStore::expire_uploads() {
  std::vector<std::string> ids;
  const auto now = std::chrono::system_clock::now();
  const auto expiry = std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::duration<double>(opts_.upload_expiry_s));
  for (const auto& e : fs::directory_iterator(uploads_dir())) {
    const std::string fname = e.path().filename().string();
    const std::string id = fname.substr(0, fname.size() - std::min<std::size_t>(5, fname.size()));
    if (fname.ends_with(".json")) {
      ids.push_back(id);
    } else if (fname.ends_with(".part")) {
      // Data without a state file: a crash between creating the two, or between removing
      // them. Created first, so a young one may belong to an upload being created.
      std::chrono::system_clock::time_point touched = now;  // gone meanwhile: not expired
      file_size(e.path().string(), &touched);
      if (!fs::exists(uploads_dir() + "/" + id + ".json") && touched + expiry <= now)
        ids.push_back(id);
    }
  }
  for (auto& id : ids) {
    if (!valid_upload_id(id)) continue;
    const UploadLock judging(*this, id);
    if (!judging) continue;  // being written or created
    auto u = upload(id);
    if (!(u && u->expires > now) && remove_upload(id))
      log_->info("upload {} expired and was removed", id);
  }
}

void CaptureStore::sweeper() {
  const auto every = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(std::clamp(opts_.upload_expiry_s / 4, 0.05, 60.0)));
  std::unique_lock lock(mu_);
  while (!wake_.wait_for(lock, every, [this] { return stop_; })) {
    lock.unlock();
    try {
      expire_uploads();
    } catch (const std::exception& e) {
      log_->warn("expiring uploads: {}", e.what());
    }
    lock.lock();
  }
}

}  // namespace ipfixweb::api

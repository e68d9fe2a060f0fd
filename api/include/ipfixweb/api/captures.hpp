// Captures uploaded to the api (docs/uploads.md): a directory beneath an input root, where
// the workers read them like any other input.
//
//   <dir>/<sha256>.<ext>        a capture: its content, named by its SHA-256 (so identical
//                               content is stored once) with an extension from its format
//                               ("pcap", "pcapng.zst", "ipfix.gz", ...)
//   <dir>/<sha256>.json         what is known of it: first name, size, format, time, owner
//   <dir>/.uploads/<id>.part    the data of an upload in progress (tus: resumable)
//   <dir>/.uploads/<id>.json    its state (length, name, expected digest, owner, and once
//                               complete the capture it became)
//   <dir>/.uploads/post-*.part  a one-shot upload's data while it streams in
//
// A capture appears only complete, verified and fsynced: its .json is written (temporary,
// fsync, rename) before its data is renamed into place, and a .json without data (a crash
// between the two) is removed at start. Uploads not touched for the expiry time are removed.
// Quotas count the captures' sizes plus what uploads in progress have announced (or written).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

namespace ipfixweb::api {

struct CaptureOptions {
  std::string dir;                        // created when missing
  std::uint64_t max_size = 100ull << 30;  // one capture, in bytes
  std::uint64_t quota = 0;                // all captures and uploads; 0: none
  std::uint64_t token_quota = 0;          // per bearer token; 0: none
  double upload_expiry_s = 24 * 3600;     // an upload untouched this long is removed
};

struct CaptureInfo {
  std::string sha256;  // lower-case hex
  std::string name;    // the name it was first uploaded under
  std::string path;    // absolute: what a task's pcap_files takes
  std::string format;  // capture::describe(): "pcap", "pcapng+zstd", ...
  std::uint64_t size = 0;
  std::string uploaded_at;  // ISO 8601 UTC
  std::string owner;        // token id ("" without tokens)
};

// Why a capture could not be taken: an HTTP status (413, 415, 422, 507, 500) and a sentence.
struct CaptureRefusal {
  int status = 0;
  std::string detail;
  // 422: the field, parameter or header at fault (the problem's `errors` names it).
  std::string field = {};
  explicit operator bool() const { return status != 0; }
};

// The state of a resumable upload (tus).
struct UploadState {
  std::string id;
  std::optional<std::uint64_t> length;  // nullopt: deferred (Upload-Defer-Length)
  std::uint64_t offset = 0;             // bytes received (the .part file's size)
  std::string name;
  std::string expected_sha256;  // "" when the client gave none
  std::string metadata;         // Upload-Metadata as sent
  std::string owner;
  std::string created_at;
  std::string capture;  // the capture's sha256 once complete
  std::chrono::system_clock::time_point expires;
};

class CaptureStore {
 public:
  explicit CaptureStore(CaptureOptions opts);  // throws when the directory cannot be made
  ~CaptureStore();
  CaptureStore(const CaptureStore&) = delete;
  CaptureStore& operator=(const CaptureStore&) = delete;

  const CaptureOptions& options() const { return opts_; }
  const std::string& dir() const { return opts_.dir; }
  std::string uploads_dir() const { return opts_.dir + "/.uploads"; }

  // Newest first.
  std::vector<CaptureInfo> list();
  std::optional<CaptureInfo> find(const std::string& sha256);

  // Room for `bytes` more of `owner`: a refusal (413, naming the limit) when a quota would be
  // exceeded, else the bytes are counted until released (or published).
  CaptureRefusal reserve(const std::string& owner, std::uint64_t bytes);
  void release(const std::string& owner, std::uint64_t bytes);

  // A complete upload (`fd` open on `temp`, its bytes counted by a reservation of `reserved`
  // bytes) becomes a capture: fsync, digest check, dedup, rename. On success the temp file is
  // gone (renamed, or removed when the content existed already) and `existing` tells which;
  // on refusal it is removed too. The reservation is settled either way.
  struct Published {
    CaptureInfo info;
    bool existing = false;
  };
  std::variant<Published, CaptureRefusal> publish(int fd, const std::string& temp,
                                                  const std::string& sha256,
                                                  const std::string& format,
                                                  const std::string& name, const std::string& owner,
                                                  std::uint64_t reserved);

  enum class Removed { Yes, NotFound, InUse };
  // `in_use(path)`: whether a queued or running task reads it.
  Removed remove(const std::string& sha256, const std::function<bool(const std::string&)>& in_use);

  // Resumable uploads. create() writes the state (fsynced) and an empty .part.
  std::variant<UploadState, CaptureRefusal> create_upload(std::optional<std::uint64_t> length,
                                                          std::string name,
                                                          std::string expected_sha256,
                                                          std::string metadata, std::string owner);
  std::optional<UploadState> upload(const std::string& id);
  bool save_upload(const UploadState& st);  // after the length was set, or completion
  // Counts `bytes` more against an upload (a deferred length's data as it arrives).
  CaptureRefusal reserve_for_upload(const UploadState& st, std::uint64_t bytes);
  // Counts `bytes` less (at most what it holds): data of a refused request, dropped again.
  void release_for_upload(const UploadState& st, std::uint64_t bytes);
  // What is counted for an upload now.
  std::uint64_t upload_reservation(const std::string& id) const;
  // What is counted for an upload, no longer under its id: for publish() to settle.
  std::uint64_t take_upload_reservation(const std::string& id);
  // Removes its files and settles its reservation; false when there is none.
  bool remove_upload(const std::string& id);
  // Called with an upload's id after remove_upload() removed it (also when it expired), under
  // the store's lock: it must not call the store. nullptr: none (waits for a call in progress).
  void on_upload_removed(std::function<void(const std::string&)> f);
  // Marks an upload as being written (one request at a time); false when it already is.
  bool lock_upload(const std::string& id);
  void unlock_upload(const std::string& id);

  // Removes the uploads untouched for the expiry time (and runs by itself every so often).
  void expire_uploads();

  std::uint64_t used() const;

 private:
  void load();
  void sweeper();
  std::optional<CaptureInfo> read_info(const std::string& sha256) const;
  std::string data_path(const CaptureInfo& c) const;

  CaptureOptions opts_;
  std::shared_ptr<spdlog::logger> log_;
  mutable std::mutex mu_;
  std::map<std::string, CaptureInfo> captures_;    // by sha256
  std::set<std::string> publishing_;               // contents being published (by sha256)
  std::condition_variable published_;              // one of them was (or failed)
  std::map<std::string, std::uint64_t> by_owner_;  // captures plus reservations
  std::uint64_t total_ = 0;                        // likewise, everyone's
  std::set<std::string> writing_;                  // uploads being written
  struct Held {  // what is counted for an upload, and against whom
    std::string owner;
    std::uint64_t bytes = 0;
  };
  std::map<std::string, Held> upload_reserved_;  // per upload id
  std::function<void(const std::string&)> on_upload_removed_;
  bool stop_ = false;
  std::condition_variable wake_;
  std::thread sweeper_;
};

// The name a capture is listed under: refused when it is empty, longer than 255 bytes, not
// UTF-8, holds a control character, '/', '\\' or is "." or "..". nullopt: acceptable.
std::optional<std::string> capture_name_problem(const std::string& name);

// The digest in a "sha256:<hex>" reference or in a hex string of 64 digits (lower-cased);
// nullopt when it is neither.
std::optional<std::string> parse_sha256(std::string_view s);

}  // namespace ipfixweb::api

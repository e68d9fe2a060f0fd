// Uploading captures through the api's resumable (tus 1.0.0) routes, docs/uploads.md: the file's
// SHA-256 first (sent as metadata, and compared with the server's at the end), a local record of
// the upload so that a later run resumes it from the server's offset, PATCH requests that go on
// from where a broken one stopped.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "ipfixweb/cli/client.hpp"

namespace ipfixweb::cli {

struct UploadOptions {
  std::uint64_t chunk_size = 32ull << 20;  // bytes per PATCH request
  double limit_rate = 0;                   // bytes per second sent (0: no limit)
  int retries = 5;                         // failed attempts in a row before giving up
  double backoff_s = 0.5;                  // first wait after a failure, doubled each time
  std::string state_dir;                   // where unfinished uploads are remembered
  bool reuse_existing = true;              // skip the upload when the server has the digest
  // phase ("hashing", "uploading"), bytes done, bytes in all
  std::function<void(const std::string&, std::uint64_t, std::uint64_t)> progress;
  std::function<void(const std::string&)> note;  // a line for the user (resumed, retrying)
};

struct UploadResult {
  std::string file;       // as given
  std::string sha256;     // hex, computed locally and confirmed by the server
  std::string ref;        // "sha256:<hex>" for pcap_files
  std::string upload_id;  // "" when the capture was already there
  std::uint64_t size = 0;
  std::uint64_t resumed_from = 0;  // the server's offset this run started from
  std::uint64_t sent = 0;          // bytes sent by this run
  int attempts = 0;                // PATCH requests made
  bool existing = false;           // the server had this content already
  nlohmann::json capture;          // the server's capture document
  nlohmann::json to_json() const;
};

// The file's SHA-256 as 64 hex digits; Failure(kExitLocal) when it cannot be read.
std::string sha256_file(const std::string& path,
                        const std::function<void(std::uint64_t, std::uint64_t)>& progress = {});

std::string base64(const std::string& bytes);

UploadResult upload_file(Api& api, const std::string& path, const UploadOptions& options);

}  // namespace ipfixweb::cli

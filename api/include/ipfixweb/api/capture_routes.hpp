// The routes that take captures in (docs/uploads.md):
//   POST   /api/v1/captures            one upload in one request: the raw body, or a
//                                      multipart/form-data form with a "file" part (browsers)
//   GET    /api/v1/captures            the captures, newest first
//   GET    /api/v1/captures/{sha256}   one capture
//   DELETE /api/v1/captures/{sha256}   removes one no queued or running task reads
//   OPTIONS /api/v1/uploads            tus 1.0.0 discovery
//   POST   /api/v1/uploads             tus creation (and creation-with-upload)
//   HEAD   /api/v1/uploads/{id}        tus: the offset to resume from
//   PATCH  /api/v1/uploads/{id}        tus: bytes at an offset
//   DELETE /api/v1/uploads/{id}        tus termination
//   GET    /api/v1/uploads/{id}        the upload's state as JSON (and its capture once done)
// Bodies stream to disk through http::BodySink, hashed (SHA-256) and sniffed as they come.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ipfixweb/api/captures.hpp"
#include "ipfixweb/api/http.hpp"
#include "ipfixweb/api/validation.hpp"

namespace ipfixweb::api {

class CaptureRoutes {
 public:
  using Problem = std::function<void(http::Response&, int status, const std::string& detail,
                                     const std::vector<FieldError>& errors)>;
  // Whether a queued or running task reads the file at this path.
  using InUse = std::function<bool(const std::string& path)>;

  CaptureRoutes(CaptureStore& store, Problem problem, InUse in_use);
  ~CaptureRoutes();

  std::unique_ptr<http::BodySink> post_capture(const http::Request& req, http::Response& res);
  void list(const http::Request& req, http::Response& res);
  void get(const http::Request& req, http::Response& res);
  void remove(const http::Request& req, http::Response& res);

  void tus_options(const http::Request& req, http::Response& res);
  std::unique_ptr<http::BodySink> tus_create(const http::Request& req, http::Response& res);
  void tus_head(const http::Request& req, http::Response& res);
  std::unique_ptr<http::BodySink> tus_patch(const http::Request& req, http::Response& res);
  void tus_delete(const http::Request& req, http::Response& res);
  void upload_state(const http::Request& req, http::Response& res);

  // The capture a task's pcap_files entry names by reference ("sha256:<hex>" or
  // "upload:<id>"): its path; "" with `error` set when the reference names none; nullopt when
  // the entry is not a reference (a path).
  std::optional<std::string> resolve_reference(const std::string& entry, std::string& error);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The capture's JSON (the answer of POST and GET, and a list item).
std::string capture_json(const CaptureInfo& c);

// The owner of what a request uploads: "t-" and 12 hex digits of the SHA-256 of its bearer
// token, or "" without one.
std::string owner_of(const http::Request& req);

}  // namespace ipfixweb::api

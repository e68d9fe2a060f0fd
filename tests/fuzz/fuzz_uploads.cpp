// libFuzzer target: uploads of captures (api/src/capture_routes.cpp, captures.cpp;
// docs/uploads.md): the tus 1.0.0 state machine of resumable uploads (creation, creation with
// upload, PATCH at an offset, HEAD, termination, deferred length, checksums, expected digests)
// and one-shot uploads (raw and multipart), driven through the real CaptureRoutes and
// CaptureStore on a fresh directory per input, with bodies cut into pieces, broken off
// (aborted) or refused midway as the HTTP server would.
//
// Input: a program for a client, read with FuzzedDataProvider: a few store options (quota,
// per-token quota, largest capture), then up to 48 operations, each chosen by a byte with its
// header values and bodies taken from the rest. The client knows the whole content of each
// upload (`file`), and usually sends it honestly from the offset HEAD tells; sometimes it
// sends a wrong offset, a wrong length, a bad checksum or header, or changes the bytes it has
// not yet sent.
//
// Properties checked besides "no crash, no sanitizer report, no exception":
//  - an unfinished upload's data on disk is always exactly the first `offset` bytes the client
//    sent (what HEAD reports), whatever was refused, rolled back or broken off;
//  - a finished upload is a capture whose SHA-256 (computed here) and bytes are the client's
//    file; the same for one-shot uploads;
//  - the quota accounting: after every operation an unfinished upload counts its length (or,
//    deferred, the bytes it holds), and the bytes counted are exactly the captures' sizes plus
//    what the unfinished uploads count (no upload the client was not told of holds any); with
//    no upload left, exactly the captures' sizes, and with nothing left, zero.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "ipfixweb/api/capture_routes.hpp"
#include "ipfixweb/api/captures.hpp"

namespace api = ipfixweb::api;
namespace http = ipfixweb::api::http;

namespace {

std::string sha256_hex(std::string_view d, const EVP_MD* md = EVP_sha256()) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(d.data(), d.size(), out, &n, md, nullptr);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s += hex[out[i] >> 4];
    s += hex[out[i] & 15];
  }
  return s;
}

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string raw_digest(std::string_view d, const EVP_MD* md) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(d.data(), d.size(), out, &n, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A classic pcap header (Ethernet): what makes the store take the bytes as a capture.
const std::string kPcapHeader = [] {
  const unsigned char h[24] = {0xd4, 0xc3, 0xb2, 0xa1, 2,    0,    4, 0, 0, 0, 0, 0,
                               0,    0,    0,    0,    0xff, 0xff, 0, 0, 1, 0, 0, 0};
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}();

const std::string* header(const http::Response& r, std::string_view name) {
  return http::find_field(r.headers, name);
}

// One resumable upload as the client knows it.
struct Upload {
  std::string id;
  std::string file;  // everything the client means to send
  bool deferred = false;
  bool gone = false;  // the server removed it (refused, terminated) or it became a capture
};

// FUZZ_TRACE=1 in the environment: each request and its answer on stderr (to read a finding).
void trace(const std::string& what, const http::Request& req, const http::Response& res,
           const std::string& extra = {}) {
  static const bool on = std::getenv("FUZZ_TRACE") != nullptr;
  if (!on) return;
  std::string line = what + " " + req.method;
  for (const auto& p : req.path_params) line += " " + p.substr(0, 8);
  for (const auto& [k, v] : req.headers) line += " [" + k + ": " + v.substr(0, 40) + "]";
  line += " -> " + std::to_string(res.status) + " " + res.body.substr(0, 120) + " " + extra;
  std::fprintf(stderr, "%s\n", line.c_str());
}

class Client {
 public:
  Client(FuzzedDataProvider& in, const std::string& dir) : in_(in) {
    api::CaptureOptions o;
    o.dir = dir;
    const std::uint64_t sizes[] = {0, 64, 1000, 100000};
    o.quota = sizes[in_.ConsumeIntegralInRange(0, 3)];
    o.token_quota = sizes[in_.ConsumeIntegralInRange(0, 3)];
    o.max_size = in_.ConsumeBool() ? 100000 : 300;
    o.upload_expiry_s = 1e6;
    store_ = std::make_unique<api::CaptureStore>(o);
    routes_ = std::make_unique<api::CaptureRoutes>(
        *store_,
        [](http::Response& res, int status, const std::string& detail,
           const std::vector<api::FieldError>&) {
          res.status = status;
          res.set_content(detail, "application/problem+json");
        },
        [this](const std::string& path) { return in_use_ == path; });
  }

  void run() {
    for (int op = 0; op < 48 && in_.remaining_bytes() > 0; ++op) {
      switch (in_.ConsumeIntegralInRange(0, 9)) {
        case 0:
        case 1:
          create();
          break;
        case 2:
        case 3:
        case 4:
          patch();
          break;
        case 5:
          head_and_state();
          break;
        case 6:
          terminate();
          break;
        case 7:
          post_capture();
          break;
        case 8:
          remove_capture();
          break;
        case 9:
          resolve();
          break;
      }
      check_uploads();
    }
    finish();
  }

 private:
  http::Request request(std::string method, std::vector<std::string> params = {}) {
    http::Request r;
    r.method = std::move(method);
    r.path_params = std::move(params);
    if (!in_.ConsumeBool() || !in_.ConsumeBool()) r.headers.emplace_back("Tus-Resumable", "1.0.0");
    if (in_.ConsumeIntegralInRange(0, 3) == 0)
      r.headers.emplace_back("Authorization", in_.ConsumeBool() ? "Bearer a" : "Bearer b");
    return r;
  }

  std::string some_text(std::size_t max) { return in_.ConsumeRandomLengthString(max); }

  // A capture's bytes: mostly a pcap header and then anything.
  std::string some_file() {
    std::string f = in_.ConsumeIntegralInRange(0, 7) ? kPcapHeader : std::string();
    f += in_.ConsumeRandomLengthString(in_.ConsumeBool() ? 200 : 3000);
    return f;
  }

  Upload* pick() {
    if (uploads_.empty()) return nullptr;
    return &uploads_[in_.ConsumeIntegralInRange<std::size_t>(0, uploads_.size() - 1)];
  }

  // Feeds a body to a sink in pieces; may break it off (abort) after some of them. Returns
  // how many bytes the sink took (its write() returned true for) and whether it was aborted.
  struct Fed {
    std::size_t taken = 0;
    bool aborted = false, refused = false;
  };
  static std::string describe(const Fed& f, std::size_t size) {
    return "(body " + std::to_string(size) + ", taken " + std::to_string(f.taken) +
           (f.aborted ? ", aborted" : "") + (f.refused ? ", refused" : "") + ")";
  }
  Fed feed(std::unique_ptr<http::BodySink> sink, std::string_view body, http::Response& res) {
    Fed fed;
    const std::size_t piece = in_.ConsumeIntegralInRange<std::size_t>(1, 700);
    const bool break_off = in_.ConsumeIntegralInRange(0, 5) == 0;
    const std::size_t stop_at =
        break_off ? in_.ConsumeIntegralInRange<std::size_t>(0, body.size()) : body.size() + 1;
    std::size_t at = 0;
    while (at < body.size()) {
      if (at >= stop_at) {
        sink->abort();
        fed.aborted = true;
        return fed;
      }
      const auto part = body.substr(at, piece);
      if (!sink->write(part, res)) {
        fed.refused = true;
        return fed;
      }
      at += part.size();
      fed.taken = at;
    }
    if (break_off && stop_at == body.size()) {
      sink->abort();
      fed.aborted = true;
      return fed;
    }
    sink->finish(res);
    return fed;
  }

  void create() {
    Upload u;
    u.file = some_file();
    auto req = request("POST");
    const int len_mode = in_.ConsumeIntegralInRange(0, 5);
    if (len_mode == 0) {
      u.deferred = true;
      req.headers.emplace_back("Upload-Defer-Length", "1");
    } else if (len_mode == 1) {
      req.headers.emplace_back("Upload-Length", some_text(24));
    } else {
      req.headers.emplace_back("Upload-Length", std::to_string(u.file.size()));
    }
    std::string meta;
    switch (in_.ConsumeIntegralInRange(0, 3)) {
      case 0:
        meta = some_text(100);
        break;
      case 1:
        meta = "filename " + base64(some_text(40));
        break;
      case 2:
        meta = "filename " + base64("t.pcap") + ",sha256 " + base64(sha256_hex(u.file));
        break;
      default:
        break;
    }
    if (!meta.empty()) req.headers.emplace_back("Upload-Metadata", meta);
    std::string first;
    if (in_.ConsumeBool()) {  // creation with upload
      first = u.file.substr(0, in_.ConsumeIntegralInRange<std::size_t>(0, u.file.size()));
      req.headers.emplace_back("Content-Type", in_.ConsumeIntegralInRange(0, 7)
                                                   ? "application/offset+octet-stream"
                                                   : "text/plain");
      req.headers.emplace_back("Content-Length", std::to_string(first.size()));
    }
    http::Response res;
    auto sink = routes_->tus_create(req, res);
    Fed fed;
    if (sink) {
      FUZZ_CHECK(!first.empty(), "a sink for a creation without a body");
      fed = feed(std::move(sink), first, res);
    }
    trace("create", req, res, describe(fed, first.size()));
    const std::string* loc = header(res, "Location");
    if (res.status == 201) FUZZ_CHECK(loc && loc->rfind("/api/v1/uploads/", 0) == 0);
    if (loc && loc->rfind("/api/v1/uploads/", 0) == 0) {
      u.id = loc->substr(16);
      uploads_.push_back(std::move(u));
    }
  }

  void patch() {
    Upload* u = pick();
    const bool bogus_id = !u || in_.ConsumeIntegralInRange(0, 15) == 0;
    const std::string id = bogus_id ? some_text(40) : u->id;
    auto state = bogus_id ? std::nullopt : store_->upload(id);
    std::uint64_t offset = state ? state->offset : 0;
    if (in_.ConsumeIntegralInRange(0, 7) == 0) offset = in_.ConsumeIntegral<std::uint32_t>() % 4000;
    auto req = request("PATCH", {id});
    req.headers.emplace_back("Content-Type", in_.ConsumeIntegralInRange(0, 15)
                                                 ? "application/offset+octet-stream"
                                                 : "application/octet-stream");
    if (in_.ConsumeIntegralInRange(0, 15))
      req.headers.emplace_back("Upload-Offset", std::to_string(offset));
    else
      req.headers.emplace_back("Upload-Offset", some_text(20));
    // The client may change its mind about bytes the server does not have yet.
    if (u && !bogus_id && in_.ConsumeIntegralInRange(0, 7) == 0 && state &&
        state->offset < u->file.size()) {
      const std::size_t at =
          in_.ConsumeIntegralInRange<std::size_t>(state->offset, u->file.size() - 1);
      u->file[at] = static_cast<char>(u->file[at] ^ 0x5a);
    }
    std::string body;
    if (u && !bogus_id && offset <= u->file.size()) {
      const std::size_t n = in_.ConsumeIntegralInRange<std::size_t>(0, u->file.size() - offset);
      body = u->file.substr(offset, n);
      if (in_.ConsumeIntegralInRange(0, 15) == 0) {  // the file grows: more than announced
        const std::string more = some_text(50);
        body = u->file.substr(offset) + more;
        u->file += more;
      }
    } else {
      body = some_text(200);
    }
    if (u && !bogus_id && u->deferred && in_.ConsumeBool())
      req.headers.emplace_back("Upload-Length", in_.ConsumeIntegralInRange(0, 7)
                                                    ? std::to_string(u->file.size())
                                                    : some_text(12));
    switch (in_.ConsumeIntegralInRange(0, 7)) {
      case 0:
        req.headers.emplace_back("Upload-Checksum", "sha1 " + base64(raw_digest(body, EVP_sha1())));
        break;
      case 1:
        req.headers.emplace_back("Upload-Checksum", "md5 " + base64(raw_digest("x", EVP_md5())));
        break;
      case 2:
        req.headers.emplace_back("Upload-Checksum", some_text(60));
        break;
      default:
        break;
    }
    req.headers.emplace_back("Content-Length", std::to_string(body.size()));
    http::Response res;
    auto sink = routes_->tus_patch(req, res);
    Fed fed;
    if (sink) fed = feed(std::move(sink), body, res);
    trace("patch", req, res,
          describe(fed, body.size()) + " used " + std::to_string(store_->used()));
  }

  void head_and_state() {
    Upload* u = pick();
    if (!u) return;
    auto req = request("HEAD", {u->id});
    http::Response res;
    routes_->tus_head(req, res);
    auto state = store_->upload(u->id);
    if (res.status == 200) {
      FUZZ_CHECK(state.has_value(), "HEAD 200 for an upload the store does not have");
      const std::string* off = header(res, "Upload-Offset");
      FUZZ_CHECK(off && *off == std::to_string(state->offset));
    }
    http::Response res2;
    routes_->upload_state(request("GET", {u->id}), res2);
    FUZZ_CHECK((res2.status == 200) == state.has_value(), std::to_string(res2.status));
  }

  void terminate() {
    Upload* u = pick();
    if (!u) return;
    http::Response res;
    const auto req = request("DELETE", {u->id});
    routes_->tus_delete(req, res);
    trace("terminate", req, res, "used " + std::to_string(store_->used()));
    if (res.status == 204) FUZZ_CHECK(!store_->upload(u->id), "terminated but still there");
  }

  void post_capture() {
    std::string file = some_file();
    auto req = request("POST");
    std::string body = file;
    const int mode = in_.ConsumeIntegralInRange(0, 3);
    if (mode == 0) {  // a browser's form
      const std::string b = "----b" + std::to_string(in_.ConsumeIntegral<std::uint16_t>());
      req.headers.emplace_back("Content-Type", "multipart/form-data; boundary=" + b);
      body = "--" + b + "\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\n" +
             sha256_hex(file) + "\r\n--" + b +
             "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.pcap\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n" +
             file + "\r\n--" + b + "--\r\n";
    } else if (mode == 1) {
      req.query.emplace_back("sha256", in_.ConsumeBool() ? sha256_hex(file) : some_text(70));
    } else if (mode == 2) {
      req.query.emplace_back("name", some_text(30));
    }
    if (in_.ConsumeIntegralInRange(0, 7))  // else chunked: counted as it comes
      req.headers.emplace_back("Content-Length", std::to_string(body.size()));
    http::Response res;
    auto sink = routes_->post_capture(req, res);
    if (!sink) return;
    const Fed fed = feed(std::move(sink), body, res);
    trace("post", req, res, describe(fed, body.size()) + " used " + std::to_string(store_->used()));
    if (fed.aborted || fed.refused) return;
    if (res.status == 200 || res.status == 201) check_capture(res, file);
  }

  // A 200/201 answer names a capture with the client's bytes.
  void check_capture(const http::Response& res, const std::string& file) {
    const auto j = nlohmann::json::parse(res.body);
    const std::string sha = j.at("sha256");
    FUZZ_CHECK(sha == sha256_hex(file), "stored as " + sha);
    auto c = store_->find(sha);
    FUZZ_CHECK(c.has_value());
    FUZZ_CHECK(c->size == file.size());
    FUZZ_CHECK(read_file(c->path) == file, "the capture's bytes differ from the upload's");
    captures_.push_back(sha);
  }

  void remove_capture() {
    if (captures_.empty()) return;
    const std::string sha =
        captures_[in_.ConsumeIntegralInRange<std::size_t>(0, captures_.size() - 1)];
    if (in_.ConsumeIntegralInRange(0, 3) == 0) {
      auto c = store_->find(sha);
      in_use_ = c ? c->path : "";
    }
    http::Response res;
    routes_->remove(request("DELETE", {sha}), res);
    if (res.status == 204) FUZZ_CHECK(!store_->find(sha));
    in_use_.clear();
  }

  void resolve() {
    std::string entry;
    Upload* u = pick();
    if (u && in_.ConsumeBool())
      entry = "upload:" + u->id;
    else if (!captures_.empty() && in_.ConsumeBool())
      entry = "sha256:" + captures_.front();
    else
      entry = some_text(80);
    std::string error;
    auto path = routes_->resolve_reference(entry, error);
    if (path && !path->empty()) FUZZ_CHECK(error.empty() && ::access(path->c_str(), R_OK) == 0);
  }

  // Every upload the store has: its data is the client's first `offset` bytes; a complete one
  // is a capture of the client's file.
  void check_uploads() {
    std::uint64_t counted = 0;  // by the unfinished uploads
    for (auto& u : uploads_) {
      if (u.gone) continue;
      auto st = store_->upload(u.id);
      if (!st) {
        u.gone = true;
        continue;
      }
      if (!st->capture.empty()) {
        // Its length was the client's file's, or a number the client sent instead.
        FUZZ_CHECK(st->length && *st->length <= u.file.size());
        const std::string sent = u.file.substr(0, *st->length);
        FUZZ_CHECK(st->capture == sha256_hex(sent), "upload " + u.id + " became " + st->capture);
        auto c = store_->find(st->capture);
        if (c) FUZZ_CHECK(read_file(c->path) == sent);
        captures_.push_back(st->capture);
        u.gone = true;
        continue;
      }
      const std::string part = read_file(store_->uploads_dir() + "/" + u.id + ".part");
      FUZZ_CHECK(part.size() == st->offset);
      FUZZ_CHECK(part.size() <= u.file.size() && u.file.compare(0, part.size(), part) == 0,
                 "upload " + u.id + " holds " + std::to_string(part.size()) +
                     " bytes that are not the client's");
      if (st->length) FUZZ_CHECK(st->offset <= *st->length);
      const std::uint64_t held = store_->upload_reservation(u.id);
      FUZZ_CHECK(held == st->length.value_or(st->offset),
                 "upload " + u.id + " counts " + std::to_string(held) + " bytes, holds " +
                     std::to_string(st->offset) + " of " +
                     (st->length ? std::to_string(*st->length) : std::string("a deferred length")));
      counted += held;
    }
    std::uint64_t sizes = 0;
    for (const auto& c : store_->list()) sizes += c.size;
    FUZZ_CHECK(store_->used() == sizes + counted,
               "used " + std::to_string(store_->used()) + ", captures " + std::to_string(sizes) +
                   ", unfinished uploads " + std::to_string(counted));
  }

  // Removes every upload, then every capture: the bytes counted follow.
  void finish() {
    for (auto& u : uploads_) {
      http::Request req;  // a well-formed termination, whatever the input says
      req.method = "DELETE";
      req.path_params = {u.id};
      req.headers.emplace_back("Tus-Resumable", "1.0.0");
      http::Response res;
      routes_->tus_delete(req, res);
      FUZZ_CHECK(res.status == 204 || res.status == 404,
                 std::to_string(res.status) + " " + res.body);
    }
    // Only the captures remain counted.
    std::uint64_t sizes = 0;
    for (const auto& c : store_->list()) sizes += c.size;
    FUZZ_CHECK(store_->used() == sizes,
               "used " + std::to_string(store_->used()) + ", captures " + std::to_string(sizes));
    for (const auto& c : store_->list())
      FUZZ_CHECK(store_->remove(c.sha256, [](const std::string&) { return false; }) ==
                 api::CaptureStore::Removed::Yes);
    FUZZ_CHECK(store_->used() == 0, "used " + std::to_string(store_->used()) + " with nothing");
  }

  FuzzedDataProvider& in_;
  std::unique_ptr<api::CaptureStore> store_;
  std::unique_ptr<api::CaptureRoutes> routes_;
  std::vector<Upload> uploads_;
  std::vector<std::string> captures_;
  std::string in_use_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::TempDir base("uploads");
  static unsigned long n = 0;
  const std::string dir = base.path() + "/" + std::to_string(n++);
  {
    FuzzedDataProvider in(data, size);
    Client client(in, dir);
    client.run();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

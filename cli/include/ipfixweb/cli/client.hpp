// ipfixctl's HTTP side: the api's public routes over cpp-httplib, exit codes, and the error a
// refused or failed request ends the command with.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace httplib {
class Client;
}

namespace ipfixweb::cli {

// The documented exit codes (docs/cli.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitTaskFailed = 1,     // the followed task failed or was cancelled
  kExitUsage = 2,          // bad command line, URL or configuration
  kExitRefused = 3,        // the server refused the request (4xx)
  kExitUnreachable = 4,    // no connection, a timeout, a broken answer, or a 5xx
  kExitLocal = 5,          // a local file could not be read or written, or a digest differed
  kExitInterrupted = 130,  // SIGINT (SIGTERM: 143)
  kExitStdoutClosed = 141  // stdout was closed early (`| head`), as if killed by SIGPIPE
};

// An error that ends the command with `code`. `problem` is the server's problem+json
// (RFC 9457) when the error is a refused request, else null.
class Failure : public std::runtime_error {
 public:
  Failure(int code, const std::string& what, nlohmann::json problem = nullptr)
      : std::runtime_error(what), code_(code), problem_(std::move(problem)) {}
  int code() const { return code_; }
  const nlohmann::json& problem() const { return problem_; }

 private:
  int code_;
  nlohmann::json problem_;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Reply {
  int status = 0;
  Headers headers;
  std::string body;
  // The first header field of that name (case-insensitive), or "".
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  // The body as JSON; a Failure (kExitUnreachable) when it is not.
  nlohmann::json json() const;
  bool ok() const { return status >= 200 && status < 300; }
};

// Throws the Failure a non-2xx answer means: 4xx is kExitRefused, anything else
// kExitUnreachable; the message starts with `doing` and carries the problem's detail.
void expect_ok(const Reply& r, const std::string& doing);
// The lines to print for a Failure: its message, then each `errors` entry of the problem.
std::vector<std::string> failure_lines(const Failure& f);

// "?a=b&c=d" from the pairs whose value is not empty, percent-encoded (RFC 3986).
std::string query(const std::vector<std::pair<std::string, std::string>>& params);
std::string percent_encode(std::string_view s);

// A base URL split into what cpp-httplib connects to ("http://host:port") and a path prefix
// ("" or "/under/a/proxy"). Throws Failure(kExitUsage) for anything but http(s)://host[:port].
struct Endpoint {
  std::string origin;
  std::string prefix;
};
Endpoint parse_url(const std::string& url);

class Api {
 public:
  // `timeout_s`: connect, read and write timeouts of ordinary requests.
  Api(const std::string& url, std::string token, double timeout_s = 60);
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  const std::string& url() const { return url_; }

  // One request each; a transport error (no answer) throws Failure(kExitUnreachable).
  Reply get(const std::string& target, const Headers& headers = {});
  Reply head(const std::string& target, const Headers& headers = {});
  Reply del(const std::string& target, const Headers& headers = {});
  Reply options(const std::string& target, const Headers& headers = {});
  Reply post(const std::string& target, const Headers& headers, const std::string& body,
             const std::string& content_type);

  // A request whose body (`length` bytes) comes from `next`: called with the offset within
  // the body, it fills `chunk` with the following bytes (at most 256 KiB); false aborts.
  // Returns the reply, or nothing when the transport failed (with the reason in *error).
  using BodySource = std::function<bool(std::uint64_t offset, std::string& chunk)>;
  bool send_body(const std::string& method, const std::string& target, const Headers& headers,
                 std::uint64_t length, const std::string& content_type, const BodySource& next,
                 Reply& reply, std::string* error);

  // A GET whose body is streamed. `on_head` sees the status and header fields first: true
  // streams the body to `on_data` (which may return false to stop), false collects the body
  // into the reply instead (an error's problem document); a 2xx answer that is not streamed is
  // not read at all when `stop_unless_streamed`.
  // `read_timeout_s` bounds each wait for data (0: the api's timeout).
  enum class End { Complete, Stopped, Broken };
  struct Streamed {
    Reply reply;  // status and header fields; the body when it was not streamed
    End end = End::Complete;
    bool streamed = false;
    std::string error;  // why, when Broken
  };
  Streamed stream(const std::string& target, const Headers& headers,
                  const std::function<bool(const Reply&)>& on_head,
                  const std::function<bool(const char*, std::size_t)>& on_data,
                  double read_timeout_s = 0, bool stop_unless_streamed = false);

 private:
  std::unique_ptr<httplib::Client> make_client(double read_timeout_s) const;
  std::string full(const std::string& target) const { return endpoint_.prefix + target; }
  Reply finish(const std::string& what, const std::string& target, void* result);

  std::string url_;
  Endpoint endpoint_;
  std::string token_;
  double timeout_s_;
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace ipfixweb::cli

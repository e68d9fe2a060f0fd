// Dispatch grants: the broker's proof that it gave a task to a worker. A grant is an
// HMAC-SHA256 of the task id and the worker's routing id under a key only the broker holds
// (kept in its data directory, so grants survive a broker restart). A worker echoes the grant
// with every claim (ready.running) and result (done); a peer that was never given the task
// cannot produce it, so it can neither claim nor finish another worker's task.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace ipfixweb::grant {

// Makes and checks grants under one key. The HMAC context is keyed once: fetching the
// algorithm and keying it for every grant (EVP_Q_mac) cost the broker a third more CPU per
// task. Not thread-safe (the broker's core is single-threaded).
class Signer {
 public:
  explicit Signer(std::string_view key);  // throws std::runtime_error
  ~Signer();
  Signer(const Signer&) = delete;
  Signer& operator=(const Signer&) = delete;
  // 32 lowercase hex digits (the first 128 bits of the HMAC).
  std::string make(std::string_view task_id, std::string_view worker);
  bool valid(std::string_view task_id, std::string_view worker, std::string_view presented);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-off forms of the above (a Signer each).
std::string make(std::string_view key, std::string_view task_id, std::string_view worker);

// Compares a presented grant with the expected one in time independent of where they differ.
bool valid(std::string_view key, std::string_view task_id, std::string_view worker,
           std::string_view presented);

// The key in `path`: read when the file exists (at least 32 bytes), else 32 random bytes
// written to a new file readable by its owner only. Throws std::runtime_error.
std::string load_or_create_key(const std::string& path);

}  // namespace ipfixweb::grant

// ZeroMQ CURVE security: encrypted, authenticated connections between the
// broker and its clients (api, workers) over untrusted networks. The broker
// holds a key pair and a list of authorised client public keys; a ZAP
// handler refuses every other client. Keys are Z85 text (40 characters):
// NAME.key holds a secret key, NAME.pub the matching public key.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

namespace ipfixweb::curve {

struct KeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// Writes PREFIX.key (mode 0600) and PREFIX.pub; returns the pair. Throws on failure.
KeyPair generate(const std::string& prefix);
// Reads a secret key file and derives its public key. Throws std::runtime_error.
KeyPair load_secret(const std::string& path);
// Reads a public key file (the first 40-character Z85 token). Throws.
std::string load_public(const std::string& path);
// Authorised client keys: a file with one Z85 key per line ('#' comments),
// or a directory whose *.pub files each hold one. Throws when none is found.
std::set<std::string> load_authorized(const std::string& path);

// `domain` names the socket to the Authenticator (ZAP domain), which keeps a key list per
// domain: a worker's key then cannot open the api's socket, nor the api's a worker's.
void make_server(zmq::socket_t& s, const KeyPair& own, const std::string& domain);
void make_client(zmq::socket_t& s, const KeyPair& own, const std::string& server_public);

// Answers ZAP requests (RFC 27) for the context: CURVE clients whose public key is
// authorised for the socket's domain get 200 (with the key as their User-Id), everyone else
// 400. Create it before binding.
class Authenticator {
 public:
  using Authorized = std::map<std::string, std::set<std::string>>;  // domain -> keys
  Authenticator(zmq::context_t& ctx, Authorized authorized, std::shared_ptr<spdlog::logger> log);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

 private:
  void serve();
  zmq::socket_t sock_;
  Authorized authorized_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace ipfixweb::curve

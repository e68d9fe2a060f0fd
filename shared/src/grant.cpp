#include "ipfixweb/shared/grant.hpp"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ipfixweb::grant {

namespace {

std::string hex16(const unsigned char* mac) {
  static const char* const kHex = "0123456789abcdef";
  std::string out(32, '0');
  for (std::size_t i = 0; i < 16; ++i) {
    out[2 * i] = kHex[mac[i] >> 4];
    out[2 * i + 1] = kHex[mac[i] & 15];
  }
  return out;
}

bool same(std::string_view want, std::string_view presented) {
  unsigned char diff = presented.size() == want.size() ? 0 : 1;
  for (std::size_t i = 0; i < want.size(); ++i)
    diff |= static_cast<unsigned char>(want[i] ^ (i < presented.size() ? presented[i] : 0));
  return diff == 0;
}

}  // namespace

struct Signer::Impl {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* keyed = nullptr;  // keyed once; copied for every grant
  ~Impl() {
    EVP_MAC_CTX_free(keyed);
    EVP_MAC_free(mac);
  }
};

Signer::Signer(std::string_view key) : impl_(std::make_unique<Impl>()) {
  impl_->mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (impl_->mac) impl_->keyed = EVP_MAC_CTX_new(impl_->mac);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                               OSSL_PARAM_construct_end()};
  if (!impl_->keyed ||
      !EVP_MAC_init(impl_->keyed, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                    params))
    throw std::runtime_error("cannot set up HMAC-SHA256");
}

Signer::~Signer() = default;

std::string Signer::make(std::string_view task_id, std::string_view worker) {
  std::string data;
  data.reserve(task_id.size() + worker.size() + 1);
  data.append(task_id).push_back('\n');  // neither may contain a newline that shifts the split
  data.append(worker);
  unsigned char mac[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_dup(impl_->keyed);
  const bool ok =
      ctx &&
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) &&
      EVP_MAC_final(ctx, mac, &len, sizeof mac) && len >= 16;
  EVP_MAC_CTX_free(ctx);
  if (!ok) throw std::runtime_error("HMAC-SHA256 failed");
  return hex16(mac);
}

bool Signer::valid(std::string_view task_id, std::string_view worker, std::string_view presented) {
  if (task_id.find('\n') != std::string_view::npos) return false;
  return same(make(task_id, worker), presented);
}

std::string make(std::string_view key, std::string_view task_id, std::string_view worker) {
  return Signer(key).make(task_id, worker);
}

bool valid(std::string_view key, std::string_view task_id, std::string_view worker,
           std::string_view presented) {
  return Signer(key).valid(task_id, worker, presented);
}

std::string load_or_create_key(const std::string& path) {
  auto fail = [&](const char* what) {
    throw std::runtime_error(std::string(what) + " " + path + ": " + std::strerror(errno));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes for a key");
    const std::string tmp = path + ".tmp";
    ::unlink(tmp.c_str());
    int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) fail("cannot create the grant key");
    const bool ok = ::write(out, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes) &&
                    ::fsync(out) == 0;
    ::close(out);
    // link, not rename: a second broker starting at the same moment keeps the first key.
    if (!ok || (::link(tmp.c_str(), path.c_str()) != 0 && errno != EEXIST)) {
      ::unlink(tmp.c_str());
      fail("cannot write the grant key");
    }
    ::unlink(tmp.c_str());
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) fail("cannot open the grant key");
  std::string key(64, '\0');
  const ssize_t n = ::read(fd, key.data(), key.size());
  ::close(fd);
  if (n < 32) throw std::runtime_error("the grant key " + path + " is shorter than 32 bytes");
  key.resize(static_cast<std::size_t>(n));
  return key;
}

}  // namespace ipfixweb::grant

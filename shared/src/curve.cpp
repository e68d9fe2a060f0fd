#include "ipfixweb/shared/curve.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "ipfixweb/shared/zmq_util.hpp"

namespace fs = std::filesystem;

namespace ipfixweb::curve {

namespace {

bool is_z85_key(const std::string& s) {
  if (s.size() != 40) return false;
  static const std::string alphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  for (char c : s)
    if (alphabet.find(c) == std::string::npos) return false;
  return true;
}

// First whitespace-separated token of the file that is not a comment.
std::string first_key(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read key file " + path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string tok;
    if (!(ss >> tok) || tok[0] == '#') continue;
    if (!is_z85_key(tok)) throw std::runtime_error(path + " does not hold a Z85 CURVE key");
    return tok;
  }
  throw std::runtime_error(path + " holds no key");
}

}  // namespace

KeyPair generate(const std::string& prefix) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw std::runtime_error("this libzmq has no CURVE support");
  {
    // Readable by its owner only from the start (not chmod'ed after it was written).
    const std::string path = prefix + ".key";
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw std::runtime_error("cannot write " + path);
    const std::string text =
        std::string("# ipfixweb CURVE secret key: keep private\n") + sec + "\n";
    const bool ok = ::fchmod(fd, 0600) == 0 &&
                    ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write " + path);
  }
  std::ofstream out(prefix + ".pub", std::ios::trunc);
  out << "# ipfixweb CURVE public key\n" << pub << "\n";
  if (!out) throw std::runtime_error("cannot write " + prefix + ".pub");
  return {pub, sec};
}

KeyPair load_secret(const std::string& path) {
  KeyPair kp;
  kp.secret_key = first_key(path);
  char pub[41];
  if (zmq_curve_public(pub, kp.secret_key.c_str()) != 0)
    throw std::runtime_error("cannot derive the public key of " + path);
  kp.public_key = pub;
  return kp;
}

std::string load_public(const std::string& path) { return first_key(path); }

std::set<std::string> load_authorized(const std::string& path) {
  std::set<std::string> keys;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".pub") keys.insert(first_key(e.path().string()));
  } else {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read authorised keys " + path);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ss(line);
      std::string tok;
      if (!(ss >> tok) || tok[0] == '#') continue;
      if (!is_z85_key(tok)) throw std::runtime_error(path + ": not a Z85 key: " + tok);
      keys.insert(tok);
    }
  }
  if (keys.empty()) throw std::runtime_error("no authorised CURVE keys in " + path);
  return keys;
}

void make_server(zmq::socket_t& s, const KeyPair& own, const std::string& domain) {
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, own.secret_key);
  s.set(zmq::sockopt::zap_domain, domain);
}

void make_client(zmq::socket_t& s, const KeyPair& own, const std::string& server_public) {
  s.set(zmq::sockopt::curve_serverkey, server_public);
  s.set(zmq::sockopt::curve_publickey, own.public_key);
  s.set(zmq::sockopt::curve_secretkey, own.secret_key);
}

Authenticator::Authenticator(zmq::context_t& ctx, Authorized authorized,
                             std::shared_ptr<spdlog::logger> log)
    : sock_(ctx, zmq::socket_type::rep), authorized_(std::move(authorized)), log_(std::move(log)) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { serve(); });
}

Authenticator::~Authenticator() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Authenticator::serve() {
  while (!stop_) {
    std::vector<zmq::pollitem_t> items = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
    zmqu::poll(items, 100);
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    auto parts = zmqu::recv_multipart(sock_);
    if (!parts) continue;
    // RFC 27: version, request id, domain, address, identity, mechanism, credentials...
    std::string version = parts->size() > 0 ? (*parts)[0].to_string() : "";
    std::string request_id = parts->size() > 1 ? (*parts)[1].to_string() : "";
    std::string domain = parts->size() > 2 ? (*parts)[2].to_string() : "";
    std::string address = parts->size() > 3 ? (*parts)[3].to_string() : "";
    std::string mechanism = parts->size() > 5 ? (*parts)[5].to_string() : "";
    std::string status = "400", text = "not authorised", user;
    if (version == "1.0" && mechanism == "CURVE" && parts->size() > 6 && (*parts)[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const uint8_t*>((*parts)[6].data()), 32);
      auto keys = authorized_.find(domain);
      if (keys != authorized_.end() && keys->second.count(z85)) {
        status = "200";
        text = "OK";
        user = z85;
      } else {
        log_->warn("refused CURVE client {} from {}: key not authorised for the {}", z85, address,
                   domain);
      }
    } else {
      log_->warn("refused {} client from {}", mechanism.empty() ? "unknown" : mechanism, address);
    }
    std::vector<std::string> reply = {version, request_id, status, text, user, ""};
    for (std::size_t i = 0; i < reply.size(); ++i)
      sock_.send(zmq::buffer(reply[i]),
                 i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

}  // namespace ipfixweb::curve

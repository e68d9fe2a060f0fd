#include "ipfixweb/worker/session.hpp"

#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"

namespace ipfixweb::worker {

namespace {

std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string default_worker_id() {
  return hostname() + "-" + std::to_string(::getpid()) + "-" + new_uuid().substr(0, 4);
}

}  // namespace

void Liveness::connected(double now) {
  last_heard_ = now;
  next_heartbeat_ = now + interval_;
}

void Liveness::heard(double now) {
  last_heard_ = now;
  backoff_ = 1.0;
}

bool Liveness::heartbeat_due(double now) {
  if (now < next_heartbeat_) return false;
  next_heartbeat_ = now + interval_;
  return true;
}

void Liveness::reconnected(double now) {
  next_heartbeat_ = now + interval_;
  // Counted as heard so that silence is noticed `backoff_` seconds from now.
  last_heard_ = now + backoff_ - interval_ * liveness_;
  backoff_ = std::min(backoff_ * 2, 32.0);
}

void RecentResults::add(double now, std::string message) {
  kept_.emplace_back(now, std::move(message));
  while (!kept_.empty() && (kept_.front().first < now - keep_s_ || kept_.size() > kMax))
    kept_.pop_front();
}

double result_keep_seconds(const Config& cfg) { return cfg.heartbeat_s * cfg.liveness * 4 + 5; }

Session::Session(const Config& cfg, zmq::context_t& ctx, std::function<Registration()> registration)
    : id_(cfg.worker_id.empty() ? default_worker_id() : cfg.worker_id),
      endpoint_(cfg.broker),
      ctx_(ctx),
      registration_(std::move(registration)),
      log_(logger("worker")),
      liveness_(cfg.heartbeat_s, cfg.liveness),
      recent_(result_keep_seconds(cfg)),
      incarnation_(new_uuid()) {
  if (!cfg.curve_server_key.empty() || !cfg.curve_secret_key.empty()) {
    if (cfg.curve_server_key.empty() || cfg.curve_secret_key.empty())
      throw std::runtime_error("CURVE needs both --curve-server-key and --curve-secret-key");
    curve_keys_ = curve::load_secret(cfg.curve_secret_key);
    curve_server_ = curve::load_public(cfg.curve_server_key);
  }
  connect();
  liveness_.connected(now_mono());
  register_now();
}

zmq::pollitem_t Session::poll_item() { return {sock_->handle(), 0, ZMQ_POLLIN, 0}; }

void Session::receive(const Deliver& deliver) {
  // A worker that did not run for the whole liveness window (stopped, a paused VM, swapped
  // out) sent no heartbeat and has been given up for lost by the broker, which has re-queued
  // what it sent meanwhile: a dispatch waiting in the socket may have run elsewhere already,
  // and running it now could replace that run's published output. This is judged before the
  // backlog is read: the fresh socket drops it, the registration tells the broker what really
  // runs. (A broker that was slow while this worker ran heard our heartbeats: its backlog is
  // read as usual.)
  if (const double now = now_mono(); liveness_.quiet(now)) {
    log_->warn(
        "did not run for {:.1f} s: the broker has given us up for lost; dropping what it "
        "sent meanwhile",
        liveness_.quiet_for(now));
    reconnect();
    return;
  }
  using Handler = void (Session::*)(const proto::Envelope&);
  static constexpr std::pair<std::string_view, Handler> kHandlers[] = {
      {proto::type::kHeartbeat, &Session::on_heartbeat},
      {proto::type::kReregister, &Session::on_reregister},
  };
  while (auto parts = zmqu::recv_multipart(*sock_)) {
    if (parts->size() != 1) continue;
    const auto& frame = (*parts)[0];
    std::string err;
    auto msg = proto::decode(frame.data(), frame.size(), &err);
    liveness_.heard(now_mono());
    if (!msg) {
      log_->warn("dropped malformed message from broker: {}", err);
      continue;
    }
    const auto own = std::find_if(std::begin(kHandlers), std::end(kHandlers),
                                  [&](const auto& h) { return h.first == msg->type; });
    if (own != std::end(kHandlers))
      (this->*own->second)(*msg);
    else
      deliver(*msg, std::string_view(static_cast<const char*>(frame.data()), frame.size()));
  }
}

void Session::on_heartbeat(const proto::Envelope&) {}  // hearing it was the point

void Session::on_reregister(const proto::Envelope&) {
  log_->info("broker asked us to register again");
  register_now();
}

void Session::tick(double now) {
  if (liveness_.heartbeat_due(now))
    send(proto::type::kHeartbeat,
         proto::encode(proto::type::kHeartbeat, proto::Heartbeat{++hb_seq_}));
  if (liveness_.silent(now)) {
    // Broker silent: fresh socket, exponential backoff (1 s .. 32 s).
    log_->warn("broker silent for {:.1f} s; reconnecting (next wait {:.0f} s)",
               liveness_.silent_for(now), liveness_.backoff());
    reconnect();
  }
}

void Session::reconnect() {
  connect();
  liveness_.reconnected(now_mono());
  register_now();
}

void Session::connect() {
  ++connection_;
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  sock_->set(zmq::sockopt::routing_id, id_);
  sock_->set(zmq::sockopt::linger, 0);
  zmqu::limit_message_size(*sock_, proto::kMaxFrame);
  if (curve_keys_) curve::make_client(*sock_, *curve_keys_, curve_server_);
  sock_->connect(endpoint_);
}

void Session::register_now() {
  const Registration reg = registration_();
  proto::Ready r;
  r.worker_id = id_;
  r.slots = reg.slots;
  r.running = reg.running;
  r.grants = reg.grants;
  r.host = hostname();
  r.pid = ::getpid();
  r.incarnation = incarnation_;
  r.connection = connection_;
  send(proto::type::kReady, proto::encode(proto::type::kReady, r));
  recent_.for_each([&](const std::string& message) { send(proto::type::kDone, message); });
}

void Session::send(std::string_view type, const std::string& message) {
  if (!zmqu::send_frame(*sock_, message))
    log_->debug("could not queue {} for the broker", std::string(type));
}

void Session::send_result(std::string message) {
  send(proto::type::kDone, message);
  recent_.add(now_mono(), std::move(message));
}

void Session::bye() {
  send(proto::type::kBye, proto::encode(proto::type::kBye, proto::Bye{"shutdown"}));
  // Give the goodbye a moment to leave; it is a courtesy (the broker also notices missed
  // heartbeats), so a broker that is gone too costs at most this much of the shutdown.
  sock_->set(zmq::sockopt::linger, 50);
}

}  // namespace ipfixweb::worker

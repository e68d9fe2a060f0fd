#include "fake_peers.hpp"

#include "harness.hpp"

namespace ipfixweb::test {

namespace {

void use_curve(zmq::socket_t& s, const CurveKeys& k) {
  if (k.server_public.empty()) return;
  s.set(zmq::sockopt::curve_serverkey, k.server_public);
  s.set(zmq::sockopt::curve_publickey, k.public_key);
  s.set(zmq::sockopt::curve_secretkey, k.secret_key);
}

}  // namespace

FakeWorker::FakeWorker(const std::string& endpoint, std::string wid, std::string inc,
                       const CurveKeys& curve)
    : id(std::move(wid)), incarnation(std::move(inc)) {
  sock.set(zmq::sockopt::routing_id, id);
  sock.set(zmq::sockopt::linger, 0);
  use_curve(sock, curve);
  sock.connect(endpoint);
}

void FakeWorker::ready(std::vector<std::string> running, std::uint32_t slots) {
  proto::Ready r;
  r.worker_id = id;
  r.slots = slots;
  for (const auto& t : running) r.grants.push_back(grants.count(t) ? grants.at(t) : "");
  r.running = std::move(running);
  r.incarnation = incarnation;
  send(proto::encode(proto::type::kReady, r));
}

void FakeWorker::done(const std::string& task, const std::string& state) {
  proto::Done d;
  d.task_id = task;
  d.state = parse_name<Outcome>(state).value();
  d.summary = R"({"packets":1,"bytes":1,"flows":1})";
  d.grant = grants.count(task) ? grants.at(task) : "";
  send(proto::encode(proto::type::kDone, d));
}

void FakeWorker::send(const std::string& payload) {
  sock.send(zmq::buffer(payload), zmq::send_flags::none);
}

std::optional<proto::Envelope> FakeWorker::next_message(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::message_t m;
    sock.set(zmq::sockopt::rcvtimeo, 50);
    if (!sock.recv(m)) continue;
    auto env = proto::decode(m.data(), m.size(), nullptr);
    if (!env) continue;
    if (env->type == proto::type::kTask)  // a worker keeps the grant of every task it gets
      if (auto t = env->as<proto::Task>()) grants[t->task_id] = t->grant;
    return env;
  }
  return std::nullopt;
}

std::optional<proto::Task> FakeWorker::next_task(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto now = std::chrono::steady_clock::now(); now < deadline;
       now = std::chrono::steady_clock::now()) {
    auto env = next_message(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    if (!env) return std::nullopt;
    if (env->type == proto::type::kTask) return env->as<proto::Task>();
  }
  return std::nullopt;
}

FakeClient::FakeClient(const std::string& endpoint, const CurveKeys& curve) {
  sock.set(zmq::sockopt::linger, 0);
  use_curve(sock, curve);
  sock.connect(endpoint);
}

void FakeClient::send(const std::string& payload) {
  sock.send(zmq::buffer(payload), zmq::send_flags::none);
}

std::optional<std::string> FakeClient::next_reply(std::chrono::milliseconds timeout) {
  zmq::message_t m;
  sock.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  if (!sock.recv(m)) return std::nullopt;
  return m.to_string();
}

std::optional<proto::SubmitReply> FakeClient::submit(const proto::Submit& s,
                                                     std::chrono::milliseconds timeout) {
  send(proto::encode(proto::type::kSubmit, s));
  auto reply = next_reply(timeout);
  if (!reply) return std::nullopt;
  auto env = proto::decode(reply->data(), reply->size(), nullptr);
  if (!env || env->type != proto::type::kSubmitReply) return std::nullopt;
  return env->as<proto::SubmitReply>();
}

FakeBroker::FakeBroker() : sock_(ctx_, zmq::socket_type::router), port_(free_port()) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::router_handover, 1);
  sock_.bind(endpoint());
}

std::string FakeBroker::endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

std::optional<proto::Ready> FakeBroker::wait_ready(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (auto msg = next(deadline))
    if (msg->type == proto::type::kReady) return msg->as<proto::Ready>();
  return std::nullopt;
}

void FakeBroker::send_task(const proto::Task& t) { send(proto::encode(proto::type::kTask, t)); }

std::optional<proto::Done> FakeBroker::wait_done(const std::string& task_id,
                                                 std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (auto msg = next(deadline)) {
    if (msg->type != proto::type::kDone) continue;
    auto d = msg->as<proto::Done>();
    if (d && d->task_id == task_id) return d;
  }
  return std::nullopt;
}

std::optional<proto::Done> FakeBroker::run(const proto::TaskSpec& spec,
                                           std::chrono::milliseconds timeout) {
  proto::Task t;
  t.task_id = "t" + std::to_string(++tasks_);
  t.spec = spec;
  send_task(t);
  return wait_done(t.task_id, timeout);
}

void FakeBroker::send(const std::string& message) {
  sock_.send(zmq::buffer(worker_), zmq::send_flags::sndmore);
  sock_.send(zmq::buffer(message), zmq::send_flags::none);
}

std::optional<proto::Envelope> FakeBroker::next(std::chrono::steady_clock::time_point deadline) {
  using namespace std::chrono_literals;
  while (std::chrono::steady_clock::now() < deadline) {
    if (heartbeats_ && !worker_.empty() && std::chrono::steady_clock::now() >= next_heartbeat_) {
      send(proto::encode(proto::type::kHeartbeat, proto::Heartbeat{++beats_}));
      next_heartbeat_ = std::chrono::steady_clock::now() + 100ms;
    }
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 50ms);
    if (!(item.revents & ZMQ_POLLIN)) continue;
    zmq::message_t id, frame;
    if (!sock_.recv(id)) continue;
    if (!id.more() || !sock_.recv(frame)) continue;
    worker_ = id.to_string();
    std::string err;
    auto env = proto::decode(frame.data(), frame.size(), &err);
    if (env) return env;
  }
  return std::nullopt;
}

}  // namespace ipfixweb::test

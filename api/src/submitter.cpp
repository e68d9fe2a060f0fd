#include "ipfixweb/api/submitter.hpp"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <stdexcept>
#include <vector>

#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/util.hpp"
#include "ipfixweb/shared/zmq_util.hpp"

namespace ipfixweb::api {

// One waiting submission, owned by the submitter thread once queued.
struct BatchSubmitter::Slot {
  proto::Submit submit;
  double deadline = 0;  // monotonic seconds
  Done done;
  bool answered = false;

  Slot() = default;
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  // A submission dropped on any path (the thread failed or stopped) is answered with nullopt
  // (503 and Retry-After), never left unanswered.
  ~Slot() { answer(std::nullopt); }

  void answer(std::optional<proto::SubmitReply> r) noexcept {
    if (answered) return;
    answered = true;
    try {
      done(std::move(r));
    } catch (const std::exception& e) {
      logger("api")->error("a submission's answer failed: {}", e.what());
    } catch (...) {
      logger("api")->error("a submission's answer failed");
    }
  }
};

struct BatchSubmitter::Batch {
  std::uint64_t req_id = 0;
  std::vector<std::shared_ptr<Slot>> slots;
  std::vector<std::uint64_t> slot_ids;  // req_id of each submit, to check the replies
  double deadline = 0;                  // the latest of the slots'
};

BatchSubmitter::BatchSubmitter(zmq::context_t& ctx, std::string endpoint, Options opts,
                               const curve::KeyPair* own, std::string server_public)
    : ctx_(ctx),
      endpoint_(std::move(endpoint)),
      opts_(opts),
      server_public_(std::move(server_public)),
      log_(logger("api")) {
  opts_.max_batch = std::clamp<std::size_t>(opts_.max_batch, 1, proto::kMaxSubmitBatch);
  opts_.max_in_flight = std::max<std::size_t>(opts_.max_in_flight, 1);
  if (own) keys_ = *own;
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "submitter");
}

BatchSubmitter::~BatchSubmitter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
  ::close(wake_fd_);
}

void BatchSubmitter::wake() {
  std::uint64_t one = 1;
  // Only fails when the counter would overflow: then a wake is pending anyway.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

std::optional<proto::SubmitReply> BatchSubmitter::submit(proto::Submit s) {
  auto promise = std::make_shared<std::promise<std::optional<proto::SubmitReply>>>();
  auto reply = promise->get_future();
  submit_async(std::move(s), [promise](std::optional<proto::SubmitReply> r) {
    promise->set_value(std::move(r));
  });
  if (reply.wait_for(std::chrono::duration<double>(opts_.timeout_s)) != std::future_status::ready)
    return std::nullopt;
  try {
    return reply.get();
  } catch (const std::future_error&) {  // the submitter thread failed and dropped it
    return std::nullopt;
  }
}

void BatchSubmitter::submit_async(proto::Submit s, Done done) {
  auto slot = std::make_shared<Slot>();
  slot->submit = std::move(s);
  slot->deadline = now_mono() + opts_.timeout_s;
  slot->done = std::move(done);
  bool need_wake = false, queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      pending_.push_back(slot);
      queued = true;
      need_wake = idle_;
      idle_ = false;
    }
  }
  if (!queued) return slot->answer(std::nullopt);  // stopping
  if (need_wake) wake();
}

// Exceptions never leave the thread: a failure is logged, every waiting
// submission is answered with nullopt (503) and the loop starts over with a
// fresh socket.
void BatchSubmitter::run() {
  while (true) {
    try {
      loop();
      return;
    } catch (const std::exception& e) {
      log_->error("broker submitter failed: {}; restarting it", e.what());
    } catch (...) {
      log_->error("broker submitter failed; restarting it");
    }
    std::deque<std::shared_ptr<Slot>> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      dropped.swap(pending_);
      if (stop_) break;
    }
    for (auto& s : dropped) s->answer(std::nullopt);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

namespace {

// An upper bound of the bytes a submission takes in a batch message.
std::size_t approximate_size(const proto::Submit& s) {
  std::size_t n = 256 + s.request.size() + s.idempotency_key.size() + s.fingerprint.size() +
                  s.spec.output.size() + s.spec.filter.size();
  for (const auto& in : s.spec.inputs) n += in.size() + 8;
  return n;
}

}  // namespace

zmq::socket_t BatchSubmitter::connect() {
  zmq::socket_t sock(ctx_, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  // Without a live connection the socket is not writable and sends fail at
  // once instead of queueing: submissions wait for the connection at most
  // until their deadline, then become 503s.
  sock.set(zmq::sockopt::immediate, 1);
  sock.set(zmq::sockopt::reconnect_ivl, 100);
  sock.set(zmq::sockopt::reconnect_ivl_max, 1000);
  zmqu::limit_message_size(sock, proto::kMaxFrame);
  if (keys_) curve::make_client(sock, *keys_, server_public_);
  sock.connect(endpoint_);
  return sock;
}

bool BatchSubmitter::take_pending(double now, bool writable, std::size_t in_flight,
                                  std::vector<std::shared_ptr<Slot>>& take,
                                  std::vector<std::shared_ptr<Slot>>& expired) {
  std::lock_guard<std::mutex> lock(mu_);
  // Submissions queue in arrival order with the same timeout, so the
  // expired ones are at the front.
  while (!pending_.empty() && pending_.front()->deadline <= now) {
    expired.push_back(std::move(pending_.front()));
    pending_.pop_front();
  }
  if (writable) {
    // A batch stays well below the broker's frame limit (proto::kMaxFrame): a larger frame
    // would cost the api its connection, not just the batch.
    constexpr std::size_t kMaxBatchBytes = proto::kMaxFrame / 4;
    std::size_t bytes = 0;
    while (!pending_.empty() && take.size() < opts_.max_batch) {
      const std::size_t size = approximate_size(pending_.front()->submit);
      if (!take.empty() && bytes + size > kMaxBatchBytes) break;
      bytes += size;
      take.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
  }
  const bool more = !pending_.empty();
  const bool room = in_flight + (take.empty() ? 0 : 1) < opts_.max_in_flight;
  // Nothing to do until a submission arrives: ask for a wake-up.
  idle_ = !more && room;
  return more;
}

void BatchSubmitter::send_batch(zmq::socket_t& sock, std::vector<std::shared_ptr<Slot>>& take,
                                std::vector<Batch>& in_flight, std::uint64_t& next_id) {
  Batch b;
  b.req_id = ++next_id;
  proto::SubmitBatch msg;
  msg.req_id = b.req_id;
  msg.submits.reserve(take.size());
  for (auto& s : take) {
    s->submit.req_id = ++next_id;
    b.slot_ids.push_back(s->submit.req_id);
    b.deadline = std::max(b.deadline, s->deadline);
    msg.submits.push_back(std::move(s->submit));
  }
  b.slots = std::move(take);
  take.clear();
  if (zmqu::send_frame(sock, proto::encode(proto::type::kSubmitBatch, msg))) {
    batches_sent_.fetch_add(1, std::memory_order_relaxed);
    in_flight.push_back(std::move(b));
  } else {
    // The connection went away since the writability check.
    for (auto& s : b.slots) s->answer(std::nullopt);
  }
}

void BatchSubmitter::read_replies(zmq::socket_t& sock, std::vector<Batch>& in_flight) {
  while (auto parts = zmqu::recv_multipart(sock)) {
    if (parts->size() != 1) continue;
    std::string err;
    auto env = proto::decode((*parts)[0].data(), (*parts)[0].size(), &err);
    if (!env || env->type != proto::type::kSubmitBatchReply) {
      log_->warn("broker submitter: dropped unexpected reply: {}", env ? env->type : err);
      continue;
    }
    auto reply = env->as<proto::SubmitBatchReply>(&err);
    if (!reply) {
      log_->warn("broker submitter: {}", err);
      continue;
    }
    auto it = std::find_if(in_flight.begin(), in_flight.end(),
                           [&](const Batch& b) { return b.req_id == reply->req_id; });
    if (it == in_flight.end()) continue;  // a late answer to a batch that timed out
    for (std::size_t i = 0; i < it->slots.size(); ++i) {
      if (i < reply->replies.size() && reply->replies[i].req_id == it->slot_ids[i]) {
        it->slots[i]->answer(std::move(reply->replies[i]));
      } else {
        log_->warn("broker submitter: batch reply without an answer for submission {}", i);
        it->slots[i]->answer(std::nullopt);
      }
    }
    in_flight.erase(it);
  }
}

void BatchSubmitter::loop() {
  zmq::socket_t sock = connect();
  std::random_device rd;
  std::uint64_t next_id = (static_cast<std::uint64_t>(rd()) << 32) | rd();
  std::vector<Batch> in_flight;
  std::vector<std::shared_ptr<Slot>> expired, take;
  while (true) {
    double now = now_mono();
    const bool room = in_flight.size() < opts_.max_in_flight;
    const bool writable = room && (sock.get(zmq::sockopt::events) & ZMQ_POLLOUT) != 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    const bool more = take_pending(now, writable, in_flight.size(), take, expired);
    for (auto& s : expired) s->answer(std::nullopt);
    expired.clear();
    if (!take.empty()) send_batch(sock, take, in_flight, next_id);

    // How long to wait: at once when more can be sent; a short retry while
    // submissions wait for the connection; otherwise until the next deadline.
    long timeout_ms = 100;
    if (more && in_flight.size() < opts_.max_in_flight) {
      timeout_ms = writable ? 0 : 10;
    } else {
      double next = now + 0.1;
      for (auto& b : in_flight) next = std::min(next, b.deadline);
      timeout_ms = std::max(0L, static_cast<long>((next - now_mono()) * 1000) + 1);
    }
    std::vector<zmq::pollitem_t> items = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                                          {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    zmqu::poll(items, timeout_ms);
    if (items[1].revents & ZMQ_POLLIN) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    }
    read_replies(sock, in_flight);
    now = now_mono();
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      for (auto& s : it->slots) s->answer(std::nullopt);
      it = in_flight.erase(it);
    }
  }
  // On the way out: every in-flight and pending submission is answered with nullopt.
  for (auto& b : in_flight)
    for (auto& s : b.slots) s->answer(std::nullopt);
  std::deque<std::shared_ptr<Slot>> rest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rest.swap(pending_);
  }
  for (auto& s : rest) s->answer(std::nullopt);
}

}  // namespace ipfixweb::api

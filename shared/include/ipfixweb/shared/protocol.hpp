// Wire protocol between api <-> broker (frontend) and worker <-> broker (backend).
// Every ZeroMQ message is one frame holding a msgpack array
//   [protocol_version, type, body]
// where body is a map. Unknown keys are ignored, missing keys take defaults,
// so fields can be added without bumping the version. See docs/protocol.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "ipfixweb/shared/task_spec.hpp"
#include "ipfixweb/shared/vocabulary.hpp"

// The vocabulary's enums travel as their names (strings); an optional one as "" when absent.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <class E>
  concept VocabularyEnum = requires {
    ipfixweb::Names<E>::kTable;
  };

  template <VocabularyEnum E>
  struct pack<E> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o, const E& v) const {
      return o.pack(ipfixweb::name(v));
    }
  };
  template <VocabularyEnum E>
  struct convert<E> {
    const msgpack::object& operator()(const msgpack::object& o, E& v) const {
      if (o.type != msgpack::type::STR) throw msgpack::type_error();
      auto parsed = ipfixweb::parse_name<E>(std::string_view(o.via.str.ptr, o.via.str.size));
      if (!parsed) throw msgpack::type_error();
      v = *parsed;
      return o;
    }
  };
  template <VocabularyEnum E>
  struct pack<std::optional<E>> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o, const std::optional<E>& v) const {
      return o.pack(v ? ipfixweb::name(*v) : std::string_view());
    }
  };
  template <VocabularyEnum E>
  struct convert<std::optional<E>> {
    const msgpack::object& operator()(const msgpack::object& o, std::optional<E>& v) const {
      if (o.type == msgpack::type::NIL || (o.type == msgpack::type::STR && o.via.str.size == 0)) {
        v.reset();
        return o;
      }
      E e{};
      o.convert(e);
      v = e;
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

namespace ipfixweb::proto {

inline constexpr std::uint32_t kVersion = 1;

// ---- message type names -------------------------------------------------
namespace type {
// frontend: client -> broker
inline constexpr std::string_view kSubmit = "submit";
inline constexpr std::string_view kSubmitBatch = "submit_batch";
inline constexpr std::string_view kPing = "ping";
inline constexpr std::string_view kCancel = "cancel";
// frontend: broker -> client
inline constexpr std::string_view kSubmitReply = "submit_reply";
inline constexpr std::string_view kSubmitBatchReply = "submit_batch_reply";
inline constexpr std::string_view kPong = "pong";
inline constexpr std::string_view kCancelReply = "cancel_reply";
// backend: worker -> broker
inline constexpr std::string_view kReady = "ready";
inline constexpr std::string_view kHeartbeat = "heartbeat";  // both ways
inline constexpr std::string_view kStarted = "started";
inline constexpr std::string_view kProgress = "progress";
inline constexpr std::string_view kDone = "done";
inline constexpr std::string_view kBye = "bye";
// backend: broker -> worker
inline constexpr std::string_view kTask = "task";
inline constexpr std::string_view kAbort = "abort";
inline constexpr std::string_view kReregister = "reregister";
}  // namespace type

// ---- frontend ------------------------------------------------------------
struct Submit {
  std::uint64_t req_id = 0;
  std::string request;  // the user's request, normalised JSON text (stored as is)
  TaskSpec spec;
  std::string idempotency_key;    // empty: none
  std::string fingerprint;        // hash of the request, to detect key reuse with another body
  std::int32_t priority = 0;      // higher first
  bool overwrite = false;         // may replace the output of a succeeded task
  std::uint32_t parallelism = 1;  // > 1: split into this many parts and a merge (split.hpp)
  MSGPACK_DEFINE_MAP(req_id, request, spec, idempotency_key, fingerprint, priority, overwrite,
                     parallelism)
};

struct SubmitReply {
  std::uint64_t req_id = 0;
  bool accepted = false;
  std::string task_id;
  std::optional<TaskState> state;  // when accepted
  bool existing = false;           // idempotency key matched an existing task
  Refusal code = Refusal::None;    // why it was refused (vocabulary.hpp)
  std::string reason;              // human-readable
  double retry_after = 0;          // seconds, when code is Capacity or Draining
  MSGPACK_DEFINE_MAP(req_id, accepted, task_id, state, existing, code, reason, retry_after)
};

// Several submissions in one message (the api collects concurrent ones). The
// broker handles them in order as if they had come one by one, in the same
// transaction (each in a savepoint of its own) and answers with one
// SubmitBatchReply whose `replies` are in the same order. The `req_id` of
// each Submit is echoed in its reply; the batch's own `req_id` in the
// batch reply.
inline constexpr std::size_t kMaxSubmitBatch = 1024;  // a larger batch is dropped whole (logged)

struct SubmitBatch {
  std::uint64_t req_id = 0;
  std::vector<Submit> submits;
  MSGPACK_DEFINE_MAP(req_id, submits)
};

struct SubmitBatchReply {
  std::uint64_t req_id = 0;
  std::vector<SubmitReply> replies;  // one per submit, same order
  MSGPACK_DEFINE_MAP(req_id, replies)
};

struct Ping {
  std::uint64_t req_id = 0;
  MSGPACK_DEFINE_MAP(req_id)
};

// One worker as the broker sees it (Pong::worker_list).
struct WorkerStatus {
  std::string id;
  std::string host;
  std::int64_t pid = 0;
  std::uint32_t slots = 0;
  std::uint32_t running = 0;
  double last_seen_s = 0;  // since the broker last heard from it
  MSGPACK_DEFINE_MAP(id, host, pid, slots, running, last_seen_s)
};

struct Pong {
  std::uint64_t req_id = 0;
  std::uint32_t workers = 0;
  std::uint32_t slots = 0;
  std::uint32_t credit = 0;  // free slots
  std::uint32_t running = 0;
  std::uint32_t queued = 0;
  std::uint32_t max_queue = 0;
  bool draining = false;
  // A submission would be admitted now (not draining, storage not short, room within
  // slots + max_queue); brokers before it do not send it: taken as true.
  bool accepting = true;
  // Since the broker started: tasks finished by state, and a histogram of
  // run times (dispatch to result) with bounds kDurationBuckets.
  std::uint64_t succeeded = 0, failed = 0, cancelled = 0, requeued = 0;
  std::vector<std::uint64_t> duration_counts;  // one per bound, plus +Inf
  double duration_sum = 0;
  // Each worker, ordered by id (absent from brokers before it: empty).
  std::vector<WorkerStatus> worker_list;
  MSGPACK_DEFINE_MAP(req_id, workers, slots, credit, running, queued, max_queue, draining,
                     accepting, succeeded, failed, cancelled, requeued, duration_counts,
                     duration_sum, worker_list)
};

inline constexpr double kDurationBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                              1,     2.5,  5,     10,   30,  60,   300};

struct Cancel {
  std::uint64_t req_id = 0;
  std::string task_id;
  MSGPACK_DEFINE_MAP(req_id, task_id)
};

struct CancelReply {
  std::uint64_t req_id = 0;
  CancelResult result = CancelResult::NotFound;
  std::optional<TaskState> state;  // the task's state (none when not found)
  MSGPACK_DEFINE_MAP(req_id, result, state)
};

// ---- backend -------------------------------------------------------------
struct Ready {
  std::string worker_id;
  std::uint32_t slots = 1;
  std::vector<std::string> running;  // tasks it still runs (after a broker restart)
  std::string host;
  std::int64_t pid = 0;
  // New for every start of the worker process. Re-registrations of the same
  // incarnation (e.g. several answers to a broker restart, possibly sent
  // before a task message arrived) never mean tasks were lost; a new
  // incarnation under the same worker id does.
  std::string incarnation;
  // The grant of each task in `running` (same order): a claim without its task's grant is
  // refused (docs/protocol.md, "Grants").
  std::vector<std::string> grants;
  // Which socket of this incarnation sent it: 1 for the first, one more for each fresh socket
  // the worker opens after hearing nothing from the broker (0 from older workers). Tasks sent
  // to an earlier connection and not listed in `running` were lost with that socket; the
  // worker never runs a task addressed to an earlier connection (Task::connection).
  std::uint32_t connection = 0;
  MSGPACK_DEFINE_MAP(worker_id, slots, running, host, pid, incarnation, grants, connection)
};

struct Heartbeat {
  std::uint32_t seq = 0;
  MSGPACK_DEFINE_MAP(seq)
};

struct Task {
  std::string task_id;
  std::uint32_t attempt = 1;
  TaskSpec spec;
  double timeout = 0;  // seconds, 0 = none
  // The broker's proof that it gave this task to this worker: echoed in `ready.grants` and
  // `done.grant`, without which a claim or a result is not believed.
  std::string grant;
  // An earlier run of this task may have left temporaries beside its output (also when that
  // run used no attempt: its worker was lost). Absent from older brokers: see `attempt`.
  bool rerun = false;
  // The worker's connection (Ready::connection) the broker had last heard of when it sent the
  // task; a worker on a later connection drops it, as the broker re-queues it on hearing that
  // connection's ready (0: older broker, always run).
  std::uint32_t connection = 0;
  MSGPACK_DEFINE_MAP(task_id, attempt, spec, timeout, grant, rerun, connection)
};

struct Started {
  std::string task_id;
  MSGPACK_DEFINE_MAP(task_id)
};

struct ProgressMsg {
  std::string task_id;
  double progress = 0;  // 0..1
  std::uint64_t packets = 0;
  MSGPACK_DEFINE_MAP(task_id, progress, packets)
};

struct Done {
  std::string task_id;
  Outcome state = Outcome::Failed;  // Aborted: run it again, no attempt used
  std::string summary;              // JSON text (empty when none)
  std::string error;
  bool retryable = false;  // failed for a reason another attempt may not hit (crash, timeout)
  // The summary's totals, so the broker's completion log need not parse the summary
  // (absent, hence 0, from workers older than this field).
  std::uint64_t packets = 0, bytes = 0, flows = 0;
  std::string grant;  // the task's grant (Task::grant)
  // The output file written (a success): its inode and size after the rename; 0: unknown.
  std::uint64_t output_inode = 0, output_size = 0;
  MSGPACK_DEFINE_MAP(task_id, state, summary, error, retryable, packets, bytes, flows, grant,
                     output_inode, output_size)
};

struct Abort {
  std::string task_id;
  std::string reason;
  MSGPACK_DEFINE_MAP(task_id, reason)
};

struct Bye {
  std::string reason;
  MSGPACK_DEFINE_MAP(reason)
};

// ---- encoding --------------------------------------------------------------
template <class Body>
std::string encode(std::string_view type, const Body& body) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(kVersion);
  pk.pack(type);
  pk.pack(body);
  return {buf.data(), buf.size()};
}

// A decoded message. `body` stays valid as long as the Envelope lives.
class Envelope {
 public:
  std::uint32_t version = 0;
  std::string type;

  // Converts the body; nullopt (and *error) when it has the wrong shape.
  template <class T>
  std::optional<T> as(std::string* error = nullptr) const {
    try {
      T out;
      body_.convert(out);
      return out;
    } catch (const std::exception& e) {
      if (error) *error = std::string("bad ") + type + " body: " + e.what();
      return std::nullopt;
    }
  }

 private:
  friend std::optional<Envelope> decode(const void*, std::size_t, std::string*);
  msgpack::object_handle handle_;
  msgpack::object body_;
};

// Bounds on what a peer can make a process allocate (docs/security.md). Sockets refuse
// larger messages (ZMQ_MAXMSGSIZE, zmqu::limit_message_size); decode() refuses larger frames
// and frames declaring more objects than kMaxObjects.
inline constexpr std::size_t kMaxFrame = 32u << 20;
inline constexpr std::size_t kMaxObjects = 1u << 20;
// True when the msgpack in `data` is well formed and declares at most `limit` objects.
bool within_object_limit(const void* data, std::size_t size, std::size_t limit);

// Decodes one frame. Malformed input is an expected outcome, not an exception:
// returns nullopt and a reason in *error.
std::optional<Envelope> decode(const void* data, std::size_t size, std::string* error);

}  // namespace ipfixweb::proto

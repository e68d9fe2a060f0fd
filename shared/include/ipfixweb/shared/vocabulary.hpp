// The domain's words: task states, the outcome a worker reports, why the broker refuses a
// submission, what a cancel did. Each is an enum with one table of its names, which are the
// names on the wire (msgpack strings), in SQL (the tasks.state CHECK) and in the HTTP API.
// tests/unit/test_task_spec.cpp checks every other place that spells them (the schema, the
// OpenAPI document, docs/*.md) against these tables.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace ipfixweb {

// A task's state in the database and the API.
enum class TaskState : std::uint8_t { Queued, Running, Succeeded, Failed, Cancelled };

// What a worker reports for one run (proto::Done::state). `Aborted`: the worker stopped the
// run for a reason not the task's own (it is shutting down, or was told to stop a run that
// is no longer its); the broker runs the task again without using an attempt.
enum class Outcome : std::uint8_t { Succeeded, Failed, Cancelled, Aborted };

// Why the broker refused a submission (proto::SubmitReply::code; `None` when accepted).
enum class Refusal : std::uint8_t {
  None,      // accepted
  Capacity,  // credit plus the bounded queue are used up (503 + Retry-After)
  Conflict,  // Idempotency-Key already used with another request (422)
  Draining,  // the broker is shutting down (503 + Retry-After)
  Invalid,   // the task could not be recorded, e.g. a path that is not UTF-8 (422)
  Storage,   // the database or output disk is (nearly) full (507 + Retry-After)
  Taken,     // the output belongs to another task (409)
};

// What a cancel did (proto::CancelReply::result).
enum class CancelResult : std::uint8_t {
  Cancelled,   // was queued (or orphaned): cancelled now (200)
  Cancelling,  // runs on a worker, which was told to stop (202)
  Finished,    // had already finished (409)
  NotFound,    // no such task (404)
};

// The name table of each enum: every value exactly once, in declaration order.
template <class E>
struct Names;
template <>
struct Names<TaskState> {
  static constexpr std::string_view kWhat = "task state";
  static constexpr std::array<std::pair<TaskState, std::string_view>, 5> kTable = {{
      {TaskState::Queued, "queued"},
      {TaskState::Running, "running"},
      {TaskState::Succeeded, "succeeded"},
      {TaskState::Failed, "failed"},
      {TaskState::Cancelled, "cancelled"},
  }};
};
template <>
struct Names<Outcome> {
  static constexpr std::string_view kWhat = "outcome";
  static constexpr std::array<std::pair<Outcome, std::string_view>, 4> kTable = {{
      {Outcome::Succeeded, "succeeded"},
      {Outcome::Failed, "failed"},
      {Outcome::Cancelled, "cancelled"},
      {Outcome::Aborted, "aborted"},
  }};
};
template <>
struct Names<Refusal> {
  static constexpr std::string_view kWhat = "refusal code";
  static constexpr std::array<std::pair<Refusal, std::string_view>, 7> kTable = {{
      {Refusal::None, ""},
      {Refusal::Capacity, "capacity"},
      {Refusal::Conflict, "conflict"},
      {Refusal::Draining, "draining"},
      {Refusal::Invalid, "invalid"},
      {Refusal::Storage, "storage"},
      {Refusal::Taken, "taken"},
  }};
};
template <>
struct Names<CancelResult> {
  static constexpr std::string_view kWhat = "cancel result";
  static constexpr std::array<std::pair<CancelResult, std::string_view>, 4> kTable = {{
      {CancelResult::Cancelled, "cancelled"},
      {CancelResult::Cancelling, "cancelling"},
      {CancelResult::Finished, "finished"},
      {CancelResult::NotFound, "not_found"},
  }};
};

// The checks that make a table complete and ordered, at compile time.
template <class E>
constexpr bool names_complete() {
  const auto& t = Names<E>::kTable;
  for (std::size_t i = 0; i < t.size(); ++i)
    if (static_cast<std::size_t>(t[i].first) != i) return false;
  return true;
}
static_assert(names_complete<TaskState>() && names_complete<Outcome>() &&
              names_complete<Refusal>() && names_complete<CancelResult>());

template <class E>
constexpr std::string_view name(E e) {
  return Names<E>::kTable[static_cast<std::size_t>(e)].second;
}

template <class E>
std::string name_str(E e) {
  return std::string(name(e));
}

template <class E>
constexpr std::optional<E> parse_name(std::string_view s) {
  for (const auto& [value, n] : Names<E>::kTable)
    if (n == s) return value;
  return std::nullopt;
}

// Every name of E, in order (for enums in documents and messages).
template <class E>
constexpr auto all_names() {
  std::array<std::string_view, Names<E>::kTable.size()> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = Names<E>::kTable[i].second;
  return out;
}

constexpr bool is_terminal(TaskState s) {
  return s == TaskState::Succeeded || s == TaskState::Failed || s == TaskState::Cancelled;
}

// The task state a final outcome leaves (Aborted leaves none: the task runs again).
constexpr std::optional<TaskState> final_state(Outcome o) {
  switch (o) {
    case Outcome::Succeeded:
      return TaskState::Succeeded;
    case Outcome::Failed:
      return TaskState::Failed;
    case Outcome::Cancelled:
      return TaskState::Cancelled;
    case Outcome::Aborted:
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace ipfixweb

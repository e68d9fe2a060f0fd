#include "ipfixweb/flows/export.hpp"

#include <sqlite3.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "packed.hpp"
#include "render.hpp"

namespace ipfixweb::flows {

namespace {

// Packed rows read ahead: batches of about this many bytes, at most kMaxReady waiting.
constexpr std::size_t kBatchBytes = 32 * 1024;
constexpr std::size_t kMaxReady = 3;
// The text columns read beside packed (result columns 2..6): app, server_name, ja3c,
// community_id, risks.
constexpr int kStrings = 5;

struct ReadBatch {
  std::string data;  // per row: varint id, varint length, the packed bytes
};

}  // namespace

struct RowExport::Impl {
  sqlite3* db = nullptr;
  ListQuery q;
  std::vector<int> columns;
  Format format = Format::Ndjson;
  sqlite3_stmt* stmt = nullptr;
  bool packed = false;
  bool header_done = false;
  std::int64_t rows = 0;  // column path: rows rendered; packed path: rows read by the thread

  // The packed path.
  std::optional<detail::RowRenderer> renderer;
  std::thread reader;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ReadBatch> ready;
  std::vector<ReadBatch> spare;
  bool done = false;  // the thread read its last row (or failed: error)
  bool stop = false;  // the export is being destroyed
  std::string error;
  ReadBatch current;  // being rendered by fill()
  std::size_t pos = 0;
  FlowRow row;

  void read(std::chrono::milliseconds budget);
  bool fill_columns(std::string& out, std::size_t piece, std::chrono::milliseconds budget);
  bool fill_packed(std::string& out, std::size_t piece, std::chrono::milliseconds budget);
};

RowExport::RowExport(sqlite3* db, ListQuery q, Format format) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.db = db;
  m.q = std::move(q);
  m.format = format;
  for (const auto& n : m.q.columns) m.columns.push_back(column_index(n));
  // A store without flow_rows.packed (version 1) does not prepare the packed listing.
  if (!m.q.packed_sql.empty() &&
      sqlite3_prepare_v2(db, m.q.packed_sql.c_str(), -1, &m.stmt, nullptr) == SQLITE_OK) {
    m.packed = true;
    m.renderer.emplace(m.columns, format);
  } else {
    sqlite3_finalize(m.stmt);
    m.stmt = nullptr;
    if (sqlite3_prepare_v2(db, m.q.sql.c_str(), -1, &m.stmt, nullptr) != SQLITE_OK)
      throw Error(sqlite3_errmsg(db));
  }
  const int rc = bind_values(m.stmt, m.q.binds);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(m.stmt);
    throw Error(sqlite3_errstr(rc));
  }
}

RowExport::~RowExport() {
  Impl& m = *impl_;
  if (m.reader.joinable()) {
    {
      std::lock_guard lock(m.mu);
      m.stop = true;
    }
    sqlite3_interrupt(m.db);  // a step under way ends now
    m.cv.notify_all();
    m.reader.join();
  }
  sqlite3_finalize(m.stmt);
}

bool RowExport::fill(std::string& out, std::size_t piece, std::chrono::milliseconds budget) {
  Impl& m = *impl_;
  if (!m.header_done) {
    m.header_done = true;
    if (m.format == Format::Csv) append_csv_header(out, m.columns);
  }
  return m.packed ? m.fill_packed(out, piece, budget) : m.fill_columns(out, piece, budget);
}

bool RowExport::Impl::fill_columns(std::string& out, std::size_t piece,
                                   std::chrono::milliseconds budget) {
  std::optional<QueryBudget> limit;
  if (budget.count() > 0) limit.emplace(db, budget);
  while (out.size() < piece) {
    if (q.limit > 0 && rows == q.limit) return false;
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return false;
    if (rc != SQLITE_ROW) {
      if (limit && limit->classify(rc) == QueryStatus::TimedOut)
        throw Error("export stopped: a piece took longer than " + std::to_string(budget.count()) +
                    " ms");
      throw Error(std::string("export stopped: ") + sqlite3_errmsg(db));
    }
    append_row(out, stmt, columns, format);
    ++rows;
  }
  return true;
}

// The reading thread: steps the statement and hands the packed rows over in batches.
void RowExport::Impl::read(std::chrono::milliseconds budget) {
  for (;;) {
    ReadBatch b;
    {
      std::lock_guard lock(mu);
      if (!spare.empty()) {
        b = std::move(spare.back());
        spare.pop_back();
      }
    }
    b.data.clear();
    std::string failure;
    bool last = false;
    {
      std::optional<QueryBudget> limit;
      if (budget.count() > 0) limit.emplace(db, budget);
      while (b.data.size() < kBatchBytes) {
        if (q.limit > 0 && rows == q.limit) {
          last = true;
          break;
        }
        const int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) {
          last = true;
          break;
        }
        if (rc != SQLITE_ROW) {
          failure = limit && limit->classify(rc) == QueryStatus::TimedOut
                        ? "export stopped: a piece took longer than " +
                              std::to_string(budget.count()) + " ms"
                        : std::string("export stopped: ") + sqlite3_errmsg(db);
          last = true;
          break;
        }
        const auto id = sqlite3_column_int64(stmt, 0);
        const void* p = sqlite3_column_blob(stmt, 1);
        const auto n = static_cast<std::size_t>(sqlite3_column_bytes(stmt, 1));
        if (!p) {
          failure = "export stopped: flow " + std::to_string(id) + " has no packed values";
          last = true;
          break;
        }
        packed::put_varint(b.data, static_cast<std::uint64_t>(id));
        packed::put_varint(b.data, n);
        b.data.append(static_cast<const char*>(p), n);
        for (int c = 2; c < 2 + kStrings; ++c) {  // length + 1, 0 for NULL
          const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
          if (!t) {
            b.data.push_back('\0');
            continue;
          }
          const auto len = static_cast<std::size_t>(sqlite3_column_bytes(stmt, c));
          packed::put_varint(b.data, len + 1);
          b.data.append(t, len);
        }
        ++rows;
      }
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return stop || ready.size() < kMaxReady; });
    if (stop) return;
    if (!b.data.empty()) ready.push_back(std::move(b));
    if (last) {
      done = true;
      error = std::move(failure);
    }
    lock.unlock();
    cv.notify_all();
    if (last) return;
  }
}

bool RowExport::Impl::fill_packed(std::string& out, std::size_t piece,
                                  std::chrono::milliseconds budget) {
  if (!reader.joinable() && !done) reader = std::thread([this, budget] { read(budget); });
  while (out.size() < piece) {
    if (pos == current.data.size()) {
      std::unique_lock lock(mu);
      if (!current.data.empty()) spare.push_back(std::move(current));
      current = ReadBatch();
      pos = 0;
      cv.wait(lock, [&] { return !ready.empty() || done; });
      if (ready.empty()) {
        if (!error.empty()) throw Error(error);
        return false;
      }
      current = std::move(ready.front());
      ready.pop_front();
      lock.unlock();
      cv.notify_all();
    }
    const auto* base = reinterpret_cast<const std::uint8_t*>(current.data.data());
    packed::Reader in(base + pos, current.data.size() - pos);
    const auto id = static_cast<std::int64_t>(in.varint());
    const std::uint64_t n = in.varint();
    const std::uint8_t* blob = in.here();
    bool ok = in.ok() && n <= in.left() &&
              packed::decode_numbers(blob, static_cast<std::size_t>(n), row).ok();
    if (ok) {
      in.skip(static_cast<std::size_t>(n));
      std::string_view* strings[kStrings] = {&row.app, &row.server_name, &row.ja3c,
                                             &row.community_id, &row.risks};
      for (auto* t : strings) {
        const std::uint64_t len = in.varint();
        *t = len ? in.string_of(static_cast<std::size_t>(len - 1)) : std::string_view();
      }
      ok = in.ok();
    }
    if (!ok)
      throw Error("export stopped: flow " + std::to_string(id) +
                  " has packed values this build cannot read");
    pos = static_cast<std::size_t>(in.here() - base);
    renderer->append(out, id, row);
  }
  return true;
}

}  // namespace ipfixweb::flows

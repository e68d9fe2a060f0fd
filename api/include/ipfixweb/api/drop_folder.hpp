// The drop folder (docs/drop-folder.md): directories inside the input roots, watched with
// inotify and rescanned now and then, whose files become tasks once they stopped growing.
// A file's identity is its content (SHA-256): the task's Idempotency-Key is derived from it,
// and a journal (JSON lines, beside the database) records what became of every file, so that
// the same content is submitted once, across renames and restarts. Off unless folders are
// configured: no thread and no inotify descriptor otherwise.
//
// The pure parts (which names are ignored, when a file is ready, the key and the output name,
// what a file's first bytes make of it, the journal line) are free functions; DropFolder
// drives them. Tests drive DropFolder without a thread (step() with their own clock) and
// without a broker (the Submit callback).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ipfixweb/api/http.hpp"
#include "ipfixweb/api/validation.hpp"
#include "ipfixweb/capture/format.hpp"

namespace CLI {
class App;
}

namespace ipfixweb::api {

struct DropConfig {
  // Watched directories: absolute inside an input root, or relative to the input roots (the
  // first where it exists, else created under the first). Empty: no drop folder.
  std::vector<std::string> folders;
  std::string output = "drop";  // outputs go below it: relative to the output root
  double settle_s = 5;          // unchanged this long (and no writer known) before it is taken
  double rescan_s = 30;         // every folder is listed again this often (inotify misses some)
  std::string options = "{}";   // request fields of every dropped file's task (JSON object)
  std::string journal;          // default: drop-journal.jsonl beside the database
};

// --drop-folder, --drop-output, --drop-settle, --drop-rescan, --drop-options, --drop-journal
// (IPFIXWEB_DROP_*).
void add_drop_options(CLI::App& app, DropConfig& cfg);

namespace drop {

// Why a directory entry is never looked at by its name ("" when it is): hidden names
// (".x", which rsync and many uploaders write to before renaming) and temporary names
// ("*.part", "*.tmp", "*~", ...).
std::string ignored_name(std::string_view name);

// A file name (or a text that may hold one) as the log shows it: in double quotes, with
// quotes, backslashes, control characters (C0, DEL, C1) and bytes that are not UTF-8 escaped
// ("\n", "\x1b", "\xff"), so that a dropped file's name cannot forge log lines or send
// terminal escapes.
std::string log_text(std::string_view text);

// What stat() says of one version of a file. The ctime changes with the content (also when
// the modification time is set back, as cp --preserve=timestamps or rsync -t do), with the
// permissions, and with a rename.
struct FileStat {
  std::uint64_t dev = 0, ino = 0, size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  bool operator==(const FileStat&) const = default;
  auto operator<=>(const FileStat&) const = default;
};

// When a file is ready: its size and modification time (and inode and ctime) stayed the same
// for the settle time, as observed on this clock; it is not empty; and no writer is known to
// hold it open (inotify showed a write and no close-after-write since). DropFolder also asks
// the kernel (a read lease) before it takes a ready file.
class Settle {
 public:
  // Records an observation; returns true when the file differs from the last one (the settle
  // time starts again).
  bool observe(const FileStat& st, double now);
  void written(double now);  // IN_MODIFY: a writer has it open
  void closed();             // IN_CLOSE_WRITE: that writer closed it
  void forget_writer();      // inotify lost events (overflow): only the settle time counts
  // When it was ready, the kernel said a writer holds it open (one inotify did not see: it
  // opened the file before the api watched, or another opener's close came in between): the
  // settle time starts again.
  void held_open(double now);
  void released();  // the kernel said no writer holds it open
  bool ready(double now, double settle_s) const;
  bool writing() const { return writer_ || held_; }
  const FileStat& last() const { return last_; }

 private:
  FileStat last_;
  bool seen_ = false;
  bool writer_ = false;
  bool held_ = false;
  double since_ = 0;
};

// The Idempotency-Key of a dropped file: "drop:sha256:<64 hex digits>" of its content.
std::string idempotency_key(std::string_view sha256_hex);

// The output of a dropped file's task, relative to the output root:
// "<drop output>/<folder tag>/<stem>-<first 12 hex digits of its SHA-256>.ipfix", where the
// tag is the folder's path below its input root and the stem the file name without its
// compression and capture extensions. Two files of the same name (in two folders, or one
// replacing another) differ in content, hence in name.
std::string output_path(std::string_view drop_output, std::string_view folder_tag,
                        std::string_view file_name, std::string_view sha256_hex);

// What a file's first bytes make of it: the task kind ("convert": pcap, pcapng, or compressed,
// whose content the engine reads; "ingest": IPFIX), or the reason it is skipped.
struct Decision {
  std::string kind;    // empty when skipped
  std::string reason;  // why skipped
};
Decision decide(const capture::Sniff& sniff);

// What became of a dropped file (Entry::outcome), and what a file still waiting is doing:
// the names in the journal, in GET /api/v1/drop and in the OpenAPI document.
inline constexpr std::string_view kSubmitted = "submitted";  // a task was queued (or existed)
inline constexpr std::string_view kDuplicate = "duplicate";  // the same content came before
inline constexpr std::string_view kSkipped = "skipped";      // not a capture or IPFIX file
inline constexpr std::string_view kRefused = "refused";      // the api refused the task
inline constexpr std::array<std::string_view, 4> kOutcomes{kSubmitted, kDuplicate, kSkipped,
                                                           kRefused};
inline constexpr std::string_view kSettling = "settling";  // waiting for it to stop changing
inline constexpr std::string_view kWriting = "writing";    // still open for writing
inline constexpr std::string_view kRetrying = "retrying";  // its submission is retried
inline constexpr std::array<std::string_view, 3> kWaitingStates{kSettling, kWriting, kRetrying};
// Journal entries (and waiting files) GET /api/v1/drop can show: its largest `limit`.
inline constexpr std::size_t kMaxDropEntries = 1000;

// The ctime of a journal entry written before the ctime was recorded.
inline constexpr std::int64_t kUnknownCtime = INT64_MIN;

// One line of the journal: what became of one version of one file.
struct Entry {
  std::string at;         // ISO 8601 UTC
  std::string folder;     // the drop folder (canonical)
  std::string file;       // the name inside it
  std::string outcome;    // one of kOutcomes
  std::string reason;     // skipped, refused: why; duplicate: the earlier file
  std::string task_id;    // submitted, duplicate
  bool existing = false;  // submitted: the broker already had a task with this key
  std::string key, sha256, format, kind, output_path;
  FileStat stat;
};
nlohmann::json to_json(const Entry& e);
// nullopt for a line that is not an entry: a torn last line after a crash, or a line whose
// fields have the wrong JSON type or range (a negative size, "existing": "true"); `why`, when
// given, says what is wrong with it.
std::optional<Entry> parse_entry(std::string_view line, std::string* why = nullptr);

}  // namespace drop

class DropFolder {
 public:
  // Submits one task request exactly as POST /api/v1/tasks with this Idempotency-Key would,
  // and returns that route's answer: 200/202 accepted, 503/507 try again later (Retry-After),
  // anything else refused.
  using Submit = std::function<http::Response(const nlohmann::json& body, const std::string& key)>;

  // Checks the configuration (folders inside the input roots, the options as the api
  // validates requests, the journal writable), reads the journal and watches the folders.
  // Throws std::runtime_error. `roots` are canonical (the api's).
  DropFolder(DropConfig cfg, const Roots& roots, const std::string& db_path, Submit submit);
  ~DropFolder();  // stops the thread (a submission under way is finished first)
  DropFolder(const DropFolder&) = delete;
  DropFolder& operator=(const DropFolder&) = delete;

  // One round on the monotonic clock `now` (seconds): reads inotify events, lists the folders
  // when due, submits the files that are ready. Returns when it wants to be called again.
  // Never throws for what it finds in the folders; tests call it instead of start().
  double step(double now);
  // Starts the thread that calls step() on the monotonic clock, woken by inotify.
  void start();

  // GET /api/v1/drop: the folders, the files waiting, the last `limit` journal entries
  // (newest first).
  nlohmann::json listing(std::size_t limit) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The handler of GET /api/v1/drop (`drop` null: no drop folder configured).
void drop_route(const DropFolder* drop, const http::Request& req, http::Response& res,
                const std::function<void(http::Response&, int, const std::string&,
                                         const std::vector<FieldError>&)>& problem);

}  // namespace ipfixweb::api

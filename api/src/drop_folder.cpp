#include "ipfixweb/api/drop_folder.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

#include <CLI/CLI.hpp>

#include "ipfixweb/shared/confine.hpp"
#include "ipfixweb/shared/json_escape.hpp"
#include "ipfixweb/shared/logging.hpp"
#include "ipfixweb/shared/paths.hpp"
#include "ipfixweb/shared/util.hpp"

namespace ipfixweb::api {

using nlohmann::json;
namespace fs = std::filesystem;

void add_drop_options(CLI::App& app, DropConfig& cfg) {
  app.add_option("--drop-folder", cfg.folders,
                 "Drop folder: a watched directory inside an input root whose files become "
                 "tasks (repeatable; relative: below the input roots; none: off)")
      ->envname("IPFIXWEB_DROP_FOLDERS")
      ->delimiter(':');
  app.add_option("--drop-output", cfg.output,
                 "Directory of the output root that drop folder tasks write below")
      ->envname("IPFIXWEB_DROP_OUTPUT")
      ->capture_default_str();
  app.add_option("--drop-settle", cfg.settle_s,
                 "Seconds a dropped file must stay unchanged before it is submitted")
      ->envname("IPFIXWEB_DROP_SETTLE")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--drop-rescan", cfg.rescan_s,
                 "Seconds between listings of the drop folders (inotify misses changes made "
                 "on other hosts)")
      ->envname("IPFIXWEB_DROP_RESCAN")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  app.add_option("--drop-options", cfg.options,
                 "Request fields of every dropped file's task, a JSON object such as "
                 "{\"DPI\":false,\"analysis_list\":[\"tcp\"]} (checked at start)")
      ->envname("IPFIXWEB_DROP_OPTIONS")
      ->capture_default_str();
  app.add_option("--drop-journal", cfg.journal,
                 "What became of every dropped file, JSON lines (default drop-journal.jsonl "
                 "beside the database)")
      ->envname("IPFIXWEB_DROP_JOURNAL");
}

namespace drop {

namespace {

bool ends_with_nocase(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i])
      return false;
  return true;
}

// Strips the first of `suffixes` that `s` ends with (case-insensitive).
void strip_one(std::string& s, std::initializer_list<std::string_view> suffixes) {
  for (auto suffix : suffixes)
    if (s.size() > suffix.size() && ends_with_nocase(s, suffix)) {
      s.resize(s.size() - suffix.size());
      return;
    }
}

json null_if_empty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

}  // namespace

std::string ignored_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return "not a file name";
  if (name.front() == '.') return "a hidden name (starting with '.')";
  for (std::string_view suffix :
       {".part", ".partial", ".tmp", ".temp", ".filepart", ".crdownload", ".download", ".swp", "~"})
    if (ends_with_nocase(name, suffix)) return "a temporary name (*" + std::string(suffix) + ")";
  return {};
}

std::string log_text(std::string_view text) {
  static const char* const kHex = "0123456789abcdef";
  std::string out = "\"";
  auto hex = [&](unsigned char c) {
    out += "\\x";
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xF]);
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
      ++i;
    } else if (c == '\n' || c == '\r' || c == '\t') {
      out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      hex(c);
      ++i;
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
    } else {
      // One UTF-8 character, unless it is not one or it is a C1 control (U+0080..U+009F).
      const std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      const std::string_view ch = text.substr(i, n);
      if (ch.size() == n && is_valid_utf8(ch) &&
          !(c == 0xC2 && static_cast<unsigned char>(ch[1]) < 0xA0)) {
        out.append(ch);
        i += n;
      } else {
        hex(c);
        ++i;
      }
    }
  }
  out.push_back('"');
  return out;
}

bool Settle::observe(const FileStat& st, double now) {
  if (seen_ && st == last_) return false;
  seen_ = true;
  last_ = st;
  since_ = now;
  return true;
}

void Settle::written(double now) {
  writer_ = true;
  since_ = now;
}

void Settle::held_open(double now) {
  held_ = true;
  since_ = now;
}

void Settle::released() { held_ = false; }

void Settle::closed() { writer_ = held_ = false; }
void Settle::forget_writer() { writer_ = held_ = false; }

bool Settle::ready(double now, double settle_s) const {
  return seen_ && !writer_ && last_.size > 0 && now - since_ >= settle_s;
}

std::string idempotency_key(std::string_view sha256_hex) {
  return "drop:sha256:" + std::string(sha256_hex);
}

std::string output_path(std::string_view drop_output, std::string_view folder_tag,
                        std::string_view file_name, std::string_view sha256_hex) {
  std::string stem(file_name);
  strip_one(stem, {".gz", ".zst", ".zstd", ".xz", ".bz2"});
  strip_one(stem, {".pcap", ".pcapng", ".cap", ".ipfix"});
  // Room for "-<12 digits>.ipfix" within a file name's 255 bytes, cut between characters.
  constexpr std::size_t kMaxStem = 200;
  if (stem.size() > kMaxStem) {
    std::size_t cut = kMaxStem;
    while (cut > 0 && (static_cast<unsigned char>(stem[cut]) & 0xC0) == 0x80) --cut;
    stem.resize(cut);
  }
  if (stem.empty()) stem = "capture";
  std::string out;
  for (std::string_view part : {drop_output, folder_tag}) {
    while (!part.empty() && part.back() == '/') part.remove_suffix(1);
    if (part.empty() || part == ".") continue;
    out.append(part).push_back('/');
  }
  return out + stem + "-" + std::string(sha256_hex.substr(0, 12)) + ".ipfix";
}

Decision decide(const capture::Sniff& sniff) {
  switch (sniff.format) {
    case capture::Format::Pcap:
    case capture::Format::PcapNg:
      return {"convert", {}};
    case capture::Format::Ipfix:
      return {"ingest", {}};
    case capture::Format::Unknown:
      break;
  }
  // Compressed: the engine reads the capture inside.
  if (sniff.compression != capture::Compression::None) return {"convert", {}};
  return {{}, "not a capture: its first bytes are neither pcap, pcapng, IPFIX nor compressed"};
}

json to_json(const Entry& e) {
  json j = {{"at", e.at},
            {"folder", e.folder},
            {"file", e.file},
            {"outcome", e.outcome},
            {"reason", null_if_empty(e.reason)},
            {"task_id", null_if_empty(e.task_id)},
            {"key", null_if_empty(e.key)},
            {"sha256", null_if_empty(e.sha256)},
            {"format", null_if_empty(e.format)},
            {"kind", null_if_empty(e.kind)},
            {"output_path", null_if_empty(e.output_path)},
            {"size", e.stat.size},
            {"mtime_ns", e.stat.mtime_ns},
            {"ctime_ns", e.stat.ctime_ns == kUnknownCtime ? json(nullptr) : json(e.stat.ctime_ns)},
            {"dev", e.stat.dev},
            {"ino", e.stat.ino}};
  if (e.outcome == kSubmitted) j["existing"] = e.existing;
  return j;
}

std::optional<Entry> parse_entry(std::string_view line, std::string* why) {
  auto no = [&](std::string reason) -> std::optional<Entry> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  json j = json::parse(line, nullptr, false);
  if (!j.is_object()) return no("not a JSON object (a torn line?)");
  Entry e;
  // Text fields: a string, null or absent; anything else makes the line no entry.
  using Text = std::pair<const char*, std::string*>;
  for (auto [key, field] : std::initializer_list<Text>{{"at", &e.at},
                                                       {"folder", &e.folder},
                                                       {"file", &e.file},
                                                       {"outcome", &e.outcome},
                                                       {"reason", &e.reason},
                                                       {"task_id", &e.task_id},
                                                       {"key", &e.key},
                                                       {"sha256", &e.sha256},
                                                       {"format", &e.format},
                                                       {"kind", &e.kind},
                                                       {"output_path", &e.output_path}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) return no(std::string("\"") + key + "\" is not a string");
    *field = it->get<std::string>();
  }
  if (e.file.empty()) return no("no \"file\"");
  if (std::find(kOutcomes.begin(), kOutcomes.end(), e.outcome) == kOutcomes.end())
    return no("\"outcome\" is not one of submitted, duplicate, skipped, refused");
  // The version: counts are integers from 0, times any integer.
  using Count = std::pair<const char*, std::uint64_t*>;
  for (auto [key, field] : std::initializer_list<Count>{
           {"size", &e.stat.size}, {"dev", &e.stat.dev}, {"ino", &e.stat.ino}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_unsigned())
      return no(std::string("\"") + key + "\" is not an integer from 0");
    *field = it->get<std::uint64_t>();
  }
  auto time_field = [&](const char* key, std::int64_t& out) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return false;
    if (it->is_number_unsigned() &&
        it->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      return false;
    out = it->get<std::int64_t>();
    return true;
  };
  if (!time_field("mtime_ns", e.stat.mtime_ns)) return no("\"mtime_ns\" is not an integer");
  // Journals written before the ctime was recorded have none.
  if (auto it = j.find("ctime_ns"); it == j.end() || it->is_null())
    e.stat.ctime_ns = kUnknownCtime;
  else if (!time_field("ctime_ns", e.stat.ctime_ns) || e.stat.ctime_ns == kUnknownCtime)
    return no("\"ctime_ns\" is not an integer");
  if (auto it = j.find("existing"); it != j.end()) {
    if (!it->is_boolean()) return no("\"existing\" is not true or false");
    e.existing = it->get<bool>();
  }
  return e;
}

}  // namespace drop

using drop::kDuplicate, drop::kRefused, drop::kRetrying, drop::kSettling, drop::kSkipped,
    drop::kSubmitted, drop::kWriting;

namespace {

using drop::Entry;
using drop::FileStat;

constexpr std::size_t kRecentEntries = drop::kMaxDropEntries;
constexpr double kMaxBackoff = 60;               // seconds between attempts the broker refused
constexpr std::size_t kMaxJournalWarnings = 20;  // journal lines that are no entry, one by one

constexpr std::uint32_t kWatchMask = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO |
                                     IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_DELETE_SELF |
                                     IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK;

FileStat stat_of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
          static_cast<std::uint64_t>(st.st_size),
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}

std::string errno_text(int err) { return std::strerror(err); }

// The whole of an open file read from its start; nullopt when reading fails or `stop` is set.
struct Hashed {
  std::string hex;
  std::uint64_t bytes = 0;
};
std::optional<Hashed> sha256_of(int fd, const std::atomic<bool>& stop) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return std::nullopt;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(1 << 20);
  Hashed h;
  while (true) {
    if (stop.load(std::memory_order_relaxed)) return std::nullopt;
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(h.bytes));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n)) != 1)
      return std::nullopt;
    h.bytes += static_cast<std::uint64_t>(n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) return std::nullopt;
  static const char* const kHex = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) {
    h.hex.push_back(kHex[md[i] >> 4]);
    h.hex.push_back(kHex[md[i] & 0xF]);
  }
  return h;
}

// Whether anyone holds an open file open for writing, asked of the kernel: a read lease
// (F_SETLEASE F_RDLCK) is refused with EAGAIN then, and given back at once otherwise. Unknown
// when leases are not available: the api is neither the file's owner nor has CAP_LEASE, or the
// file system has no leases (`err` says why).
enum class Writers { None, Some, Unknown };
Writers writers_of(int fd, int& err) {
  // A writer that opens the file while the lease is held breaks it, and the kernel signals the
  // holder: with SIGIO by default, which ends a process that does not handle it. SIGURG is
  // ignored unless handled.
  if (::fcntl(fd, F_SETSIG, SIGURG) != 0) {
    err = errno;
    return Writers::Unknown;
  }
  if (::fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
    ::fcntl(fd, F_SETLEASE, F_UNLCK);
    return Writers::None;
  }
  err = errno;
  return err == EAGAIN ? Writers::Some : Writers::Unknown;
}

// Up to `n` bytes from the start of an open file.
std::optional<std::string> read_head(int fd, std::size_t n) {
  std::string head(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd, head.data() + got, n - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::nullopt;
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  head.resize(got);
  return head;
}

// The answer of the submit route as one line: its detail and the fields it names.
std::string refusal_text(const http::Response& res) {
  json j = json::parse(res.body, nullptr, false);
  std::string text = "HTTP " + std::to_string(res.status);
  if (!j.is_object()) return text;
  if (auto d = j.find("detail"); d != j.end() && d->is_string())
    text += ": " + d->get<std::string>();
  if (auto errs = j.find("errors"); errs != j.end() && errs->is_array()) {
    std::string list;
    for (const auto& e : *errs)
      if (e.is_object())
        (list += list.empty() ? "" : "; ") +=
            e.value("field", std::string()) + ": " + e.value("message", std::string());
    if (!list.empty()) text += " (" + list + ")";
  }
  return text;
}

double retry_after(const http::Response& res) {
  const std::string* v = http::find_field(res.headers, "Retry-After");
  if (!v) return 0;
  try {
    return std::max(0.0, std::stod(*v));
  } catch (...) {
    return 0;
  }
}

}  // namespace

struct DropFolder::Impl {
  struct Folder {
    std::string path;  // canonical
    std::string tag;   // its path below its input root ("" when it is the root)
    // The directory `path` led to when it was checked (no symbolic link on the way): every
    // file is looked at through it (fstatat, openat). Closed while `path` leads elsewhere.
    confine::Fd dir;
    std::uint64_t dev = 0, ino = 0;  // of `dir`
    int wd = -1;        // inotify watch; -1 while not watched (gone, or the watch failed)
    bool lost = false;  // logged that it is gone or no longer the real directory
  };
  enum class State { Waiting, Retrying, Done };
  struct Tracked {
    drop::Settle settle;
    State state = State::Waiting;
    FileStat done;      // Done: the version decided
    bool dirty = true;  // look at it in the next round (Done files only then)
    int attempts = 0;   // Retrying: refusals so far
    double next_try = 0;
    std::string reason;  // Retrying: the last refusal
    std::string sha256;  // of settle.last(), once read
  };
  using Key = std::pair<std::size_t, std::string>;  // folder index, name

  DropConfig cfg;
  Roots roots;
  Submit submit;
  std::shared_ptr<spdlog::logger> log = logger("api");
  std::vector<Folder> folders;
  json options;  // the request fields of every task
  std::string journal_path;
  confine::Fd journal;
  confine::Fd inotify;
  confine::Fd wake;  // eventfd: stop
  std::atomic<bool> stop{false};
  std::thread thread;

  // Owned by the thread that calls step().
  std::map<Key, Tracked> files;
  // What the journal knows of a version, whatever its ctime: its last entry.
  struct Prior {
    std::string outcome, reason, sha256;
    bool ctime_known = true;
    // Refused before it was read (the api could not open it): tried again when the ctime
    // changes (chmod).
    bool unread_refusal() const { return outcome == kRefused && sha256.empty(); }
  };
  std::set<FileStat> decided;            // versions (with their ctime) the journal has an entry for
  std::map<FileStat, Prior> priors;      // by the version without its ctime (base())
  std::map<std::string, Entry> by_hash;  // submitted content: its entry
  double next_rescan = -1e300;           // the first round lists every folder
  double tick = 1;                       // seconds between rounds while files wait
  // After a "try again later" answer nothing is submitted before gate_until (the backoff of
  // gate_failures such answers in a row).
  double gate_until = -1e300;
  bool leases_unavailable_logged = false;
  int gate_failures = 0;
  std::string gate_reason;

  // Shared with listing().
  mutable std::mutex mu;
  std::deque<Entry> recent;       // guarded by mu
  json waiting;                   // guarded by mu: the first kRecentEntries files waiting
  std::size_t waiting_total = 0;  // guarded by mu: all files waiting

  Impl(DropConfig c, const Roots& r, const std::string& db_path, Submit s)
      : cfg(std::move(c)), roots(r), submit(std::move(s)) {
    tick = std::clamp(cfg.settle_s / 4, 0.05, 1.0);
    resolve_folders();
    check_options();
    open_journal(db_path);
    inotify = confine::Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!inotify) throw std::runtime_error("drop folder: inotify_init1: " + errno_text(errno));
    wake = confine::Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake) throw std::runtime_error("drop folder: eventfd: " + errno_text(errno));
    for (auto& f : folders)
      if (!attach(f))
        log->warn("drop folder {}: cannot open it ({}); looking for it every {} s", f.path,
                  errno_text(errno), cfg.rescan_s);
    waiting = json::array();
  }

  void resolve_folders() {
    if (roots.inputs.empty()) throw std::runtime_error("--drop-folder: no input root");
    for (const auto& given : cfg.folders) {
      std::string candidate;
      if (!given.empty() && given.front() == '/') {
        // One that does not exist yet is made only when it names a place inside a root.
        const std::string lexical = fs::path(given).lexically_normal().string();
        const bool inside =
            std::any_of(roots.inputs.begin(), roots.inputs.end(),
                        [&](const auto& r) { return paths::is_within(r, lexical); });
        if (std::error_code ec; !inside && !fs::is_directory(given, ec))
          throw std::runtime_error("--drop-folder " + given + " is not inside an input root");
        candidate = lexical;
      } else {
        const fs::path rel(given);
        if (given.empty() ||
            std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; }))
          throw std::runtime_error("--drop-folder '" + given + "': not a folder below the roots");
        for (const auto& r : roots.inputs)
          if (std::error_code ec; fs::is_directory(r + "/" + given, ec)) {
            candidate = r + "/" + given;
            break;
          }
        if (candidate.empty()) candidate = roots.inputs.front() + "/" + given;
      }
      std::error_code ec;
      fs::create_directories(candidate, ec);
      Folder f;
      f.path = paths::canonical_dir(candidate);
      auto root = std::find_if(roots.inputs.begin(), roots.inputs.end(),
                               [&](const auto& r) { return paths::is_within(r, f.path); });
      if (root == roots.inputs.end())
        throw std::runtime_error("--drop-folder " + given + " resolves to " + f.path +
                                 ", which is not inside an input root");
      if (f.path != *root) f.tag = f.path.substr(root->size() + (*root == "/" ? 0 : 1));
      for (const auto& other : folders)
        if (other.path == f.path)
          throw std::runtime_error("--drop-folder " + f.path + " is given twice");
      folders.push_back(std::move(f));
    }
  }

  // The options must make a request the api accepts once a file and an output are added.
  void check_options() {
    options = json::parse(cfg.options, nullptr, false);
    if (!options.is_object())
      throw std::runtime_error("--drop-options must be a JSON object, not: " + cfg.options);
    for (const char* own : {"pcap_files", "output_path", "kind", "flow"})
      if (options.contains(own))
        throw std::runtime_error(std::string("--drop-options: \"") + own +
                                 "\" is chosen by the drop folder for each file");
    json probe = options;
    probe["pcap_files"] = {"drop.pcap"};
    probe["output_path"] = "drop.ipfix";
    std::vector<FieldError> errors;
    if (!parse_task_request(probe, errors, UnknownFields::Refuse)) {
      std::string all;
      for (const auto& e : errors) (all += all.empty() ? "" : "; ") += e.field + ": " + e.message;
      throw std::runtime_error("--drop-options: " + all);
    }
    auto out = paths::resolve_output(roots.output, drop::output_path(cfg.output, "", "x", "0"));
    if (!out.ok) throw std::runtime_error("--drop-output " + cfg.output + ": " + out.error);
  }

  void open_journal(const std::string& db_path) {
    journal_path = cfg.journal;
    if (journal_path.empty()) {
      const fs::path db(db_path);
      journal_path = (db.parent_path().empty() ? fs::path(".") : db.parent_path()).string() +
                     "/drop-journal.jsonl";
    }
    const fs::path jp(journal_path);
    std::error_code ec;
    if (!jp.parent_path().empty()) fs::create_directories(jp.parent_path(), ec);
    const std::string dir =
        paths::canonical_dir(jp.parent_path().empty() ? "." : jp.parent_path().string());
    if (paths::is_within(roots.output, dir))
      throw std::runtime_error("--drop-journal " + journal_path +
                               " is inside the output root (a task's output could replace it)");
    for (const auto& f : folders)
      if (paths::is_within(f.path, dir))
        throw std::runtime_error("--drop-journal " + journal_path + " is inside the drop folder " +
                                 f.path + " (it would be taken as a dropped file)");
    std::string text;
    if (std::ifstream in(journal_path, std::ios::binary); in)
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    journal = confine::Fd(
        ::open(journal_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640));
    if (!journal)
      throw std::runtime_error("--drop-journal " + journal_path + ": " + errno_text(errno));
    std::size_t bad = 0, good = 0, line_no = 0;
    for (std::size_t start = 0; start < text.size();) {
      std::size_t end = std::min(text.find('\n', start), text.size());
      const std::string_view line(text.data() + start, end - start);
      ++line_no;
      if (!line.empty()) {
        std::string why;
        if (auto e = drop::parse_entry(line, &why)) {
          remember(*e);
          ++good;
        } else if (++bad <= kMaxJournalWarnings) {
          log->warn("drop folder: journal {} line {} is not an entry ({}): ignored", journal_path,
                    line_no, why);
        }
      }
      start = end + 1;
    }
    // A torn last line (a crash while it was written) must not swallow the next one.
    if (!text.empty() && text.back() != '\n') write_all("\n");
    if (bad > kMaxJournalWarnings)
      log->warn("drop folder: {} lines of the journal {} are not entries (ignored)", bad,
                journal_path);
    log->info("drop folder: journal {} has {} entries", journal_path, good);
  }

  // Whether `path` is still the real directory it was: no symbolic link in it or on the way
  // (it canonicalises to itself), the same inode.
  static bool still_the_folder(const Folder& f) {
    struct stat sb {};
    if (::lstat(f.path.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) return false;
    if (static_cast<std::uint64_t>(sb.st_dev) != f.dev ||
        static_cast<std::uint64_t>(sb.st_ino) != f.ino)
      return false;
    std::unique_ptr<char, decltype(&std::free)> real(::realpath(f.path.c_str(), nullptr),
                                                     std::free);
    return real && f.path == real.get();
  }

  // Opens and watches the folder when its path leads to a real directory, following no
  // symbolic link (the folder was checked against the input roots at start only).
  bool attach(Folder& f) {
    confine::Fd d(::open(f.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat sb {};
    if (!d || ::fstat(d.get(), &sb) != 0) return false;
    f.dev = static_cast<std::uint64_t>(sb.st_dev);
    f.ino = static_cast<std::uint64_t>(sb.st_ino);
    if (!still_the_folder(f)) return false;
    f.wd = ::inotify_add_watch(inotify.get(), f.path.c_str(), kWatchMask | IN_DONT_FOLLOW);
    if (f.wd < 0) {
      log->warn("drop folder {}: cannot watch it ({}): found by listing it every {} s only", f.path,
                errno_text(errno), cfg.rescan_s);
    } else if (!still_the_folder(f)) {  // replaced between the open and the watch
      ::inotify_rm_watch(inotify.get(), f.wd);
      f.wd = -1;
      return false;
    }
    f.dir = std::move(d);
    return true;
  }

  // The folder is gone, or its path no longer leads to the directory that was checked: nothing
  // in it is looked at until it is a real directory inside the roots again.
  void detach(Folder& f, std::size_t index, double now, const char* why) {
    if (f.wd >= 0) ::inotify_rm_watch(inotify.get(), f.wd);
    f.wd = -1;
    f.dir.reset();
    for (auto t = files.lower_bound({index, std::string()});
         t != files.end() && t->first.first == index;)
      t = files.erase(t);
    if (!f.lost)
      log->warn("drop folder {} {}; not following it, looking for the real directory every {} s",
                f.path, why, cfg.rescan_s);
    f.lost = true;
    next_rescan = std::min(next_rescan, now + cfg.rescan_s);
  }

  bool write_all(const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(journal.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  static FileStat base(FileStat st) {
    st.ctime_ns = 0;
    return st;
  }

  // What the journal has for this version when only its ctime differs (renamed, chmod'ed, or
  // rewritten with the modification time set back); null when nothing or the same ctime.
  const Prior* prior_of(const FileStat& st) const {
    if (decided.count(st)) return nullptr;
    auto p = priors.find(base(st));
    return p == priors.end() ? nullptr : &p->second;
  }

  // Decided: the journal has this version, or has it without a ctime (written by an api that
  // did not record it) and did not refuse it unread.
  bool is_decided(const FileStat& st) const {
    if (decided.count(st)) return true;
    const Prior* p = prior_of(st);
    return p && !p->ctime_known && !p->unread_refusal();
  }

  // The same content (or the same skip) as the journal's entry for this version with another
  // ctime: known from now on, with no journal line and no task.
  void decided_again(const Folder& f, const std::string& name, Tracked& t, const FileStat& st) {
    decided.insert(st);
    log->debug("drop folder {}: {}: renamed or its attributes changed; nothing new", f.path,
               drop::log_text(name));
    finish(t, st);
  }

  // What the journal says is known: the versions decided, and the content submitted.
  void remember(const Entry& e) {
    const bool ctime_known = e.stat.ctime_ns != drop::kUnknownCtime;
    if (ctime_known) decided.insert(e.stat);
    priors[base(e.stat)] = {e.outcome, e.reason, e.sha256, ctime_known};
    if ((e.outcome == kSubmitted || e.outcome == kDuplicate) && !e.sha256.empty() &&
        !e.task_id.empty())
      by_hash.emplace(e.sha256, e);
    std::lock_guard<std::mutex> lock(mu);
    recent.push_back(e);
    if (recent.size() > kRecentEntries) recent.pop_front();
  }

  // Appends the entry to the journal (synced: a recorded submission survives a crash; one
  // that was not recorded is submitted again with the same key after a restart, and the broker
  // answers with the existing task).
  void record(Entry e) {
    e.at = now_iso();
    const std::string line =
        drop::to_json(e).dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    if (!write_all(line) || ::fdatasync(journal.get()) != 0)
      log->error("drop folder: cannot write the journal {}: {}", journal_path, errno_text(errno));
    if (e.outcome == kSkipped || e.outcome == kRefused)
      log->warn("drop folder {}: {} {}: {}", e.folder, drop::log_text(e.file), e.outcome,
                drop::log_text(e.reason));
    else
      log->info("drop folder {}: {} {} as task {}{}", e.folder, drop::log_text(e.file), e.outcome,
                e.task_id, e.reason.empty() ? "" : " (" + drop::log_text(e.reason) + ")");
    remember(e);
  }

  Entry entry_for(const Folder& f, const std::string& name, const FileStat& st) const {
    Entry e;
    e.folder = f.path;
    e.file = name;
    e.stat = st;
    return e;
  }

  void finish(Tracked& t, const FileStat& st) {
    t.state = State::Done;
    t.done = st;
    t.attempts = 0;
    t.reason.clear();
  }

  // ---- one round ----

  void read_events(double now) {
    alignas(inotify_event) char buf[64 * 1024];
    while (true) {
      const ssize_t n = ::read(inotify.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      for (char* p = buf; p < buf + n;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(p);
        on_event(*ev, now);
        p += sizeof(inotify_event) + ev->len;
      }
    }
  }

  void on_event(const inotify_event& ev, double now) {
    if (ev.mask & IN_Q_OVERFLOW) {
      log->warn("drop folder: inotify lost events; listing the folders again");
      for (auto& [key, t] : files) {
        t.settle.forget_writer();
        t.dirty = true;
      }
      next_rescan = now;
      return;
    }
    auto f = std::find_if(folders.begin(), folders.end(),
                          [&](const Folder& x) { return x.wd >= 0 && x.wd == ev.wd; });
    if (f == folders.end()) return;
    if (ev.mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
      if (ev.mask & IN_IGNORED) f->wd = -1;  // the kernel dropped the watch already
      detach(*f, static_cast<std::size_t>(f - folders.begin()), now, "was removed or moved");
      return;
    }
    if (ev.len == 0 || (ev.mask & IN_ISDIR)) return;
    const std::string name(ev.name);
    if (!drop::ignored_name(name).empty()) return;
    const Key key{static_cast<std::size_t>(f - folders.begin()), name};
    if (ev.mask & (IN_DELETE | IN_MOVED_FROM)) {
      files.erase(key);
      return;
    }
    auto& t = files[key];
    t.dirty = true;
    if (ev.mask & IN_MODIFY) t.settle.written(now);
    if (ev.mask & IN_CLOSE_WRITE) t.settle.closed();
  }

  // Every round: a folder whose path no longer leads to the directory that was checked (moved
  // away, replaced by a symbolic link, a link put on the way) is let go.
  void verify_folders(double now) {
    for (std::size_t i = 0; i < folders.size(); ++i)
      if (folders[i].dir && !still_the_folder(folders[i]))
        detach(folders[i], i, now, "is no longer the directory it was (replaced or moved)");
  }

  void rescan(double now) {
    next_rescan = now + cfg.rescan_s;
    for (std::size_t i = 0; i < folders.size(); ++i) {
      auto& f = folders[i];
      if (!f.dir) {
        if (!attach(f)) continue;
        log->info("drop folder {}: a real directory again, watched", f.path);
        f.lost = false;
      }
      // Listed through the directory itself, never through its path.
      confine::Fd listed(::openat(f.dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      DIR* d = listed ? ::fdopendir(listed.get()) : nullptr;
      if (!d) {
        log->warn("drop folder {}: cannot list it: {}", f.path, errno_text(errno));
        continue;
      }
      listed.release();  // closedir closes it
      struct Closedir {
        void operator()(DIR* x) const { ::closedir(x); }
      };
      std::unique_ptr<DIR, Closedir> closer(d);
      std::set<std::string> present;
      bool cut = false;
      while (true) {
        errno = 0;
        const dirent* de = ::readdir(d);
        if (!de) {
          cut = errno != 0;
          break;
        }
        const std::string name = de->d_name;
        if (!drop::ignored_name(name).empty()) continue;
        bool is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
          struct stat sb {};
          is_dir = ::fstatat(f.dir.get(), name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
                   S_ISDIR(sb.st_mode);
        }
        if (is_dir) continue;
        present.insert(name);
        files[{i, name}].dirty = true;
      }
      if (cut) continue;  // a listing cut short: forget nothing
      for (auto t = files.lower_bound({i, std::string()}); t != files.end() && t->first.first == i;)
        t = present.count(t->first.second) ? std::next(t) : files.erase(t);
    }
  }

  void check(double now) {
    for (auto it = files.begin(); it != files.end();) {
      auto& [key, t] = *it;
      if (t.state == State::Done && !t.dirty) {
        ++it;
        continue;
      }
      t.dirty = false;
      const Folder& f = folders[key.first];
      if (!f.dir) {
        it = files.erase(it);
        continue;
      }
      struct stat sb {};
      if (::fstatat(f.dir.get(), key.second.c_str(), &sb, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
          it = files.erase(it);
          continue;
        }
        log->warn("drop folder {}: {}: {}", f.path, drop::log_text(key.second), errno_text(errno));
        ++it;
        continue;
      }
      if (S_ISDIR(sb.st_mode)) {
        it = files.erase(it);
        continue;
      }
      const FileStat st = stat_of(sb);
      if (!S_ISREG(sb.st_mode)) {
        if (is_decided(st) || prior_of(st)) {
          decided.insert(st);  // a link or FIFO renamed or chown'ed: nothing new
        } else {
          Entry e = entry_for(f, key.second, st);
          e.outcome = kSkipped;
          e.reason = S_ISLNK(sb.st_mode)
                         ? "a symbolic link (never followed)"
                         : "not a regular file (a FIFO, socket or device: never opened)";
          record(std::move(e));
        }
        finish(t, st);
        ++it;
        continue;
      }
      const bool changed = t.settle.observe(st, now);
      if (t.state == State::Done && st == t.done) {
        ++it;
        continue;
      }
      if (t.state == State::Done || changed) {
        t.state = State::Waiting;
        t.attempts = 0;
        t.reason.clear();
        if (changed) t.sha256.clear();
      }
      if (is_decided(st)) {  // decided before a restart
        finish(t, st);
        ++it;
        continue;
      }
      // While the broker asked to wait, files already read are left alone; the others are
      // still read (a duplicate or a skip needs no broker) but not submitted.
      const bool held = now < gate_until && !t.sha256.empty();
      if (t.settle.ready(now, cfg.settle_s) && !held &&
          (t.state == State::Waiting || now >= t.next_try)) {
        take(f, key.second, t, st, now);
        publish(now);  // a round may take long (hashing, a broker that does not answer)
      }
      ++it;
    }
  }

  // Whether the folder's path still leads to it and `name` in it still names this version of
  // the file (not followed if it is a link): the task names the file by that path.
  static bool still_there(const Folder& f, const std::string& name, const FileStat& st) {
    struct stat sb {};
    return f.dir && ::fstatat(f.dir.get(), name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISREG(sb.st_mode) && stat_of(sb) == st && still_the_folder(f);
  }

  // Tried again after a backoff of 1, 2, 4 ... s (at most kMaxBackoff), or `hint` seconds.
  void later(const Folder& f, const std::string& name, Tracked& t, double now, std::string reason,
             double hint = 0) {
    ++t.attempts;
    const double backoff = std::min(kMaxBackoff, std::pow(2.0, t.attempts - 1));
    t.next_try = now + std::max(backoff, std::min(hint, kMaxBackoff));
    t.reason = std::move(reason);
    t.state = State::Retrying;
    log->info("drop folder {}: {}: not submitted yet ({}); again in {:.1f} s", f.path,
              drop::log_text(name), drop::log_text(t.reason), t.next_try - now);
  }

  // A ready file: skipped, a duplicate, or submitted.
  void take(const Folder& f, const std::string& name, Tracked& t, const FileStat& st, double now) {
    Entry e = entry_for(f, name, st);
    // Only the ctime differs from a version the journal has: decided again when the outcome is
    // the same (a renamed or chmod'ed file); new content, or a file refused unread that can be
    // read now, goes on.
    const Prior* prior = prior_of(st);
    auto unread = [&](std::string_view outcome, std::string reason) {
      if (prior && prior->outcome == outcome && prior->reason == reason && prior->sha256.empty())
        return decided_again(f, name, t, st);
      e.outcome = outcome;
      e.reason = std::move(reason);
      record(std::move(e));
      finish(t, st);
    };
    auto skip = [&](std::string reason) { unread(kSkipped, std::move(reason)); };
    if (!is_valid_utf8(name)) return skip("the name is not valid UTF-8 (task paths are JSON text)");
    const std::string path = f.path + "/" + name;
    confine::Fd fd(::openat(f.dir.get(), name.c_str(),
                            O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
      if (errno == ENOENT || errno == ELOOP) return;  // replaced: the next round sees it
      return unread(kRefused, "cannot be read: " + errno_text(errno));
    }
    struct stat sb {};
    if (::fstat(fd.get(), &sb) != 0 || !S_ISREG(sb.st_mode) || stat_of(sb) != st) return;
    // inotify shows only the writers that wrote while the api watched; the kernel knows them all.
    int err = 0;
    switch (writers_of(fd.get(), err)) {
      case Writers::Some:
        t.settle.held_open(now);
        log->debug("drop folder {}: {} is open for writing: waiting", f.path, drop::log_text(name));
        return;
      case Writers::None:
        t.settle.released();
        break;
      case Writers::Unknown:
        if (!leases_unavailable_logged)
          log->info(
              "drop folder: cannot ask the kernel whether a file is open for writing "
              "(F_SETLEASE: {}; it needs the file's owner or CAP_LEASE): only the writes "
              "inotify reports hold a file back",
              errno_text(err));
        leases_unavailable_logged = true;
        break;
    }
    auto head = read_head(fd.get(), capture::kSniffBytes);
    if (!head) return later(f, name, t, now, "cannot be read: " + errno_text(errno));
    const auto sniff = capture::sniff(*head, head->size() == st.size);
    const auto decision = drop::decide(sniff);
    if (sniff.format != capture::Format::Unknown || sniff.compression != capture::Compression::None)
      e.format = capture::describe(sniff);
    if (decision.kind.empty()) return skip(decision.reason);
    e.kind = decision.kind;
    if (t.sha256.empty()) {
      auto h = sha256_of(fd.get(), stop);
      if (!h) {
        if (stop) return;
        return later(f, name, t, now, "cannot be read: " + errno_text(errno));
      }
      if (::fstat(fd.get(), &sb) != 0 || stat_of(sb) != st || h->bytes != st.size) return;
      t.sha256 = h->hex;
    }
    if (prior && prior->sha256 == t.sha256) return decided_again(f, name, t, st);
    e.sha256 = t.sha256;
    e.key = drop::idempotency_key(e.sha256);
    if (auto first = by_hash.find(e.sha256); first != by_hash.end()) {
      e.outcome = kDuplicate;
      e.task_id = first->second.task_id;
      e.output_path = first->second.output_path;
      e.reason = "the same content as " + first->second.folder + "/" + first->second.file;
      record(std::move(e));
      return finish(t, st);
    }
    e.output_path = drop::output_path(cfg.output, f.tag, name, e.sha256);
    // The task names the file by its path: it must still lead to this version (a rename while
    // it was read would make the api refuse a path that no longer exists).
    if (!still_there(f, name, st)) return;
    if (now < gate_until) return;  // the broker asked to wait: not before then
    json body = options;
    body["pcap_files"] = {path};
    body["output_path"] = e.output_path;
    if (e.kind != "convert") body["kind"] = e.kind;
    http::Response res;
    try {
      res = submit(body, e.key);
    } catch (const std::exception& ex) {
      res.status = 500;
      res.body = json{{"detail", ex.what()}}.dump();
    }
    if (res.status == 200 || res.status == 202) {
      gate_failures = 0;
      json answer = json::parse(res.body, nullptr, false);
      e.outcome = kSubmitted;
      e.task_id = answer.is_object() ? answer.value("task_id", std::string()) : std::string();
      e.existing = res.status == 200;
      record(std::move(e));
      return finish(t, st);
    }
    if (res.status >= 500) {  // the broker is busy, away or short of space: later
      // No other file is submitted before the backoff: each attempt may cost a broker timeout.
      ++gate_failures;
      const double hint = retry_after(res);
      gate_until = now + std::max(std::min(kMaxBackoff, std::pow(2.0, gate_failures - 1)),
                                  std::min(hint, kMaxBackoff));
      gate_reason = refusal_text(res);
      return later(f, name, t, now, gate_reason, hint);
    }
    gate_failures = 0;
    // Renamed or replaced while the api checked the request ("does not exist"): not a refusal
    // of this version; the next round finds the file under its new name.
    if (!still_there(f, name, st)) {
      log->info(
          "drop folder {}: {} was renamed or replaced while it was submitted ({}); "
          "looking at it again",
          f.path, drop::log_text(name), drop::log_text(refusal_text(res)));
      return;
    }
    e.outcome = kRefused;
    e.reason = refusal_text(res);
    record(std::move(e));
    finish(t, st);
  }

  void publish(double now) {
    json list = json::array();
    std::size_t total = 0;
    for (const auto& [key, t] : files) {
      if (t.state == State::Done) continue;
      if (++total > kRecentEntries) continue;
      // Ready, but the broker asked to wait: retrying with the others.
      const bool held =
          t.state == State::Waiting && now < gate_until && t.settle.ready(now, cfg.settle_s);
      json w = {{"folder", folders[key.first].path},
                {"file", key.second},
                {"size", t.settle.last().size},
                {"state", t.state == State::Retrying || held ? kRetrying
                          : t.settle.writing()               ? kWriting
                                                             : kSettling}};
      if (t.state == State::Retrying) {
        w["attempts"] = t.attempts;
        w["reason"] = t.reason;
      } else if (held) {
        w["attempts"] = 0;
        w["reason"] = "another file's submission was answered " + gate_reason;
      }
      list.push_back(std::move(w));
    }
    std::lock_guard<std::mutex> lock(mu);
    waiting = std::move(list);
    waiting_total = total;
  }

  double step(double now) {
    read_events(now);
    verify_folders(now);
    if (now >= next_rescan) rescan(now);
    check(now);
    publish(now);
    const bool busy = std::any_of(files.begin(), files.end(),
                                  [](const auto& kv) { return kv.second.state != State::Done; });
    return busy ? std::min(next_rescan, now + tick) : next_rescan;
  }

  void run() {
    while (!stop.load()) {
      double next = 0;
      try {
        next = step(now_mono());
      } catch (const std::exception& e) {
        log->error("drop folder: {}; going on in 1 s", e.what());
        next = now_mono() + 1;
      }
      const double wait_s = std::clamp(next - now_mono(), 0.0, 60.0);
      pollfd fds[2] = {{wake.get(), POLLIN, 0}, {inotify.get(), POLLIN, 0}};
      ::poll(fds, 2, static_cast<int>(std::ceil(wait_s * 1000)));
      // A file being written makes an event per write: take them in batches.
      if (fds[1].revents & POLLIN) ::poll(fds, 1, 20);
    }
  }
};

DropFolder::DropFolder(DropConfig cfg, const Roots& roots, const std::string& db_path,
                       Submit submit)
    : impl_(std::make_unique<Impl>(std::move(cfg), roots, db_path, std::move(submit))) {
  for (const auto& f : impl_->folders)
    impl_->log->info("drop folder {} (settle {} s, outputs below {})", f.path, impl_->cfg.settle_s,
                     impl_->cfg.output);
}

DropFolder::~DropFolder() {
  impl_->stop = true;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->thread.joinable()) impl_->thread.join();
}

void DropFolder::start() {
  if (impl_->thread.joinable()) return;
  impl_->thread = std::thread([this] { impl_->run(); });
  pthread_setname_np(impl_->thread.native_handle(), "drop-folder");
}

double DropFolder::step(double now) { return impl_->step(now); }

json DropFolder::listing(std::size_t limit) const {
  json folders = json::array();
  for (const auto& f : impl_->folders) folders.push_back({{"path", f.path}});
  json entries = json::array();
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto it = impl_->recent.rbegin(); it != impl_->recent.rend() && entries.size() < limit; ++it)
    entries.push_back(drop::to_json(*it));
  return {{"enabled", true},
          {"folders", std::move(folders)},
          {"settle_seconds", impl_->cfg.settle_s},
          {"waiting", impl_->waiting},
          {"waiting_total", impl_->waiting_total},
          {"waiting_truncated", impl_->waiting_total > impl_->waiting.size()},
          {"entries", std::move(entries)}};
}

void drop_route(const DropFolder* drop, const http::Request& req, http::Response& res,
                const std::function<void(http::Response&, int, const std::string&,
                                         const std::vector<FieldError>&)>& problem) {
  std::size_t limit = 100;
  if (req.has_query("limit")) {
    long n = -1;
    try {
      std::size_t used = 0;
      const std::string v = req.query_value("limit");
      n = std::stol(v, &used);
      if (used != v.size()) n = -1;
    } catch (...) {
      n = -1;
    }
    if (n < 1 || n > static_cast<long>(kRecentEntries))
      return problem(res, 422, "invalid query parameters",
                     {{"limit", "must be from 1 to " + std::to_string(kRecentEntries)}});
    limit = static_cast<std::size_t>(n);
  }
  json body =
      drop ? drop->listing(limit)
           : json{{"enabled", false},   {"folders", json::array()},   {"waiting", json::array()},
                  {"waiting_total", 0}, {"waiting_truncated", false}, {"entries", json::array()}};
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

}  // namespace ipfixweb::api

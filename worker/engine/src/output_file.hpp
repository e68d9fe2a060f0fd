// A file that appears under its final name only once complete: written into an unnamed file
// (O_TMPFILE) or under "<name>.tmp.<host>.<pid>", then flushed, fsynced, linked to the name
// (when it was free at the start) or renamed over it within one directory descriptor (whatever
// is under the name, a file or a symbolic link, is replaced, never followed) and the directory
// synced. Without commit() nothing is left.
// Used for the IPFIX file (exporter.cpp) and the pcap of an extract (extract.cpp).
#pragma once

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "ipfixweb/shared/name_guard.hpp"

namespace ipfixweb::engine {

struct OutputFileConfig {
  std::string path;  // names the file in messages; its directory is opened when dir_fd < 0
  // >= 0: the file is `name` in this directory (borrowed, may be O_PATH).
  int dir_fd = -1;
  std::string name;
  // Write into an unnamed file that gets a name only once its data is on disk. Where the file
  // system cannot (or false), the file is written under the temporary name from the start.
  bool unnamed_temporary = true;
  std::string what = "output";  // in messages: "error writing <what> '<path>'"
};

class OutputFile {
 public:
  explicit OutputFile(const OutputFileConfig& cfg);  // throws EngineError
  ~OutputFile();                                     // without commit(): removes the temporary
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  FILE* file() const { return file_.get(); }
  // Flush, fsync, name, rename into place, sync the directory. Throws EngineError.
  void commit() {
    sync();
    publish();
  }
  // commit() in two steps: the data on disk (flush, fsync), then the name (link when unnamed,
  // close, rename, directory fsync).
  void sync();
  void publish();
  // Hands what was written so far to the kernel and has it start writing it back (does not
  // wait), so that sync() at the end finds little left to write. Called every few MiB.
  void start_writeback();
  // Throws OutputReplaced when the name now holds a file other than the one it held when this
  // object was made (none, or the file an overwrite replaces). publish() does not replace such
  // a file: when the name was free it links the file to it (which fails if another writer got
  // there first, atomically), else it checks right before its rename (two steps: a writer that
  // renames in between is not caught). The flow store's publication is checked with it too
  // (outputs.hpp).
  void check_unreplaced() const;
  // Closes and removes what was written (idempotent).
  void abort() noexcept;
  // Throws the EngineError "error writing <what> '<path>': <detail>".
  [[noreturn]] void fail(const std::string& detail) const;

 private:
  struct FileCloser {
    void operator()(FILE* f) const noexcept { std::fclose(f); }
  };
  void open_directory();
  bool link_in_place(const std::string& self);
  void sync_directory();
  [[noreturn]] void throw_replaced() const;
  OutputFileConfig cfg_;
  std::optional<NameGuard> guard_;  // what was under the name when the run began
  int dir_fd_ = -1;
  bool dir_owned_ = false;
  std::string name_;      // the file's final name in the directory
  std::string tmp_name_;  // its name until the rename (empty while unnamed, or after)
  bool unnamed_ = false;
  bool committed_ = false;
  bool synced_ = false;
  std::unique_ptr<FILE, FileCloser> file_;
};

}  // namespace ipfixweb::engine

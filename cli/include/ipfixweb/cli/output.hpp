// What ipfixctl prints: aligned tables, JSON lines, sizes, and a progress bar on a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ipfixweb::cli {

// One JSON document on one line of stdout, flushed (NDJSON when called repeatedly).
void print_json(const nlohmann::json& j);
// Writes to stdout; a Failure(kExitLocal) when stdout is gone (EPIPE and the like are
// reported as such).
void write_stdout(const char* data, std::size_t n);
void write_stdout(const std::string& s);

// "1.5 MB", "347 B" (powers of 1000, like the flow filter's suffixes).
std::string human_bytes(double bytes);
// "12.3k" for large counts, else the number.
std::string human_count(double n);
// A JSON value as table text: strings bare, null as "-", numbers as written.
std::string cell(const nlohmann::json& v);

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  // Columns separated by two spaces, the last one not padded; numbers right-aligned.
  std::string render() const;
  void print() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

bool stderr_is_tty();

// A one-line bar redrawn on stderr (only when enabled: stderr is a terminal), at most ten
// times a second; finish() ends its line.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  ~ProgressBar() { finish(); }
  // fraction in [0, 1] or negative when unknown; `note` follows the bar.
  void update(double fraction, const std::string& note, bool force = false);
  // Ends the bar's line (the next output starts on a fresh line).
  void finish();
  // Prints a line above the bar (the bar is redrawn on the next update).
  void line(const std::string& text);
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
  std::string last_text_;
};

}  // namespace ipfixweb::cli

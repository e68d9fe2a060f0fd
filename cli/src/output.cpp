#include "ipfixweb/cli/output.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "ipfixweb/cli/client.hpp"

namespace ipfixweb::cli {

void write_stdout(const char* data, std::size_t n) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, stdout) != n || std::fflush(stdout) != 0) {
    if (errno == EPIPE) throw Failure(kExitStdoutClosed, "stdout was closed");
    throw Failure(kExitLocal, std::string("cannot write to stdout: ") + std::strerror(errno));
  }
}

void write_stdout(const std::string& s) { write_stdout(s.data(), s.size()); }

void print_json(const nlohmann::json& j) {
  write_stdout(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

std::string human_bytes(double bytes) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  int u = 0;
  while (std::fabs(bytes) >= 1000 && u < 5) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  else
    std::snprintf(buf, sizeof buf,
                  bytes < 10    ? "%.2f %s"
                  : bytes < 100 ? "%.1f %s"
                                : "%.0f %s",
                  bytes, units[u]);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (std::fabs(n) < 10000)
    std::snprintf(buf, sizeof buf, "%.0f", n);
  else if (std::fabs(n) < 1e6)
    std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  else if (std::fabs(n) < 1e9)
    std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1fG", n / 1e9);
  return buf;
}

std::string cell(const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return v.dump();
}

namespace {

bool numeric(std::string s) {
  // "1.5 MB" (human_bytes) counts as a number.
  if (const auto sp = s.find(' '); sp != std::string::npos) {
    const std::string unit = s.substr(sp + 1);
    if (unit != "B" && unit != "kB" && unit != "MB" && unit != "GB" && unit != "TB" && unit != "PB")
      return false;
    s.resize(sp);
  }
  if (s.empty() || s == "-") return false;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  int dots = 0;  // an IPv4 address is not a number
  for (; i < s.size(); ++i) {
    if (s[i] == '.' && ++dots == 1) continue;
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

// Display width of UTF-8 text: code points (wide characters are rare in these tables).
std::size_t width(const std::string& s) {
  std::size_t w = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++w;
  return w;
}

}  // namespace

std::string Table::render() const {
  std::vector<std::size_t> w(header_.size(), 0);
  std::vector<bool> right(header_.size(), true);
  for (std::size_t i = 0; i < header_.size(); ++i) w[i] = width(header_[i]);
  for (const auto& r : rows_)
    for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) {
      w[i] = std::max(w[i], width(r[i]));
      if (!numeric(r[i]) && r[i] != "-") right[i] = false;
    }
  if (rows_.empty()) std::fill(right.begin(), right.end(), false);
  std::string out;
  auto emit = [&](const std::vector<std::string>& r) {
    std::string line;
    for (std::size_t i = 0; i < w.size(); ++i) {
      const std::string v = i < r.size() ? r[i] : "";
      const std::string pad(w[i] - std::min(w[i], width(v)), ' ');
      if (i) line += "  ";
      if (right[i])
        line += pad + v;
      else
        line += i + 1 == w.size() ? v : v + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(header_);
  for (const auto& r : rows_) emit(r);
  return out;
}

void Table::print() const { write_stdout(render()); }

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

void ProgressBar::update(double fraction, const std::string& note, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  constexpr int kWidth = 30;
  std::string bar;
  if (fraction >= 0) {
    fraction = std::min(1.0, fraction);
    const int full = static_cast<int>(fraction * kWidth);
    bar.assign(1, '[')
        .append(static_cast<std::size_t>(full), '#')
        .append(static_cast<std::size_t>(kWidth - full), '.')
        .append("] ");
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3.0f%% ", fraction * 100);
    bar += pct;
  }
  std::string text = bar + note;
  if (text.size() > 200) text.resize(200);
  std::fprintf(stderr, "\r%s\033[K", text.c_str());
  std::fflush(stderr);
  drawn_ = true;
  last_text_ = text;
}

void ProgressBar::finish() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  drawn_ = false;
}

void ProgressBar::line(const std::string& text) {
  if (enabled_ && drawn_) {
    std::fprintf(stderr, "\r\033[K%s\n%s", text.c_str(), last_text_.c_str());
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace ipfixweb::cli

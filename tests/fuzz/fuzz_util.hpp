// Small helpers shared by the libFuzzer targets of tests/fuzz (docs/reliability.md, "Fuzzing").
#pragma once

#include <stdlib.h>  // mkdtemp
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace fuzz {

// A broken property: says which and where, then aborts (libFuzzer saves the input as a
// crash artifact). Unlike assert() it is on in every build type.
[[noreturn]] inline void fail(const char* what, const char* file, int line,
                              const std::string& detail = {}) {
  std::fprintf(stderr, "\nFUZZ CHECK FAILED: %s\n  at %s:%d\n", what, file, line);
  if (!detail.empty()) std::fprintf(stderr, "  %s\n", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// A directory of its own for a fuzz process, removed at exit: on /dev/shm when there is one
// (fsync is free there), else under $TMPDIR or /tmp.
class TempDir {
 public:
  explicit TempDir(std::string_view tag) {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    if (::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string tmpl = base + "/ipfixweb-fuzz-" + std::string(tag) + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) fail("mkdtemp", __FILE__, __LINE__, tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace fuzz

#define FUZZ_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) ::fuzz::fail(#cond, __FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)

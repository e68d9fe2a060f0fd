# Per-target compiler settings. Every target of the project calls
# ipfixweb_target_settings(<target>) instead of touching global flags, so that
# third-party code and generated code are never compiled with our -Werror.
#
# Sanitizer and fuzzing builds (scripts/sanitize, scripts/fuzz; docs/reliability.md):
#   IPFIXWEB_SANITIZE  AddressSanitizer + UndefinedBehaviorSanitizer (gcc or clang)
#   IPFIXWEB_TSAN      ThreadSanitizer (not together with the above)
#   IPFIXWEB_FUZZ      clang only, implies IPFIXWEB_SANITIZE: every target is also compiled with
#                      libFuzzer's coverage instrumentation (-fsanitize=fuzzer-no-link; the
#                      callbacks are no-ops outside a fuzzer), and tests/fuzz adds the fuzz
#                      targets, linked with -fsanitize=fuzzer. One such build serves both the
#                      fuzz targets and the ASan/UBSan test runs.

if(IPFIXWEB_FUZZ AND NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "IPFIXWEB_FUZZ needs clang (configure with CC=clang CXX=clang++)")
endif()
if(IPFIXWEB_TSAN AND (IPFIXWEB_SANITIZE OR IPFIXWEB_FUZZ))
  message(FATAL_ERROR "IPFIXWEB_TSAN cannot be combined with IPFIXWEB_SANITIZE or IPFIXWEB_FUZZ")
endif()

set(IPFIXWEB_ASAN OFF)
if(IPFIXWEB_SANITIZE OR IPFIXWEB_FUZZ)
  set(IPFIXWEB_ASAN ON)
endif()

function(ipfixweb_target_settings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wformat=2
    -Wimplicit-fallthrough)
  if(IPFIXWEB_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(IPFIXWEB_ASAN)
    target_compile_options(${target} PRIVATE
      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
  if(IPFIXWEB_TSAN)
    target_compile_options(${target} PRIVATE -fsanitize=thread -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=thread)
  endif()
  if(IPFIXWEB_FUZZ)
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
  endif()
endfunction()

# A libFuzzer target (tests/fuzz): the project's settings, linked with libFuzzer's main.
function(ipfixweb_fuzz_target target)
  ipfixweb_target_settings(${target})
  target_link_options(${target} PRIVATE -fsanitize=fuzzer)
endfunction()

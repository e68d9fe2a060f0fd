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

# Build-time settings of a test executable (the suites are most of the build: 70 of 213 steps
# and about half of its CPU time, measured with -O3).
#   - Optimised builds compile the tests' own sources with -O1 (after the build type's -O3, so
#     it wins): a test body runs once and waits on processes and sockets, and -O1 compiles a
#     test source in about 55 % of -O3's time. The code under test, in the project's libraries,
#     keeps the build type's flags.
#   - One precompiled header per test executable with the third-party headers that nearly every
#     test source parses (GoogleTest, nlohmann-json, msgpack through protocol.hpp, spdlog, the
#     standard library). Off with -DIPFIXWEB_PCH=OFF (e.g. for a tool that cannot read them).
#     Measured (GCC 12, one source at a time): a unit or integration test source that uses them
#     compiles 15-30 % faster with it, but an engine test source that does not (test_decoder.cpp:
#     3.9 s without, 12.8 s with) pays for instantiating what it never uses. So there are two
#     header lists: FULL for the suites of the services, LIGHT (GoogleTest and the standard
#     library) for the engine's; and an executable of one source gets none (making the header
#     costs more than it saves).
option(IPFIXWEB_PCH "Precompile the common headers of the test executables" ON)
set(IPFIXWEB_TEST_PCH_STD
  <algorithm> <atomic> <chrono> <cstdint> <filesystem> <fstream> <map> <memory> <mutex>
  <optional> <set> <sstream> <string> <string_view> <thread> <vector>)
set(IPFIXWEB_TEST_PCH_FULL
  <gtest/gtest.h> <nlohmann/json.hpp> <msgpack.hpp> <spdlog/spdlog.h> ${IPFIXWEB_TEST_PCH_STD})
set(IPFIXWEB_TEST_PCH_LIGHT <gtest/gtest.h> ${IPFIXWEB_TEST_PCH_STD})
# pch: FULL, LIGHT or NONE.
function(ipfixweb_test_build_settings target pch)
  target_compile_options(${target} PRIVATE $<$<CONFIG:Release,RelWithDebInfo>:-O1>)
  if(IPFIXWEB_PCH AND NOT pch STREQUAL "NONE")
    target_precompile_headers(${target} PRIVATE ${IPFIXWEB_TEST_PCH_${pch}})
  endif()
endfunction()

# Unity builds of the project's libraries and executables (not of the tests): CMake compiles
# each target as a few sources that include up to IPFIXWEB_UNITY_BATCH of its .cpp files each.
# The headers every source parses (nlohmann-json, msgpack, spdlog, Boost.Beast) and the inline
# code they instantiate at -O3 were most of the build: measured on GCC 12, a clean build of the
# libraries and executables took 1,515 s of compile steps one source at a time and about 600 s
# unity-built (the broker library 178 s -> 58 s, the worker's 103 s -> 41 s). A unity source
# needs the names in anonymous namespaces to differ across the files it includes; GCC's
# -Wsubobject-linkage, which takes every included .cpp for a header, is off for them.
# -DIPFIXWEB_UNITY=OFF for quicker rebuilds after editing one file.
option(IPFIXWEB_UNITY "Unity-build the project's libraries and executables" ON)
set(IPFIXWEB_UNITY_BATCH 6 CACHE STRING "Sources per unity source")

# ipfixweb_target_settings(<target> [TEST [PCH FULL|LIGHT|NONE]] [MAIN]): TEST marks a test
# executable (PCH: its precompiled header, default FULL). MAIN marks an executable's thin main.cpp
# over the project's libraries: optimised builds compile it with -O1, as it parses options and
# starts the library once (-O3 spent 40-55 s per main on CLI11's and spdlog's inline code). In an ASan build its
# own code gets AddressSanitizer only (the code under test, in the project's libraries, has
# UBSan and the fuzzing coverage too): test sources are large and their UBSan and coverage
# instrumentation doubled their compile time for checks of the tests themselves.
function(ipfixweb_target_settings target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "TEST;MAIN" "PCH" "")
  if(NOT arg_PCH)
    set(arg_PCH FULL)
  endif()
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wformat=2
    -Wimplicit-fallthrough)
  if(IPFIXWEB_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(arg_MAIN)
    target_compile_options(${target} PRIVATE $<$<CONFIG:Release,RelWithDebInfo>:-O1>)
  endif()
  if(arg_TEST)
    ipfixweb_test_build_settings(${target} ${arg_PCH})
  elseif(IPFIXWEB_UNITY)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON
      UNITY_BUILD_BATCH_SIZE ${IPFIXWEB_UNITY_BATCH})
    target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-subobject-linkage>)
  endif()
  if(IPFIXWEB_ASAN AND arg_TEST)
    target_compile_options(${target} PRIVATE -fsanitize=address -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  elseif(IPFIXWEB_ASAN)
    target_compile_options(${target} PRIVATE
      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
    if(IPFIXWEB_FUZZ)
      target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
    endif()
  endif()
  if(IPFIXWEB_TSAN)
    target_compile_options(${target} PRIVATE -fsanitize=thread -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=thread)
  endif()
endfunction()

# A libFuzzer target (tests/fuzz): the project's settings, linked with libFuzzer's main.
function(ipfixweb_fuzz_target target)
  ipfixweb_target_settings(${target})
  target_link_options(${target} PRIVATE -fsanitize=fuzzer)
endfunction()

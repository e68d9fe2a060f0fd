# All dependencies come from Debian 12 packages (scripts/bootstrap installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

find_package(cppzmq REQUIRED)                 # cppzmq-dev (+ libzmq3-dev)
find_package(msgpack REQUIRED CONFIG)         # libmsgpack-cxx-dev: target msgpackc-cxx
find_package(spdlog REQUIRED)                 # libspdlog-dev
find_package(nlohmann_json REQUIRED)          # nlohmann-json3-dev
find_package(CLI11 REQUIRED)                  # libcli11-dev
find_package(SQLite3 REQUIRED)                # libsqlite3-dev
# libssl-dev: libcrypto's HMAC-SHA256 signs dispatch grants (shared/src/grant.cpp).
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
# tao-pegtl-dev (3.2, header-only): the flow filter language's grammar (shared/src/flows/filter.cpp).
find_package(pegtl REQUIRED CONFIG)

pkg_check_modules(PCAP REQUIRED IMPORTED_TARGET libpcap)        # libpcap-dev
pkg_check_modules(NDPI REQUIRED IMPORTED_TARGET libndpi)        # libndpi-dev (4.2)
pkg_check_modules(FIXBUF REQUIRED IMPORTED_TARGET libfixbuf)    # libfixbuf-dev (2.4)
# libboost-dev (1.74, Debian 12's default): Beast and Asio, header-only, for the api's HTTP
# server. (libboost1.81-dev conflicts with it and would remove libmsgpack-cxx-dev.)
find_package(Boost 1.74 REQUIRED)
# Compressed captures (shared/src/capture): each format's own library, read in one streaming
# pass. libisal-dev: ISA-L's igzip decodes gzip about twice as fast as zlib and checks each
# member's CRC-32 (libarchive's gzip reader does not, and runs at zlib's speed); libzstd-dev,
# liblzma-dev, libbz2-dev: the reference decoders of zstd, xz and bzip2.
pkg_check_modules(ISAL REQUIRED IMPORTED_TARGET libisal)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(LZMA REQUIRED IMPORTED_TARGET liblzma)
find_package(BZip2 REQUIRED)

# libcpp-httplib-dev (0.11): the HTTP client of ipfixctl (cli/) and of the integration tests.
# Debian builds it as a shared library (libcpp-httplib0.11, with OpenSSL, zlib and Brotli).
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

if(IPFIXWEB_BUILD_TESTS)
  find_package(GTest REQUIRED)                # libgtest-dev
endif()

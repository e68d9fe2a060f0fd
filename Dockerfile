# Multi-stage build: compile on debian:bookworm, run on debian:bookworm-slim
# with only the runtime libraries, as a non-root user.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libzmq3-dev cppzmq-dev libpcap-dev libndpi-dev libmsgpack-cxx-dev libsqlite3-dev \
      libspdlog-dev libgtest-dev libfixbuf-dev libcpp-httplib-dev nlohmann-json3-dev libcli11-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY shared shared
COPY broker broker
COPY api api
COPY worker worker
COPY tests tests
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPFIXWEB_BUILD_TESTS=OFF \
    && cmake --build /build

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libzmq5 libpcap0.8 libndpi4.2 libsqlite3-0 libspdlog1.10 libfixbuf9 libcpp-httplib0.11 \
      curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data ipfixweb \
    && mkdir -p /data/db /data/input /data/output \
    && chown -R ipfixweb /data
COPY --from=build /build/bin/ipfixweb-api /build/bin/ipfixweb-broker /build/bin/ipfixweb-worker /build/bin/pcap2ipfix /usr/local/bin/
COPY tests/data/sample.pcap /usr/share/ipfixweb/sample.pcap
USER ipfixweb
WORKDIR /data
ENV IPFIXWEB_DATA_DIR=/data \
    IPFIXWEB_DB=/data/db/ipfixweb.db \
    IPFIXWEB_INPUT_ROOTS=/data/input \
    IPFIXWEB_OUTPUT_ROOT=/data/output
CMD ["ipfixweb-api"]

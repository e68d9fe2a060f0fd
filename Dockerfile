# ipfixweb container image: one image, three roles (ipfixweb-broker, ipfixweb-api,
# ipfixweb-worker; pcap2ipfix and the client ipfixctl are included too). compose.yaml
# picks the role per service. Multi-stage: compile on debian:bookworm, run on debian:bookworm-slim
# with only the runtime libraries, as the non-root user ipfixweb (uid 10001).
#
#   docker build -t ipfixweb:latest .            (add --network host if the
#                                                 build cannot reach the mirror)
#
# No registry reachable? scripts/compose-test makes both base images locally
# with debootstrap + docker import (docs/containers.md). apt-get inside the
# build uses whatever /etc/apt/sources.list of the base image names, so a
# debootstrapped base keeps using the mirror it was made from.
ARG DEBIAN_BUILD_IMAGE=debian:bookworm
ARG DEBIAN_RUNTIME_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_BUILD_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libzmq3-dev cppzmq-dev libpcap-dev libndpi-dev libmsgpack-cxx-dev libsqlite3-dev \
      libspdlog-dev libfixbuf-dev libboost-dev nlohmann-json3-dev libcli11-dev libssl-dev \
      tao-pegtl-dev libisal-dev libzstd-dev liblzma-dev libbz2-dev libcpp-httplib-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build context is filtered by .dockerignore (no build trees, no .git, no
# tests except the sample capture), so new source directories come along.
COPY . .
# Warnings are the host build's business (IPFIXWEB_WERROR=ON there); the image
# must not fail on a new compiler note. Tests are not built into the image.
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DIPFIXWEB_BUILD_TESTS=OFF -DIPFIXWEB_WERROR=OFF \
    && cmake --build /build --target ipfixweb-api ipfixweb-broker ipfixweb-worker pcap2ipfix ipfixctl \
    && mkdir -p /out \
    && cp /build/bin/ipfixweb-api /build/bin/ipfixweb-broker /build/bin/ipfixweb-worker /build/bin/pcap2ipfix /build/bin/ipfixctl /out/ \
    && strip /out/*

FROM ${DEBIAN_RUNTIME_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# Runtime libraries only (libspdlog1.10 pulls libfmt9; the api's HTTP server is Boost.Beast,
# header-only: no library); curl for the health check.
# libglib2.0-0 is named explicitly: Debian's libfixbuf9 needs it but does not
# depend on it (ldd below finds it missing otherwise). libisal2, libzstd1, liblzma5, libbz2-1.0:
# the decoders of compressed captures (the last three come with the base image anyway).
# libcpp-httplib0.11: ipfixctl's HTTP client (Debian builds cpp-httplib as a shared library).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
      libzmq5 libpcap0.8 libndpi4.2 libsqlite3-0 libspdlog1.10 libfixbuf9 libglib2.0-0 libssl3 \
      libisal2 libzstd1 liblzma5 libbz2-1.0 libcpp-httplib0.11 \
      curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && groupadd --system --gid 10001 ipfixweb \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
         --shell /usr/sbin/nologin ipfixweb \
    && mkdir -p /data/db /data/input /data/output /usr/share/ipfixweb \
    && chown -R 10001:10001 /data \
    && printf '%s\n' \
      '#!/bin/sh' \
      '# Health check of the api: exit 0 when GET /readyz answers 200.' \
      '# Uses the first of IPFIXWEB_API_TOKENS when authentication is on.' \
      'port=${IPFIXWEB_HTTP_LISTEN##*:}' \
      'url=${1:-http://127.0.0.1:${port:-8000}}/readyz' \
      'token=${IPFIXWEB_API_TOKENS%%,*}' \
      '# An entry may carry a role (read:SECRET): the bearer token is the secret.' \
      'case $token in read:*|submit:*|admin:*) token=${token#*:} ;; esac' \
      'if [ -n "$token" ]; then' \
      '  exec curl -fsS -o /dev/null -m 3 -H "Authorization: Bearer $token" "$url"' \
      'fi' \
      'exec curl -fsS -o /dev/null -m 3 "$url"' \
      > /usr/local/bin/ipfixweb-healthcheck \
    && chmod 0755 /usr/local/bin/ipfixweb-healthcheck
COPY --from=build /out/ /usr/local/bin/
COPY tests/data/sample.pcap /usr/share/ipfixweb/sample.pcap
# Fail the build, not the first task, when a shared library is missing.
RUN for b in ipfixweb-api ipfixweb-broker ipfixweb-worker pcap2ipfix ipfixctl; do \
      if ldd /usr/local/bin/$b | grep 'not found'; then echo "$b: missing libraries" >&2; exit 1; fi; \
    done \
    && pcap2ipfix -o /tmp/sample.ipfix /usr/share/ipfixweb/sample.pcap 2>/dev/null \
    && rm -f /tmp/sample.ipfix
# Every setting is an IPFIXWEB_* variable (README: Configuration). These are
# the in-container defaults; compose.yaml sets the per-role endpoints.
ENV IPFIXWEB_DATA_DIR=/data \
    IPFIXWEB_DB=/data/db/ipfixweb.db \
    IPFIXWEB_INPUT_ROOTS=/data/input \
    IPFIXWEB_OUTPUT_ROOT=/data/output \
    IPFIXWEB_HTTP_LISTEN=0.0.0.0:8000
# No VOLUME instruction (it would leave anonymous volumes behind every
# `docker run`); a fresh named volume mounted on these directories starts with
# their ownership (uid 10001), see compose.yaml.
USER 10001:10001
WORKDIR /data
EXPOSE 8000 5561 5562
CMD ["ipfixweb-api"]

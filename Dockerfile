# syntax=docker/dockerfile:1
# livefunnel: `docker build -t livefunnel:local .` (docker compose builds it too).
#
# Builder: the Rust toolchain on Debian bookworm. librdkafka and OpenSSL are built from
# source by the rdkafka crate (features ssl-vendored, libz): that needs a C/C++
# compiler, make, perl and pkg-config, all in the rust image; zlib1g-dev is listed to
# be explicit. No cmake: rdkafka's cmake feature is not enabled.
FROM rust:1.89.0-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the build context: pass the commit for livefunnel_build_info and
# --version (`docker build --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) .`).
ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA}
# The lock file pins every crate; caches keep rebuilds fast.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p livefunnel \
 && cp target/release/livefunnel /usr/local/bin/livefunnel

# Runtime: a slim Debian with the same glibc as the builder. curl is for the
# compose healthcheck (GET /readyz).
FROM debian:12.10-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/livefunnel --create-home livefunnel
COPY --from=builder /usr/local/bin/livefunnel /usr/local/bin/livefunnel
USER livefunnel
WORKDIR /var/lib/livefunnel
EXPOSE 9464
ENTRYPOINT ["livefunnel"]
CMD ["run", "--config", "/etc/livefunnel/livefunnel.toml"]

# syntax=docker/dockerfile:1
#
# Convene: build with the Rust image, run on a slim Debian of the same release (same glibc).
#   docker build -t convene .
#   docker run -p 8080:8080 -e CONVENE_API_KEYS=... -e CONVENE_TOKEN_SECRET=... convene

FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
# .dockerignore keeps target/ and .git/ out of the context.
COPY . .
# The registry and target caches persist between builds (BuildKit); the binary is copied
# out in the same step because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/convene /out/convene

FROM debian:12.11-slim
# curl only serves the health checks (here and in docker-compose.yml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 convene \
    && useradd --system --uid 10001 --gid convene --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin convene
COPY --from=builder /out/convene /usr/local/bin/convene
USER 10001:10001
# Every setting can be given as a CONVENE_* variable; see the README's table.
ENV CONVENE_BIND=0.0.0.0:8080 \
    CONVENE_LOG_FORMAT=json
EXPOSE 8080 7882/udp
# Liveness only: /healthz never touches Redis. Start-up may retry Redis for 30 s first.
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
# SIGTERM starts a graceful shutdown of up to 30 s (CONVENE_SHUTDOWN_TIMEOUT_SECONDS):
# give `docker stop` a longer timeout than that (docker-compose.yml uses 35 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/convene"]

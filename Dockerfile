# shale container image: a Rust build stage, then a slim Debian runtime.
#
#   docker build -t shale .
#   docker run -d --name shale -p 4000:4000 -p 6380:6380 -v shale-data:/data shale
#
# Both base images can be overridden, e.g. to use locally built ones:
#   docker build --build-arg BUILDER_IMAGE=my/rust:1.95 --build-arg RUNTIME_IMAGE=my/debian:bookworm .
ARG BUILDER_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ----
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# No debug info in the image's binary (the release profile keeps some for profiling on a workstation).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
# Everything .dockerignore lets through: the manifest names benches/ (and may name tests/, examples/), so
# the whole source tree is copied, never target/ or data/.
COPY . .
RUN cargo build --release --locked --bin shale \
    && install -m 0755 target/release/shale /usr/local/bin/shale

# ---- runtime ----
FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 shale \
    && useradd --system --uid 10001 --gid shale --home-dir /data --no-create-home --shell /usr/sbin/nologin shale \
    && mkdir -p /data /backups /usr/local/share/shale \
    && chown shale:shale /data /backups
COPY --from=builder /usr/local/bin/shale /usr/local/bin/shale
COPY scripts/archive.sh scripts/restore.sh /usr/local/share/shale/
COPY LICENSE README.md /usr/local/share/shale/
ENV HOST=0.0.0.0 \
    PORT=4000 \
    DATA_DIR=/data \
    BACKUP_DIR=/backups
VOLUME ["/data"]
EXPOSE 4000 6380
USER shale
WORKDIR /data
# Ready = every shard open and its cache warm. The slim image has no curl: bash's /dev/tcp speaks plain
# HTTP (with TLS_CERT/TLS_KEY set, override the healthcheck).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-4000} && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# SIGTERM is a graceful stop (finish requests, commit, close every shard); give it time: docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/shale"]
CMD ["serve"]

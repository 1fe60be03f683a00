#!/usr/bin/env bash
# Proves the Docker image works on a machine that has no image registry (not part of CI: it takes 10-20 min).
#
#   sudo scripts/docker-test.sh
#
# 1. Installs docker.io and debootstrap from the distribution's packages when they are missing.
# 2. Starts its own dockerd (data, sockets, pidfile under a temp dir; its own bridge; it touches neither the
#    host's iptables nor its ip_forward setting), so it never meddles with another engine.
# 3. Builds the two base images the Dockerfile names, without a registry:
#    - runtime: a minimal Debian bookworm from debootstrap (the mirror apt uses), `docker import`ed;
#    - builder: that image plus gcc and libc6-dev, this machine's Rust toolchain, and this machine's CA bundle
#      (which may hold the CA of a TLS proxy between this machine and crates.io).
# 4. Builds the image, runs it with a named volume, checks /readyz, PUT/GET, the HEALTHCHECK, an archive
#    taken inside the container, a graceful stop (exit 0), a restart and a new container on the same volume
#    (the data persisted).
# 5. Removes everything it created (containers, volume, images, bridge), stops its dockerd, deletes its dir.
# Every step is bounded by `timeout`. Logs stay in the directory printed at the start.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=shale-docker-test
bridge=shaledt0
bridge_cidr=${DOCKER_TEST_BRIDGE_CIDR:-172.29.71.1/24}
value="persisted $(date -u +%Y%m%dT%H%M%SZ)"

say() { echo "docker-test: $*" >&2; }
die() {
    say "FAILED: $*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts dockerd)"
for tool in curl timeout ip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

work=$(mktemp -d "${DOCKER_TEST_DIR:-/var/tmp}/$name.XXXXXX")
logs=$(mktemp -d "${TMPDIR:-/tmp}/$name-logs.XXXXXX")
sock="$work/docker.sock"
say "work dir $work, logs in $logs"

# `d ARGS`: the docker CLI of the docker.io package (the one that matches its daemon) against our dockerd.
d() { timeout "${T:-300}" /usr/bin/docker -H "unix://$sock" "$@"; }

dockerd_pid=""
made_bridge=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$dockerd_pid" ]]; then
        say "cleaning up"
        d rm -f "$name" "$name-2" >/dev/null 2>&1
        d volume rm "$name-data" >/dev/null 2>&1
        d rmi -f "$name:latest" "${builder_image:-}" "${runtime_image:-}" >/dev/null 2>&1
        d image prune -f >/dev/null 2>&1
        kill -TERM "$dockerd_pid" 2>/dev/null
        for _ in $(seq 60); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            say "dockerd did not stop in 60 s; killing it"
            kill -KILL "$dockerd_pid"
        fi
    fi
    # Mounts dockerd may leave behind (network namespaces, overlays), innermost first.
    grep -F " $work/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work"
    [[ -n "$made_bridge" ]] && ip link delete "$bridge" 2>/dev/null
    if ((rc == 0)); then say "PASS (logs: $logs)"; else say "logs: $logs"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. packages ----
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1 || [[ ! -x /usr/bin/docker ]]; then
    say "installing docker.io and debootstrap with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get update -qq >"$logs/apt.log" 2>&1 || die "apt-get update (see $logs/apt.log)"
    timeout 900 apt-get install -y -qq docker.io debootstrap >>"$logs/apt.log" 2>&1 ||
        die "apt-get install docker.io debootstrap (see $logs/apt.log)"
fi

# ---- 2. dockerd ----
ip link show "$bridge" >/dev/null 2>&1 && die "a $bridge interface exists: another run of this script? Remove it first"
ip link add "$bridge" type bridge || die "cannot create the bridge $bridge"
made_bridge=1
ip addr add "$bridge_cidr" dev "$bridge"
ip link set "$bridge" up
say "starting dockerd"
dockerd --data-root "$work/root" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "unix://$sock" \
    --bridge "$bridge" --iptables=false --ip-forward=false >"$logs/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 60); do
    T=5 d version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited (see $logs/dockerd.log)"
    sleep 1
done
T=5 d version >/dev/null 2>&1 || die "dockerd did not answer in 60 s (see $logs/dockerd.log)"

# ---- 3. base images ----
arg_default() { sed -n "s/^ARG $1=//p" "$root/Dockerfile" | head -n1; }
builder_image=$(arg_default BUILDER_IMAGE)
runtime_image=$(arg_default RUNTIME_IMAGE)
[[ -n "$builder_image" && -n "$runtime_image" ]] || die "no ARG BUILDER_IMAGE/RUNTIME_IMAGE default in the Dockerfile"

mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
[[ -n "$mirror" ]] || mirror=$(sed -n 's/^deb \[*[^]]*\]* *\(http[^ ]*\) bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
say "debootstrap bookworm from $mirror (a few minutes)"
timeout 1200 debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$logs/debootstrap.log" 2>&1 ||
    die "debootstrap (see $logs/debootstrap.log)"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
say "importing $runtime_image"
tar -C "$work/rootfs" -c . | T=600 d import --change 'CMD ["bash"]' - "$runtime_image" >/dev/null ||
    die "docker import of the rootfs"
rm -rf "$work/rootfs"

sysroot=$(rustc --print sysroot)
say "building $builder_image from $runtime_image plus the toolchain in $sysroot"
mkdir -p "$work/builder/rust"
for part in bin lib libexec etc; do
    if [[ -e "$sysroot/$part" ]]; then cp -a "$sysroot/$part" "$work/builder/rust/"; fi
done
cp /etc/ssl/certs/ca-certificates.crt "$work/builder/"
cat >"$work/builder/Dockerfile" <<EOF
FROM $runtime_image
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    CARGO_HOME=/usr/local/cargo
RUN rustc -V && cargo -V
EOF
DOCKER_BUILDKIT=0 T=1200 d build --network host -t "$builder_image" "$work/builder" >"$logs/builder.log" 2>&1 ||
    die "building $builder_image (see $logs/builder.log)"
rm -rf "$work/builder"

# ---- 4. the image ----
say "docker build of shale (a release build inside the container: 5-15 min)"
DOCKER_BUILDKIT=0 T=3600 d build --network host -t "$name:latest" "$root" >"$logs/build.log" 2>&1 ||
    die "docker build (see $logs/build.log)"
say "image: $(d image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$name:latest")"

# The host port docker published for the container's 4000.
host_port() { d port "$1" 4000/tcp | head -n1 | sed 's/.*://'; }
# Waits until GET /readyz answers 200 on port $1 (60 s at most).
wait_ready() {
    for _ in $(seq 120); do
        [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/readyz") == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}
expect_value() {
    local got
    got=$(curl -sS -m 10 "http://127.0.0.1:$1/kv/docker/test") || die "GET after $2 failed"
    [[ "$got" == "$value" ]] || die "after $2, GET gave '$got', expected '$value'"
    say "after $2: GET /kv/docker/test = '$got'"
}

d volume create "$name-data" >/dev/null
d run -d --name "$name" -p 127.0.0.1::4000 -v "$name-data:/data" "$name:latest" >/dev/null || die "docker run"
port=$(host_port "$name")
wait_ready "$port" || { d logs "$name" >"$logs/container.log" 2>&1; die "not ready (see $logs/container.log)"; }
say "container ready on 127.0.0.1:$port, user $(d exec "$name" id -un)"
status=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: text/plain' \
    --data-binary "$value" "http://127.0.0.1:$port/kv/docker/test") || die "PUT failed"
[[ "$status" == 201 ]] || die "PUT answered $status, expected 201"
expect_value "$port" "PUT"

health=""
for _ in $(seq 40); do
    health=$(d inspect -f '{{.State.Health.Status}}' "$name")
    [[ "$health" == healthy ]] && break
    sleep 1
done
[[ "$health" == healthy ]] || die "HEALTHCHECK status is '$health' after 40 s"
say "HEALTHCHECK: healthy"

archive=$(d exec -e ARCHIVE_DIR=/backups "$name" /usr/local/share/shale/archive.sh 2>"$logs/archive.log") ||
    die "archive.sh inside the container (see $logs/archive.log)"
d exec "$name" tar -tzf "$archive" | grep -q SHA256SUMS || die "$archive has no SHA256SUMS"
say "online archive inside the container: $archive"

T=90 d stop -t 60 "$name" >/dev/null || die "docker stop"
code=$(d inspect -f '{{.State.ExitCode}}' "$name")
[[ "$code" == 0 ]] || die "the container exited with $code on SIGTERM, expected 0"
say "graceful stop: exit 0"
d start "$name" >/dev/null || die "docker start"
port=$(host_port "$name")
wait_ready "$port" || die "not ready after the restart"
expect_value "$port" "a restart"

T=90 d stop -t 60 "$name" >/dev/null
d rm "$name" >/dev/null
d run -d --name "$name-2" -p 127.0.0.1::4000 -v "$name-data:/data" "$name:latest" >/dev/null || die "docker run (2)"
port=$(host_port "$name-2")
wait_ready "$port" || die "a new container on the volume is not ready"
expect_value "$port" "a new container on the same volume"
d logs "$name-2" >"$logs/container.log" 2>&1 || true

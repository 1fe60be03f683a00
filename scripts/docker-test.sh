#!/usr/bin/env bash
# Proves the Docker image and both compose files work on a machine that has no image registry (not part of CI:
# it takes 10-25 min).
#
#   sudo scripts/docker-test.sh [run] [compose] [cluster]      (no argument: all three)
#
# 1. Installs docker.io, docker-compose (1.29) and debootstrap from the distribution's packages when missing.
# 2. Starts its own dockerd (data, sockets, pidfile under a temp dir; its own bridge; it touches neither the
#    host's iptables nor its ip_forward setting), so it never meddles with another engine.
# 3. Builds the two base images the Dockerfile names, without a registry:
#    - runtime: a minimal Debian bookworm from debootstrap (the mirror apt uses), `docker import`ed;
#    - builder: that image plus gcc and libc6-dev, this machine's Rust toolchain, and this machine's CA bundle
#      (which may hold the CA of a TLS proxy between this machine and crates.io).
# 4. Builds the image (tagged shale:latest too, the image both compose files name), then:
#    run:     runs it with a named volume, checks /readyz, PUT/GET, the HEALTHCHECK, an archive taken inside
#             the container, a graceful stop (exit 0), a restart and a new container on the same volume (the
#             data persisted);
#    compose: docker-compose.yml through docker-compose: up, /readyz, PUT/GET on 127.0.0.1:4000, the CLI and a
#             RESP PING inside/through the container, healthy, a restart (the data persisted), down -v;
#    cluster: docker-compose.cluster.yml: up, /healthz on 127.0.0.1:4001-4003, `shale cluster init` inside
#             shale1, /readyz on all three, keys written through node 1, shale3 stopped, keys written through
#             node 2, every key read back from nodes 1 and 2, shale3 started again and every key read from it
#             (linearizable and ?consistency=stale), down -v.
# 5. Removes everything it created (containers, volumes, networks, images, bridge), stops its dockerd, deletes
#    its dir.
# Every step is bounded by `timeout`. Logs stay in the directory printed at the start.
# Exit codes: 0 passed; 1 a check failed; 2 usage; 77 no Docker engine can run on this machine (docker.io cannot
# be installed, dockerd does not start or answer, or it cannot start a container): nothing was tested.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=shale-docker-test
bridge=shaledt0
bridge_cidr=${DOCKER_TEST_BRIDGE_CIDR:-172.29.71.1/24}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
value="persisted $stamp"

say() { echo "docker-test: $*" >&2; }
die() {
    say "FAILED: $*"
    exit 1
}
# No Docker engine can run here: nothing can be tested, which is not a failure of shale's.
no_engine() {
    say "NO DOCKER ENGINE: $*"
    say "no Docker engine can run on this machine: nothing was tested (exit 77)"
    exit 77
}

parts=()
for arg in "$@"; do
    case $arg in
    run | compose | cluster) parts+=("$arg") ;;
    *)
        say "usage: $0 [run] [compose] [cluster]   (unknown: '$arg')"
        exit 2
        ;;
    esac
done
((${#parts[@]})) || parts=(run compose cluster)
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts dockerd)"
for tool in curl timeout ip ss; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
# The compose files publish fixed ports on 127.0.0.1: they must be free before anything is built.
ports=()
if wants compose; then ports+=(4000 6380); fi
if wants cluster; then ports+=(4001 4002 4003 6381 6382 6383); fi
for p in "${ports[@]}"; do
    if ss -Hltn "sport = :$p" | grep -q .; then
        die "port $p is in use on this machine (the compose files publish it): stop what listens there"
    fi
done

work=$(mktemp -d "${DOCKER_TEST_DIR:-/var/tmp}/$name.XXXXXX")
logs=$(mktemp -d "${TMPDIR:-/tmp}/$name-logs.XXXXXX")
sock="$work/docker.sock"
say "work dir $work, logs in $logs; parts: ${parts[*]}"

# `d ARGS`: the docker CLI of the docker.io package (the one that matches its daemon) against our dockerd.
d() { timeout "${T:-300}" /usr/bin/docker -H "unix://$sock" "$@"; }

# The compose command: Debian's docker-compose (1.29) unless DOCKER_COMPOSE names another, e.g. "docker compose".
read -r -a compose_cmd <<<"${DOCKER_COMPOSE:-docker-compose}"
# The cluster's secret, the same for every compose command of the run (the file reads it from the environment).
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
# `dc PROJECT FILE ARGS`: compose against our dockerd. /usr/bin comes first on PATH: docker-compose 1.29 runs
# `exec` through the first docker CLI it finds, which must be the one matching the daemon.
dc() {
    local project=$1 file=$2
    shift 2
    PATH=/usr/bin:$PATH DOCKER_HOST="unix://$sock" CLUSTER_SECRET="$secret" \
        timeout "${T:-300}" "${compose_cmd[@]}" -p "$project" -f "$root/$file" "$@"
}
single() { dc "$name" docker-compose.yml "$@"; }
trio() { dc "$name-cluster" docker-compose.cluster.yml "$@"; }

dockerd_pid=""
made_bridge=""
single_up=""
trio_up=""
# `down FN LOG`: the project's logs into $logs/LOG, then down -v (containers, network, volumes).
down() {
    "$1" logs --no-color >"$logs/$2" 2>&1
    T=180 "$1" down -v -t 60 >>"$logs/compose.log" 2>&1
}
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$dockerd_pid" ]]; then
        say "cleaning up"
        [[ -n "$trio_up" ]] && down trio cluster.log
        [[ -n "$single_up" ]] && down single compose-shale.log
        d rm -f "$name" "$name-2" >/dev/null 2>&1
        d volume rm "$name-data" >/dev/null 2>&1
        d network prune -f >/dev/null 2>&1
        d rmi -f "$name:latest" shale:latest "${builder_image:-}" "${runtime_image:-}" >/dev/null 2>&1
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
if ! command -v dockerd >/dev/null 2>&1 || [[ ! -x /usr/bin/docker ]]; then
    say "installing docker.io with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get update -qq >"$logs/apt.log" 2>&1 || no_engine "apt-get update failed (see $logs/apt.log)"
    timeout 900 apt-get install -y -qq docker.io >>"$logs/apt.log" 2>&1 ||
        no_engine "docker.io cannot be installed (see $logs/apt.log)"
fi
missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [[ -z "${DOCKER_COMPOSE:-}" && ! -x /usr/bin/docker-compose ]] && { wants compose || wants cluster; }; then
    missing+=(docker-compose)
fi
if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get update -qq >>"$logs/apt.log" 2>&1 || die "apt-get update (see $logs/apt.log)"
    timeout 900 apt-get install -y -qq "${missing[@]}" >>"$logs/apt.log" 2>&1 ||
        die "apt-get install ${missing[*]} (see $logs/apt.log)"
fi

# ---- 2. dockerd ----
ip link show "$bridge" >/dev/null 2>&1 && die "a $bridge interface exists: another run of this script? Remove it first"
ip link add "$bridge" type bridge || no_engine "cannot create the bridge $bridge (no CAP_NET_ADMIN here?)"
made_bridge=1
ip addr add "$bridge_cidr" dev "$bridge"
ip link set "$bridge" up
say "starting dockerd"
dockerd --data-root "$work/root" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "unix://$sock" \
    --bridge "$bridge" --iptables=false --ip-forward=false >"$logs/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 60); do
    T=5 d version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || no_engine "dockerd exited at start (see $logs/dockerd.log)"
    sleep 1
done
T=5 d version >/dev/null 2>&1 || no_engine "dockerd did not answer in 60 s (see $logs/dockerd.log)"
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
T=120 d run --rm --network none "$runtime_image" true >"$logs/first-container.log" 2>&1 ||
    no_engine "dockerd runs but cannot start a container (see $logs/first-container.log)"

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
# The compose files name shale:latest and may build it, but a build there would have no network (this dockerd
# does no NAT): they get this one, and run with --no-build.
d tag "$name:latest" shale:latest
say "image: $(d image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$name:latest")"

# The host port docker published for the container's 4000.
host_port() { d port "$1" 4000/tcp | head -n1 | sed 's/.*://'; }
# `wait_http PORT PATH SECONDS`: until GET PATH answers 200 on 127.0.0.1:PORT.
wait_http() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2") == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}
# Waits until GET /readyz answers 200 on port $1 (60 s at most).
wait_ready() { wait_http "$1" /readyz 60; }
expect_value() {
    local got
    got=$(curl -sS -m 10 "http://127.0.0.1:$1/kv/docker/test") || die "GET after $2 failed"
    [[ "$got" == "$value" ]] || die "after $2, GET gave '$got', expected '$value'"
    say "after $2: GET /kv/docker/test = '$got'"
}
# `wait_healthy CONTAINER`: until docker reports the HEALTHCHECK healthy (40 s at most).
wait_healthy() {
    local health=""
    for _ in $(seq 40); do
        health=$(d inspect -f '{{.State.Health.Status}}' "$1")
        [[ "$health" == healthy ]] && return 0
        sleep 1
    done
    die "HEALTHCHECK status of $1 is '$health' after 40 s"
}
# `resp_ping PORT`: PING over the Redis protocol on 127.0.0.1:PORT answers +PONG (5 s at most).
resp_ping() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && [[ $l == +PONG* ]]' \
        _ "$1"
}
# `req METHOD PORT PATH [BODY]`: one HTTP request to 127.0.0.1:PORT, sent again while it answers 503 (no leader
# or no majority yet: the documented transient answer) or cannot connect, for 60 s at most. Sets status, body
# and tries.
status="" body="" tries=0
req() {
    local method=$1 port=$2 path=$3 deadline=$((SECONDS + 60))
    local args=(-s -m 15 -o "$work/body" -w '%{http_code}' -X "$method")
    if (($# > 3)); then args+=(-H 'Content-Type: text/plain' --data-binary "$4"); fi
    tries=0
    while :; do
        tries=$((tries + 1))
        rm -f "$work/body"
        status=$(curl "${args[@]}" "http://127.0.0.1:$port$path") || status=000
        if [[ $status != 503 && $status != 000 ]] || ((SECONDS >= deadline)); then break; fi
        sleep 1
    done
    body=$(cat "$work/body" 2>/dev/null || true)
}

# ---- 5a. docker run ----
run_check() {
    say "---- run: docker run with a named volume ----"
    d volume create "$name-data" >/dev/null
    d run -d --name "$name" -p 127.0.0.1::4000 -v "$name-data:/data" "$name:latest" >/dev/null || die "docker run"
    port=$(host_port "$name")
    wait_ready "$port" || { d logs "$name" >"$logs/container.log" 2>&1; die "not ready (see $logs/container.log)"; }
    say "container ready on 127.0.0.1:$port, user $(d exec "$name" id -un)"
    status=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: text/plain' \
        --data-binary "$value" "http://127.0.0.1:$port/kv/docker/test") || die "PUT failed"
    [[ "$status" == 201 ]] || die "PUT answered $status, expected 201"
    expect_value "$port" "PUT"

    wait_healthy "$name"
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
    T=90 d stop -t 60 "$name-2" >/dev/null
    d rm "$name-2" >/dev/null
    d volume rm "$name-data" >/dev/null
}

# ---- 5b. docker-compose.yml ----
compose_check() {
    local v="compose $stamp" got cid code
    say "---- compose: docker-compose.yml through $("${compose_cmd[@]}" version --short 2>/dev/null) ----"
    single config -q || die "$("${compose_cmd[@]}" version --short) refuses docker-compose.yml"
    single_up=1
    T=300 single up -d --no-build >>"$logs/compose.log" 2>&1 || die "compose up (see $logs/compose.log)"
    wait_ready 4000 || die "not ready on 127.0.0.1:4000 in 60 s (see $logs/compose-shale.log)"
    req PUT 4000 /kv/compose/test "$v"
    [[ $status == 201 ]] || die "PUT on 127.0.0.1:4000 answered $status, expected 201: $body"
    req GET 4000 /kv/compose/test
    [[ $status == 200 && $body == "$v" ]] || die "GET on 127.0.0.1:4000 answered $status '$body', expected '$v'"
    got=$(T=60 single exec -T shale shale get compose/test </dev/null) || die "shale get inside the container"
    [[ $got == "$v" ]] || die "shale get inside the container printed '$got', expected '$v'"
    resp_ping 6380 || die "no +PONG on the RESP port 127.0.0.1:6380"
    say "up: /readyz, PUT/GET on 127.0.0.1:4000, the CLI inside the container, PING on 127.0.0.1:6380"
    cid=$(single ps -q shale)
    wait_healthy "$cid"
    say "healthcheck: healthy"
    T=120 single stop shale >>"$logs/compose.log" 2>&1 || die "compose stop"
    code=$(d inspect -f '{{.State.ExitCode}}' "$cid")
    [[ "$code" == 0 ]] || die "compose stop: the container exited with $code, expected 0"
    T=120 single start shale >>"$logs/compose.log" 2>&1 || die "compose start"
    wait_ready 4000 || die "not ready after compose start"
    req GET 4000 /kv/compose/test
    [[ $status == 200 && $body == "$v" ]] || die "after a restart, GET answered $status '$body', expected '$v'"
    say "compose stop (exit 0) and start: the value persisted"
    down single compose-shale.log || die "compose down -v (see $logs/compose.log)"
    single_up=""
}

# ---- 5c. docker-compose.cluster.yml ----
# `expect_keys PORT QUERY KEY...`: every KEY reads back its value ($written[KEY]) from 127.0.0.1:PORT.
declare -A written=()
expect_keys() {
    local port=$1 query=$2 key
    shift 2
    for key in "$@"; do
        req GET "$port" "/kv/$key$query"
        [[ $status == 200 && $body == "${written[$key]}" ]] ||
            die "GET /kv/$key$query on 127.0.0.1:$port answered $status '$body', expected '${written[$key]}'"
    done
}
# `put_keys PORT PREFIX N`: writes PREFIX1..PREFIXN through 127.0.0.1:PORT; sets keys to their names.
keys=()
put_keys() {
    local port=$1 prefix=$2 n=$3 i key retried=0
    keys=()
    for ((i = 1; i <= n; i++)); do
        key=$prefix$i
        written[$key]="$key through 127.0.0.1:$port $stamp"
        req PUT "$port" "/kv/$key" "${written[$key]}"
        # After a 503 the first attempt's outcome is unknown (it may be applied): 204 (replaced) is right then.
        if ((tries > 1)); then retried=$((retried + 1)); fi
        [[ $status == 201 || ($status == 204 && $tries -gt 1) ]] ||
            die "PUT /kv/$key on 127.0.0.1:$port answered $status after $tries tries: $body"
        keys+=("$key")
    done
    say "$n keys written through 127.0.0.1:$port ($retried sent again after a 503)"
}
cluster_check() {
    local all=() cfg code cid node
    say "---- cluster: docker-compose.cluster.yml through $("${compose_cmd[@]}" version --short 2>/dev/null) ----"
    cfg=$(trio config) || die "$("${compose_cmd[@]}" version --short) refuses docker-compose.cluster.yml"
    [[ $cfg == *"CLUSTER_SECRET: $secret"* ]] || die "docker-compose.cluster.yml does not pass CLUSTER_SECRET on"
    trio_up=1
    T=300 trio up -d --no-build >>"$logs/compose.log" 2>&1 || die "compose up (see $logs/compose.log)"
    for port in 4001 4002 4003; do
        wait_http "$port" /healthz 120 || die "no /healthz on 127.0.0.1:$port in 120 s (see $logs/cluster.log)"
    done
    req GET 4001 /readyz
    [[ $status == 503 ]] || die "before init, /readyz on 127.0.0.1:4001 answered $status, expected 503"
    say "three nodes up: /healthz 200 and /readyz 503 on 127.0.0.1:4001-4003 before init"

    T=120 trio exec -T shale1 shale cluster init --url http://127.0.0.1:4000 </dev/null >"$logs/cluster-init.log" 2>&1 ||
        die "shale cluster init inside shale1 exited with $? (see $logs/cluster-init.log)"
    say "shale cluster init: $(tr '\n' ' ' <"$logs/cluster-init.log")"
    for port in 4001 4002 4003; do
        wait_http "$port" /readyz 120 || die "127.0.0.1:$port not ready 120 s after init (see $logs/cluster.log)"
    done
    if T=60 trio exec -T shale2 shale cluster init --url http://127.0.0.1:4000 </dev/null >>"$logs/cluster-init.log" 2>&1; then
        die "a second shale cluster init (on shale2) succeeded; it must be refused"
    fi
    for port in 6381 6382 6383; do
        resp_ping "$port" || die "no +PONG on the RESP port 127.0.0.1:$port"
    done
    say "cluster formed: /readyz 200 on 127.0.0.1:4001-4003, a second init refused, PING on 6381-6383"

    put_keys 4001 cluster/one/ 20
    all+=("${keys[@]}")
    cid=$(trio ps -q shale3)
    T=120 trio stop shale3 >>"$logs/compose.log" 2>&1 || die "compose stop shale3"
    code=$(d inspect -f '{{.State.ExitCode}}' "$cid")
    [[ "$code" == 0 ]] || die "shale3 exited with $code on compose stop, expected 0"
    for port in 4001 4002; do
        wait_http "$port" /readyz 120 || die "127.0.0.1:$port not ready 120 s after shale3 stopped"
    done
    say "shale3 stopped (exit 0); nodes 1 and 2 ready again"
    put_keys 4002 cluster/two/ 20
    all+=("${keys[@]}")
    for port in 4001 4002; do
        expect_keys "$port" "" "${all[@]}"
    done
    req GET 4001 '/kv?prefix=cluster/&limit=1000'
    node=$(grep -o '"cluster/' <<<"$body" | wc -l)
    ((node == ${#all[@]})) || die "GET /kv?prefix=cluster/ on 127.0.0.1:4001 listed $node keys, expected ${#all[@]}"
    say "with shale3 down: all ${#all[@]} keys read back from nodes 1 and 2, and listed"

    T=120 trio start shale3 >>"$logs/compose.log" 2>&1 || die "compose start shale3"
    wait_http 4003 /readyz 120 || die "shale3 not ready 120 s after its start (see $logs/cluster.log)"
    expect_keys 4003 "" "${all[@]}"
    expect_keys 4003 "?consistency=stale" "${all[@]}"
    say "shale3 restarted on its volume: ready, all ${#all[@]} keys read from it (linearizable and stale)"
    down trio cluster.log || die "compose down -v (see $logs/compose.log)"
    trio_up=""
}

if wants run; then run_check; fi
if wants compose; then compose_check; fi
if wants cluster; then cluster_check; fi

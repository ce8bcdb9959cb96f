#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
# Installs Debian's docker.io (and debootstrap, for registry-free base images) where missing,
# then starts dockerd with no default bridge and no iptables rules (security invariant 7)
# when no daemon answers, and waits until one does.
set -euo pipefail

log=${BILEVEL_DOCKERD_LOG:-/tmp/bilevel-dockerd.log}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

answers() { $sudo docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# gVisor's runsc, registered as a runtime: a second wall around mechanisms (runtime = "auto").
# `--network=none` is needed: without it every network_mode=none container fails under runsc
# ("cannot run with network enabled in root network namespace"). Written before dockerd starts;
# a daemon already running is never restarted here (`runtimes` can be live-reloaded with SIGHUP,
# see the README).
register_runsc() {
    command -v runsc >/dev/null 2>&1 || return 0
    local conf=/etc/docker/daemon.json
    if [ -f "$conf" ] && grep -q '"runsc"' "$conf"; then
        return 0
    fi
    if [ -s "$conf" ]; then
        echo "engine: $conf exists without runsc; add it by hand (see README, gVisor)" >&2
        return 0
    fi
    $sudo mkdir -p /etc/docker
    printf '%s\n' '{"runtimes": {"runsc": {"path": "'"$(command -v runsc)"'", "runtimeArgs": ["--network=none"]}}}' \
        | $sudo tee "$conf" >/dev/null
    echo "engine: registered runsc in $conf"
}

if answers; then
    echo "engine: a Docker daemon already answers"
else
    missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v runsc >/dev/null 2>&1 || missing+=(runsc)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "engine: installing ${missing[*]}"
        $sudo apt-get update -qq
        if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; then
            needed=()
            for p in "${missing[@]}"; do [ "$p" = runsc ] || needed+=("$p"); done
            echo "engine: runsc did not install; mechanisms will use runc (bilevel doctor says why)" >&2
            [ "${#needed[@]}" -eq 0 ] || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${needed[@]}" >/dev/null
        fi
    fi
    # runsc is optional: a Debian without the package still gets a daemon (mechanisms then use runc).
    register_runsc
    echo "engine: starting dockerd (--bridge=none --iptables=false), log in $log"
    $sudo sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false >'$log' 2>&1 &"
    for _ in $(seq 1 60); do
        answers && break
        sleep 1
    done
    answers || { echo "engine: dockerd did not answer within 60 s; see $log" >&2; exit 1; }
    echo "engine: daemon up"
fi
command -v debootstrap >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
}

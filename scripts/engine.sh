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

if answers; then
    echo "engine: a Docker daemon already answers"
else
    missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "engine: installing ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
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

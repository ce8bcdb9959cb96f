#!/usr/bin/env bash
# Make a minimal Debian root filesystem with Python, as a tar for `docker import`.
# No container registry is involved: packages come from the Debian mirror.
# usage: bootstrap.sh SUITE MIRROR OUT.tar
set -euo pipefail
suite=$1 mirror=$2 out=$3
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3 "$suite" "$root" "$mirror" >"$out.log" 2>&1 \
    || { tail -20 "$out.log" >&2; exit 1; }
# Trim what a sandbox never needs: package caches, docs, manuals, locales.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -cf "$out" .

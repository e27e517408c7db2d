#!/usr/bin/env bash
# Installs what meshgate needs on Debian 12 (run as root): HAProxy and the tools the tests and
# benchmarks use from Debian, then meshgate itself into ./.venv.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   runtime, test and benchmark dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(haproxy python3-venv curl)
if [[ "${1:-}" == "--test" ]]; then
    packages+=(wrk nginx-light dnsmasq-base nghttp2-client openssl valgrind chromium)
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if (( ${#missing[@]} )); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a system HAProxy on install; meshgate runs its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet haproxy 2>/dev/null; then
    systemctl stop haproxy || true
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
if [[ "${1:-}" == "--test" ]]; then
    .venv/bin/pip install --quiet -e ".[test]"
else
    .venv/bin/pip install --quiet -e .
fi

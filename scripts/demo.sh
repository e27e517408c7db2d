#!/usr/bin/env bash
# Sets up meshgate and runs the demo: two backends and a 90/10 canary gateway on port 9070.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/meshgate demo "$@"

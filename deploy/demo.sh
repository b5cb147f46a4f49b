#!/usr/bin/env bash
# The demo on a fresh machine: installs the PostgreSQL server if missing, then runs
# `tandem demo` (two throwaway clusters, sample schemas, live sync; Ctrl-C cleans up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-postgres.sh
exec cargo run --release --quiet -- demo "$@"

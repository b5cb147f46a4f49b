#!/usr/bin/env bash
# The tests on a fresh machine: installs the PostgreSQL server if missing, then runs the
# whole test suite against throwaway clusters the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-postgres.sh
exec cargo test --all-targets "$@"

#!/usr/bin/env bash
# The side-by-side benchmark of issue 7 in one command: tandem against PostgreSQL's logical
# replication, pglogical and Bucardo, on two throwaway local clusters, in the same run.
#
#   bash deploy/bench.sh
#   TANDEM_BENCH_W1_CHANGES=50000 TANDEM_BENCH_RSS_CHANGES=200000 bash deploy/bench.sh   # smaller
#
# 1. Installs the PostgreSQL server if missing (deploy/install-postgres.sh).
# 2. Installs the peers from Debian packages when missing, for the server's major version:
#    postgresql-<major>-pglogical, bucardo and postgresql-plperl-<major> (Bucardo's server side).
#    A peer that cannot be installed is reported as "not installed" in the table. Set
#    TANDEM_BENCH_NO_INSTALL=1 to install nothing. (apt may upgrade the PostgreSQL server packages
#    to the version the peers were built against.)
# 3. Runs `cargo bench --bench compare`: cargo builds tandem with the bench profile (the release
#    profile's optimisations) and the benchmark runs that binary as `tandem run`; it prints the
#    table and writes it to target/bench/compare-<time>.md (sizes: see benches/compare.rs).
# 4. Then `cargo bench --bench mssql` (SQL Server ↔ PostgreSQL, ratios to PostgreSQL ↔ PostgreSQL)
#    when a SQL Server or Babelfish is there (see the end of this file).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash deploy/install-postgres.sh

# Same search as src/cluster.rs: pg_config --bindir if it has initdb, else the newest
# /usr/lib/postgresql/*/bin.
bindir=""
if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    [[ -n "$d" && -x "$d/initdb" && -x "$d/postgres" ]] && bindir="$d"
fi
if [[ -z "$bindir" ]]; then
    bindir="$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)"
fi
if [[ -z "$bindir" || ! -x "$bindir/postgres" ]]; then
    echo "bench: no PostgreSQL server found" >&2
    exit 1
fi
major="$("$bindir/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
echo "bench: PostgreSQL $major in $bindir"

SUDO=()
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

want=()
for pkg in "postgresql-$major-pglogical" bucardo "postgresql-plperl-$major"; do
    installed "$pkg" || want+=("$pkg")
done
if [[ ${#want[@]} -gt 0 ]]; then
    if [[ -n "${TANDEM_BENCH_NO_INSTALL:-}" ]]; then
        echo "bench: not installing ${want[*]} (TANDEM_BENCH_NO_INSTALL is set)"
    elif ! command -v apt-get >/dev/null 2>&1; then
        echo "bench: apt-get not available; the peers ${want[*]} will show as not installed"
    elif [[ "$(id -u)" -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        echo "bench: need root (or sudo) to install ${want[*]}; they will show as not installed"
    else
        echo "bench: installing ${want[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
        for pkg in "${want[@]}"; do
            # One at a time: a peer missing from this distribution must not stop the others.
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null ||
                echo "bench: could not install $pkg; it will show as not installed"
        done
    fi
fi

cargo bench --bench compare "$@"

# SQL Server ↔ PostgreSQL next to PostgreSQL ↔ PostgreSQL (benches/mssql.rs): against
# TANDEM_TEST_MSSQL_URL, else Babelfish from $TANDEM_BABELFISH_HOME or ../shared/babelfish,
# else skipped with a line saying so.
if [[ -z "${TANDEM_TEST_MSSQL_URL:-}" ]]; then
    bf="${TANDEM_BABELFISH_HOME:-../shared/babelfish}"
    if [[ -f "$bf/start.sh" ]]; then
        url="$(bash "$bf/start.sh" </dev/null | tail -n 1)"
        [[ "$url" == server=* ]] && export TANDEM_TEST_MSSQL_URL="$url"
    fi
fi
if [[ -n "${TANDEM_TEST_MSSQL_URL:-}" ]]; then
    cargo bench --bench mssql
else
    echo "bench: no SQL Server (TANDEM_TEST_MSSQL_URL unset, no Babelfish): SQL Server ↔ PostgreSQL skipped"
fi

#!/usr/bin/env bash
# The demo on a fresh machine: installs the PostgreSQL server if missing, then runs
# `tandem demo` (two throwaway clusters, sample schemas, live sync; Ctrl-C cleans up).
#
# `bash deploy/demo.sh --a mssql`: A on SQL Server instead (the demo creates a database of its
# own there and drops it at the end). The server is --mssql-url or $TANDEM_DEMO_MSSQL_URL (an
# ADO.NET connection string); with neither, Babelfish (a T-SQL engine) is started from
# $TANDEM_BABELFISH_HOME or ../shared/babelfish (its start.sh prints the string on its last
# line).
set -euo pipefail
cd "$(dirname "$0")/.."

a=postgres
url_given=
prev=
for arg in "$@"; do
    case "$arg" in
        --a=*) a="${arg#--a=}" ;;
        --mssql-url | --mssql-url=*) url_given=1 ;;
    esac
    [[ "$prev" == "--a" ]] && a="$arg"
    prev="$arg"
done

bash deploy/install-postgres.sh

if [[ "$a" == mssql && -z "$url_given" && -z "${TANDEM_DEMO_MSSQL_URL:-}" ]]; then
    bf="${TANDEM_BABELFISH_HOME:-../shared/babelfish}"
    if [[ ! -f "$bf/start.sh" ]]; then
        cat >&2 <<EOF
demo.sh --a mssql: no SQL Server to put A on. Either
  - give one: --mssql-url 'server=tcp:HOST,1433;user=USER;password=PASSWORD;TrustServerCertificate=true'
    (or export TANDEM_DEMO_MSSQL_URL with that string); the user must be allowed to CREATE DATABASE;
  - or point TANDEM_BABELFISH_HOME at a Babelfish directory with start.sh (none at $bf);
  - or start SQL Server 2022 in Docker (docker compose -f deploy/mssql/docker-compose.yml up -d mssql)
    and give --mssql-url 'server=tcp:127.0.0.1,14330;user=sa;password=...;TrustServerCertificate=true'
    with the SA password set in deploy/mssql/docker-compose.yml.
EOF
        exit 2
    fi
    echo "==> starting Babelfish from $bf for A"
    url="$(bash "$bf/start.sh" </dev/null | tail -n 1)"
    if [[ "$url" != server=* ]]; then
        echo "Babelfish did not start: its start.sh did not print a connection string (bash $bf/start.sh says why)" >&2
        exit 1
    fi
    export TANDEM_DEMO_MSSQL_URL="$url"
fi
exec cargo run --release --quiet -- demo "$@"

#!/usr/bin/env bash
# The tests on a fresh machine: installs the PostgreSQL server if missing, starts Babelfish
# (a real T-SQL engine) for the SQL Server suites when it is available, then runs the whole
# test suite against throwaway clusters and databases the tests make themselves.
#
# SQL Server: with TANDEM_TEST_MSSQL_URL set, the SQL Server suites run against that server.
# Without it, Babelfish is started from $TANDEM_BABELFISH_HOME or ../shared/babelfish (its
# start.sh prints the connection string on its last line). With neither, the SQL Server
# suites are reported as ignored, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-postgres.sh
if [[ -z "${TANDEM_TEST_MSSQL_URL:-}" ]]; then
    bf="${TANDEM_BABELFISH_HOME:-../shared/babelfish}"
    if [[ -f "$bf/start.sh" ]]; then
        echo "==> starting Babelfish from $bf for the SQL Server suites"
        url="$(bash "$bf/start.sh" </dev/null | tail -n 1)"
        if [[ "$url" != server=* ]]; then
            echo "Babelfish did not start (its start.sh printed: $url)" >&2
            exit 1
        fi
        export TANDEM_TEST_MSSQL_URL="$url"
    else
        echo "==> no SQL Server: TANDEM_TEST_MSSQL_URL unset and no Babelfish at $bf; the SQL Server suites will be reported as ignored"
    fi
fi
exec cargo test --all-targets "$@"

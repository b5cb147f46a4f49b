#!/usr/bin/env bash
# The tests on a fresh machine: installs the PostgreSQL server if missing, starts Babelfish
# (a real T-SQL engine) for the SQL Server suites when it is available, then runs the whole
# test suite against throwaway clusters and databases the tests make themselves.
#
# SQL Server: with TANDEM_TEST_MSSQL_URL set, the SQL Server suites run against that server.
# Without it, Babelfish is started from $TANDEM_BABELFISH_HOME or ../shared/babelfish (its
# start.sh prints the connection string on its last line). With neither, the SQL Server
# suites are reported as ignored, never as passed. The status page's browser test needs
# chromedriver (TANDEM_TEST_CHROMEDRIVER, or found here), else it is reported as ignored.
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
# The status page's browser test: chromedriver from $TANDEM_TEST_CHROMEDRIVER, else found on
# this machine (deploy/install-chromium.sh installs it; .ci/run does); else it is ignored.
if [[ -z "${TANDEM_TEST_CHROMEDRIVER:-}" ]]; then
    for d in "$(command -v chromedriver 2>/dev/null || true)" /usr/bin/chromedriver; do
        if [[ -n "$d" && -x "$d" ]]; then
            export TANDEM_TEST_CHROMEDRIVER="$d"
            break
        fi
    done
fi
if [[ -z "${TANDEM_TEST_CHROMEDRIVER:-}" ]]; then
    echo "==> no chromedriver: the status page's browser test will be reported as ignored (bash deploy/install-chromium.sh installs it)"
fi
exec cargo test --all-targets "$@"

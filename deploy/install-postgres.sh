#!/usr/bin/env bash
# Makes sure the PostgreSQL server programs (initdb, pg_ctl, postgres, psql) that tandem's
# throwaway clusters need (`tandem demo`, the tests) are installed, and that the `postgres`
# user exists (the server refuses to run as root, so root runs it as `postgres`).
#
# Idempotent: when the programs are already there it only says where. Otherwise it installs
# Debian/Ubuntu's `postgresql` package, without creating or starting the package's default
# cluster (tandem starts its own clusters). Uses sudo when not root.
set -euo pipefail

# Same search as src/cluster.rs: `pg_config --bindir` if it has initdb and pg_ctl, else the
# newest /usr/lib/postgresql/*/bin that has them.
find_bindir() {
    local dir best=""
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            echo "$dir"
            return 0
        fi
    fi
    while IFS= read -r dir; do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            best="$dir"
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
    if [[ -n "$best" ]]; then
        echo "$best"
        return 0
    fi
    return 1
}

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        SUDO=(false)
    fi
fi

as_root() {
    if [[ "${SUDO[*]}" == false ]]; then
        echo "install-postgres: need root for: $*; run this script as root or install sudo" >&2
        exit 1
    fi
    "${SUDO[@]}" "$@"
}

ensure_postgres_user() {
    if id -u postgres >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 && "${SUDO[*]}" == false ]]; then
        echo "install-postgres: warning: no 'postgres' user (only needed when running as root)" >&2
        return 0
    fi
    echo "install-postgres: creating the 'postgres' system user"
    as_root useradd --system --user-group --create-home --home-dir /var/lib/postgresql \
        --shell /bin/bash --comment "PostgreSQL administrator" postgres
}

if bindir="$(find_bindir)"; then
    echo "install-postgres: PostgreSQL server binaries found in $bindir"
    ensure_postgres_user
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres: PostgreSQL server binaries (initdb, pg_ctl) not found and apt-get" \
        "is not available; install the PostgreSQL server with your package manager" >&2
    exit 1
fi

echo "install-postgres: PostgreSQL server binaries not found; installing package 'postgresql'"
# Only the programs are needed: skip the package's default cluster (and its server on 5432).
as_root mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" |
    as_root tee /etc/postgresql-common/createcluster.d/tandem-no-main-cluster.conf >/dev/null
as_root env DEBIAN_FRONTEND=noninteractive apt-get update
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql

if ! bindir="$(find_bindir)"; then
    echo "install-postgres: package 'postgresql' installed, but initdb and pg_ctl are still" \
        "not found (looked at pg_config --bindir and /usr/lib/postgresql/*/bin)" >&2
    exit 1
fi
ensure_postgres_user
echo "install-postgres: PostgreSQL server binaries installed in $bindir"

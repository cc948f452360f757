#!/usr/bin/env bash
# Start a local PostgreSQL cluster (Debian's postgresql-common tooling) and
# export DURON_TEST_POSTGRES_DSN for the PostgreSQL storage tests.
#
#   source .ci/postgres.sh          # as .ci/run does: exports the variable
#   bash .ci/postgres.sh            # alone: prints an `export ...` line, so
#   eval "$(bash .ci/postgres.sh)"  # sets it in the calling shell
#
# Idempotent: starting a running cluster, re-creating the role or the
# database are all skipped. When no PostgreSQL server is installed it says the
# PostgreSQL tests will skip and succeeds. A server that is installed but
# cannot be started or reached is an error, so CI never skips them silently.

_duron_pg_log() { printf 'postgres: %s\n' "$*" >&2; }

# Run a command as the postgres superuser, from a directory it can read.
_duron_pg_as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        (cd / && "$@")
    elif [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    elif sudo -n true 2>/dev/null; then
        (cd / && sudo -n -u postgres -- "$@")
    else
        return 3
    fi
}

_duron_pg_can_connect() {
    PGCONNECT_TIMEOUT=5 psql "$1" -X -A -t -q -c 'SELECT 1' >/dev/null 2>&1
}

_duron_pg_setup() {
    local user=duron_test password=duron_test db=duron_test
    local line ver name port status dsn hba

    if [[ -n "${DURON_TEST_POSTGRES_DSN:-}" ]]; then
        _duron_pg_log "using the DURON_TEST_POSTGRES_DSN already set"
        return 0
    fi

    if ! command -v pg_lsclusters >/dev/null 2>&1 \
        || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        _duron_pg_log "PostgreSQL server is not installed: the PostgreSQL tests will skip" \
            "(apt-get install postgresql to run them)"
        return 0
    fi

    # Pick a cluster: a running one first, else the first listed; create one
    # if the server is installed without any.
    line="$(pg_lsclusters --no-header | awk '$4 ~ /^online/ { print; exit }')"
    if [[ -z "$line" ]]; then
        line="$(pg_lsclusters --no-header | head -n 1)"
    fi
    if [[ -z "$line" ]]; then
        ver="$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 \
            | awk -F/ '{ print $5 }')"
        _duron_pg_log "no cluster exists: creating $ver/main"
        pg_createcluster "$ver" main >/dev/null
        line="$(pg_lsclusters --no-header | head -n 1)"
    fi
    read -r ver name port status _ <<<"$line"

    if [[ "$status" != online* ]]; then
        _duron_pg_log "starting cluster $ver/$name on port $port"
        pg_ctlcluster "$ver" "$name" start
    else
        _duron_pg_log "cluster $ver/$name is already running on port $port"
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        pg_isready -q -p "$port" && break
        sleep 0.5
    done
    if ! pg_isready -q -p "$port"; then
        _duron_pg_log "cluster $ver/$name did not become ready on port $port"
        return 1
    fi

    # Role and database, created once; the password is reset every run so an
    # old role with another password still works.
    local rc=0
    _duron_pg_as_postgres psql -X -q -p "$port" -d postgres -v ON_ERROR_STOP=1 <<SQL || rc=$?
SELECT 'CREATE ROLE $user'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user')\gexec
ALTER ROLE $user WITH LOGIN CREATEDB PASSWORD '$password';
SELECT 'CREATE DATABASE $db OWNER $user'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')\gexec
SQL
    if [[ $rc -eq 3 ]]; then
        _duron_pg_log "cannot act as the postgres user (not root, no sudo):" \
            "the PostgreSQL tests will skip"
        return 0
    elif [[ $rc -ne 0 ]]; then
        _duron_pg_log "creating role/database $user failed (psql exit $rc)"
        return 1
    fi

    dsn="postgresql://$user:$password@127.0.0.1:$port/$db"
    if ! _duron_pg_can_connect "$dsn"; then
        # Debian's default pg_hba.conf allows password logins on 127.0.0.1;
        # for a cluster set up otherwise, allow this one role and reload.
        hba="$(_duron_pg_as_postgres psql -X -A -t -q -p "$port" -d postgres \
            -c 'SHOW hba_file')"
        if ! grep -q "^host[[:space:]]\+${db}[[:space:]]\+${user}[[:space:]]" "$hba"; then
            _duron_pg_log "allowing $user on 127.0.0.1 in $hba"
            sed -i "1i host $db $user 127.0.0.1/32 scram-sha-256  # added by duron .ci/postgres.sh" "$hba"
            _duron_pg_as_postgres psql -X -q -p "$port" -d postgres \
                -c 'SELECT pg_reload_conf()' >/dev/null
            sleep 1
        fi
        if ! _duron_pg_can_connect "$dsn"; then
            _duron_pg_log "cannot connect with $dsn"
            PGCONNECT_TIMEOUT=5 psql "$dsn" -X -c 'SELECT 1' >&2 || true
            return 1
        fi
    fi

    export DURON_TEST_POSTGRES_DSN="$dsn"
    _duron_pg_log "DURON_TEST_POSTGRES_DSN=$dsn"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    _duron_pg_setup
    if [[ -n "${DURON_TEST_POSTGRES_DSN:-}" ]]; then
        printf 'export DURON_TEST_POSTGRES_DSN=%q\n' "$DURON_TEST_POSTGRES_DSN"
    fi
else
    _duron_pg_setup
fi

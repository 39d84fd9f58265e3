#!/usr/bin/env bash
# A PostgreSQL server for arbiter's tests and for trying the PostgreSQL store
# by hand: installs Debian's packages if missing (as root), initialises a
# cluster in $ARBITER_PG_DIR, starts it on 127.0.0.1 (a free port, no Unix
# socket reachable from outside the directory), and creates two roles:
#
#   arbiter_owner  owns the database and the tables, runs the migrations
#                  (CREATEDB too, so tests can make a database each);
#   arbiter_app    what the server connects as: not an owner, not a
#                  superuser, NOBYPASSRLS, so row-level security holds for it.
#
# Idempotent and safe to run concurrently (a lock file): a running cluster is
# left as it is. Prints the URLs as KEY=VALUE lines on stdout and writes them
# to $ARBITER_PG_DIR/env (source it, then `arbiter serve`).
#
#   tools/pg/setup.sh          set up / start, print the URLs
#   tools/pg/setup.sh stop     stop the cluster
#   tools/pg/setup.sh kill     stop it at once, as a crash would (pg_ctl -m immediate)
#   tools/pg/setup.sh destroy  stop it and delete the directory
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
# One cluster per checkout (worktrees do not share one).
tag="$(printf '%s' "$repo" | cksum | cut -d' ' -f1)"
dir="${ARBITER_PG_DIR:-${TMPDIR:-/tmp}/arbiter-pg-$(id -u)-$tag}"
action="${1:-start}"

log() { echo "pg-setup: $*" >&2; }

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

if ! bindir="$(find_bin)"; then
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL's server is not installed; as root: apt-get install -y postgresql"
        exit 1
    fi
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # (The package's own cluster, if it makes one, is not used.)
    apt-get install -y -qq postgresql >&2
    bindir="$(find_bin)"
fi

# initdb refuses to run as root: the cluster belongs to `postgres` then.
if [ "$(id -u)" = 0 ]; then
    run() { runuser -u postgres -- "$@"; }
    superuser=postgres
else
    run() { "$@"; }
    superuser="$(id -un)"
fi

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9

data="$dir/data"
sock="$dir/sock"

case "$action" in
stop)
    [ -d "$data" ] && run "$bindir/pg_ctl" -D "$data" -m fast stop >&2 || true
    exit 0
    ;;
kill)
    [ -d "$data" ] && run "$bindir/pg_ctl" -D "$data" -m immediate stop >&2 || true
    exit 0
    ;;
destroy)
    [ -d "$data" ] && run "$bindir/pg_ctl" -D "$data" -m immediate stop >&2 || true
    rm -rf "$dir"
    exit 0
    ;;
start) ;;
*)
    log "unknown action $action (start, stop, kill, destroy)"
    exit 2
    ;;
esac

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a cluster in $data"
    rm -rf "$dir.new"
    mkdir -p "$dir.new/data" "$dir.new/sock"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir.new"
    chmod 700 "$dir.new"
    run "$bindir/initdb" -D "$dir.new/data" -U "$superuser" --auth-local=peer \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >&2
    port="$(free_port)"
    cat >>"$dir.new/data/postgresql.conf" <<EOF
# tools/pg/setup.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
EOF
    # Passwords for the two roles, kept beside the cluster (mode 600).
    owner_pw="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    app_pw="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    printf '%s\n%s\n' "$owner_pw" "$app_pw" >"$dir.new/passwords"
    chmod 600 "$dir.new/passwords"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
    fresh=1
else
    fresh=0
fi

port="$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$data/postgresql.conf" | tail -1)"
if ! run "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        port="$(free_port)"
        log "port taken; moving to $port"
        echo "port = $port" >>"$data/postgresql.conf"
    fi
    run "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >&2 9>&-
fi

psql_su() { run "$bindir/psql" -h "$sock" -p "$port" -U "$superuser" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

{ read -r owner_pw; read -r app_pw; } <"$dir/passwords"
if [ "$fresh" = 1 ] || [ -z "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = 'arbiter_app'")" ]; then
    log "creating the roles and the database"
    psql_su <<EOF
CREATE ROLE arbiter_owner LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD '$owner_pw';
CREATE ROLE arbiter_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '$app_pw';
CREATE DATABASE arbiter OWNER arbiter_owner;
EOF
    psql_su -d arbiter -c "REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT ALL ON SCHEMA public TO arbiter_owner; GRANT USAGE ON SCHEMA public TO arbiter_app;"
fi

# Tests make a database each, named arbiter_t_<unix seconds>_…; drop those
# older than an hour (a test run is long over by then).
for old in $(psql_su -c "SELECT datname FROM pg_database WHERE datname ~ '^arbiter_(t|it)_[0-9]+_' \
        AND split_part(datname, '_', 3)::bigint < extract(epoch FROM now()) - 3600"); do
    psql_su -c "DROP DATABASE IF EXISTS \"$old\" WITH (FORCE)" || true
done

base="127.0.0.1:$port"
{
    echo "ARBITER_DATABASE_URL=postgres://arbiter_app:$app_pw@$base/arbiter"
    echo "ARBITER_DATABASE_OWNER_URL=postgres://arbiter_owner:$owner_pw@$base/arbiter"
    echo "ARBITER_PG_DIR=$dir"
} >"$dir/env.new"
chmod 600 "$dir/env.new"
mv "$dir/env.new" "$dir/env"
cat "$dir/env"

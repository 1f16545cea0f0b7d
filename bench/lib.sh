# Shared by the benchmark scripts: throwaway PostgreSQL clusters on free loopback ports, stopped
# and removed on exit. Never touches a server it did not start. Source it after setting
# BENCH_DIR; then `start_cluster NAME PORT` and `trap stop_all EXIT`.

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PATH="$PGBIN:$PATH"
export PGOPTIONS="-c client_min_messages=warning"

need() { command -v "$1" >/dev/null 2>&1; }
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A fresh, empty BENCH_DIR the cluster user can write to.
prepare_bench_dir() {
    rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$BENCH_DIR"; fi
}

# start_cluster NAME PORT [extra -c settings…]
start_cluster() {
    local d=$BENCH_DIR/$1 port=$2; shift 2
    as_pg initdb -D "$d" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    as_pg pg_ctl -D "$d" -l "$d.log" -w -t 120 -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$d \
        -c wal_level=logical -c max_wal_senders=20 -c max_replication_slots=20 -c shared_buffers=${SHARED_BUFFERS:-1GB} \
        -c maintenance_work_mem=256MB -c max_wal_size=8GB -c checkpoint_timeout=30min \
        -c synchronous_commit=off -c fsync=${FSYNC:-on} -c max_connections=200 $*" start >/dev/null
    STARTED_CLUSTERS+=("$d")
}
STARTED_CLUSTERS=()

stop_all() {
    if [[ -n ${KEEP:-} ]]; then
        echo "# KEEP set: clusters left running in $BENCH_DIR (stop with pg_ctl -D DIR stop)"
        return
    fi
    local d
    for d in "${STARTED_CLUSTERS[@]}"; do
        [[ -f $d/postmaster.pid ]] && as_pg pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$BENCH_DIR"
}

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }

# A Python with psycopg (for the samplers and clients), in a venv of its own; sets PY.
ensure_psycopg() {
    local venv=${VENV:-/tmp/cutover-bench-venv}
    [[ -x $venv/bin/python ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "psycopg[binary]"; }
    PY=$venv/bin/python
}

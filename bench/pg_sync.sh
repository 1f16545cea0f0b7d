#!/usr/bin/env bash
# PostgreSQL change capture benchmark: `cutover sync` vs PostgreSQL's own logical replication
# (CREATE SUBSCRIPTION), in one run, on the same two throwaway clusters, the same school-shaped
# dataset and the same pgbench workload (inserts, updates of JSONB and numeric columns, deletes).
#
#   bench/pg_sync.sh                    # 60 s of live workload, 30 s of backlog
#   SECONDS_LIVE=20 SECONDS_BACKLOG=10 ROWS=50000 bench/pg_sync.sh   # a quick run
#
# For each replicator:
#   live     the workload runs for SECONDS_LIVE at RATE transactions/s while the replicator
#            follows; lag is sampled by bench/lag_sampler.py (heartbeat written on the source every
#            100 ms, seen on the target: the time in between; and WAL bytes behind every 100 ms);
#            then the time to drain after the workload stops (a marker row reaching the target).
#   backlog  the replicator is stopped while the workload runs SECONDS_BACKLOG unthrottled; then
#            it is started and the time to apply the whole backlog is its apply rate.
# Knobs: ROWS (students; sessions and annotations are 2.5x), RATE (1000), CLIENTS (4),
# SECONDS_LIVE (60), SECONDS_BACKLOG (30), BENCH_DIR, CUTOVER_BIN, KEEP. Writes the table to
# bench/results/pg-sync-<date>.md. Needs root or the postgres user; installs psycopg into a venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-100000}
RATE=${RATE:-1000}
CLIENTS=${CLIENTS:-4}
SECONDS_LIVE=${SECONDS_LIVE:-60}
SECONDS_BACKLOG=${SECONDS_BACKLOG:-30}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-sync}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet
ensure_psycopg

prepare_bench_dir
SRC_PORT=$(free_port); DST_PORT=$(free_port)
trap 'pkill -INT -f "cutover sync --source $S" 2>/dev/null || true; stop_all' EXIT
# Durable commits on the source, as in production (asynchronous ones would add up to
# wal_writer_delay of lag for every replicator alike).
start_cluster src "$SRC_PORT" -c synchronous_commit=on; start_cluster dst "$DST_PORT"
S="postgres://postgres@127.0.0.1:$SRC_PORT"; T="postgres://postgres@127.0.0.1:$DST_PORT"
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$1" -c "$2"; }

echo "# generating the school dataset ($ROWS students)…"
q "$S/postgres" "CREATE DATABASE bench"
psql -X -q -v ON_ERROR_STOP=1 "$S/bench" <<SQL
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL, profile jsonb);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL, score numeric(6,2), answers jsonb NOT NULL, updated_at timestamptz);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE public.bench_heartbeat (id int PRIMARY KEY, at float8);
CREATE TABLE public.bench_marker (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO public.bench_heartbeat VALUES (1, 0);
INSERT INTO public.bench_marker VALUES (1, 0);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i,
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'goals', jsonb_build_array(md5(i::text)), 'bio', repeat('b', 120))
  FROM generate_series(1, $ROWS) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, 1 + i % $ROWS, (i % 10001) / 100.0,
    (SELECT jsonb_build_object('v', 2, 'answers', jsonb_agg(jsonb_build_object('q', q, 'a', md5(i::text || q::text), 'ok', (i + q) % 2 = 0))) FROM generate_series(1, 9) q),
    now()
  FROM generate_series(1, ($ROWS * 5 / 2)::int) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % ($ROWS * 5 / 2)::int))::uuid,
    repeat(md5(i::text), 1 + i % 12), now()
  FROM generate_series(1, ($ROWS * 5 / 2)::int) i;
VACUUM (FREEZE, ANALYZE);
SQL
SESSIONS=$((ROWS * 5 / 2))
cat > "$BENCH_DIR/workload.sql" <<SQL
\set s random(1, $SESSIONS)
\set st random(1, $ROWS)
\set a random(1, $SESSIONS)
BEGIN;
UPDATE public.sessions SET score = (random() * 100)::numeric(6,2), answers = jsonb_set(answers, '{v}', to_jsonb(:s)), updated_at = now() WHERE id = md5('s' || :s)::uuid;
INSERT INTO public.annotations (session_id, body, created_at) VALUES (md5('s' || :s)::uuid, repeat('note ', 40), now());
UPDATE school.students SET profile = profile || jsonb_build_object('seen', :s) WHERE id = :st;
DELETE FROM public.annotations WHERE id = :a;
COMMIT;
SQL

# Targets: one database per replicator on the target cluster.
q "$T/postgres" "CREATE DATABASE t_cutover"
q "$T/postgres" "CREATE DATABASE t_native"
echo "# initial copy: cutover sync --stop-when-caught-up"
t0=$(now)
"$CUTOVER_BIN" sync --source "$S/bench" --target "$T/t_cutover" --stop-when-caught-up >"$BENCH_DIR/cutover-initial.log" 2>&1
echo "#   $(tail -1 "$BENCH_DIR/cutover-initial.log") ($(python3 -c "print(round($(now) - $t0, 1))")s)"
echo "# initial copy: CREATE SUBSCRIPTION"
pg_dump --schema-only "$S/bench" | psql -X -q -v ON_ERROR_STOP=1 "$T/t_native" >/dev/null
q "$S/bench" "CREATE PUBLICATION native_pub FOR TABLE school.students, public.sessions, public.annotations, public.bench_heartbeat, public.bench_marker"
t0=$(now)
q "$T/t_native" "CREATE SUBSCRIPTION native_sub CONNECTION '$S/bench' PUBLICATION native_pub"
until [[ $(q "$T/t_native" "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == 0 ]]; do sleep 0.5; done
echo "#   tables ready ($(python3 -c "print(round($(now) - $t0, 1))")s)"

CUTOVER_APPLIED="SELECT pg_lsn(substr(position, 5)) - '0/0' FROM _cutover.replication"
NATIVE_APPLIED="SELECT max(remote_lsn) - '0/0' FROM pg_replication_origin_status"
CUTOVER_PID=""
start_cutover() {
    "$CUTOVER_BIN" sync --source "$S/bench" --target "$T/t_cutover" >>"$BENCH_DIR/cutover.log" 2>&1 &
    CUTOVER_PID=$!
}
stop_cutover() { kill -INT "$CUTOVER_PID" 2>/dev/null || true; wait "$CUTOVER_PID" 2>/dev/null || true; }
start_native() { q "$T/t_native" "ALTER SUBSCRIPTION native_sub ENABLE"; }
stop_native() {
    q "$T/t_native" "ALTER SUBSCRIPTION native_sub DISABLE"
    until [[ $(q "$S/bench" "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'native_sub' AND active") == 0 ]]; do sleep 0.2; done
}
# Waits until the marker's current value is on the target database $1; prints the seconds.
MARK=0
wait_marker() {
    local t0; t0=$(now)
    until [[ $(q "$T/$1" "SELECT n FROM bench_marker") == "$MARK" ]]; do sleep 0.02; done
    python3 -c "print(round($(now) - $t0, 2))"
}
bump_marker() { MARK=$((MARK + 1)); q "$S/bench" "UPDATE bench_marker SET n = $MARK"; }
pgbench_run() { # seconds [extra args]
    local secs=$1; shift
    pgbench -n -f "$BENCH_DIR/workload.sql" -c "$CLIENTS" -j 2 -T "$secs" "$@" "$S/bench" 2>&1 | tee -a "$BENCH_DIR/pgbench.log"
}
percentiles() { # file → "p50 p99 max" (or n/a)
    python3 - "$1" <<'PY'
import sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v:
    print("n/a n/a n/a")
else:
    pick = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
    print(pick(0.5), pick(0.99), v[-1])
PY
}

declare -A R
live() { # name db applied_sql start stop
    local name=$1 db=$2 applied=$3
    echo "# live: $name, ${SECONDS_LIVE}s at $RATE tx/s"
    $4
    bump_marker; wait_marker "$db" >/dev/null
    rm -f "$BENCH_DIR/stop"
    "$PY" "$ROOT/bench/lag_sampler.py" "$S/bench" "$T/$db" "$applied" "$BENCH_DIR/$name" "$BENCH_DIR/stop" &
    local sampler=$!
    local out tps
    out=$(pgbench_run "$SECONDS_LIVE" -R "$RATE")
    tps=$(grep -o 'tps = [0-9.]*' <<<"$out" | awk '{print $3}')
    bump_marker
    R[$name.drain]=$(wait_marker "$db")
    sleep 0.3; touch "$BENCH_DIR/stop"; wait "$sampler"
    read -r p50 p99 max < <(percentiles "$BENCH_DIR/$name.lag")
    read -r b50 b99 bmax < <(percentiles "$BENCH_DIR/$name.bytes")
    R[$name.tps]=$tps; R[$name.p50]=$p50; R[$name.p99]=$p99; R[$name.max]=$max
    R[$name.b99]=$b99; R[$name.bmax]=$bmax
    echo "#   workload ${tps} tps; lag p50 ${p50}s p99 ${p99}s max ${max}s; WAL behind p99 ${b99} B; drained ${R[$name.drain]}s after the workload stopped"
    $5
}

# Both replicators start from the same state for each phase: caught up, then stopped.
stop_native
live cutover t_cutover "$CUTOVER_APPLIED" start_cutover stop_cutover
start_native; wait_marker t_native >/dev/null
live native t_native "$NATIVE_APPLIED" : stop_native
start_cutover; wait_marker t_cutover >/dev/null; stop_cutover

echo "# backlog: both stopped, ${SECONDS_BACKLOG}s of unthrottled workload"
out=$(pgbench_run "$SECONDS_BACKLOG")
backlog_tx=$(grep -o 'actually processed: [0-9]*' <<<"$out" | awk '{print $3}')
backlog_tps=$(grep -o 'tps = [0-9.]*' <<<"$out" | awk '{print $3}')
bump_marker
start_cutover; R[cutover.backlog]=$(wait_marker t_cutover); stop_cutover
start_native; R[native.backlog]=$(wait_marker t_native)
for n in cutover native; do
    R[$n.rate]=$(python3 -c "print(round($backlog_tx / ${R[$n.backlog]}))")
done
echo "#   $backlog_tx transactions ($backlog_tps tx/s); cutover applied them in ${R[cutover.backlog]}s, native in ${R[native.backlog]}s"

# Both targets equal the source, row by row.
check() {
    local t k
    for tk in school.students:id public.sessions:id public.annotations:id; do
        t=${tk%%:*}; k=${tk##*:}
        psql -X -At "$1" -c "SELECT '$t', count(*), md5(string_agg(md5(x::text), '' ORDER BY x.$k)) FROM $t x"
    done
}
reference=$(check "$S/bench")
for n in cutover native; do
    if [[ $(check "$T/t_$n") == "$reference" ]]; then R[$n.equal]=identical; else R[$n.equal]=MISMATCH; fi
done
stop_native

ratio() { python3 -c "print(round(float('$1') / float('$2'), 2))"; }
{
    echo "## PostgreSQL change capture, $(date -u +%F), $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), $ROWS students / $SESSIONS sessions / $SESSIONS annotations, $CLIENTS pgbench clients"
    echo
    echo "Live: ${SECONDS_LIVE}s of workload at $RATE tx/s (4 row changes each). Lag = time from a heartbeat written on the source to its arrival on the target (every 100 ms). Backlog: ${SECONDS_BACKLOG}s of unthrottled workload ($backlog_tx transactions at $backlog_tps tx/s) applied from a stopped replicator."
    echo
    echo "| replicator | live tps | lag p50 s | lag p99 s | lag max s | WAL behind p99 | drain after stop s | backlog applied in s | apply rate tx/s | apply rate ÷ workload rate | result |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for n in cutover native; do
        echo "| $n | ${R[$n.tps]} | ${R[$n.p50]} | ${R[$n.p99]} | ${R[$n.max]} | ${R[$n.b99]} B | ${R[$n.drain]} | ${R[$n.backlog]} | ${R[$n.rate]} | $(ratio "${R[$n.rate]}" "$backlog_tps") | ${R[$n.equal]} |"
    done
    echo
    echo "- lag p99, cutover ÷ native: $(ratio "${R[cutover.p99]}" "${R[native.p99]}")"
    echo "- backlog apply rate, cutover ÷ native: $(ratio "${R[cutover.rate]}" "${R[native.rate]}")"
} | tee "$ROOT/bench/results/pg-sync-$(date -u +%Y%m%dT%H%M%S).md"

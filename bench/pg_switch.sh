#!/usr/bin/env bash
# Switch benchmark: an application writes as fast as it can (THREADS writers, one small write
# transaction each: an update and an insert) while `cutover sync` follows; then `cutover switch`
# moves it to the target (--on-switch rewrites the file the application reads its primary
# from). Reports the write pause the application saw (the longest gap between two commits),
# next to cutover's own write_pause_ms, and checks that every committed write is on the target.
#
#   bench/pg_switch.sh                  # ROUNDS=3 switches (and rollbacks in between)
#
# Knobs: ROWS (50000), THREADS (4), WARMUP (5 s before each switch), ROUNDS (3), BENCH_DIR,
# CUTOVER_BIN, KEEP, CLIENT_MODE (pool or eager), RETRY_MS, RETRY_MAX_MS (see switch_client.py).
# Writes bench/results/pg-switch-<date>.md (the table) and pg-switch-<date>-timeline.md (per
# round: cutover's steps and every writer's commits, failed writes, connects and re-reads of
# the primary file on one clock, from switch_timeline.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-50000}
THREADS=${THREADS:-4}
WARMUP=${WARMUP:-5}
ROUNDS=${ROUNDS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-switch}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet
STAMP=$(date -u +%Y%m%dT%H%M%S)
TIMELINE=$ROOT/bench/results/pg-switch-$STAMP-timeline.md
ensure_psycopg

prepare_bench_dir
SRC_PORT=$(free_port); DST_PORT=$(free_port)
SYNC_PID=
trap '[[ -n $SYNC_PID ]] && kill -INT "$SYNC_PID" 2>/dev/null; stop_all' EXIT
# Durable commits on both sides, as in production.
start_cluster src "$SRC_PORT" -c synchronous_commit=on
start_cluster dst "$DST_PORT" -c synchronous_commit=on
S="postgres://postgres@127.0.0.1:$SRC_PORT/bench"; T="postgres://postgres@127.0.0.1:$DST_PORT/bench"
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$1" -c "$2"; }

q "${S%/bench}/postgres" "CREATE DATABASE bench"
q "${T%/bench}/postgres" "CREATE DATABASE bench"
psql -X -q -v ON_ERROR_STOP=1 "$S" <<SQL
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL, score numeric(6,2), answers jsonb NOT NULL, updated_at timestamptz);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, i, (i % 10001) / 100.0, jsonb_build_object('i', i), now() FROM generate_series(1, $ROWS) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % $ROWS))::uuid, 'a' || i, now() FROM generate_series(1, $ROWS) i;
VACUUM ANALYZE;
SQL
"$CUTOVER_BIN" sync --source "$S" --target "$T" --stop-when-caught-up >"$BENCH_DIR/initial.log" 2>&1

RESULTS=()
round() { # n command primary-before primary-after
    local n=$1 cmd=$2 before=$3 after=$4
    echo "$before" > "$BENCH_DIR/primary"
    rm -f "$BENCH_DIR/stop"
    "$CUTOVER_BIN" sync --source "$S" --target "$T" >>"$BENCH_DIR/sync.log" 2>&1 &
    local sync_pid=$!
    SYNC_PID=$sync_pid
    "$PY" "$ROOT/bench/switch_client.py" "$BENCH_DIR/primary" "$BENCH_DIR/stop" "$BENCH_DIR/client$n" "$THREADS" &
    local client=$!
    sleep "$WARMUP"
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    local out
    out=$("$CUTOVER_BIN" "$cmd" --source "$S" --target "$T" --json \
        --on-switch "echo '$after' > '$BENCH_DIR/primary'" 2>"$BENCH_DIR/$cmd$n.err") || {
        echo "# $cmd failed:"; cat "$BENCH_DIR/$cmd$n.err"; echo "$out"; exit 1; }
    echo "$out" > "$BENCH_DIR/$cmd$n.json"
    sleep 2
    touch "$BENCH_DIR/stop"; wait "$client"
    # The sync that handed over follows the other way now; this round is done with it.
    kill -INT "$sync_pid" 2>/dev/null || true
    wait "$sync_pid" 2>/dev/null || true
    SYNC_PID=
    local timeline
    timeline=$("$PY" "$ROOT/bench/switch_timeline.py" "round $n: $cmd (load average $load)" "$BENCH_DIR/client$n" \
        "$BENCH_DIR/$cmd$n.json" "$before" "$after")
    grep -v '^SUMMARY ' <<<"$timeline" >>"$TIMELINE"
    local summary
    summary=$(grep '^SUMMARY ' <<<"$timeline" | cut -d' ' -f2-)
    # Every write the application committed is on the new primary.
    local line
    line=$("$PY" - "$BENCH_DIR/client$n.json" "$out" "$cmd" "$after" "$summary" "$load" <<'PY'
import json, sys
import psycopg
client = json.load(open(sys.argv[1])); report = json.loads(sys.argv[2]); gap = json.loads(sys.argv[5])
steps = {s["step"]: s["ms"] for s in report["steps"]}
with psycopg.connect(sys.argv[4]) as c:
    missing = c.execute(
        "SELECT count(*) FROM unnest(%s::bigint[]) i WHERE NOT EXISTS (SELECT 1 FROM public.annotations WHERE body = 'w' || i)",
        (client["ids"],),
    ).fetchone()[0]
sys.argv[4] = str(missing)
print(f"| {sys.argv[3]} | {client['rate']} | {client['commits']} | {report['write_pause_ms']} | {report.get('writes_refused_ms', '')} | {client['longest_gap_ms']} "
      + (f"| {gap['before_fence_ms']} + {gap['fence_to_open_ms']} + {gap['open_to_first_commit_ms']} " if gap['gap_ms'] is not None else "| no commit on the new primary ")
      + f"| {report['drain_ms']} | {steps.get('fence', '')} | {steps.get('verify', '')} | {report['verified_rows']} | {sys.argv[4]} | {sys.argv[6]} |")
PY
)
    echo "#   $line"
    RESULTS+=("$line")
}

for ((i = 1; i <= ROUNDS; i++)); do
    echo "# round $i: switch"
    round "s$i" switch "$S" "$T"
    echo "# round $i: rollback"
    round "r$i" rollback "$T" "$S"
done

{
    echo "## Switch under load, $(date -u +%F), $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), $THREADS writers (client mode ${CLIENT_MODE:-pool}), synchronous_commit = on"
    echo
    echo "Each row is one switch (or rollback) while the application writes as fast as it can. \"client gap\" is the longest time between two commits the application saw (its write pause); \"cutover pause\" is cutover's write_pause_ms (fence → new primary open); \"cutover writes refused\" is writes_refused_ms (fence → every session on the new primary takes writes: those begun during the pause ended). \"old → new\" splits the gap between the last commit on the old primary and the first on the new one: before the fence + fence → open + open → first commit. Timelines: \`$(basename "$TIMELINE")\`."
    echo
    echo "| command | app tx/s | app commits | cutover pause ms | cutover writes refused ms | client gap ms | old → new ms | drain ms | fence ms | verify ms | rows verified | committed writes missing on the new primary | load average |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
} | tee "$ROOT/bench/results/pg-switch-$STAMP.md"

#!/usr/bin/env bash
# verify benchmark: `cutover verify` vs reladiff (PyPI, hashdiff across two databases) vs a naive
# full-table `md5(string_agg(…))` on both sides, on the same two throwaway clusters and the same
# school-shaped dataset, once with identical tables and once with 100 scattered differences.
#
#   bench/verify.sh                     # about 2.5 million rows
#   ROWS=200000 bench/verify.sh         # a quick run
#
# Knobs: ROWS (2500000, split over three tables), JOBS (nproc), BENCH_DIR (/tmp/cutover-verify-bench),
# CUTOVER_BIN (target/release/cutover, built if missing), VENV (/tmp/cutover-reladiff-venv), REPEAT
# (3: each figure is the median of that many runs). Prints
# a markdown table and writes it to bench/results/verify-<date>.md. KEEP=1 leaves the clusters
# running. Needs root or the postgres user for the clusters; installs reladiff into a venv.
# Never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-2500000}
JOBS=${JOBS:-$(nproc)}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-verify-bench}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
VENV=${VENV:-/tmp/cutover-reladiff-venv}
REPEAT=${REPEAT:-3}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
export PATH="$PGBIN:$PATH"
export PGOPTIONS="-c client_min_messages=warning"

if [[ ! -x $VENV/bin/reladiff ]]; then
    echo "# installing reladiff into $VENV…"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q reladiff psycopg2-binary
fi
RELADIFF_VERSION=$("$VENV/bin/reladiff" --version 2>&1 | grep -o '[0-9][0-9.]*' | head -1)
if [[ ! -x $CUTOVER_BIN ]]; then
    cargo build --release --quiet -p cutover-cli
fi

as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"
[[ $(id -u) -eq 0 ]] && chown postgres: "$BENCH_DIR"
SRC_PORT=$(free_port); DST_PORT=$(free_port)
start_cluster() { # name port
    local d=$BENCH_DIR/$1
    as_pg initdb -D "$d" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
    as_pg pg_ctl -D "$d" -l "$d.log" -w -t 120 -o "-p $2 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$d \
        -c shared_buffers=1GB -c maintenance_work_mem=256MB -c max_wal_size=8GB -c checkpoint_timeout=30min \
        -c synchronous_commit=off -c fsync=off -c max_connections=200" start >/dev/null
}
stop_all() {
    if [[ -n ${KEEP:-} ]]; then
        echo "# KEEP set: clusters left running: source $S/bench, target $T/bench"
        return
    fi
    for n in src dst; do
        [[ -f $BENCH_DIR/$n/postmaster.pid ]] && as_pg pg_ctl -D "$BENCH_DIR/$n" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$BENCH_DIR"
}
trap stop_all EXIT
start_cluster src "$SRC_PORT"; start_cluster dst "$DST_PORT"
S="postgres://postgres@127.0.0.1:$SRC_PORT"; T="postgres://postgres@127.0.0.1:$DST_PORT"
psql_s() { psql -X -q -v ON_ERROR_STOP=1 -At "$S/bench" -c "$1"; }
psql_t() { psql -X -q -v ON_ERROR_STOP=1 -At "$T/bench" -c "$1"; }

STUDENTS=$((ROWS / 5)); SESSIONS=$((ROWS * 2 / 5)); ANNOTATIONS=$((ROWS * 2 / 5))
echo "# generating $ROWS school-shaped rows ($STUDENTS students, $SESSIONS sessions, $ANNOTATIONS annotations)…"
psql -X -q "$S/postgres" -c "CREATE DATABASE bench"
psql -X -q -v ON_ERROR_STOP=1 "$S/bench" <<SQL
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL,
    email text NOT NULL, profile jsonb, created_at timestamptz NOT NULL);
CREATE TABLE public.sessions (id bigint PRIMARY KEY, student_id bigint NOT NULL,
    started_at timestamptz NOT NULL, score numeric(6,2), answers jsonb NOT NULL);
CREATE TABLE public.annotations (id bigint PRIMARY KEY, session_id bigint NOT NULL, body text NOT NULL,
    created_at timestamptz NOT NULL);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i, 'student' || i || '@school.example',
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'goals', jsonb_build_array(md5(i::text)),
                       'accessibility', jsonb_build_object('font', i % 3, 'contrast', i % 2 = 0)),
    timestamptz '2020-01-01' + i * interval '7 minutes'
  FROM generate_series(1, $STUDENTS) i;
INSERT INTO public.sessions SELECT i, 1 + (i::bigint * 7919) % $STUDENTS, timestamptz '2024-01-01' + i * interval '13 seconds',
    (i % 10001) / 100.0,
    jsonb_build_object('v', 2, 'answers', jsonb_build_array(md5(i::text), i % 7, (i + 1) % 2 = 0), 'ms', (i * 31) % 90000)
  FROM generate_series(1, $SESSIONS) i;
INSERT INTO public.annotations SELECT i, 1 + i % $SESSIONS, repeat(md5(i::text), 1 + i % 4),
    timestamptz '2024-02-01' + i * interval '3 seconds'
  FROM generate_series(1, $ANNOTATIONS) i;
SQL
psql -X -q "$S/bench" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
psql -X -q "$T/postgres" -c "CREATE DATABASE bench"
echo "# copying to the target (cutover copy)…"
"$CUTOVER_BIN" copy --source "$S/bench" --target "$T/bench" --jobs "$JOBS" --json >/dev/null
psql -X -q "$T/bench" -c "DROP SCHEMA _cutover CASCADE" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
DATA_MB=$(psql_s "SELECT round(sum(pg_table_size(c.oid)) / 1e6, 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")
echo "# dataset: $ROWS rows, $DATA_MB MB of table data per side"

TABLES="school.students public.sessions public.annotations"
secs() { python3 -c "print(round($2 - $1, 2))"; }

cutover_run() {
    "$CUTOVER_BIN" verify --source "$S/bench" --target "$T/bench" --jobs "$JOBS" --json > "$BENCH_DIR/cutover.json" || true
    psql_t "DROP SCHEMA IF EXISTS _cutover CASCADE" >/dev/null
}
reladiff_run() { # reladiff knows the postgresql:// scheme only
    : > "$BENCH_DIR/reladiff.out"
    local t
    for t in $TABLES; do
        "$VENV/bin/reladiff" "${S/postgres:/postgresql:}/bench" "$t" "${T/postgres:/postgresql:}/bench" "$t" -k id -c % -j "$JOBS" \
            >> "$BENCH_DIR/reladiff.out" 2>>"$BENCH_DIR/reladiff.err" || {
            echo "# reladiff failed on $t:"; grep -v WARNING "$BENCH_DIR/reladiff.err" | tail -5; exit 1; }
    done
}
naive_run() {
    : > "$BENCH_DIR/naive.out"
    local t
    for t in $TABLES; do
        local q="SELECT count(*), md5(string_agg(x::text, '' ORDER BY x.id)) FROM $t x"
        psql -X -At "$S/bench" -c "$q" > "$BENCH_DIR/naive.s" & local p=$!
        psql -X -At "$T/bench" -c "$q" > "$BENCH_DIR/naive.t"
        wait $p
        if cmp -s "$BENCH_DIR/naive.s" "$BENCH_DIR/naive.t"; then echo "$t equal"; else echo "$t DIFFERENT"; fi >> "$BENCH_DIR/naive.out"
    done
}
timed() { # name → the median of REPEAT runs' wall seconds into SECS_<name>_<case>
    local t0 t1 all=()
    for _ in $(seq "$REPEAT"); do
        psql_s "CHECKPOINT" >/dev/null; psql_t "CHECKPOINT" >/dev/null
        t0=$(date +%s.%N); "$1"_run; t1=$(date +%s.%N)
        all+=("$(secs "$t0" "$t1")")
    done
    local median
    median=$(printf '%s\n' "${all[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    eval "SECS_$1_$CASE=$median"
    echo "#   $1 ($CASE): runs ${all[*]} s, median ${median}s"
}

RESULTS=()
for CASE in identical diff100; do
    if [[ $CASE == diff100 ]]; then
        echo "# 100 scattered differences on the target (updates, deletes, inserts)…"
        psql -X -q -v ON_ERROR_STOP=1 "$T/bench" <<SQL
UPDATE public.sessions SET score = score + 1 WHERE id IN (SELECT 1 + (i * 104729) % $SESSIONS FROM generate_series(1, 40) i);
UPDATE school.students SET profile = profile || '{"lang": "fr"}' WHERE id IN (SELECT 1 + (i * 7727) % $STUDENTS FROM generate_series(1, 30) i);
DELETE FROM public.annotations WHERE id IN (SELECT 1 + (i * 15485863) % $ANNOTATIONS FROM generate_series(1, 20) i);
INSERT INTO public.annotations SELECT $ANNOTATIONS + i, 1, 'extra', now() FROM generate_series(1, 10) i;
SQL
    fi
    echo "# $CASE…"
    timed cutover
    found=$(python3 -c "import json; d=json.load(open('$BENCH_DIR/cutover.json')); print(d['difference_count'])")
    echo "#   cutover found $found differences"
    timed reladiff
    rl_found=$(grep -c '^[+-]' "$BENCH_DIR/reladiff.out" || true)
    echo "#   reladiff printed $rl_found +/- lines"
    timed naive
    eval "FOUND_$CASE=$found RL_$CASE=$rl_found NAIVE_$CASE='$(tr '\n' ' ' < "$BENCH_DIR/naive.out")'"
done

r() { python3 -c "a, b = '${1:-}', '${2:-}'; print(round(float(a) / float(b), 2) if a and b else 'n/a')"; }
{
    echo "## verify, $(date -u +%F), $ROWS rows ($DATA_MB MB of table data per side), JOBS=$JOBS, $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), reladiff $RELADIFF_VERSION"
    echo
    echo "| method | identical: wall s (median of $REPEAT) | 100 differences: wall s (median of $REPEAT) | found (100-diff case) |"
    echo "|---|---|---|---|"
    echo "| cutover verify --jobs $JOBS | $SECS_cutover_identical | $SECS_cutover_diff100 | $FOUND_diff100 differences (identical case: $FOUND_identical) |"
    echo "| reladiff -j $JOBS (hashdiff, per table) | $SECS_reladiff_identical | $SECS_reladiff_diff100 | $RL_diff100 +/- lines (an update is one - and one +) |"
    echo "| naive md5(string_agg) both sides | $SECS_naive_identical | $SECS_naive_diff100 | identical case: $NAIVE_identical; 100-diff case: $NAIVE_diff100 |"
    echo
    echo "- cutover vs reladiff: $(r "$SECS_reladiff_identical" "$SECS_cutover_identical")× faster (identical), $(r "$SECS_reladiff_diff100" "$SECS_cutover_diff100")× faster (100 differences)"
    echo "- cutover, 100 differences / identical: $(r "$SECS_cutover_diff100" "$SECS_cutover_identical")×"
    echo "- cutover vs naive: $(r "$SECS_naive_identical" "$SECS_cutover_identical")× (identical); the naive check only says equal or not, per table"
    echo "- wall time of the whole command for all three tables; both clusters on this machine; cutover hashes in the server (hash_record_extended over the columns, TID-range slices, width_bucket key buckets); reladiff hashes md5 of each row's text per segment; reladiff also reports JSON key-order changes as differences, cutover does not."
} | tee "$ROOT/bench/results/verify-$(date -u +%Y%m%dT%H%M%S).md"

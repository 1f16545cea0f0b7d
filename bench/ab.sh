#!/usr/bin/env bash
# A/B benchmark of two cutover binaries (OLD_BIN, NEW_BIN) on PostgreSQL → PostgreSQL, side by
# side in one run: the same throwaway clusters and the same data for both, the two binaries
# alternating (old, new / new, old / old, new …) over ROUNDS rounds, so drift in the machine
# (page cache, other work) falls on both alike.
#
#   OLD_BIN=/work/target-bench-old/release/cutover NEW_BIN=target/release/cutover bench/ab.sh
#   PHASES="copy sync" ROUNDS=3 … bench/ab.sh
#
# Phases (PHASES, default all four), each the measurement of an existing script:
#   copy    pg_copy.sh's dataset at COPY_SIZE_GB (2), split into two databases on one source
#           cluster so each shape has its own figure: `rows` (school.students, public.sessions,
#           public.annotations: many small rows) and `bytes` (public.attachments: 64–600 KB
#           bytea values). `cutover copy --jobs JOBS` of each into a fresh target database;
#           wall time, and the copy must equal the source (row count + md5 per table).
#   sync    pg_sync.sh's dataset (SYNC_ROWS students) and pgbench workload; each binary follows
#           into its own target database (t_old, t_new: slots cutover_t_old, cutover_t_new).
#           Per round: both stopped, SYNC_BACKLOG seconds of unthrottled workload, then each
#           binary started and timed until the last transaction (a marker row) is on its
#           target: the backlog apply rate. Both targets must equal the source at the end.
#   verify  verify.sh's dataset at VERIFY_ROWS (500000), copied once to the target (by NEW_BIN);
#           `cutover verify --jobs JOBS` on the identical tables, VERIFY_ROUNDS (5) per binary.
#   switch  bench/pg_switch.sh itself with CUTOVER_BIN set to each binary in turn, ROUNDS=1
#           (a switch and a rollback), SWITCH_RUNS (2) runs per binary: cutover's write_pause_ms
#           and the client gap. Its own results files land in bench/results/ as usual.
# Before every measurement: VACUUM ANALYZE and CHECKPOINT as the scripts do, then wait until the
# 1-minute load average is below LOAD_MAX (1.5), polling every LOAD_POLL (20) s for up to
# LOAD_WAIT_MAX (1200) s; if it does not drop, measure anyway and mark the figure. The load
# average is recorded next to every figure.
# Writes bench/results/ab-<stamp>.md: min / median / max per binary and the ratio new/old.
# `bench/ab.sh --report bench/results/ab-<stamp>.tsv bench/results/ab-<stamp>.facts` (paths from
# the repository root) prints the table of an interrupted run.
# Needs root or the postgres user; never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# report SAMPLES FACTS: the markdown table of the samples, on stdout.
report() {
python3 - "$1" "$2" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
facts = {}
for line in open(sys.argv[2]):
    for kv in line.split():
        k, v = kv.split("=", 1); facts[k] = v
higher_better = {"sync_backlog_apply_rate"}
names = []
for r in rows:
    if r["measurement"] not in names: names.append(r["measurement"])
print("| measurement | unit | old min / median / max | new min / median / max | new ÷ old (median) | new ÷ old (best) | old runs | new runs | load (1 min, before→after each run) old | load new |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in names:
    v = {b: [float(r["value"]) for r in rows if r["measurement"] == m and r["binary"] == b] for b in ("old", "new")}
    ld = {b: [r["load1"] + ("→" + r["load1_end"] if r.get("load1_end") else "") for r in rows if r["measurement"] == m and r["binary"] == b] for b in ("old", "new")}
    unit = next(r["unit"] for r in rows if r["measurement"] == m)
    fmt = lambda x: f"{x:g}"
    def mmm(xs): return f"{fmt(min(xs))} / {fmt(statistics.median(xs))} / {fmt(max(xs))}" if xs else "n/a"
    best = max if m in higher_better else min
    rm = rb = "n/a"
    if v["old"] and v["new"]:
        rm = f"{statistics.median(v['new']) / statistics.median(v['old']):.3f}"
        rb = f"{best(v['new']) / best(v['old']):.3f}"
    print(f"| {m} | {unit} | {mmm(v['old'])} | {mmm(v['new'])} | {rm} | {rb} | {len(v['old'])} | {len(v['new'])} | {' '.join(ld['old'])} | {' '.join(ld['new'])} |")
notes = sorted({r["note"] for r in rows if r["note"]})
print()
print("- times: lower is better (ratio > 1 = new slower); apply rate: higher is better (ratio < 1 = new slower). best = min time / max rate.")
print("- facts: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
for n in notes: print(f"- note: {n}")
print()
print("Every sample, in run order (measurement, binary, round, value, unit, load before, note, load after):")
print()
print("```")
for r in rows: print("\t".join(r.get(k) or "" for k in ("measurement", "binary", "round", "value", "unit", "load1", "note", "load1_end")).rstrip())
print("```")
PY
}
if [[ ${1:-} == --report ]]; then  # bench/ab.sh --report SAMPLES.tsv FACTS: the table again
    report "$2" "$3"; exit 0
fi
: "${OLD_BIN:?set OLD_BIN to the cutover binary before the change}"
: "${NEW_BIN:?set NEW_BIN to the cutover binary after the change}"
PHASES=${PHASES:-copy sync verify switch}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-$(nproc)}
COPY_SIZE_GB=${COPY_SIZE_GB:-2}
SYNC_ROWS=${SYNC_ROWS:-100000}
SYNC_BACKLOG=${SYNC_BACKLOG:-30}
CLIENTS=${CLIENTS:-4}
VERIFY_ROWS=${VERIFY_ROWS:-500000}
VERIFY_ROUNDS=${VERIFY_ROUNDS:-5}
SWITCH_RUNS=${SWITCH_RUNS:-2}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_POLL=${LOAD_POLL:-20}
LOAD_WAIT_MAX=${LOAD_WAIT_MAX:-1200}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-ab}
STAMP=$(date -u +%Y%m%dT%H%M%S)
OUT=$ROOT/bench/results/ab-$STAMP.md
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
OLD_BIN=$(realpath "$OLD_BIN"); NEW_BIN=$(realpath "$NEW_BIN")
declare -A BIN=([old]=$OLD_BIN [new]=$NEW_BIN)

prepare_bench_dir
# Every sample (measurement, binary, round, value, unit, 1-minute load average before and after,
# note) and the run's facts (sizes, transactions, results), kept until the report is written.
SAMPLES=$ROOT/bench/results/ab-$STAMP.tsv
FACTS=$ROOT/bench/results/ab-$STAMP.facts
printf 'measurement\tbinary\tround\tvalue\tunit\tload1\tnote\tload1_end\n' > "$SAMPLES"
: > "$FACTS"
SYNC_PID=""
cleanup() {
    if [[ -n $SYNC_PID ]]; then kill -INT "$SYNC_PID" 2>/dev/null || true; fi
    stop_all
}
trap cleanup EXIT
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$1" -c "$2"; }
secs() { python3 -c "print(round($2 - $1, 3))"; }
log() { echo "# $(date -u +%T) $*"; }

# Waits for a quiet machine; sets LOAD (the 1-minute load average when done) and QUIET_NOTE.
wait_quiet() {
    local waited=0 l
    QUIET_NOTE=""
    while :; do
        l=$(cut -d' ' -f1 /proc/loadavg)
        awk "BEGIN { exit !($l < $LOAD_MAX) }" && break
        if (( waited >= LOAD_WAIT_MAX )); then QUIET_NOTE="load never below $LOAD_MAX in ${LOAD_WAIT_MAX}s"; break; fi
        sleep "$LOAD_POLL"; waited=$((waited + LOAD_POLL))
    done
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    if (( waited > 0 )); then log "  waited ${waited}s for load < $LOAD_MAX (now $LOAD) $QUIET_NOTE"; fi
}
record() { # measurement binary round value unit
    local end; end=$(cut -d' ' -f1 /proc/loadavg)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$LOAD" "$QUIET_NOTE" "$end" >> "$SAMPLES"
    log "  $1 $2 round $3: $4 $5 (load $LOAD before, $end after${QUIET_NOTE:+, $QUIET_NOTE})"
}
# cpu: the user + system CPU seconds of the last command run under `$TIME_CPU` (GNU time), the
# binary's own work: what a change in cutover's code moves, and much less disturbed than wall
# time by other work on the machine.
TIME_CPU=(/usr/bin/time -f '%U %S' -o "$BENCH_DIR/cpu")
cpu() { awk 'END { print $1 + $2 }' "$BENCH_DIR/cpu"; }
# The binaries in round r's order: old first in odd rounds, new first in even ones.
order() { if (( $1 % 2 )); then echo old new; else echo new old; fi; }

# ---------------------------------------------------------------------------------------- copy
phase_copy() {
    local sp dp S T
    sp=$(free_port); dp=$(free_port)
    start_cluster copy_src "$sp"; start_cluster copy_dst "$dp"
    S="postgres://postgres@127.0.0.1:$sp"; T="postgres://postgres@127.0.0.1:$dp"
    log "copy: generating pg_copy.sh's dataset at ${COPY_SIZE_GB} GB, as two databases (rows, bytes)…"
    q "$S/postgres" "CREATE DATABASE rows"; q "$S/postgres" "CREATE DATABASE bytes"
    # The same statements as bench/pg_copy.sh, the attachments in a database of their own.
    psql -X -q -v ON_ERROR_STOP=1 "$S/rows" <<SQL
DO \$\$ BEGIN PERFORM setseed(0.42); END \$\$;
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL,
    email text NOT NULL UNIQUE, profile jsonb, created_at timestamptz NOT NULL);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL REFERENCES school.students,
    started_at timestamptz NOT NULL, score numeric(6,2), answers jsonb NOT NULL, duration interval);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL,
    created_at timestamptz NOT NULL);
CREATE INDEX annotations_session ON public.annotations (session_id);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i, 'student' || i || '@school.example',
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'goals', jsonb_build_array(md5(i::text), md5((i+1)::text)),
                       'accessibility', jsonb_build_object('font', i % 3, 'contrast', i % 2 = 0), 'bio', repeat('b', 120)),
    timestamptz '2020-01-01' + i * interval '7 minutes'
  FROM generate_series(1, (125000 * $COPY_SIZE_GB)::int) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, 1 + (i::bigint * 7919) % (125000 * $COPY_SIZE_GB)::int,
    timestamptz '2024-01-01' + i * interval '13 seconds', (i % 10001) / 100.0,
    (SELECT jsonb_build_object('v', 2, 'answers', jsonb_agg(jsonb_build_object('q', q, 'a', md5(i::text || q::text), 'ok', (i + q) % 2 = 0, 'ms', (i * q) % 90000))) FROM generate_series(1, 9) q),
    make_interval(secs => i % 3600)
  FROM generate_series(1, (330000 * $COPY_SIZE_GB)::int) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % (330000 * $COPY_SIZE_GB)::int))::uuid,
    repeat(md5(i::text), 1 + i % 12), timestamptz '2024-02-01' + i * interval '3 seconds'
  FROM generate_series(1, (330000 * $COPY_SIZE_GB)::int) i;
SQL
    psql -X -q -v ON_ERROR_STOP=1 "$S/bytes" <<SQL
CREATE EXTENSION pgcrypto;
CREATE TABLE public.attachments (id bigserial PRIMARY KEY, session_id uuid NOT NULL, mime text NOT NULL, content bytea NOT NULL);
INSERT INTO public.attachments (session_id, mime, content) SELECT md5('s' || i)::uuid, (ARRAY['image/png','application/pdf','audio/ogg'])[1 + i % 3],
    (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 64 + (i * 37) % 537))
  FROM generate_series(1, (1400 * $COPY_SIZE_GB)::int) i;
SQL
    local db
    declare -A tables=([rows]="school.students public.sessions public.annotations" [bytes]="public.attachments") ref mb
    checksum() { # url tables… → rows + md5 of the rows in key order, per table
        local url=$1 t; shift
        for t in "$@"; do q "$url" "SELECT '$t', count(*), md5(string_agg(md5(x::text), '' ORDER BY x.id)) FROM $t x"; done
    }
    for db in rows bytes; do
        psql -X -q -v ON_ERROR_STOP=1 "$S/$db" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
        # shellcheck disable=SC2086
        ref[$db]=$(checksum "$S/$db" ${tables[$db]})
        mb[$db]=$(q "$S/$db" "SELECT round(sum(pg_table_size(c.oid)) / 1e6, 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")
        log "  $db: ${mb[$db]} MB of table data: $(q "$S/$db" "SELECT string_agg(n.nspname || '.' || c.relname || ' ' || c.reltuples::bigint || ' rows ' || pg_size_pretty(pg_table_size(c.oid)), ', ' ORDER BY 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")"
        echo "copy_${db}_mb=${mb[$db]}" >> "$FACTS"
    done
    local r b t0 t1 s
    for ((r = 1; r <= ROUNDS; r++)); do
        for db in rows bytes; do
            for b in $(order "$r"); do
                q "$T/postgres" "DROP DATABASE IF EXISTS t_$b"; q "$T/postgres" "CREATE DATABASE t_$b"
                psql -X -q -v ON_ERROR_STOP=1 "$S/$db" -c "VACUUM ANALYZE" -c "CHECKPOINT"; q "$T/postgres" "CHECKPOINT"
                sync; (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true
                wait_quiet
                t0=$(now)
                "${TIME_CPU[@]}" "${BIN[$b]}" copy --source "$S/$db" --target "$T/t_$b" --jobs "$JOBS" --json > "$BENCH_DIR/copy-$db-$b-$r.out" 2>&1 || {
                    log "copy $db $b FAILED:"; tail -20 "$BENCH_DIR/copy-$db-$b-$r.out"; exit 1; }
                t1=$(now)
                s=$(secs "$t0" "$t1")
                # shellcheck disable=SC2086
                if [[ $(checksum "$T/t_$b" ${tables[$db]}) != "${ref[$db]}" ]]; then log "copy $db $b: target differs from the source"; exit 1; fi
                record "copy_$db" "$b" "$r" "$s" s
                record "copy_${db}_cpu" "$b" "$r" "$(cpu)" "s (CPU)"
                q "$T/postgres" "DROP DATABASE t_$b"
            done
        done
    done
    as_pg pg_ctl -D "$BENCH_DIR/copy_src" -m fast stop >/dev/null; as_pg pg_ctl -D "$BENCH_DIR/copy_dst" -m fast stop >/dev/null
    rm -rf "$BENCH_DIR/copy_src" "$BENCH_DIR/copy_dst"
}

# ---------------------------------------------------------------------------------------- sync
phase_sync() {
    local sp dp S T
    sp=$(free_port); dp=$(free_port)
    SHARED_BUFFERS=512MB start_cluster sync_src "$sp" -c synchronous_commit=on
    SHARED_BUFFERS=512MB start_cluster sync_dst "$dp"
    S="postgres://postgres@127.0.0.1:$sp"; T="postgres://postgres@127.0.0.1:$dp"
    log "sync: generating pg_sync.sh's dataset ($SYNC_ROWS students)…"
    q "$S/postgres" "CREATE DATABASE bench"
    # The same statements as bench/pg_sync.sh.
    psql -X -q -v ON_ERROR_STOP=1 "$S/bench" <<SQL
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL, profile jsonb);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL, score numeric(6,2), answers jsonb NOT NULL, updated_at timestamptz);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE public.bench_marker (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO public.bench_marker VALUES (1, 0);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i,
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'goals', jsonb_build_array(md5(i::text)), 'bio', repeat('b', 120))
  FROM generate_series(1, $SYNC_ROWS) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, 1 + i % $SYNC_ROWS, (i % 10001) / 100.0,
    (SELECT jsonb_build_object('v', 2, 'answers', jsonb_agg(jsonb_build_object('q', q, 'a', md5(i::text || q::text), 'ok', (i + q) % 2 = 0))) FROM generate_series(1, 9) q),
    now()
  FROM generate_series(1, ($SYNC_ROWS * 5 / 2)::int) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % ($SYNC_ROWS * 5 / 2)::int))::uuid,
    repeat(md5(i::text), 1 + i % 12), now()
  FROM generate_series(1, ($SYNC_ROWS * 5 / 2)::int) i;
VACUUM (FREEZE, ANALYZE);
SQL
    local sessions=$((SYNC_ROWS * 5 / 2))
    cat > "$BENCH_DIR/workload.sql" <<SQL
\set s random(1, $sessions)
\set st random(1, $SYNC_ROWS)
\set a random(1, $sessions)
BEGIN;
UPDATE public.sessions SET score = (random() * 100)::numeric(6,2), answers = jsonb_set(answers, '{v}', to_jsonb(:s)), updated_at = now() WHERE id = md5('s' || :s)::uuid;
INSERT INTO public.annotations (session_id, body, created_at) VALUES (md5('s' || :s)::uuid, repeat('note ', 40), now());
UPDATE school.students SET profile = profile || jsonb_build_object('seen', :s) WHERE id = :st;
DELETE FROM public.annotations WHERE id = :a;
COMMIT;
SQL
    local b
    for b in old new; do
        q "$T/postgres" "CREATE DATABASE t_$b"
        log "  initial copy by $b: sync --stop-when-caught-up into t_$b (slot cutover_t_$b)"
        "${BIN[$b]}" sync --source "$S/bench" --target "$T/t_$b" --stop-when-caught-up > "$BENCH_DIR/sync-initial-$b.log" 2>&1 || {
            log "initial sync $b FAILED:"; tail -20 "$BENCH_DIR/sync-initial-$b.log"; exit 1; }
    done
    local mark=0 r out tx tps t0 s pid
    for ((r = 1; r <= ROUNDS; r++)); do
        log "  round $r: both stopped, ${SYNC_BACKLOG}s of unthrottled workload"
        out=$(pgbench -n -f "$BENCH_DIR/workload.sql" -c "$CLIENTS" -j 2 -T "$SYNC_BACKLOG" "$S/bench" 2>&1)
        tx=$(grep -o 'actually processed: [0-9]*' <<<"$out" | awk '{print $3}')
        tps=$(grep -o 'tps = [0-9.]*' <<<"$out" | awk '{print $3}')
        mark=$((mark + 1)); q "$S/bench" "UPDATE bench_marker SET n = $mark"
        # Once per round, so that both slots have the very same WAL to decode.
        psql -X -q -v ON_ERROR_STOP=1 "$S/bench" -c "VACUUM ANALYZE" -c "CHECKPOINT"
        echo "sync_round${r}_tx=$tx sync_round${r}_tps=$tps" >> "$FACTS"
        log "    backlog: $tx transactions at $tps tx/s"
        for b in $(order "$r"); do
            q "$T/t_$b" "CHECKPOINT"
            wait_quiet
            t0=$(now)
            "${TIME_CPU[@]}" "${BIN[$b]}" sync --source "$S/bench" --target "$T/t_$b" >> "$BENCH_DIR/sync-$b.log" 2>&1 &
            pid=$!
            SYNC_PID=$(pgrep -P "$pid" || true)  # the binary itself (GNU time ignores SIGINT)
            until [[ $(q "$T/t_$b" "SELECT n FROM bench_marker") == "$mark" ]]; do
                kill -0 "$pid" 2>/dev/null || { log "sync $b stopped:"; tail -20 "$BENCH_DIR/sync-$b.log"; exit 1; }
                sleep 0.02
            done
            s=$(secs "$t0" "$(now)")
            kill -INT "${SYNC_PID:-$(pgrep -P "$pid")}" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
            SYNC_PID=""
            record sync_backlog_apply_rate "$b" "$r" "$(python3 -c "print(round($tx / $s))")" tx/s
            record sync_backlog_cpu "$b" "$r" "$(cpu)" "s (CPU, start to stop)"
            echo "sync_${b}_round${r}_s=$s" >> "$FACTS"
        done
    done
    local ref t
    check() { for t in school.students public.sessions public.annotations; do
        q "$1" "SELECT '$t', count(*), md5(string_agg(md5(x::text), '' ORDER BY x.id)) FROM $t x"; done; }
    ref=$(check "$S/bench")
    for b in old new; do
        if [[ $(check "$T/t_$b") == "$ref" ]]; then echo "sync_${b}_result=identical"; else echo "sync_${b}_result=MISMATCH"; fi >> "$FACTS"
    done
    as_pg pg_ctl -D "$BENCH_DIR/sync_src" -m fast stop >/dev/null; as_pg pg_ctl -D "$BENCH_DIR/sync_dst" -m fast stop >/dev/null
    rm -rf "$BENCH_DIR/sync_src" "$BENCH_DIR/sync_dst"
}

# -------------------------------------------------------------------------------------- verify
phase_verify() {
    local sp dp S T
    sp=$(free_port); dp=$(free_port)
    FSYNC=off start_cluster verify_src "$sp"; FSYNC=off start_cluster verify_dst "$dp"
    S="postgres://postgres@127.0.0.1:$sp/bench"; T="postgres://postgres@127.0.0.1:$dp/bench"
    local students=$((VERIFY_ROWS / 5)) sessions=$((VERIFY_ROWS * 2 / 5)) annotations=$((VERIFY_ROWS * 2 / 5))
    log "verify: generating verify.sh's dataset ($VERIFY_ROWS rows)…"
    q "${S%/bench}/postgres" "CREATE DATABASE bench"; q "${T%/bench}/postgres" "CREATE DATABASE bench"
    # The same statements as bench/verify.sh.
    psql -X -q -v ON_ERROR_STOP=1 "$S" <<SQL
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
  FROM generate_series(1, $students) i;
INSERT INTO public.sessions SELECT i, 1 + (i::bigint * 7919) % $students, timestamptz '2024-01-01' + i * interval '13 seconds',
    (i % 10001) / 100.0,
    jsonb_build_object('v', 2, 'answers', jsonb_build_array(md5(i::text), i % 7, (i + 1) % 2 = 0), 'ms', (i * 31) % 90000)
  FROM generate_series(1, $sessions) i;
INSERT INTO public.annotations SELECT i, 1 + i % $sessions, repeat(md5(i::text), 1 + i % 4),
    timestamptz '2024-02-01' + i * interval '3 seconds'
  FROM generate_series(1, $annotations) i;
SQL
    psql -X -q "$S" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
    "$NEW_BIN" copy --source "$S" --target "$T" --jobs "$JOBS" --json > "$BENCH_DIR/verify-copy.out" 2>&1
    psql -X -q "$T" -c "DROP SCHEMA _cutover CASCADE" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
    echo "verify_mb=$(q "$S" "SELECT round(sum(pg_table_size(c.oid)) / 1e6, 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")" >> "$FACTS"
    local r b t0 s found
    for ((r = 1; r <= VERIFY_ROUNDS; r++)); do
        for b in $(order "$r"); do
            psql -X -q "$S" -c "VACUUM ANALYZE" -c "CHECKPOINT"; q "$T" "CHECKPOINT"
            wait_quiet
            t0=$(now)
            "${TIME_CPU[@]}" "${BIN[$b]}" verify --source "$S" --target "$T" --jobs "$JOBS" --json > "$BENCH_DIR/verify-$b-$r.json" 2>"$BENCH_DIR/verify-$b-$r.err" || true
            s=$(secs "$t0" "$(now)")
            found=$(python3 -c "import json; print(json.load(open('$BENCH_DIR/verify-$b-$r.json'))['difference_count'])") || {
                log "verify $b FAILED:"; tail -20 "$BENCH_DIR/verify-$b-$r.err"; exit 1; }
            [[ $found == 0 ]] || { log "verify $b found $found differences on identical tables"; exit 1; }
            record verify_identical "$b" "$r" "$s" s
            record verify_identical_cpu "$b" "$r" "$(cpu)" "s (CPU)"
            q "$T" "DROP SCHEMA IF EXISTS _cutover CASCADE"
        done
    done
    as_pg pg_ctl -D "$BENCH_DIR/verify_src" -m fast stop >/dev/null; as_pg pg_ctl -D "$BENCH_DIR/verify_dst" -m fast stop >/dev/null
    rm -rf "$BENCH_DIR/verify_src" "$BENCH_DIR/verify_dst"
}

# -------------------------------------------------------------------------------------- switch
phase_switch() {
    local r b out line cmd
    for ((r = 1; r <= SWITCH_RUNS; r++)); do
        for b in $(order "$r"); do
            wait_quiet
            local waited_note=$QUIET_NOTE LOAD_BEFORE=$LOAD
            log "switch: bench/pg_switch.sh, ROUNDS=1, CUTOVER_BIN=${BIN[$b]}"
            out=$(CUTOVER_BIN=${BIN[$b]} ROUNDS=1 BENCH_DIR=$BENCH_DIR/switch "$ROOT/bench/pg_switch.sh" 2>&1) || {
                log "pg_switch.sh with $b FAILED:"; tail -20 <<<"$out"; exit 1; }
            echo "$out" > "$BENCH_DIR/switch-$b-$r.out"
            # Its table rows: | command | tx/s | commits | pause | refused | gap | … | load |
            while IFS= read -r line; do
                cmd=$(awk -F'|' '{gsub(/ /, "", $2); print $2}' <<<"$line")
                LOAD=$(awk -F'|' '{print $(NF-1)}' <<<"$line" | awk '{print $1}')
                QUIET_NOTE="load read by pg_switch.sh just before the $cmd, its clusters and writers running (before the run: $LOAD_BEFORE${waited_note:+, $waited_note})"
                record "${cmd}_write_pause" "$b" "$r" "$(awk -F'|' '{gsub(/ /, "", $5); print $5}' <<<"$line")" ms
                record "${cmd}_client_gap" "$b" "$r" "$(awk -F'|' '{gsub(/ /, "", $7); print $7}' <<<"$line")" ms
                echo "switch_${b}_${r}_${cmd}_missing=$(awk -F'|' '{gsub(/ /, "", $(NF-2)); print $(NF-2)}' <<<"$line")" >> "$FACTS"
            done < <(grep -E '^\| (switch|rollback) \|' <<<"$(grep -v '^#' <<<"$out")")
            { grep -o 'pg-switch-[0-9T]*-timeline\.md' <<<"$out" | head -1 | sed 's/-timeline//' >> "$BENCH_DIR/switch-files"; } || true
        done
    done
}

log "A/B: old = $OLD_BIN, new = $NEW_BIN; phases: $PHASES; rounds: $ROUNDS; JOBS=$JOBS"
for p in $PHASES; do "phase_$p"; done
report "$SAMPLES" "$FACTS" | tee "$OUT"

{
    echo
    echo "- $(date -u +%F), $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'); old = \`$OLD_BIN\`, new = \`$NEW_BIN\`; PHASES=\"$PHASES\" ROUNDS=$ROUNDS JOBS=$JOBS COPY_SIZE_GB=$COPY_SIZE_GB SYNC_ROWS=$SYNC_ROWS SYNC_BACKLOG=$SYNC_BACKLOG VERIFY_ROWS=$VERIFY_ROWS VERIFY_ROUNDS=$VERIFY_ROUNDS SWITCH_RUNS=$SWITCH_RUNS LOAD_MAX=$LOAD_MAX"
    if [[ -s $BENCH_DIR/switch-files ]]; then echo "- pg_switch.sh's own results: $(tr '\n' ' ' < "$BENCH_DIR/switch-files")"; fi
} | tee -a "$OUT"
rm -f "$SAMPLES" "$FACTS"

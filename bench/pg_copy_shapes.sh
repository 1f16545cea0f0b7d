#!/usr/bin/env bash
# PostgreSQL → PostgreSQL copy, cutover vs pgcopydb, on two shapes of data and on a source
# that was never analyzed, methods alternated over several rounds, in one run on the same two
# throwaway clusters.
#
#   bench/pg_copy_shapes.sh                 # SCALE=1: the row-heavy shape is 1 M students,
#                                           # 1 M UUID-keyed sessions, 2 M annotations
#   SCALE=0.2 ROUNDS=1 bench/pg_copy_shapes.sh   # a quick run
#
# Shapes (SHAPES, both by default):
#   rows   many small rows: students (bigint key, small jsonb), sessions (UUID key, jsonb
#          answers), annotations (bigserial key, short text)
#   bytes  few large values: attachments of 16–150 KB (bytea, TOASTed) and a small students table
# Source states (STATES, both by default), on the same data, in this order:
#   fresh     right after the bulk load: no ANALYZE, no VACUUM (autovacuum is off on the
#             source), so no statistics; a read pass set the hint bits first, so that no
#             method pays for them
#   analyzed  after VACUUM (FREEZE, ANALYZE) and a checkpoint
# Every run: a new target database, CHECKPOINT on both clusters, then the method; the result is
# checked outside both tools (per-table row count and md5 over all rows in key order). Beside
# each time: the CPU seconds the machine spent during the run outside the method (the two
# clusters and the tool's processes), i.e. what else ran (another build): a time is only
# comparable with others measured under a like load.
#
# Knobs: SCALE (1), ROUNDS (2), JOBS (2), METHODS ("cutover pgcopydb"; add "cutover_base" to
# run BASE_BIN, another cutover binary, side by side; "sync_bulk" and "sync_rows" time
# `cutover sync --stop-when-caught-up` with --copy-method auto and rows), SHAPES, STATES,
# BENCH_DIR (/tmp/cutover-bench-shapes), CUTOVER_BIN (target/release/cutover, built if missing).
# Writes bench/results/pg-copy-shapes-<date>.md. Installs pgcopydb and GNU time from Debian if
# missing. Never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-1}
ROUNDS=${ROUNDS:-2}
JOBS=${JOBS:-2}
METHODS=${METHODS:-cutover pgcopydb}
SHAPES=${SHAPES:-rows bytes}
STATES=${STATES:-fresh analyzed}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-shapes}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if ! need pgcopydb || [[ ! -x /usr/bin/time ]]; then
    echo "installing pgcopydb and time (Debian)…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgcopydb time >/dev/null
fi
[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet

prepare_bench_dir
SRC_PORT=$(free_port); DST_PORT=$(free_port)
trap stop_all EXIT
start_cluster src "$SRC_PORT" -c autovacuum=off
start_cluster dst "$DST_PORT"
S="postgres://postgres@127.0.0.1:$SRC_PORT"; T="postgres://postgres@127.0.0.1:$DST_PORT"
psql_s() { psql -X -q -v ON_ERROR_STOP=1 -At "$S/$1" -c "$2"; }
psql_t() { psql -X -q -v ON_ERROR_STOP=1 -At "$T/$1" -c "$2"; }

generate() { # shape
    psql_s postgres "DROP DATABASE IF EXISTS bench"
    psql_s postgres "CREATE DATABASE bench"
    local n_students n_sessions n_notes n_files
    case $1 in
        rows)
            n_students=$(python3 -c "print(int(1000000 * $SCALE))")
            n_sessions=$n_students
            n_notes=$(( n_students * 2 ))
            n_files=0 ;;
        bytes)
            n_students=$(python3 -c "print(int(100000 * $SCALE))")
            n_sessions=0; n_notes=0
            n_files=$(python3 -c "print(int(12000 * $SCALE))") ;;
    esac
    psql -X -q -v ON_ERROR_STOP=1 "$S/bench" <<SQL
SELECT setseed(0.42);
CREATE EXTENSION pgcrypto;
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL,
    email text NOT NULL UNIQUE, profile jsonb, created_at timestamptz NOT NULL);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL,
    started_at timestamptz NOT NULL, score numeric(6,2), answers jsonb NOT NULL);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL,
    created_at timestamptz NOT NULL);
CREATE INDEX annotations_session ON public.annotations (session_id);
CREATE TABLE public.attachments (id bigserial PRIMARY KEY, student_id bigint NOT NULL, mime text NOT NULL, content bytea NOT NULL);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i, 'student' || i || '@school.example',
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'font', i % 3),
    timestamptz '2020-01-01' + i * interval '7 minutes'
  FROM generate_series(1, $n_students) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, 1 + (i::bigint * 7919) % greatest($n_students, 1),
    timestamptz '2024-01-01' + i * interval '13 seconds', (i % 10001) / 100.0,
    jsonb_build_object('v', 2, 'q', i % 40, 'ok', i % 3 = 0)
  FROM generate_series(1, $n_sessions) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % greatest($n_sessions, 1)))::uuid,
    left(md5(i::text), 8 + i % 24), timestamptz '2024-02-01' + i * interval '3 seconds'
  FROM generate_series(1, $n_notes) i;
INSERT INTO public.attachments (student_id, mime, content) SELECT 1 + i % greatest($n_students, 1),
    (ARRAY['image/png','application/pdf','audio/ogg'])[1 + i % 3],
    (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 16 + (i * 37) % 134))
  FROM generate_series(1, $n_files) i;
SQL
}

TABLES="school.students:id public.sessions:id public.annotations:id public.attachments:id"
checksum() { # db port → one line per table: rows + md5 of rows in key order
    local url="postgres://postgres@127.0.0.1:$2/$1" t k
    for tk in $TABLES; do
        t=${tk%%:*}; k=${tk##*:}
        psql -X -At "$url" -c "SELECT '$t', count(*), md5(string_agg(md5(x::text), '' ORDER BY x.$k)) FROM $t x"
    done
}

# CPU ticks: of the whole machine; of a cluster's processes (the exited ones, which the
# postmaster reaped, and the live ones).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
cluster_ticks() { # cluster name
    python3 - "$(head -1 "$BENCH_DIR/$1/postmaster.pid")" <<'PY'
import os, sys
pm = sys.argv[1]
def stat(p):
    d = open(f"/proc/{p}/stat").read()
    return d[d.rindex(")") + 2:].split()
f = stat(pm)
ticks = int(f[13]) + int(f[14])
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        g = stat(p)
        if g[1] == pm:
            ticks += sum(int(x) for x in g[11:15])
    except (OSError, IndexError):
        pass
print(ticks)
PY
}
ours_ticks() { echo $(( $(cluster_ticks src) + $(cluster_ticks dst) )); }

run() { # method → "seconds others-cpu-seconds" on stdout, or "failed"
    local db=t_$1 t0 t1 b0 b1 o0 o1
    psql_t postgres "DROP DATABASE IF EXISTS $db"; psql_t postgres "CREATE DATABASE $db"
    psql_s bench "CHECKPOINT"; psql_t postgres "CHECKPOINT"; sync
    rm -rf "$BENCH_DIR/pgcopydb"
    local timed=(/usr/bin/time -f "%e %U %S" -o "$BENCH_DIR/time.txt")
    b0=$(busy_ticks); o0=$(ours_ticks)
    t0=$(now)
    case $1 in
        cutover|cutover_base)
                 local bin=$CUTOVER_BIN
                 [[ $1 == cutover_base ]] && bin=${BASE_BIN:?BASE_BIN is the other cutover binary}
                 "${timed[@]}" "$bin" copy --source "$S/bench" --target "$T/$db" --jobs "$JOBS" --quiet \
                     >"$BENCH_DIR/$1.out" 2>&1 || { echo failed; return; } ;;
        sync_bulk|sync_rows)
                 # sync's copy phase and catch-up (nothing to catch up: no writer), then the
                 # slot it made is dropped after the check. sync_bulk is sync's default between
                 # two PostgreSQL databases; sync_rows is the applier's path of every other pair.
                 local how=auto
                 [[ $1 == sync_rows ]] && how=rows
                 "${timed[@]}" "$CUTOVER_BIN" sync --source "$S/bench" --target "$T/$db" --jobs "$JOBS" --quiet \
                     --stop-when-caught-up --copy-method "$how" >"$BENCH_DIR/$1.out" 2>&1 || { echo failed; return; } ;;
        pgcopydb) PGCOPYDB_DIR=$BENCH_DIR/pgcopydb "${timed[@]}" pgcopydb clone --source "$S/bench" --target "$T/$db" \
                     --table-jobs "$JOBS" --index-jobs "$JOBS" --split-tables-larger-than 64MB \
                     --no-owner --no-acl --dir "$BENCH_DIR/pgcopydb" >"$BENCH_DIR/$1.out" 2>&1 || { echo failed; return; } ;;
    esac
    t1=$(now)
    b1=$(busy_ticks); o1=$(ours_ticks)
    local equal=1
    [[ $(checksum "$db" "$DST_PORT") == "$REFERENCE" ]] || equal=0
    if [[ $1 == sync_* ]]; then
        "$CUTOVER_BIN" cleanup --source "$S/bench" --target "$T/$db" >/dev/null 2>&1 || true
    fi
    if (( ! equal )); then echo mismatch; return; fi
    psql_t postgres "DROP DATABASE $db"
    local tool; tool=$(awk '{print $2 + $3}' "$BENCH_DIR/time.txt")
    python3 -c "hz = $(getconf CLK_TCK); print(round($t1 - $t0, 2), max(0.0, round(($b1 - $b0 - ($o1 - $o0)) / hz - $tool, 1)))"
}

OUT="$ROOT/bench/results/pg-copy-shapes-$(date -u +%Y%m%dT%H%M%S).md"
{
    echo "## PostgreSQL → PostgreSQL copy by shape and source state, $(date -u +%F)"
    echo
    echo "JOBS=$JOBS, $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), pgcopydb $(pgcopydb --version 2>&1 | grep -o 'version [0-9.-]*' | head -1 | cut -d' ' -f2), SCALE=$SCALE, $ROUNDS rounds, methods alternated (the first method changes every round). Seconds are wall time of the whole copy (schema, data, indexes, constraints); every result was checked identical outside both tools."
    echo
    echo "| shape | source | MB | method | best s | all rounds s | other processes' CPU s, by round | pgcopydb's best ÷ this method's best |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$OUT"

for shape in $SHAPES; do
    echo "# generating the $shape shape (SCALE=$SCALE)…"
    generate "$shape"
    # Hint bits now, so that no method pays for them; no statistics yet.
    for tk in $TABLES; do psql_s bench "SELECT count(*) FROM ${tk%%:*}" >/dev/null; done
    psql_s bench "CHECKPOINT"
    REFERENCE=$(checksum bench "$SRC_PORT")
    MB=$(psql_s bench "SELECT round(sum(pg_table_size(c.oid)) / 1e6, 1) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")
    for state in $STATES; do
        if [[ $state == analyzed ]]; then
            psql -X -q "$S/bench" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
        fi
        analyzed=$(psql_s bench "SELECT count(*) FROM pg_stats WHERE schemaname IN ('public','school')")
        echo "# $shape / $state ($MB MB, $analyzed pg_stats rows)"
        declare -A times=() others=()
        methods=($METHODS)
        for ((r = 0; r < ROUNDS; r++)); do
            # Alternate: round 0 in the given order, round 1 reversed, …
            order=("${methods[@]}")
            if (( r % 2 == 1 )); then order=($(printf '%s\n' "${methods[@]}" | tac)); fi
            for m in "${order[@]}"; do
                read -r s o <<<"$(run "$m")"
                echo "#   round $((r + 1)) $m: $s (other processes: ${o:-?} CPU s)"
                times[$m]="${times[$m]:-} $s"
                others[$m]="${others[$m]:-} ${o:-?}"
            done
        done
        best() { printf '%s\n' $1 | { grep -E '^[0-9.]+$' || true; } | sort -n | head -1; }
        bp=$(best "${times[pgcopydb]:-}")
        for m in $METHODS; do
            bm=$(best "${times[$m]}")
            ratio=$(python3 -c "a, b = '$bm', '$bp'; print(round(float(b) / float(a), 2) if a and b else 'n/a')")
            echo "| $shape | $state | $MB | $m | $bm | ${times[$m]# } | ${others[$m]# } | $([[ $m != pgcopydb ]] && echo "${ratio}×" || echo) |" >> "$OUT"
        done
        unset times others
    done
done
echo >> "$OUT"
echo "Ratio: pgcopydb's best time divided by the method's best time (above 1: the method is faster)." >> "$OUT"
cat "$OUT"

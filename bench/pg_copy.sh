#!/usr/bin/env bash
# PostgreSQL → PostgreSQL copy benchmark: cutover copy vs pgcopydb clone vs pg_dump/pg_restore
# vs parallel raw binary `COPY … TO STDOUT | COPY … FROM STDIN` pipes, in one run, on the same
# two throwaway clusters and the same school-shaped dataset.
#
#   bench/pg_copy.sh                    # about 2 GB of table data
#   SIZE_GB=0.2 bench/pg_copy.sh        # a quick run
#
# Knobs: SIZE_GB (2), JOBS (nproc), METHODS (all four, space-separated), BENCH_DIR (/tmp/cutover-bench), CUTOVER_BIN
# (target/release/cutover, built if missing), FSYNC (on). Prints a markdown table and writes
# it to bench/results/pg-copy-<date>.md. KEEP=1 leaves the clusters running afterwards. Needs root or the postgres user for the clusters;
# installs pgcopydb and GNU time from Debian if missing. Never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_GB=${SIZE_GB:-2}
JOBS=${JOBS:-$(nproc)}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
FSYNC=${FSYNC:-on}
METHODS=${METHODS:-cutover pgcopydb pg_dump_restore raw_copy_pipes}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if ! need pgcopydb || [[ ! -x /usr/bin/time ]]; then
    echo "installing pgcopydb and time (Debian)…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgcopydb time >/dev/null
fi
if [[ ! -x $CUTOVER_BIN ]]; then
    cargo build --release --quiet
fi

prepare_bench_dir
SRC_PORT=$(free_port); DST_PORT=$(free_port)
trap stop_all EXIT
start_cluster src "$SRC_PORT"; start_cluster dst "$DST_PORT"
S="postgres://postgres@127.0.0.1:$SRC_PORT"; T="postgres://postgres@127.0.0.1:$DST_PORT"
psql_s() { psql -X -q -v ON_ERROR_STOP=1 -At "$S/$1" -c "$2"; }
psql_t() { psql -X -q -v ON_ERROR_STOP=1 -At "$T/$1" -c "$2"; }

echo "# generating about ${SIZE_GB} GB of school-shaped data…"
psql_s postgres "CREATE DATABASE bench"
gen_start=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$S/bench" <<SQL
DO \$\$ BEGIN PERFORM setseed(0.42); END \$\$;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA school;
CREATE TABLE school.students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL,
    email text NOT NULL UNIQUE, profile jsonb, created_at timestamptz NOT NULL);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL REFERENCES school.students,
    started_at timestamptz NOT NULL, score numeric(6,2), answers jsonb NOT NULL, duration interval);
CREATE TABLE public.annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL,
    created_at timestamptz NOT NULL);
CREATE INDEX annotations_session ON public.annotations (session_id);
CREATE TABLE public.attachments (id bigserial PRIMARY KEY, session_id uuid NOT NULL, mime text NOT NULL, content bytea NOT NULL);
INSERT INTO school.students SELECT i, 1 + i % 500, 'Student ' || i, 'student' || i || '@school.example',
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'goals', jsonb_build_array(md5(i::text), md5((i+1)::text)),
                       'accessibility', jsonb_build_object('font', i % 3, 'contrast', i % 2 = 0), 'bio', repeat('b', 120)),
    timestamptz '2020-01-01' + i * interval '7 minutes'
  FROM generate_series(1, (125000 * $SIZE_GB)::int) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, 1 + (i::bigint * 7919) % (125000 * $SIZE_GB)::int,
    timestamptz '2024-01-01' + i * interval '13 seconds', (i % 10001) / 100.0,
    (SELECT jsonb_build_object('v', 2, 'answers', jsonb_agg(jsonb_build_object('q', q, 'a', md5(i::text || q::text), 'ok', (i + q) % 2 = 0, 'ms', (i * q) % 90000))) FROM generate_series(1, 9) q),
    make_interval(secs => i % 3600)
  FROM generate_series(1, (330000 * $SIZE_GB)::int) i;
INSERT INTO public.annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % (330000 * $SIZE_GB)::int))::uuid,
    repeat(md5(i::text), 1 + i % 12), timestamptz '2024-02-01' + i * interval '3 seconds'
  FROM generate_series(1, (330000 * $SIZE_GB)::int) i;
INSERT INTO public.attachments (session_id, mime, content) SELECT md5('s' || i)::uuid, (ARRAY['image/png','application/pdf','audio/ogg'])[1 + i % 3],
    (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 64 + (i * 37) % 537))
  FROM generate_series(1, (1400 * $SIZE_GB)::int) i;
SQL
# Set hint bits and freeze now, so whichever method reads first does not pay for it (nor race
# autovacuum) while the others read clean pages.
psql -X -q -v ON_ERROR_STOP=1 "$S/bench" -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
gen_s=$(python3 -c "print(round($(date +%s.%N) - $gen_start, 1))")
DATA_BYTES=$(psql_s bench "SELECT sum(pg_table_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school')")
DATA_MB=$(python3 -c "print(round($DATA_BYTES / 1e6, 1))")
echo "# dataset: ${DATA_MB} MB of table data (pg_table_size: heap + TOAST, no indexes), generated in ${gen_s}s"
psql_s bench "SELECT n.nspname || '.' || c.relname, c.reltuples::bigint, pg_size_pretty(pg_table_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname IN ('public','school') ORDER BY 1" | sed 's/^/#   /'

TABLES="school.students:id public.sessions:id public.annotations:id public.attachments:id"
checksum() { # db port → one line per table: rows + md5 of rows in key order
    local url="postgres://postgres@127.0.0.1:$2/$1" t k
    for tk in $TABLES; do
        t=${tk%%:*}; k=${tk##*:}
        psql -X -At "$url" -c "SELECT '$t', count(*), md5(string_agg(md5(x::text), '' ORDER BY x.$k)) FROM $t x"
    done
}
REFERENCE=$(checksum bench "$SRC_PORT")

# Runs "$@" in its own process group, sampling the summed RSS of the whole group every 200 ms.
PEAK_KB=0
measure() {
    setsid bash -c '"$@"' _ "$@" & local pid=$!
    local peak=0 kb
    while kill -0 "$pid" 2>/dev/null; do
        kb=$(ps -o rss= -g "$pid" 2>/dev/null | awk '{s+=$1} END {print s+0}')
        (( kb > peak )) && peak=$kb
        sleep 0.2
    done
    wait "$pid"; local rc=$?
    PEAK_KB=$peak
    return $rc
}

RESULTS=()
run_method() { # name db cmd…
    local name=$1 db=$2; shift 2
    [[ " $METHODS " == *" $name "* ]] || return 0
    psql_t postgres "DROP DATABASE IF EXISTS $db" ; psql_t postgres "CREATE DATABASE $db"
    psql_s bench "CHECKPOINT" ; psql_t postgres "CHECKPOINT"; sync; (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true
    echo "# $name…"
    local t0 t1 ok
    t0=$(date +%s.%N)
    if ! measure "$@" > "$BENCH_DIR/$name.out" 2>&1; then
        echo "# $name FAILED:"; tail -20 "$BENCH_DIR/$name.out"; RESULTS+=("| $name | failed | | | |"); return
    fi
    t1=$(date +%s.%N)
    if [[ $(checksum "$db" "$DST_PORT") == "$REFERENCE" ]]; then ok=identical; else ok=MISMATCH; fi
    local secs mbs rss
    secs=$(python3 -c "print(round($t1 - $t0, 2))")
    mbs=$(python3 -c "print(round($DATA_BYTES / 1e6 / ($t1 - $t0), 1))")
    rss=$(( PEAK_KB / 1024 ))
    echo "#   ${secs}s, ${mbs} MB/s, peak RSS ${rss} MB, ${ok}"
    RESULTS+=("| $name | $secs | $mbs | $rss | $ok |")
    eval "SECS_${name//[^a-z]/_}=$secs"
    psql_t postgres "DROP DATABASE $db"
}

run_method cutover t_cutover "$CUTOVER_BIN" copy --source "$S/bench" --target "$T/t_cutover" --jobs "$JOBS" --json

export PGCOPYDB_DIR=$BENCH_DIR/pgcopydb
run_method pgcopydb t_pgcopydb pgcopydb clone --source "$S/bench" --target "$T/t_pgcopydb" --table-jobs "$JOBS" \
    --index-jobs "$JOBS" --split-tables-larger-than 64MB --no-owner --no-acl --dir "$BENCH_DIR/pgcopydb"

dump_restore() {
    rm -rf "$BENCH_DIR/dump"
    pg_dump -Fd -j "$JOBS" -f "$BENCH_DIR/dump" "$S/bench"
    pg_restore -j "$JOBS" --no-owner -d "$T/t_dump" "$BENCH_DIR/dump"
    rm -rf "$BENCH_DIR/dump"
}
export -f dump_restore
export S T JOBS BENCH_DIR TABLES
run_method pg_dump_restore t_dump dump_restore

# The speed-of-light reference: schema first, then one binary COPY pipe per key range, JOBS at a
# time, then indexes and constraints.
raw_pipes() {
    pg_dump --section=pre-data "$S/bench" | psql -X -q -v ON_ERROR_STOP=1 "$T/t_raw" >/dev/null
    local ranges=() tk t k
    for tk in $TABLES; do
        t=${tk%%:*}; k=${tk##*:}
        # Split each table into JOBS ranges at its key quantiles.
        mapfile -t bounds < <(psql -X -At "$S/bench" -c "SELECT min($k)::text FROM (SELECT $k, ntile($JOBS) OVER (ORDER BY $k) AS b FROM $t) s GROUP BY b ORDER BY min($k) OFFSET 1")
        local lo=""
        for b in "${bounds[@]}" ""; do
            local where="true"
            [[ -n $lo ]] && where="$k >= '$lo'"
            [[ -n $b ]] && where="$where AND $k < '$b'"
            ranges+=("$t|$where")
            lo=$b
        done
    done
    printf '%s\n' "${ranges[@]}" | xargs -P "$JOBS" -I{} bash -c '
        t=${1%%|*}; w=${1#*|}
        psql -X -q -At "$2" -c "COPY (SELECT * FROM $t WHERE $w) TO STDOUT (FORMAT binary)" |
        psql -X -q "$3" -c "COPY $t FROM STDIN (FORMAT binary)"' _ {} "$S/bench" "$T/t_raw"
    pg_dump --section=post-data "$S/bench" | psql -X -q -v ON_ERROR_STOP=1 "$T/t_raw" >/dev/null
}
export -f raw_pipes
run_method raw_copy_pipes t_raw raw_pipes

ratio() { python3 -c "a, b = '${1:-}', '${2:-}'; print(round(float(b) / float(a), 2) if a and b else 'n/a')"; }
{
    echo "## PostgreSQL → PostgreSQL copy, $(date -u +%F), ${DATA_MB} MB of table data, JOBS=$JOBS, $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), pgcopydb $(pgcopydb --version 2>&1 | grep -o 'version [0-9.-]*' | head -1 | cut -d' ' -f2)"
    echo
    echo "| method | wall s | MB/s | peak RSS MB (process tree) | result |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${RESULTS[@]}"
    echo
    echo "- cutover throughput vs pgcopydb: $(ratio "${SECS_cutover:-}" "${SECS_pgcopydb:-}")×"
    echo "- cutover throughput vs raw COPY pipes: $(ratio "${SECS_cutover:-}" "${SECS_raw_copy_pipes:-}")×"
    echo "- cutover throughput vs pg_dump + pg_restore: $(ratio "${SECS_cutover:-}" "${SECS_pg_dump_restore:-}")×"
    echo "- MB = pg_table_size of the source tables (heap + TOAST, no indexes); wall time includes schema, data, indexes and constraints for every method; \"identical\" = per-table row count and md5 over all rows in key order match the source."
} | tee "$ROOT/bench/results/pg-copy-$(date -u +%Y%m%dT%H%M%S).md"

#!/usr/bin/env bash
# MariaDB ⇄ PostgreSQL bulk copy: cutover next to pgloader and to a raw client pipe, in one run
# on the same throwaway servers, methods alternated over several rounds, two shapes of data.
#
#   bench/mysql_copy.sh                      # SCALE=1: rows ≈ 1 M students + 2 M notes,
#                                            # bytes ≈ 12,000 attachments of 16–150 KB
#   SCALE=0.2 ROUNDS=1 bench/mysql_copy.sh   # a quick run
#
# Directions and methods:
#   MariaDB → PostgreSQL: cutover (`sync --stop-when-caught-up`: copy + change capture, which
#     finds nothing to apply), pgloader (Debian's, defaults), pipe (`mariadb --batch` |
#     `psql COPY FROM STDIN`, one table at a time, into tables created beforehand)
#   PostgreSQL → MariaDB: cutover, pipe (`psql COPY TO STDOUT` | `mariadb LOAD DATA LOCAL INFILE`)
# Every run copies into a new target database; results are checked outside every tool (row
# count and an md5 over id, name/body per table, read by the target's own client).
# Peak RSS of cutover by GNU time. Knobs: SCALE (1), ROUNDS (2), JOBS (2), SHAPES ("rows
# bytes"), DIRECTIONS ("m2p p2m"), BENCH_DIR, CUTOVER_BIN (target/release/cutover).
# Writes bench/results/mysql-copy-<date>.md. Installs pgloader and GNU time from Debian if
# missing. Never touches a server it did not start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-1}
ROUNDS=${ROUNDS:-2}
JOBS=${JOBS:-2}
SHAPES=${SHAPES:-rows bytes}
DIRECTIONS=${DIRECTIONS:-m2p p2m}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-mysql}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if ! need pgloader || [[ ! -x /usr/bin/time ]]; then
    echo "installing pgloader and GNU time (Debian)…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader time >/dev/null
fi
[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet

prepare_bench_dir
PG_PORT=$(free_port); MY_PORT=$(free_port)
MY_DIR=$BENCH_DIR/maria
stop_maria() {
    if [[ -f $MY_DIR/mysqld.pid ]]; then kill "$(cat "$MY_DIR/mysqld.pid")" 2>/dev/null || true; sleep 2; fi
}
trap 'stop_maria; stop_all' EXIT
start_cluster pg "$PG_PORT"
mkdir -p "$MY_DIR"; chown mysql: "$MY_DIR" 2>/dev/null || true
mariadb-install-db --no-defaults --user=mysql --datadir="$MY_DIR" --auth-root-authentication-method=normal \
    --skip-test-db >/dev/null
mariadbd --no-defaults --user=mysql --datadir="$MY_DIR" --port="$MY_PORT" --bind-address=127.0.0.1 \
    --socket="$MY_DIR/mysqld.sock" --pid-file="$MY_DIR/mysqld.pid" --log-bin="$MY_DIR/binlog" \
    --binlog-format=ROW --binlog-row-image=FULL --server-id=1 --innodb-buffer-pool-size=1G \
    --innodb-log-file-size=512M --innodb-flush-log-at-trx-commit=2 --max-allowed-packet=256M \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci --local-infile=1 \
    --log-error="$MY_DIR/error.log" &
for _ in $(seq 60); do mariadb --no-defaults -h127.0.0.1 -P"$MY_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
P="postgres://postgres@127.0.0.1:$PG_PORT"; M="mysql://root@127.0.0.1:$MY_PORT"
my() { mariadb --no-defaults -h127.0.0.1 -P"$MY_PORT" -uroot --local-infile=1 -N -B "$@"; }
pg() { psql -X -q -v ON_ERROR_STOP=1 -At "$P/$1" "${@:2}"; }

n_of() { python3 -c "print(max(1, int($1 * $SCALE)))"; }

# The source data in MariaDB (m2p) and the same in PostgreSQL (p2m).
generate() { # shape
    local ns nn nf
    case $1 in
        rows) ns=$(n_of 1000000); nn=$(n_of 2000000); nf=0 ;;
        bytes) ns=$(n_of 100000); nn=0; nf=$(n_of 12000) ;;
    esac
    my -e "DROP DATABASE IF EXISTS bench; CREATE DATABASE bench"
    my bench <<SQL
CREATE TABLE students (id bigint PRIMARY KEY, school_id int NOT NULL, name varchar(100) NOT NULL,
    email varchar(200) NOT NULL, profile json, score decimal(6,2), created_at datetime(6) NOT NULL,
    UNIQUE KEY students_email (email));
CREATE TABLE notes (id bigint PRIMARY KEY, student_id bigint NOT NULL, body varchar(64) NOT NULL,
    created_at datetime(6) NOT NULL, KEY notes_student (student_id));
CREATE TABLE attachments (id bigint PRIMARY KEY, student_id bigint NOT NULL, mime varchar(40) NOT NULL,
    body longblob NOT NULL);
SET SESSION sql_log_bin = 0;
INSERT INTO students SELECT seq, 1 + seq % 500, CONCAT('Student ', seq), CONCAT('student', seq, '@school.example'),
    CONCAT('{"lang": "', ELT(1 + seq % 4, 'en', 'mi', 'hi', 'pt'), '", "font": ', seq % 3, '}'),
    (seq % 10001) / 100, TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq * 7 MINUTE FROM seq_1_to_$ns;
INSERT INTO notes SELECT seq, 1 + (seq * 7919) % $ns, LEFT(MD5(seq), 8 + seq % 24),
    TIMESTAMP'2024-02-01 00:00:00' + INTERVAL seq * 3 SECOND FROM seq_0_to_$((nn > 0 ? nn - 1 : 0)) WHERE $nn > 0;
INSERT INTO attachments SELECT seq, 1 + seq % $ns, ELT(1 + seq % 3, 'image/png', 'application/pdf', 'audio/ogg'),
    REPEAT(RANDOM_BYTES(1024), 16 + (seq * 37) % 134) FROM seq_0_to_$((nf > 0 ? nf - 1 : 0)) WHERE $nf > 0;
ANALYZE TABLE students, notes, attachments;
SQL
    pg postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
    pg bench <<SQL
CREATE TABLE students (id bigint PRIMARY KEY, school_id int NOT NULL, name varchar(100) NOT NULL,
    email varchar(200) NOT NULL UNIQUE, profile json, score numeric(6,2), created_at timestamp(6) NOT NULL);
CREATE TABLE notes (id bigint PRIMARY KEY, student_id bigint NOT NULL, body varchar(64) NOT NULL,
    created_at timestamp(6) NOT NULL);
CREATE INDEX notes_student ON notes (student_id);
CREATE TABLE attachments (id bigint PRIMARY KEY, student_id bigint NOT NULL, mime varchar(40) NOT NULL,
    body bytea NOT NULL);
SQL
    # The same rows into PostgreSQL, through the pipe (not timed).
    copy_pipe_m2p bench bench
    pg bench -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
}

# Per table: rows and an md5 over id, name or body, in id order (each engine's own client).
check_pg() {
    pg "$1" -c "SELECT 'students', count(*), md5(coalesce(string_agg(id::text || ':' || name, ',' ORDER BY id), '')) FROM students" \
        -c "SELECT 'notes', count(*), md5(coalesce(string_agg(id::text || ':' || body, ',' ORDER BY id), '')) FROM notes" \
        -c "SELECT 'attachments', count(*), md5(coalesce(string_agg(id::text || ':' || md5(body), ',' ORDER BY id), '')) FROM attachments"
}
check_my() {
    my "$1" -e "SET SESSION group_concat_max_len = 1073741824;
        SELECT 'students', count(*), md5(coalesce(group_concat(CONCAT(id, ':', name) ORDER BY id SEPARATOR ','), '')) FROM students;
        SELECT 'notes', count(*), md5(coalesce(group_concat(CONCAT(id, ':', body) ORDER BY id SEPARATOR ','), '')) FROM notes;
        SELECT 'attachments', count(*), md5(coalesce(group_concat(CONCAT(id, ':', md5(body)) ORDER BY id SEPARATOR ','), '')) FROM attachments" | tr '\t' '|'
}

copy_pipe_m2p() { # mariadb db → postgres db (tables exist there)
    # mariadb --batch escapes tab, newline and backslash as PostgreSQL's text COPY reads them
    # and prints NULL as NULL; bytes go as \x-hex text.
    my "$1" -e "SELECT id, school_id, name, email, profile, score, created_at FROM students" \
        | pg "$2" -c "COPY students FROM STDIN WITH (NULL 'NULL')"
    my "$1" -e "SELECT id, student_id, body, created_at FROM notes" | pg "$2" -c "COPY notes FROM STDIN"
    my "$1" -e "SELECT id, student_id, mime, CONCAT(CHAR(92), 'x', HEX(body)) FROM attachments" \
        | pg "$2" -c "COPY attachments FROM STDIN"
}

copy_pipe_p2m() { # postgres db → mariadb db (tables exist there)
    pg "$1" -c "COPY students TO STDOUT" | my "$2" -e "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE students"
    pg "$1" -c "COPY notes TO STDOUT" | my "$2" -e "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE notes"
    pg "$1" -c "COPY (SELECT id, student_id, mime, encode(body, 'hex') FROM attachments) TO STDOUT" \
        | my "$2" -e "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE attachments (id, student_id, mime, @b) SET body = UNHEX(@b)"
}

run() { # direction method → "seconds rss_kb" or failed/mismatch
    local dir=$1 m=$2 db=t_$2 t0 t1 rss=-
    case $dir in
        m2p) pg postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" ;;
        p2m) my -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db" ;;
    esac
    pg postgres -c CHECKPOINT; my -e "FLUSH TABLES"; sync
    t0=$(now)
    case $dir/$m in
        m2p/cutover|p2m/cutover)
            local s t
            if [[ $dir == m2p ]]; then s="$M/bench"; t="$P/$db"; else s="$P/bench"; t="$M/$db"; fi
            /usr/bin/time -f %M -o "$BENCH_DIR/rss" "$CUTOVER_BIN" sync --source "$s" --target "$t" \
                --jobs "$JOBS" --stop-when-caught-up --quiet >"$BENCH_DIR/$m.out" 2>&1 || { echo failed; return; }
            rss=$(cat "$BENCH_DIR/rss") ;;
        m2p/pgloader)
            pgloader --quiet --with "workers = $((JOBS * 2))" --with "concurrency = $JOBS" \
                "$M/bench" "$P/$db" >"$BENCH_DIR/$m.out" 2>&1 || { echo failed; return; } ;;
        m2p/pipe)
            # Tables first, the data, then keys and indexes (as pg_restore orders them).
            pg_dump -s --section=pre-data "$P/bench" | pg "$db" >/dev/null
            copy_pipe_m2p bench "$db"
            pg_dump -s --section=post-data "$P/bench" | pg "$db" >/dev/null ;;
        p2m/pipe)
            # Into tables with their keys (InnoDB tables are clustered on the primary key).
            my -e "CREATE TABLE $db.students LIKE bench.students; CREATE TABLE $db.notes LIKE bench.notes; CREATE TABLE $db.attachments LIKE bench.attachments"
            copy_pipe_p2m bench "$db" ;;
    esac
    t1=$(now)
    local got ref
    if [[ $dir == m2p ]]; then
        # pgloader puts the tables in a schema named after the source database.
        if [[ $m == pgloader ]]; then pg "$db" -c "ALTER DATABASE $db SET search_path = bench, public"; fi
        got=$(check_pg "$db"); ref=$REF_M
    else
        got=$(check_my "$db"); ref=$REF_P
    fi
    if [[ $got != "$ref" ]]; then echo "mismatch"; echo "$got" >"$BENCH_DIR/$dir-$m.mismatch"; return; fi
    python3 -c "print(round($t1 - $t0, 2), '$rss')"
}

OUT="$ROOT/bench/results/mysql-copy-$(date -u +%Y%m%dT%H%M%S).md"
{
    echo "## MariaDB ⇄ PostgreSQL copy, $(date -u +%F)"
    echo
    echo "JOBS=$JOBS, $(nproc) cores, MariaDB $(mariadbd --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*-MariaDB' | head -1), PostgreSQL $(pg_ctl --version | awk '{print $3}'), $(pgloader --version 2>/dev/null | sed -n 1p), SCALE=$SCALE, $ROUNDS rounds, methods alternated. Seconds: wall time of the whole copy; cutover's peak RSS by GNU time. Every result checked outside the tools (rows and md5 per table by the target's own client)."
    echo
    echo "| shape | direction | MB | method | best s | all rounds s | peak RSS MB | cutover vs method (best time ratio) |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$OUT"

for shape in $SHAPES; do
    echo "# generating the $shape shape (SCALE=$SCALE)…"
    generate "$shape"
    REF_M=$(check_pg bench); REF_P=$(check_my bench)
    if [[ $(echo "$REF_M" | tr '|' ' ') != $(echo "$REF_P" | tr '|' ' ') ]]; then
        echo "the two sources differ: $REF_M / $REF_P" >&2; exit 1
    fi
    MB=$(my -e "SELECT ROUND(SUM(data_length) / 1e6, 1) FROM information_schema.TABLES WHERE table_schema = 'bench'")
    for dir in $DIRECTIONS; do
        case $dir in m2p) methods=(cutover pgloader pipe) ;; p2m) methods=(cutover pipe) ;; esac
        declare -A times=() rsss=()
        for ((r = 0; r < ROUNDS; r++)); do
            order=("${methods[@]}")
            if (( r % 2 == 1 )); then order=($(printf '%s\n' "${methods[@]}" | tac)); fi
            for m in "${order[@]}"; do
                res=$(run "$dir" "$m")
                echo "#   $shape $dir round $((r + 1)) $m: $res"
                times[$m]="${times[$m]:-} ${res%% *}"
                [[ $res == *" "* ]] && rsss[$m]="${rsss[$m]:-} ${res##* }"
            done
        done
        best() { printf '%s\n' $1 | { grep -E '^[0-9.]+$' || true; } | sort -n | head -1; }
        bc=$(best "${times[cutover]:-}")
        for m in "${methods[@]}"; do
            bm=$(best "${times[$m]:-}")
            ratio=$(python3 -c "a, b = '$bc', '$bm'; print(round(float(b) / float(a), 2) if a and b else 'n/a')")
            peak=$(printf '%s\n' ${rsss[$m]:-} | { grep -E '^[0-9]+$' || true; } | sort -n | tail -1)
            peak=$([[ -n $peak ]] && python3 -c "print(round($peak / 1024))" || echo -)
            echo "| $shape | $dir | $MB | $m | $bm | ${times[$m]# } | $peak | $([[ $m == cutover ]] || echo "${ratio}×") |" >> "$OUT"
        done
        unset times rsss
    done
done
echo >> "$OUT"
echo "Ratio: the method's best time divided by cutover's best time (above 1: cutover faster)." >> "$OUT"
cat "$OUT"

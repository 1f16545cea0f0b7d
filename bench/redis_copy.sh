#!/usr/bin/env bash
# PostgreSQL → Redis bulk load: cutover next to Redis's own bulk-load path, in one run on the
# same throwaway servers, methods alternated over several rounds, two shapes of data.
#
#   bench/redis_copy.sh                      # SCALE=1: rows ≈ 600,000 students,
#                                            # bytes ≈ 15,000 attachments of 4–16 KB
#   SCALE=0.1 ROUNDS=1 bench/redis_copy.sh   # a quick run
#
# Methods (each into a new, empty Redis started for the run: --appendonly yes
# --appendfsync everysec --save '', the usual durable setting; cutover accepts it):
#   cutover: `sync --stop-when-caught-up` (copy + change capture, which finds nothing to
#     apply): every row as a hash, its key in the table's sorted set, checkpoint and chunk
#     marks in the same MULTI/EXEC;
#   pipe: `psql COPY … TO STDOUT` | a small Python transform into RESP `HSET` commands |
#     `redis-cli --pipe` (Redis's documented mass-insertion path): hashes only, no key index,
#     no state, no transaction.
# Every result is checked outside the tools: the number of row keys, and an md5 over every
# row's fields read back with redis-cli, against the same from psql.
# Peak RSS of cutover by GNU time. Knobs: SCALE (1), ROUNDS (3), JOBS (2), SHAPES ("rows
# bytes"), BENCH_DIR, CUTOVER_BIN (target/release/cutover). Writes
# bench/results/redis-copy-<date>.md. Never touches a server it did not start (never 6379).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-1}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-2}
SHAPES=${SHAPES:-rows bytes}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-redis}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x /usr/bin/time ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet

prepare_bench_dir
PG_PORT=$(free_port)
REDIS_PID=
# Every Redis this script starts is listed in $BENCH_DIR/redis.pids and stopped by pid.
stop_redis() {
    if [[ -n $REDIS_PID ]]; then kill "$REDIS_PID" 2>/dev/null || true; REDIS_PID=; fi
}
stop_every_redis() {
    local p
    for p in $(cat "$BENCH_DIR/redis.pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
}
trap 'stop_every_redis; stop_all' EXIT
start_cluster pg "$PG_PORT"
P="postgres://postgres@127.0.0.1:$PG_PORT"
pg() { psql -X -q -v ON_ERROR_STOP=1 -At "$P/$1" "${@:2}"; }
n_of() { python3 -c "print(max(1, int($1 * $SCALE)))"; }

# A new, empty Redis for one run; sets R_PORT.
start_redis() {
    stop_redis
    R_PORT=$(free_port)
    local d=$BENCH_DIR/redis-$R_PORT
    mkdir -p "$d"
    redis-server --port "$R_PORT" --bind 127.0.0.1 --dir "$d" --appendonly yes --appendfsync everysec \
        --save '' --daemonize no --logfile "$d/redis.log" >/dev/null 2>&1 </dev/null &
    REDIS_PID=$!
    echo "$REDIS_PID" >> "$BENCH_DIR/redis.pids"
    for _ in $(seq 100); do redis-cli -p "$R_PORT" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server did not start" >&2; exit 1
}
rc() { redis-cli -p "$R_PORT" "$@"; }

generate() { # shape
    pg postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
    case $1 in
        rows) pg bench <<SQL
CREATE TABLE students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL,
    email text NOT NULL, score numeric(6,2));
INSERT INTO students SELECT i, 1 + i % 500, 'Student ' || i, 'student' || i || '@school.example',
    (i % 10001) / 100.0 FROM generate_series(1, $(n_of 600000)) i;
SQL
            TABLE=students; FIELDS="id school_id name email score" ;;
        bytes) pg bench <<SQL
CREATE TABLE attachments (id bigint PRIMARY KEY, mime text NOT NULL, body bytea NOT NULL);
-- Incompressible bodies of 4–16 KB, stored uncompressed (the MB column is what crosses).
ALTER TABLE attachments ALTER body SET STORAGE EXTERNAL;
INSERT INTO attachments SELECT i, (ARRAY['image/png', 'application/pdf', 'audio/ogg'])[1 + i % 3],
    (SELECT decode(string_agg(md5((i * 1000 + g)::text), ''), 'hex')
       FROM generate_series(1, 256 + (i * 37) % 769) g)
    FROM generate_series(1, $(n_of 15000)) i;
SQL
            TABLE=attachments; FIELDS="id mime body" ;;
    esac
    pg bench -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
}

# The rows as RESP HSET commands on stdout (bytea as raw bytes, NULL fields left out).
pipe_transform() {
    python3 -c '
import sys
fields = sys.argv[1].split()
out = sys.stdout.buffer
def unescape(s):
    if s.startswith(b"\\\\x"): return bytes.fromhex(s[3:].decode())
    return s.replace(b"\\t", b"\t").replace(b"\\n", b"\n").replace(b"\\r", b"\r").replace(b"\\\\", b"\\")
for line in sys.stdin.buffer:
    vals = line.rstrip(b"\n").split(b"\t")
    args = [b"HSET", sys.argv[2].encode() + b":" + vals[0]]
    for f, v in zip(fields, vals):
        if v != b"\\N": args += [f.encode(), unescape(v)]
    out.write(b"*%d\r\n" % len(args))
    for a in args: out.write(b"$%d\r\n%s\r\n" % (len(a), a))
' "$FIELDS" "$TABLE"
}

# Rows and an md5 over every row's fields in id order, read back from Redis with HMGET over one
# pipelined socket (RESP), never through cutover.
check_redis() {
    python3 - "$R_PORT" "$TABLE" "$FIELDS" <<'PY'
import hashlib, socket, subprocess, sys
port, table, fields = int(sys.argv[1]), sys.argv[2], sys.argv[3].split()
keys = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", table + ":*"],
                      capture_output=True, check=True).stdout.split()
ids = sorted(int(k.split(b":", 1)[1]) for k in keys)
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb", buffering=1 << 20)
def line():
    return f.readline()[:-2]
def reply():
    l = line()
    if l[:1] == b"*":
        return [reply() for _ in range(int(l[1:]))]
    if l[:1] == b"$":
        n = int(l[1:])
        if n < 0: return None
        b = f.read(n + 2)[:-2]
        return b
    raise SystemExit("unexpected reply %r" % l)
h = hashlib.md5()
def cmd(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
fb = [x.encode() for x in fields]
for i in range(0, len(ids), 5000):
    batch = ids[i:i + 5000]
    s.sendall(b"".join(cmd([b"HMGET", ("%s:%d" % (table, k)).encode()] + fb) for k in batch))
    for k in batch:
        for v in reply():
            h.update(b"\\N" if v is None else v)
            h.update(b"\t")
        h.update(b"\n")
print(len(ids), h.hexdigest())
PY
}

run() { # method → "seconds rss_kb" or failed/mismatch
    local m=$1 t0 t1 rss=-
    start_redis
    pg postgres -c CHECKPOINT; sync
    t0=$(now)
    case $m in
        cutover)
            /usr/bin/time -f %M -o "$BENCH_DIR/rss" "$CUTOVER_BIN" sync --source "$P/bench" \
                --target "redis://127.0.0.1:$R_PORT/0" --jobs "$JOBS" --stop-when-caught-up --quiet \
                >"$BENCH_DIR/$m.out" 2>&1 || { echo failed; return; }
            rss=$(cat "$BENCH_DIR/rss") ;;
        pipe)
            pg bench -c "COPY $TABLE TO STDOUT" | pipe_transform | rc --pipe >"$BENCH_DIR/$m.out" 2>&1 \
                || { echo failed; return; } ;;
    esac
    t1=$(now)
    local got
    got=$(check_redis)
    stop_redis
    if [[ $got != "$REF" ]]; then echo "mismatch"; echo "$got" >"$BENCH_DIR/$m.mismatch"; return; fi
    python3 -c "print(round($t1 - $t0, 2), '$rss')"
}

OUT="$ROOT/bench/results/redis-copy-$(date -u +%Y%m%dT%H%M%S).md"
{
    echo "## PostgreSQL → Redis copy, $(date -u +%F)"
    echo
    echo "JOBS=$JOBS, $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), $(redis-server --version | awk '{print $3}') (appendonly yes, appendfsync everysec), SCALE=$SCALE, $ROUNDS rounds, methods alternated, each run into a new Redis. Seconds: wall time of the whole load; cutover's peak RSS by GNU time. Every result checked outside the tools (row keys and an md5 over every row's fields read back with redis-cli, against the reference load)."
    echo
    echo "| shape | rows | MB | method | best s | all rounds s | rows/s | MB/s | peak RSS MB | method's best / cutover's best |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$OUT"

for shape in $SHAPES; do
    echo "# generating the $shape shape (SCALE=$SCALE)…"
    generate "$shape"
    ROWS=$(pg bench -c "SELECT count(*) FROM $TABLE")
    MB=$(pg bench -c "SELECT round(sum(pg_column_size(t.*)) / 1e6, 1) FROM $TABLE t")
    # The reference: what redis-cli reads back after the pipe's load, checked once against
    # psql's row count (every later run of either method must read back the same).
    start_redis
    pg bench -c "COPY $TABLE TO STDOUT" | pipe_transform | rc --pipe >/dev/null
    REF=$(check_redis)
    stop_redis
    [[ ${REF%% *} == "$ROWS" ]] || { echo "the reference load holds ${REF%% *} rows, not $ROWS" >&2; exit 1; }
    methods=(cutover pipe)
    declare -A times=() rsss=()
    for ((r = 0; r < ROUNDS; r++)); do
        order=("${methods[@]}")
        if (( r % 2 == 1 )); then order=(pipe cutover); fi
        for m in "${order[@]}"; do
            res=$(run "$m")
            echo "#   $shape round $((r + 1)) $m: $res"
            times[$m]="${times[$m]:-} ${res%% *}"
            [[ $res == *" "* ]] && rsss[$m]="${rsss[$m]:-} ${res##* }"
        done
    done
    best() { printf '%s\n' $1 | { grep -E '^[0-9.]+$' || true; } | sort -n | head -1; }
    bc=$(best "${times[cutover]:-}")
    for m in "${methods[@]}"; do
        bm=$(best "${times[$m]:-}")
        ratio=$(python3 -c "a, b = '$bc', '$bm'; print(round(float(b) / float(a), 2) if a and b else 'n/a')")
        rate=$(python3 -c "b = '$bm'; print(round($ROWS / float(b)) if b else 'n/a', round($MB / float(b), 1) if b else 'n/a')")
        peak=$(printf '%s\n' ${rsss[$m]:-} | { grep -E '^[0-9]+$' || true; } | sort -n | tail -1)
        peak=$([[ -n $peak ]] && python3 -c "print(round($peak / 1024))" || echo -)
        echo "| $shape | $ROWS | $MB | $m | $bm | ${times[$m]# } | ${rate% *} | ${rate#* } | $peak | $([[ $m == cutover ]] || echo "${ratio}×") |" >> "$OUT"
    done
    unset times rsss
done
stop_redis
echo >> "$OUT"
echo "Ratio: the method's best time divided by cutover's best time (below 1: the method is faster). MB: the source rows' size in PostgreSQL (pg_column_size)." >> "$OUT"
cat "$OUT"

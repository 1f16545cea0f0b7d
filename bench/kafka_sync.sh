#!/usr/bin/env bash
# PostgreSQL → Kafka: cutover next to a hand-written pipelined producer, in one run on the same
# throwaway PostgreSQL and tansu broker (Kafka-compatible, in memory), two shapes of data,
# methods alternated.
#
#   bench/kafka_sync.sh                          # ROWS=200000 students (+2.5x sessions, annotations)
#   ROWS=50000 ROUNDS=1 SECONDS_BACKLOG=10 bench/kafka_sync.sh   # a quick run
#
# copy     every row of the source as one message: cutover (`sync --stop-when-caught-up` into new
#          topics of PARTITIONS partitions, its state in a new SQLite file) vs the peer: `psql COPY
#          (SELECT row_to_json(t) …) TO STDOUT` piped into bench/kafka_produce.py (confluent-kafka,
#          i.e. librdkafka's pipelined producer, Debezium-shaped envelope keyed by the primary key,
#          acks=all, every delivery report awaited) into topics it creates the same way — what a
#          team would write by hand. Shapes: rows (the school dataset: small rows with JSON) and
#          bytes (attachments: 8 KB of bytea each). Topic message counts checked.
# backlog  cutover stopped while pgbench runs SECONDS_BACKLOG unthrottled (4 row changes per
#          transaction); then `sync --stop-when-caught-up` applies the backlog: its apply rate
#          next to the workload's rate.
# Peak RSS of cutover by GNU time. Knobs: ROWS, ROUNDS (2), CLIENTS (4), SECONDS_BACKLOG (20),
# PARTITIONS (3), BENCH_DIR, CUTOVER_BIN, CUTOVER_TANSU. Writes bench/results/kafka-sync-<date>.md.
# Never touches a server it did not start (the broker listens on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-200000}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
SECONDS_BACKLOG=${SECONDS_BACKLOG:-20}
PARTITIONS=${PARTITIONS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/cutover-bench-kafka}
CUTOVER_BIN=${CUTOVER_BIN:-$ROOT/target/release/cutover}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x $CUTOVER_BIN ]] || cargo build --release --quiet
[[ -x /usr/bin/time ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/cutover-bench/kafka-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q confluent-kafka
fi
"$ROOT/scripts/ensure-tansu.sh"
TANSU=${CUTOVER_TANSU:-${XDG_CACHE_HOME:-$HOME/.cache}/cutover-test-tools/tansu/bin/tansu}

prepare_bench_dir
PG_PORT=$(free_port); K_PORT=$(free_port)
mkdir -p "$BENCH_DIR/tansu"
(cd "$BENCH_DIR/tansu" && exec env RUST_LOG=warn "$TANSU" broker --listener-url "tcp://127.0.0.1:$K_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$K_PORT" --storage-engine memory://tansu/ \
    >"$BENCH_DIR/tansu.log" 2>&1) &
K_PID=$!
trap 'kill $K_PID 2>/dev/null || true; stop_all' EXIT
start_cluster pg "$PG_PORT" -c synchronous_commit=on
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$K_PORT") 2>/dev/null && break; sleep 0.1; done
S="postgres://postgres@127.0.0.1:$PG_PORT"; B="127.0.0.1:$K_PORT"; N="kafka://$B?partitions=$PARTITIONS"
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$1" -c "$2"; }

echo "# generating the datasets ($ROWS students)…"
SESSIONS=$((ROWS * 5 / 2)); ATTACH=$((ROWS / 20))
for db in rows bytes; do q "$S/postgres" "CREATE DATABASE $db"; done
psql -X -q -v ON_ERROR_STOP=1 "$S/rows" <<SQL
CREATE TABLE students (id bigint PRIMARY KEY, school_id int NOT NULL, name text NOT NULL, profile jsonb);
CREATE TABLE sessions (id uuid PRIMARY KEY, student_id bigint NOT NULL, score numeric(6,2), answers jsonb NOT NULL, updated_at timestamptz);
CREATE TABLE annotations (id bigserial PRIMARY KEY, session_id uuid NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO students SELECT i, 1 + i % 500, 'Student ' || i,
    jsonb_build_object('lang', (ARRAY['en','mi','hi','pt'])[1 + i % 4], 'bio', repeat('b', 60)) FROM generate_series(1, $ROWS) i;
INSERT INTO sessions SELECT md5('s' || i)::uuid, 1 + i % $ROWS, (i % 10001) / 100.0,
    jsonb_build_object('v', 2, 'q', i % 9), now() FROM generate_series(1, $SESSIONS) i;
INSERT INTO annotations (session_id, body, created_at) SELECT md5('s' || (1 + i % $SESSIONS))::uuid,
    repeat(md5(i::text), 1 + i % 3), now() FROM generate_series(1, $SESSIONS) i;
VACUUM (FREEZE, ANALYZE);
CHECKPOINT;
SQL
psql -X -q -v ON_ERROR_STOP=1 "$S/bytes" <<SQL
CREATE TABLE attachments (id bigint PRIMARY KEY, student_id bigint NOT NULL, mime text NOT NULL, body bytea NOT NULL);
ALTER TABLE attachments ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO attachments SELECT i, i % 1000, 'application/octet-stream',
    (SELECT string_agg(decode(md5(i::text || j::text), 'hex'), ''::bytea) FROM generate_series(1, 512) j)
  FROM generate_series(1, $ATTACH) i;
VACUUM (FREEZE, ANALYZE);
CHECKPOINT;
SQL
declare -A TABLES=([rows]="students sessions annotations" [bytes]="attachments")
declare -A KEYS=([students]=id [sessions]=id [annotations]=id [attachments]=id)
declare -A TOTAL=([rows]=$((ROWS + 2 * SESSIONS)) [bytes]=$ATTACH)
declare -A MB
for shape in rows bytes; do
    MB[$shape]=$(q "$S/$shape" "SELECT round(sum(pg_total_relation_size(c.oid)) / 1048576.0) FROM pg_class c WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
done

# The number of messages in the topics under prefix $1, consumed to the end (tansu's listed
# high watermarks can lag behind what a fetch returns; see crates/cutover-kafka).
stream_count() {
    "$VENV/bin/python" - "$B" "$1" <<'PY'
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "cutover-bench-count",
              "enable.auto.commit": False, "fetch.max.bytes": 52428800})
parts = [TopicPartition(name, p, 0) for name, t in c.list_topics(timeout=30).topics.items()
         if name.startswith(sys.argv[2] + ".") for p in t.partitions]
c.assign(parts)
n, idle = 0, 0
while idle < 6:
    batch = c.consume(10000, 0.5)
    if not batch:
        idle += 1
        continue
    idle = 0
    n += sum(1 for m in batch if m.error() is None)
print(n)
c.close()
PY
}
# Creates topic $1 as cutover does ($PARTITIONS partitions, one replica).
create_topic() {
    "$VENV/bin/python" - "$B" "$1" "$PARTITIONS" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in a.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1)]).values():
    f.result()
PY
}

RUN=0
declare -A BEST WORST RSS
record() { # key seconds
    local k=$1 s=$2
    if [[ -z ${BEST[$k]:-} ]] || python3 -c "import sys; sys.exit(0 if $s < ${BEST[$k]} else 1)"; then BEST[$k]=$s; fi
    if [[ -z ${WORST[$k]:-} ]] || python3 -c "import sys; sys.exit(0 if $s > ${WORST[$k]} else 1)"; then WORST[$k]=$s; fi
}
run_cutover() { # shape
    RUN=$((RUN + 1)); local name="c${RUN}_$1" t0 t1 rss
    t0=$(now)
    /usr/bin/time -v "$CUTOVER_BIN" sync --source "$S/$1" --target "$N" --name "$name" \
        --state "$BENCH_DIR/$name.state.db" --jobs 2 --stop-when-caught-up --quiet >"$BENCH_DIR/$name.out" 2>"$BENCH_DIR/$name.err"
    t1=$(now)
    rss=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$BENCH_DIR/$name.err")
    [[ -z ${RSS[$1]:-} || $rss -gt ${RSS[$1]} ]] && RSS[$1]=$rss
    local n; n=$(stream_count "$name")
    [[ $n == "${TOTAL[$1]}" ]] || { echo "cutover $1: $n messages, expected ${TOTAL[$1]}" >&2; exit 1; }
    "$CUTOVER_BIN" cleanup --source "$S/$1" --target "$N" --name "$name" --state "$BENCH_DIR/$name.state.db" >/dev/null
    record "cutover.$1" "$(python3 -c "print(round($t1 - $t0, 2))")"
}
run_peer() { # shape
    RUN=$((RUN + 1)); local name="p${RUN}_$1" t0 t1
    t0=$(now)
    for t in ${TABLES[$1]}; do
        create_topic "$name.public.$t"
        psql -X -q -At "$S/$1" -c "COPY (SELECT row_to_json(x) FROM $t x) TO STDOUT" |
            "$VENV/bin/python" "$ROOT/bench/kafka_produce.py" "$B" "$name.public.$t" "$t" "${KEYS[$t]}"
    done
    t1=$(now)
    local n; n=$(stream_count "$name")
    [[ $n == "${TOTAL[$1]}" ]] || { echo "peer $1: $n messages, expected ${TOTAL[$1]}" >&2; exit 1; }
    record "peer.$1" "$(python3 -c "print(round($t1 - $t0, 2))")"
}
for round in $(seq "$ROUNDS"); do
    for shape in rows bytes; do
        if (( round % 2 )); then run_cutover "$shape"; run_peer "$shape"; else run_peer "$shape"; run_cutover "$shape"; fi
        echo "#   round $round $shape: cutover best ${BEST[cutover.$shape]} s, peer best ${BEST[peer.$shape]} s"
    done
done

echo "# backlog: ${SECONDS_BACKLOG}s of unthrottled workload while cutover is stopped"
cat > "$BENCH_DIR/workload.sql" <<SQL
\set s random(1, $SESSIONS)
\set st random(1, $ROWS)
\set a random(1, $SESSIONS)
BEGIN;
UPDATE sessions SET score = (random() * 100)::numeric(6,2), answers = jsonb_set(answers, '{v}', to_jsonb(:s)), updated_at = now() WHERE id = md5('s' || :s)::uuid;
INSERT INTO annotations (session_id, body, created_at) VALUES (md5('s' || :s)::uuid, repeat('note ', 40), now());
UPDATE students SET profile = profile || jsonb_build_object('seen', :s) WHERE id = :st;
DELETE FROM annotations WHERE id = :a;
COMMIT;
SQL
BL=backlog
"$CUTOVER_BIN" sync --source "$S/rows" --target "$N" --name "$BL" --state "$BENCH_DIR/$BL.state.db" \
    --jobs 2 --stop-when-caught-up --quiet >/dev/null 2>&1
before=$(stream_count "$BL")
out=$(pgbench -n -f "$BENCH_DIR/workload.sql" -c "$CLIENTS" -j 2 -T "$SECONDS_BACKLOG" "$S/rows" 2>&1)
backlog_tx=$(grep -o 'actually processed: [0-9]*' <<<"$out" | awk '{print $3}')
backlog_tps=$(grep -o 'tps = [0-9.]*' <<<"$out" | awk '{print $3}')
t0=$(now)
/usr/bin/time -v "$CUTOVER_BIN" sync --source "$S/rows" --target "$N" --name "$BL" \
    --state "$BENCH_DIR/$BL.state.db" --stop-when-caught-up --quiet >/dev/null 2>"$BENCH_DIR/$BL.err"
t1=$(now)
after=$(stream_count "$BL")
apply_s=$(python3 -c "print(round($t1 - $t0, 2))")
apply_tps=$(python3 -c "print(round($backlog_tx / ($t1 - $t0)))")
rss_bl=$(awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}' "$BENCH_DIR/$BL.err")
events=$((after - before))
echo "#   $backlog_tx transactions at $backlog_tps tx/s; $events events applied in ${apply_s}s = $apply_tps tx/s"

ratio() { python3 -c "print(round(float('$1') / float('$2'), 2))"; }
mkdir -p bench/results
OUT=bench/results/kafka-sync-$(date -u +%Y%m%dT%H%M%S).md
{
    echo "## PostgreSQL → Kafka, $(date -u +%F), $(nproc) cores, PostgreSQL $(pg_ctl --version | awk '{print $3}'), $("$TANSU" --version) (memory storage), peer confluent-kafka $("$VENV/bin/python" -c 'import confluent_kafka as c; print(c.version()[0], "librdkafka", c.libversion()[0])'), $PARTITIONS partitions"
    echo
    echo "Copy: every row one message, ${ROUNDS} round(s), methods alternated; best (worst) seconds. rows = $ROWS students + $SESSIONS sessions + $SESSIONS annotations (${MB[rows]} MB on disk); bytes = $ATTACH attachments of 8 KB (${MB[bytes]} MB)."
    echo
    echo "| shape | messages | cutover s | peer s | cutover msgs/s | peer msgs/s | cutover ÷ peer throughput | cutover peak RSS |"
    echo "|---|---|---|---|---|---|---|---|"
    for shape in rows bytes; do
        c=${BEST[cutover.$shape]}; p=${BEST[peer.$shape]}
        echo "| $shape | ${TOTAL[$shape]} | $c (${WORST[cutover.$shape]}) | $p (${WORST[peer.$shape]}) | $(python3 -c "print(round(${TOTAL[$shape]} / $c))") | $(python3 -c "print(round(${TOTAL[$shape]} / $p))") | $(ratio "$p" "$c") | $((RSS[$shape] / 1024)) MB |"
    done
    echo
    echo "Backlog: ${SECONDS_BACKLOG}s of unthrottled pgbench ($CLIENTS clients, 4 row changes per transaction): $backlog_tx transactions at $backlog_tps tx/s; cutover applied them ($events events) in ${apply_s}s: $apply_tps tx/s = $(ratio "$apply_tps" "$backlog_tps")× the workload's rate; peak RSS $((rss_bl / 1024)) MB."
} | tee "$OUT"
echo "# written to $OUT"

"""The peer of bench/kafka_sync.sh: produces one Kafka message per line of stdin (a row as
PostgreSQL's row_to_json writes it) in a Debezium-shaped envelope, keyed by the row's primary key
as Debezium's record key, to TOPIC — librdkafka's pipelined producer (confluent-kafka), acks=all,
every delivery report awaited: the producer a team would write by hand.

    psql -At -c "COPY (SELECT row_to_json(x) FROM t x) TO STDOUT" | python kafka_produce.py BOOTSTRAP TOPIC TABLE KEY_COLUMN
"""

import json
import sys
import time

from confluent_kafka import Producer


def main(bootstrap: str, topic: str, table: str, key_column: str) -> None:
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200000,
            "message.max.bytes": 1048588,
        }
    )
    n = 0
    for line in sys.stdin.buffer:
        row = json.loads(line)
        event = {
            "before": None,
            "after": row,
            "source": {"name": topic, "schema": "public", "table": table, "snapshot": "true"},
            "op": "r",
            "ts_ms": int(time.time() * 1000),
        }
        key = json.dumps({key_column: row[key_column]}).encode()
        while True:
            try:
                p.produce(topic, json.dumps(event).encode(), key, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left or failed:
        sys.exit(f"kafka_produce: {left} messages not delivered, {len(failed)} failed: {failed[:3]}")


if __name__ == "__main__":
    main(*sys.argv[1:5])

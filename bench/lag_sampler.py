"""Replication lag, measured the same way for any replicator.

Every 100 ms it writes a heartbeat (the wall clock) into `bench_heartbeat` on the source and
polls the target every 0.5 ms; the time from writing a heartbeat to seeing it on the target is
one lag sample. Every 100 ms it also records the source's WAL position and the replicator's
applied position (given as SQL for the target), for lag in bytes.

    python lag_sampler.py SOURCE_URL TARGET_URL 'APPLIED_SQL' OUT_PREFIX STOP_FILE

Writes OUT_PREFIX.lag (one latency in seconds per line) and OUT_PREFIX.bytes (lag in bytes per
line) until STOP_FILE exists.
"""

import os
import sys
import time

import psycopg


def main() -> None:
    source_url, target_url, applied_sql, prefix, stop_file = sys.argv[1:6]
    src = psycopg.connect(source_url, autocommit=True)
    tgt = psycopg.connect(target_url, autocommit=True)
    lags = open(prefix + ".lag", "w")
    lag_bytes = open(prefix + ".bytes", "w")
    written = {}  # heartbeat value -> time written
    last_seen = None
    next_beat = time.time()
    while not os.path.exists(stop_file):
        now = time.time()
        if now >= next_beat:
            value = round(now, 6)
            src.execute("UPDATE bench_heartbeat SET at = %s WHERE id = 1", (value,))
            written[value] = time.time()
            source_lsn = src.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0]
            applied = tgt.execute(applied_sql).fetchone()[0]
            if applied is not None:
                lag_bytes.write(f"{max(0, int(source_lsn) - int(applied))}\n")
            next_beat += 0.1
        seen = tgt.execute("SELECT at FROM bench_heartbeat WHERE id = 1").fetchone()[0]
        if seen != last_seen:
            arrived = time.time()
            if seen in written:
                lags.write(f"{arrived - written.pop(seen):.4f}\n")
                # Older beats overtaken by this one arrived with it.
                for v in [v for v in written if v < seen]:
                    lags.write(f"{arrived - written.pop(v):.4f}\n")
            last_seen = seen
        time.sleep(0.0005)
    lags.close()
    lag_bytes.close()


if __name__ == "__main__":
    main()

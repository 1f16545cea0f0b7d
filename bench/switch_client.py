"""An application for the switch benchmark: THREADS writers commit small transactions as fast
as they can against the primary named in PRIMARY_FILE; when a write is refused (fenced) they
re-read the file and reconnect. Each commit's time is recorded; the longest gap between two
consecutive commits (all writers together) is the write pause the application saw.

    python switch_client.py PRIMARY_FILE STOP_FILE OUT_PREFIX THREADS

Writes OUT_PREFIX.json: commits, ids committed, longest gap and when, rate before/after.
"""

import json
import os
import sys
import threading
import time

import psycopg


def main() -> None:
    primary_file, stop_file, prefix, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lock = threading.Lock()
    commits = []  # (time, id)

    def url() -> str:
        with open(primary_file) as f:
            return f.read().strip()

    def writer(n: int) -> None:
        seq = 0
        conn = None
        current = None
        while not os.path.exists(stop_file):
            try:
                if conn is None or current != url():
                    current = url()
                    conn = psycopg.connect(current, autocommit=True)
                seq += 1
                wid = n * 100_000_000 + seq
                conn.execute(
                    "WITH a AS (UPDATE public.sessions SET score = (random() * 100)::numeric(6,2), updated_at = now() "
                    "WHERE id = md5('s' || %s)::uuid RETURNING 1) "
                    "INSERT INTO public.annotations (session_id, body, created_at) VALUES (md5('s' || %s)::uuid, %s, now())",
                    (1 + wid % 1000, 1 + wid % 1000, f"w{wid}"),
                )
                t = time.time()
                with lock:
                    commits.append((t, wid))
            except psycopg.Error:
                # Fenced (read-only, or the session was ended): find the primary again.
                conn = None
                time.sleep(0.001)

    ts = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    commits.sort()
    gaps = [(b[0] - a[0], a[0]) for a, b in zip(commits, commits[1:])]
    gap, at = max(gaps) if gaps else (0.0, 0.0)
    span = commits[-1][0] - commits[0][0] if len(commits) > 1 else 1.0
    json.dump(
        {
            "commits": len(commits),
            "ids": [c[1] for c in commits],
            "longest_gap_ms": round(gap * 1000, 1),
            "gap_at": at,
            "rate": round(len(commits) / span, 1),
        },
        open(prefix + ".json", "w"),
    )


if __name__ == "__main__":
    main()

"""An application for the switch benchmark: THREADS writers commit small transactions as fast
as they can against the primary named in PRIMARY_FILE (the file `--on-switch` rewrites). Each
writer keeps one connection; it reads PRIMARY_FILE before each transaction and reconnects when
it changed or when a write failed. Each commit's time is recorded; the longest gap between
two consecutive commits (all writers together) is the write pause the application saw.

    python switch_client.py PRIMARY_FILE STOP_FILE OUT_PREFIX THREADS

Writes OUT_PREFIX.json (commits, ids committed, longest gap and when, rate) and
OUT_PREFIX.events.json: per writer, every event with its wall-clock time (seconds since the
epoch): each commit, each failed write (SQLSTATE and message), each connect attempt (with its
duration and outcome) and each re-read of PRIMARY_FILE, for `switch_timeline.py`.

Knobs (environment): RETRY_MS, the pause after a failed write or connect before the next try
(default 1 ms).
"""

import json
import os
import sys
import threading
import time

import psycopg

RETRY = float(os.environ.get("RETRY_MS", "1")) / 1000.0

SQL = (
    "WITH a AS (UPDATE public.sessions SET score = (random() * 100)::numeric(6,2), updated_at = now() "
    "WHERE id = md5('s' || %s)::uuid RETURNING 1) "
    "INSERT INTO public.annotations (session_id, body, created_at) VALUES (md5('s' || %s)::uuid, %s, now())"
)


def error_of(e: BaseException):
    """(SQLSTATE or None, first line of the message)."""
    code = getattr(e, "sqlstate", None)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return code, msg[:160]


def main() -> None:
    primary_file, stop_file, prefix, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lock = threading.Lock()
    commits = []  # (time, id)
    writers = [[] for _ in range(threads)]  # per writer: events

    def read_primary() -> str:
        with open(primary_file) as f:
            return f.read().strip()

    def writer(n: int) -> None:
        ev = writers[n]
        seq = 0
        conn = None
        current = None
        while not os.path.exists(stop_file):
            # The original client: the file is read before every transaction.
            url = read_primary()
            if conn is None or url != current:
                ev.append({"t": time.time(), "ev": "reread", "url": url, "changed": url != current})
                current = url
                t0 = time.time()
                try:
                    conn = psycopg.connect(current, autocommit=True)
                    ev.append({"t": t0, "ev": "connect", "url": current, "ms": round((time.time() - t0) * 1e3, 2), "ok": True})
                except psycopg.Error as e:
                    code, msg = error_of(e)
                    ev.append({"t": t0, "ev": "connect", "url": current, "ms": round((time.time() - t0) * 1e3, 2),
                               "ok": False, "code": code, "msg": msg})
                    conn = None
                    time.sleep(RETRY)
                    continue
            seq += 1
            wid = n * 100_000_000 + seq
            t0 = time.time()
            try:
                conn.execute(SQL, (1 + wid % 1000, 1 + wid % 1000, f"w{wid}"))
            except psycopg.Error as e:
                # Fenced (read-only, or the session was ended): find the primary again.
                code, msg = error_of(e)
                ev.append({"t": time.time(), "ev": "refused", "url": current, "code": code, "msg": msg,
                           "ms": round((time.time() - t0) * 1e3, 2)})
                conn = None
                time.sleep(RETRY)
                continue
            t = time.time()
            ev.append({"t": t, "ev": "commit", "url": current, "id": wid, "ms": round((t - t0) * 1e3, 2)})
            with lock:
                commits.append((t, wid))

    ts = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    commits.sort()
    gaps = [(b[0] - a[0], a[0]) for a, b in zip(commits, commits[1:])]
    gap, at = max(gaps) if gaps else (0.0, 0.0)
    span = commits[-1][0] - commits[0][0] if len(commits) > 1 else 1.0
    with open(prefix + ".json", "w") as f:
        json.dump(
            {
                "commits": len(commits),
                "ids": [c[1] for c in commits],
                "longest_gap_ms": round(gap * 1000, 1),
                "gap_at": at,
                "rate": round(len(commits) / span, 1),
                "retry_ms": RETRY * 1000.0,
            },
            f,
        )
    with open(prefix + ".events.json", "w") as f:
        json.dump({"writers": writers}, f)


if __name__ == "__main__":
    main()

"""An application for the switch benchmark: THREADS writers commit small transactions as fast
as they can against the primary named in PRIMARY_FILE (the file `--on-switch` rewrites). Each
commit's time is recorded; the longest gap between two consecutive commits (all writers
together) is the write pause the application saw.

    python switch_client.py PRIMARY_FILE STOP_FILE OUT_PREFIX THREADS

How a writer finds the primary (CLIENT_MODE):

- `pool` (default), like a connection pool: each writer keeps its connection. A failed write
  makes it re-read PRIMARY_FILE (the application's configuration); it reconnects when the
  connection is broken (the fence or the switch ended the session) or the primary moved, at
  once, and otherwise retries on the same connection (a read-only refusal is not a broken
  connection). Retries on a live connection and failed connects back off from RETRY_MS (2)
  doubling up to RETRY_MAX_MS (20), reset by a commit.
- `eager`, the first version of this client: PRIMARY_FILE is read before every transaction; a
  failed write drops the connection, and the next transaction connects again after RETRY_MS (1).

Writes OUT_PREFIX.json (commits, ids committed, longest gap and when, the time from the last
commit to the end counting as a gap, rate) and
OUT_PREFIX.events.json: per writer, every event with its wall-clock time (seconds since the
epoch): each commit, each failed write (SQLSTATE and message), each connect attempt (with its
duration and outcome) and each re-read of PRIMARY_FILE, for `switch_timeline.py`.
"""

import json
import os
import sys
import threading
import time

import psycopg

MODE = os.environ.get("CLIENT_MODE", "pool")
RETRY = float(os.environ.get("RETRY_MS", "2" if MODE == "pool" else "1")) / 1000.0
RETRY_MAX = float(os.environ.get("RETRY_MAX_MS", "20")) / 1000.0

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

    def connect(ev, url):
        t0 = time.time()
        try:
            conn = psycopg.connect(url, autocommit=True)
            ev.append({"t": t0, "ev": "connect", "url": url, "ms": round((time.time() - t0) * 1e3, 2), "ok": True})
            return conn
        except psycopg.Error as e:
            code, msg = error_of(e)
            ev.append({"t": t0, "ev": "connect", "url": url, "ms": round((time.time() - t0) * 1e3, 2),
                       "ok": False, "code": code, "msg": msg})
            return None

    def pool_writer(n: int) -> None:
        ev = writers[n]
        seq = 0
        conn = None
        current = None
        delay = RETRY
        while not os.path.exists(stop_file):
            if conn is None:
                current = read_primary()
                ev.append({"t": time.time(), "ev": "reread", "url": current, "changed": False})
                conn = connect(ev, current)
                if conn is None:
                    time.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
            seq += 1
            wid = n * 100_000_000 + seq
            t0 = time.time()
            try:
                conn.execute(SQL, (1 + wid % 1000, 1 + wid % 1000, f"w{wid}"))
            except psycopg.Error as e:
                code, msg = error_of(e)
                ev.append({"t": time.time(), "ev": "refused", "url": current, "code": code, "msg": msg,
                           "ms": round((time.time() - t0) * 1e3, 2)})
                # Where is the primary now? (What the application was told by --on-switch.)
                url = read_primary()
                ev.append({"t": time.time(), "ev": "reread", "url": url, "changed": url != current})
                if conn.closed or conn.broken or url != current:
                    # The session is gone (ended by the fence or by the switch) or the primary
                    # moved: connect again at once (a failed connect backs off).
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                    continue
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            t = time.time()
            delay = RETRY
            ev.append({"t": t, "ev": "commit", "url": current, "id": wid, "ms": round((t - t0) * 1e3, 2)})
            with lock:
                commits.append((t, wid))

    def eager_writer(n: int) -> None:
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

    writer = pool_writer if MODE == "pool" else eager_writer
    ts = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ended = time.time()
    commits.sort()
    gaps = [(b[0] - a[0], a[0]) for a, b in zip(commits, commits[1:])]
    if commits:
        # No commit from the last one to the end is a gap too (writes refused until the end).
        gaps.append((ended - commits[-1][0], commits[-1][0]))
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
                "mode": MODE,
                "retry_ms": RETRY * 1000.0,
            },
            f,
        )
    with open(prefix + ".events.json", "w") as f:
        json.dump({"writers": writers}, f)


if __name__ == "__main__":
    main()

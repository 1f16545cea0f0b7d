"""The peer of bench/nats_sync.sh: publishes one JetStream message per line of stdin (a row as
PostgreSQL's row_to_json writes it) in a Debezium-shaped envelope with a Nats-Msg-Id, 2,048
publishes in flight, every acknowledgement awaited — the publisher a team would write by hand.

    psql -At -c "COPY (SELECT row_to_json(x) FROM t x) TO STDOUT" | python nats_publish.py URL STREAM TABLE
"""

import asyncio
import json
import sys
import time

import nats
from nats.js.api import StreamConfig


async def main(url: str, stream: str, table: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=2048)
    subject = f"peer.{stream}"
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"], duplicate_window=1800))
    except nats.js.errors.BadRequestError:
        pass  # exists (an earlier table of the same run)
    futures = []
    for n, line in enumerate(sys.stdin.buffer):
        row = json.loads(line)
        event = {
            "before": None,
            "after": row,
            "source": {"name": stream, "schema": "public", "table": table, "snapshot": "true"},
            "op": "r",
            "ts_ms": int(time.time() * 1000),
        }
        fut = await js.publish_async(
            f"{subject}.public.{table}",
            json.dumps(event).encode(),
            headers={"Nats-Msg-Id": f"{stream}:{table}:{n}"},
        )
        futures.append(fut)
        if len(futures) >= 4096:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))

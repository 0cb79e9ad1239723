"""What `appendfsync always` costs: the receiver's write pattern against a private Redis.

Each "request" is what the receiver sends per webhook after the Celery message: one
MULTI/EXEC with an inbox HSET + ZADD per event and a few counter HINCRBYs (worker/handoff.py),
plus the broker's LPUSH. Threads play concurrent gunicorn workers. Prints JSON: requests/s
and p50/p99 latency per `appendfsync` setting, on this machine's disk.

    .venv/bin/python bench/fsync.py [--seconds 5] [--threads 8] [--events 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from worker.embedded_redis import RedisServer  # noqa: E402


def measure(url: str, seconds: float, threads: int, events: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(n: int) -> None:
        client = redis.Redis.from_url(url)
        mine: list[float] = []
        i = 0
        while time.monotonic() < stop:
            i += 1
            t = time.perf_counter()
            client.lpush("ingest", "x" * 600)
            pipe = client.pipeline(transaction=True)
            for e in range(events):
                fp = f"{n}:{i}:{e}"
                pipe.hset("lls:inbox", fp, "y" * 300)
                pipe.zadd("lls:inbox:at", {fp: time.time()}, nx=True)
            for c in range(4):
                pipe.hincrby("lls:metrics:counters", f"c{c}", 1)
            pipe.execute()
            mine.append(time.perf_counter() - t)
        client.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / seconds, 1),
        "events_per_s": round(len(latencies) * events / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--events", type=int, default=10, help="events per request")
    args = parser.parse_args()
    out: dict[str, object] = {"threads": args.threads, "events_per_request": args.events}
    for setting in ("everysec", "always"):
        with RedisServer(appendfsync=setting) as server:
            out[setting] = measure(server.url, args.seconds, args.threads, args.events)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Slow clients against the shipped web process (issue 11), printed as JSON.

    .venv/bin/python bench/slowclients.py [--slow 64] [--seconds 15] [--compare]

Starts a private redis-server and `gunicorn -c deploy/gunicorn.conf.py
"webhook_app:create_app()"` (the Procfile's `web` line, WEB_CONCURRENCY=2 as shipped) on
free loopback ports, then holds `--slow` connections that trickle their headers or body
(one byte every 0.5 s, reopened as soon as the server closes them) while signed HubSpot
batches are sent one after another. Prints, per server shape, the normal requests' share
answered 200, p50/p99/max latency, and how the slow connections were ended.

`--compare` also runs the same load against gunicorn's `gthread` worker (the shape
shipped before issue 11) for contrast. Everything runs on 127.0.0.1 and is stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python bench/slowclients.py` puts bench/ first, where worker.py would shadow the package.
sys.path.insert(0, str(ROOT))

from tests.security import slowclients  # noqa: E402
from tests.security.conftest import Web, web_env  # noqa: E402
from worker.embedded_redis import RedisServer, free_port  # noqa: E402

SHAPES = {
    "shipped": {},  # deploy/gunicorn.conf.py as is (BufferingWorker)
    "gthread": {"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 4"},
}


def measure(shape: str, slow: int, seconds: float, tmp: Path) -> dict[str, Any]:
    """One server of `shape`, one run of the slow-client load; the summary."""
    with RedisServer(appendonly=False) as rds:
        port = free_port()
        env = web_env(rds.url, port, WEB_CONCURRENCY="2", LOG_LEVEL="WARNING", **SHAPES[shape])
        web = Web(port, env, tmp / f"{shape}.log").start()
        try:
            result = asyncio.run(
                slowclients.run(web.base, slow=slow, duration=seconds, timeout=10.0, pause=0.1)
            )
            summary = result.summary()
            summary["healthz_after"] = web.healthy()
        finally:
            web.stop()
    summary["server"] = shape
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=64, help="slow connections held open")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the run")
    parser.add_argument("--compare", action="store_true", help="also run gthread (pre-issue 11)")
    args = parser.parse_args()
    shapes = ["shipped", "gthread"] if args.compare else ["shipped"]
    with tempfile.TemporaryDirectory(prefix="lls-slow-") as tmp:
        results = [measure(shape, args.slow, args.seconds, Path(tmp)) for shape in shapes]
    print(json.dumps({"benchmark": "slowclients", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

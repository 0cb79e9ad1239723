"""Worker benchmark: ingest throughput, LeadLex calls per edit burst, peak RSS. Prints JSON.

    .venv/bin/python bench/worker.py [--events 5000] [--contacts 500] [--redis-url URL]

1. ingest: events/s one process ingests and stages (dedupe, snapshot merge, mapping,
   link lookup, staging Lua, metrics), against a real Redis, no LeadLex calls.
2. calls per burst: 5 edits to each of N contacts, flushed against the simulator on
   loopback, versus a naive baseline (one PATCH per CRM event) in the same run.
3. peak RSS of a real `celery -A worker worker` process after ingesting the events.
Targets (issue [sync-core]): >= 1,000 events/s, 1.00 calls per burst, < 150 MB RSS.
Traffic goes only to 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leadlex_sandbox import SandboxConfig, SandboxServer  # noqa: E402
from worker import pipeline  # noqa: E402
from worker.celery_app import QUEUE_INGEST  # noqa: E402
from worker.embedded_redis import RedisServer, redis_answers  # noqa: E402
from worker.events import ChangeEvent, fingerprint  # noqa: E402
from worker.leadlex import LeadLexClient  # noqa: E402
from worker.mapping import default_mapping  # noqa: E402
from worker.settings import load_settings  # noqa: E402
from worker.state import State  # noqa: E402

KEY = "wbk_bench_key"
PROPS = ("jobtitle", "company", "phone", "email", "firstname")


def _event(object_id: int, prop: str, value: str, ts: int, n: int) -> ChangeEvent:
    return ChangeEvent(
        source="hubspot",
        account="1",
        object_type="contact",
        object_id=str(object_id),
        kind="update",
        occurred_at_ms=ts,
        fingerprint=fingerprint("bench", object_id, prop, ts, n),
        changes={prop: value},
    )


def _value(prop: str, i: int) -> str:
    return {
        "jobtitle": f"Title {i}",
        "company": f"Firm {i}",
        "phone": f"+1 202 555 {i % 10000:04d}",
        "email": f"person{i}@example.org",
        "firstname": f"Name{i}",
    }[prop]


def _runtime(url: str, client: LeadLexClient | None) -> pipeline.Runtime:
    settings = load_settings(
        {"REDIS_URL": url, "LEADLEX_API_KEY": KEY, "LEADLEX_PLAN": "org",
         "COALESCE_SECONDS": "0"},
        env_file=None,
    )

    def factory() -> LeadLexClient:
        if client is None:
            raise RuntimeError("no LeadLex calls in this phase")
        return client

    return pipeline.Runtime(
        settings=settings,
        redis=redis.Redis.from_url(url),
        mapping=default_mapping(),
        client_factory=factory,
    )


def bench_ingest(url: str, events: int, contacts: int) -> dict[str, Any]:
    rt = _runtime(url, None)
    rt.redis.flushdb()
    State(rt.redis).set_links(
        ("hubspot", "", str(1000 + c), f"00000000-0000-4000-8000-{c:012d}") for c in range(contacts)
    )
    base = int(time.time() * 1000)
    batch = [
        _event(1000 + i % contacts, PROPS[i % len(PROPS)], _value(PROPS[i % len(PROPS)], i),
               base + i, i)
        for i in range(events)
    ]
    start = time.perf_counter()
    outcomes: dict[str, int] = {}
    for ev in batch:
        out = pipeline.ingest(rt, ev)
        outcomes[out] = outcomes.get(out, 0) + 1
    elapsed = time.perf_counter() - start
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed, 1),
        "us_per_event": round(elapsed / events * 1e6, 1),
        "outcomes": outcomes,
    }


def bench_calls(url: str, contacts: int) -> dict[str, Any]:
    server = SandboxServer(SandboxConfig(api_keys={KEY: frozenset({"read", "write"})},
                                         plan="org", daily=1_000_000, per_minute=1_000_000))
    server.start()
    try:
        http = httpx.Client(base_url=server.url, timeout=10)
        ids = []
        for c in range(contacts):
            resp = http.post("/_sandbox/contacts", json={"full_name": f"Bench {c}"})
            data = resp.json()["data"]
            ids.append(str((data[0] if isinstance(data, list) else data)["id"]))
        client = LeadLexClient(str(server.base_url), KEY)
        rt = _runtime(url, client)
        rt.redis.flushdb()
        State(rt.redis).set_links(("hubspot", "", str(2000 + c), ids[c]) for c in range(contacts))
        base = int(time.time() * 1000)
        edits = 0
        for c in range(contacts):  # a burst of 5 edits per contact
            for k, prop in enumerate(PROPS):
                pipeline.ingest(rt, _event(2000 + c, prop, _value(prop, c), base + k, k))
                edits += 1
        for contact in ids:
            pipeline.flush(rt, contact)
        ours = len([r for r in http.get("/_sandbox/requests").json()["data"]
                    if r["method"] == "PATCH"])
        # Naive baseline: one PATCH per CRM event, as a per-event task would send.
        http.post("/_sandbox/reset")
        naive_ids = []
        for c in range(contacts):
            resp = http.post("/_sandbox/contacts", json={"full_name": f"Bench {c}"})
            data = resp.json()["data"]
            naive_ids.append(str((data[0] if isinstance(data, list) else data)["id"]))
        field = {"jobtitle": "job_title", "company": "company_name", "phone": "phone",
                 "email": "email", "firstname": "full_name"}
        for c in range(contacts):
            for prop in PROPS:
                value = _value(prop, c).replace(" ", "") if prop == "phone" else _value(prop, c)
                client.update_contact(naive_ids[c], {field[prop]: value})
        naive = len([r for r in http.get("/_sandbox/requests").json()["data"]
                     if r["method"] == "PATCH"])
        client.close()
        http.close()
        return {
            "contacts": contacts,
            "edits": edits,
            "calls": ours,
            "calls_per_burst": round(ours / contacts, 3),
            "naive_calls": naive,
            "naive_calls_per_burst": round(naive / contacts, 3),
            "saving_ratio": round(naive / max(1, ours), 2),
        }
    finally:
        server.stop()


def bench_rss(url: str, events: int, contacts: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    State(client).set_links(
        ("hubspot", "", str(3000 + c), f"00000000-0000-4000-8000-{c:012d}") for c in range(contacts)
    )
    env = {**os.environ, "REDIS_URL": url, "LEADLEX_API_KEY": KEY,
           "LEADLEX_BASE_URL": "http://127.0.0.1:9/functions/v1/api-gateway",
           "COALESCE_SECONDS": "60", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
    celery = str(Path(sys.executable).with_name("celery"))
    proc = subprocess.Popen(
        [celery, "-A", "worker", "worker", "-Q", QUEUE_INGEST, "-P", "solo", "-l", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        from worker.celery_app import app

        app.conf.broker_url = url
        base = int(time.time() * 1000)
        batch: list[dict[str, Any]] = []
        for i in range(events):
            prop = PROPS[i % len(PROPS)]
            batch.append(_event(3000 + i % contacts, prop, _value(prop, i), base + i, i).to_dict())
            if len(batch) == 100:
                app.send_task("leadlex_sync.ingest_batch", args=[batch], queue=QUEUE_INGEST)
                batch = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and client.llen(QUEUE_INGEST) > 0:
            time.sleep(0.5)
        time.sleep(2)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmHWM"))
        return {"events": events, "peak_rss_mb": round(hwm / 1024, 1),
                "queue_left": int(client.llen(QUEUE_INGEST))}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--burst-contacts", type=int, default=50)
    parser.add_argument(
        "--redis-url", default=None, help="a database it may flush (default: a private server)"
    )
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        server = RedisServer(appendonly=False).start()
        url = server.url
    elif not redis_answers(url):
        sys.exit(f"bench/worker.py: no Redis answers at --redis-url {url}")
    try:
        result = {
            "benchmark": "worker",
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "ingest": bench_ingest(url, args.events, args.contacts),
            "calls_per_burst": bench_calls(url, args.burst_contacts),
            "worker_rss": bench_rss(url, args.events, args.contacts),
            "targets": {"events_per_second": ">= 1000", "calls_per_burst": "1.00",
                        "peak_rss_mb": "< 150"},
        }
        print(json.dumps(result, indent=2))
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()

"""Benchmark: LeadLex calls to link N existing CRM records, `links match` against one lookup per
record (RESOLVE_BY_EMAIL: one `GET /v1/contacts?search=` per unlinked record).

For each N: a LeadLex simulator (this process, loopback) seeded with N contacts of
`leadlex_sandbox.population` (realistic spellings and its traps), a private redis-server,
and the matching pipeline of `leadlex-sync links match` (one export call, then pure
matching) on the CRM export of the same people. Calls are read from the simulator's request
log; "per record" is the number of rows a lookup-per-record setup would have to resolve
(one call each, and N / daily limit days of budget at Starter's 100 calls a day).

Prints one JSON document.

    .venv/bin/python bench/link_calls.py [--sizes 1000,5000,50000]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

API_KEY = "wbk_bench_link_calls_key_0123456789"


def run(n: int, redis_url: str) -> dict[str, Any]:
    import redis

    from leadlex_sandbox import SandboxConfig, SandboxServer
    from leadlex_sandbox.population import crm_export_csv, population
    from worker import pipeline
    from worker.leadlex import LeadLexClient
    from worker.mapping import default_mapping
    from worker.onboarding.crm_export import CrmRow, read_export
    from worker.onboarding.directory import export_contacts
    from worker.onboarding.matching import MATCHED, ContactIndex, match_rows
    from worker.settings import load_settings

    pop = population(n, seed=n)
    config = SandboxConfig(api_keys={API_KEY: frozenset({"read", "write"})}, plan="starter")
    with SandboxServer(config) as server:
        server.seed(pop.leadlex)
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        settings = load_settings(
            {
                "REDIS_URL": redis_url,
                "LEADLEX_API_KEY": API_KEY,
                "LEADLEX_BASE_URL": server.base_url,
                "LEADLEX_PLAN": "starter",
            },
            env_file=None,
        )
        leadlex = LeadLexClient(server.base_url, API_KEY, timeout=60)
        rt = pipeline.Runtime(
            settings=settings,
            redis=client,
            mapping=default_mapping(),
            client_factory=lambda: leadlex,
        )
        started = time.perf_counter()
        rows = [
            r
            for r in read_export(io.StringIO(crm_export_csv(pop)), "hubspot")
            if isinstance(r, CrmRow)
        ]
        contacts = export_contacts(rt)
        report = match_rows(rows, ContactIndex(contacts, "US"), linked={})
        matched = [
            ("hubspot", "", m.row.object_id, m.leadlex_id) for m in report.by_status(MATCHED)
        ]
        pipeline.link_records(rt, matched)
        seconds = time.perf_counter() - started
        with server.state.lock:
            calls = len(server.state.log.entries(0, None))
        leadlex.close()
        wrong = sum(
            1
            for m in report.by_status(MATCHED)
            if pop.expected.get(m.row.object_id) != m.leadlex_id
        )
        return {
            "records": len(rows),
            "leadlex_contacts": len(contacts),
            "links_match_calls": calls,
            "one_call_per_record_calls": len(rows),
            "one_call_per_record_days_at_starter": round(len(rows) / 100, 1),
            "counts": report.counts(),
            "wrong_links": wrong,
            "seconds": round(seconds, 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,5000,50000")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args(argv)
    from worker.embedded_redis import RedisServer

    embedded = None
    redis_url = args.redis_url
    if redis_url is None:
        embedded = RedisServer(appendonly=False).start()
        redis_url = embedded.url
    try:
        results = [run(int(n), redis_url) for n in args.sizes.split(",")]
    finally:
        if embedded is not None:
            embedded.stop()
    print(json.dumps({"link_calls": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One clock for the fleet (DESIGN invariant 6, issue 10 scenario 11), over real parts: two
Celery worker subprocesses, one of them with its wall clock 3 s ahead (the test seam in
tests/seams), the receiver and the simulator, whose own clock is the true one.

Windows are shortened as in test_delivery.py: "10 calls a minute" becomes "10 calls per 6 s"
(the simulator's `minute_window_seconds` and the workers' LEADLEX_RATE_WINDOW_SECONDS agree).
"""

from __future__ import annotations

from typing import Any

import redis

from tests.integration.conftest import Sandbox
from tests.integration.support import hs_change, now_ms, post_hubspot, wait_for
from tests.seams import CLOCK_OFFSET_BANNER, clock_offset_env
from worker.state import State

WINDOW = 6.0
LIMIT = 10
SKEW_SECONDS = 3.0


def _busiest_window(times: list[float], window: float) -> int:
    """Most requests in any window (t - window, t] sliding over the arrival times."""
    ts = sorted(times)
    best = start = 0
    for end, t in enumerate(ts):
        while ts[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_worker_with_its_clock_ahead_causes_no_429_and_no_window_over_the_limit(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """One worker 3 s ahead and one on time share the budget on Redis time: no 429 and no
    window of the simulator's log holds more than the limit."""
    sandbox.configure(per_minute=LIMIT, minute_window_seconds=WINDOW)
    object_ids = list(range(7000, 7040))
    resp = sandbox.http.post(
        "/_sandbox/contacts",
        json={"contacts": [{"full_name": f"Contact {oid}"} for oid in object_ids]},
    )
    resp.raise_for_status()
    ids = {oid: str(row["id"]) for oid, row in zip(object_ids, resp.json()["data"], strict=True)}
    client = redis.Redis.from_url(redis_url)
    State(client).set_links([("hubspot", "", str(oid), cid) for oid, cid in ids.items()])
    client.close()

    limits = {"LEADLEX_RATE_PER_MINUTE": str(LIMIT), "LEADLEX_RATE_WINDOW_SECONDS": str(WINDOW)}
    ahead = workers("ahead", beat=True, **limits, **clock_offset_env(SKEW_SECONDS))
    workers("ontime", beat=False, **limits)
    assert f"{CLOCK_OFFSET_BANNER} +3 s" in ahead.log()  # the seam was in effect

    t = now_ms()
    events = [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in object_ids]
    for i in range(0, len(events), 10):
        post_hubspot(receiver, events[i : i + 10])

    def all_applied() -> bool:
        resp = sandbox.http.get("/_sandbox/contacts")
        resp.raise_for_status()
        have = {str(c["id"]): c for c in resp.json()["data"]}
        return all(have[cid].get("job_title") == f"Title {oid}" for oid, cid in ids.items())

    wait_for(all_applied, timeout=120, interval=1)
    reqs = sandbox.requests()
    assert [r for r in reqs if r["status"] == 429] == []
    assert _busiest_window([float(r["ts"]) for r in reqs], WINDOW) <= LIMIT
    assert len(sandbox.patches()) == len(object_ids)

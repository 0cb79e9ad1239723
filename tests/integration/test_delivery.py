"""Delivery under LeadLex's limits and failures, over real parts (receiver, Redis, Celery
worker subprocesses, the simulator): the global budget (DESIGN invariant 6), 429 pauses,
the daily quota, 5xx retries without double writes, the 401 circuit, no long Celery ETAs
(invariant 7) and dead letters for LeadLex's own 400s.

Windows are shortened so that "10 calls a minute" becomes "10 calls per 6 s": the
simulator's `minute_window_seconds` and the workers' LEADLEX_RATE_WINDOW_SECONDS agree.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from leadlex_sandbox.validation import phone_problem
from tests.integration.conftest import Sandbox
from tests.integration.support import API_KEY, hs_change, now_ms, post_hubspot, wait_for
from worker.celery_app import QUEUES
from worker.deadletter import DeadLetters
from worker.leadlex import RateInfo
from worker.ratelimit import Budget, Circuit
from worker.state import State

WINDOW = 6.0  # seconds that stand in for LeadLex's minute in these tests
VISIBILITY_TIMEOUT = 12.0  # VISIBILITY_TIMEOUT_SECONDS of the test workers (conftest)
BROKER_QUEUES = QUEUES


# ---- helpers -------------------------------------------------------------------------------
def _client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _seed_linked(sandbox: Sandbox, redis_url: str, object_ids: list[int]) -> dict[int, str]:
    """Create one simulator contact per HubSpot record id and link them; returns oid -> id."""
    resp = sandbox.http.post(
        "/_sandbox/contacts",
        json={"contacts": [{"full_name": f"Contact {oid}"} for oid in object_ids]},
    )
    resp.raise_for_status()
    ids = {oid: str(row["id"]) for oid, row in zip(object_ids, resp.json()["data"], strict=True)}
    client = _client(redis_url)
    State(client).set_links([("hubspot", "", str(oid), cid) for oid, cid in ids.items()])
    client.close()
    return ids


def _post(receiver: Any, events: list[dict[str, Any]]) -> None:
    """Post events as signed HubSpot batches of at most 100 (HubSpot's batch size)."""
    for i in range(0, len(events), 100):
        post_hubspot(receiver, events[i : i + 100])


def _contacts(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    resp = sandbox.http.get("/_sandbox/contacts")
    resp.raise_for_status()
    return {str(c["id"]): c for c in resp.json()["data"]}


def _all_hold(sandbox: Sandbox, expected: dict[str, dict[str, Any]]) -> bool:
    """True when every contact holds every expected field value."""
    now = _contacts(sandbox)
    return all(
        all(now[cid].get(name) == value for name, value in fields.items())
        for cid, fields in expected.items()
    )


def _busiest_window(times: list[float], window: float) -> int:
    """Most requests in any window (t - window, t] sliding over the arrival times."""
    ts = sorted(times)
    best = start = 0
    for end, t in enumerate(ts):
        while ts[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _wait_for_fresh_day(day_seconds: int, need: float) -> float:
    """Sleep into a simulator day with at least `need` seconds left; returns that day's end."""
    left = day_seconds - time.time() % day_seconds
    if left < need:
        time.sleep(left + 0.1)
    return (int(time.time() // day_seconds) + 1) * day_seconds


def _by_contact(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row.get("contact_id")), []).append(row)
    return out


def _eta_seconds(message: dict[str, Any], now: float) -> float | None:
    """Seconds from `now` to a Celery message's `eta` header (None: no ETA)."""
    eta = (message.get("headers") or {}).get("eta")
    if eta is None:
        return None
    when = datetime.fromisoformat(str(eta))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _broker_messages(client: redis.Redis) -> list[dict[str, Any]]:
    """Every Celery message kombu holds in Redis: the queue lists and the `unacked` hash."""
    messages: list[dict[str, Any]] = []
    for queue in BROKER_QUEUES:
        # kombu's priority variants of a queue are named "<queue>\x06\x16<n>".
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) == b"list":
                messages.extend(json.loads(raw) for raw in client.lrange(key, 0, -1))
    for raw in client.hvals("unacked"):
        messages.append(json.loads(raw)[0])  # [message, exchange, routing_key]
    return messages


# ---- 1. the global budget ------------------------------------------------------------------
def test_two_workers_never_exceed_the_window_and_get_no_429(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """Two workers syncing 60 contacts at 10 calls per 6 s keep to it: no 429, one PATCH each."""
    sandbox.configure(per_minute=10, minute_window_seconds=WINDOW)
    ids = _seed_linked(sandbox, redis_url, list(range(1000, 1060)))
    limits = {"LEADLEX_RATE_PER_MINUTE": "10", "LEADLEX_RATE_WINDOW_SECONDS": str(WINDOW)}
    workers(**limits)
    workers(**limits)
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in ids])

    expected = {cid: {"job_title": f"Title {oid}"} for oid, cid in ids.items()}
    wait_for(lambda: _all_hold(sandbox, expected), timeout=100, interval=1)

    reqs = sandbox.requests()
    assert [r for r in reqs if r["status"] == 429] == []
    assert _busiest_window([r["ts"] for r in reqs], WINDOW) <= 10
    assert len(reqs) == 60
    per_contact = _by_contact(sandbox.patches())
    assert {cid: len(rows) for cid, rows in per_contact.items()} == dict.fromkeys(expected, 1)
    for oid, cid in ids.items():
        assert per_contact[cid][0]["body"] == {"job_title": f"Title {oid}"}


# ---- 2. 429 with Retry-After ----------------------------------------------------------------
def test_429_with_retry_after_pauses_every_worker_then_everything_applies(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """After a 429 carrying Retry-After: 3 no request reaches LeadLex for 3 s; then all apply."""
    sandbox.configure(retry_after=True)
    sandbox.faults(force_429=1, force_429_retry_after_seconds=3)
    ids = _seed_linked(sandbox, redis_url, list(range(2000, 2006)))
    first, *rest = ids
    workers()
    workers()
    post_hubspot(receiver, [hs_change(first, "jobtitle", f"Title {first}", now_ms())])
    limited = wait_for(lambda: [r for r in sandbox.requests() if r["status"] == 429], timeout=20)
    t429 = limited[0]["ts"]
    budget = Budget(_client(redis_url), 200, 10_000)
    until, reason = wait_for(lambda: budget.paused_until()[0] and budget.paused_until())
    assert reason == "retry_after"
    assert t429 + 3 <= until <= t429 + 4
    # More work arrives during the pause: it must wait too, on every worker.
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in rest])

    expected = {cid: {"job_title": f"Title {oid}"} for oid, cid in ids.items()}
    wait_for(lambda: _all_hold(sandbox, expected), timeout=30)

    reqs = sandbox.requests()
    assert [r["seq"] for r in reqs if r["status"] == 429] == [limited[0]["seq"]]
    after = [r for r in reqs if r["seq"] > limited[0]["seq"]]
    assert after, "nothing was sent after the 429"
    assert min(r["ts"] for r in after) >= t429 + 3
    applied = _by_contact([r for r in sandbox.patches() if r["applied"]])
    assert {cid: len(rows) for cid, rows in applied.items()} == dict.fromkeys(expected, 1)


# ---- 3. the daily quota ----------------------------------------------------------------------
def test_daily_quota_spent_parks_work_and_resumes_when_the_day_rolls(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """With the day's quota spent, new work waits parked in Redis without 429s; when the day
    rolls it resumes with one PATCH per waiting contact."""
    day = 15
    sandbox.configure(daily=5, day_seconds=day)
    ids = _seed_linked(sandbox, redis_url, list(range(3000, 3008)))
    oids = list(ids)
    workers(LEADLEX_DAILY_LIMIT="5")
    workers(LEADLEX_DAILY_LIMIT="5")
    client = _client(redis_url)
    budget = Budget(client, 200, 5)
    day_end = _wait_for_fresh_day(day, need=10)
    # Spend the day's five calls, then let three more contacts change.
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in oids[:5]])
    wait_for(lambda: len(sandbox.patches()) == 5, timeout=day_end - time.time() - 3)
    until, reason = wait_for(lambda: budget.paused_until()[0] and budget.paused_until())
    assert (reason, until) == ("daily", day_end)  # paused until LeadLex's X-RateLimit-Reset
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", now_ms()) for oid in oids[5:]])
    time.sleep(1.5)
    spent = sandbox.requests()
    assert [r["status"] for r in spent] == [200] * 5
    assert time.time() < day_end  # all of the above happened within one simulator day
    state = State(client)
    assert state.due_count() == 3  # the three others wait in Redis, nothing dead-lettered
    assert DeadLetters(client).count() == 0

    # The simulator's day ends (its X-RateLimit-Reset): the parked contacts go by themselves.
    time.sleep(max(0.0, day_end - time.time()) + 1)

    expected = {cid: {"job_title": f"Title {oid}"} for oid, cid in ids.items()}
    wait_for(lambda: _all_hold(sandbox, expected), timeout=15)
    reqs = sandbox.requests()
    assert len([r for r in reqs if r["status"] == 429]) <= 1
    applied = _by_contact([r for r in sandbox.patches() if r["applied"]])
    assert {cid: len(rows) for cid, rows in applied.items()} == dict.fromkeys(expected, 1)
    assert all(r["ts"] >= day_end for r in reqs[5:])
    wait_for(lambda: state.due_count() == 0, timeout=5)  # the commit follows LeadLex's 200


def test_daily_quota_resumes_at_the_servers_reset(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """Parked work resumes by itself once the server's X-RateLimit-Reset has passed."""
    day = 8
    sandbox.configure(daily=2, day_seconds=day)
    ids = _seed_linked(sandbox, redis_url, list(range(3100, 3104)))
    workers(LEADLEX_DAILY_LIMIT="2")
    day_end = _wait_for_fresh_day(day, need=5)
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in ids])
    wait_for(lambda: len(sandbox.patches()) >= 2, timeout=day_end - time.time())
    time.sleep(max(0.0, day_end - time.time()) + 4)
    assert len([r for r in sandbox.patches() if r["applied"]]) == 4


def test_an_early_answer_does_not_give_back_calls_still_in_flight(
    redis_client: redis.Redis,
) -> None:
    """The first of three in-flight answers (Remaining 2 of 3) must not free a fourth call."""
    budget = Budget(redis_client, 100, 3)
    assert all(budget.acquire().ok for _ in range(3))
    assert not budget.acquire().ok
    budget.observe(RateInfo(limit=3, remaining=2, reset=int(time.time()) + 3600))
    assert not budget.acquire().ok


# ---- 4. 5xx ----------------------------------------------------------------------------------
def test_30_percent_503_applies_every_change_once_notes_included(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """With 30 % of calls answered 503 every change is applied, and no PATCH (notes incl.) twice."""
    sandbox.faults(error_rate_5xx=0.3, error_statuses=[503], seed=7)
    ids = _seed_linked(sandbox, redis_url, list(range(4000, 4008)))
    workers()
    workers()
    t = now_ms()
    events: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}
    for n, (oid, cid) in enumerate(ids.items()):
        events += [
            hs_change(oid, "jobtitle", f"Title {oid}", t),
            hs_change(oid, "company", f"Company {oid}", t),
        ]
        expected[cid] = {"job_title": f"Title {oid}", "company_name": f"Company {oid}"}
        if n % 2 == 0:
            events.append(hs_change(oid, "leadlex_notes", f"Call notes {oid}", t))
            expected[cid]["notes"] = f"[HubSpot] Call notes {oid}"
    _post(receiver, events)

    # Per-contact exponential backoff (2 s * 2^n, random): a contact unlucky four or five
    # times in a row waits tens of seconds, hence the generous bound.
    wait_for(lambda: _all_hold(sandbox, expected), timeout=150, interval=0.5)
    wait_for(lambda: not _client(redis_url).zcard("lls:due"), timeout=10)

    reqs = sandbox.requests()
    assert any(r["status"] == 503 for r in reqs), "the fault never fired"
    applied = _by_contact([r for r in sandbox.patches() if r["applied"]])
    assert {cid: len(rows) for cid, rows in applied.items()} == dict.fromkeys(expected, 1)
    for cid, fields in expected.items():
        assert applied[cid][0]["body"] == fields
    final = _contacts(sandbox)
    for cid, fields in expected.items():
        if "notes" in fields:
            assert final[cid]["notes"] == fields["notes"]  # appended exactly once
    assert DeadLetters(_client(redis_url)).count() == 0


# ---- 5. wrong key: the circuit ---------------------------------------------------------------
def test_wrong_key_opens_the_circuit_then_the_backlog_drains_when_it_works(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """A 401 opens the circuit: only probes go out, nothing dead-lettered; a good key drains all."""
    ids = _seed_linked(sandbox, redis_url, list(range(5000, 5005)))
    sandbox.configure(api_keys={"wbk_somebody_else_0000000000": ["read", "write"]})
    workers(CIRCUIT_PROBE_SECONDS="2")
    workers(CIRCUIT_PROBE_SECONDS="2")
    client = _client(redis_url)
    circuit = Circuit(client)
    first, *rest = ids
    post_hubspot(receiver, [hs_change(first, "jobtitle", f"Title {first}", now_ms())])
    opened = wait_for(lambda: (s := circuit.state()).open and s, timeout=20)
    assert opened.reason == "invalid_key"
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in rest])
    time.sleep(6)

    assert circuit.state().open
    assert DeadLetters(client).count() == 0
    reqs = sandbox.requests()
    assert reqs[0]["method"] == "PATCH"
    assert reqs[0]["status"] == 401
    probes = reqs[1:]
    assert all(r["method"] == "GET" and r["status"] == 401 for r in probes)
    assert 1 <= len(probes) <= (time.time() - opened.since) / 2 + 1
    before = _contacts(sandbox)
    assert all(before[cid]["job_title"] is None for cid in ids.values())

    sandbox.configure(api_keys={API_KEY: ["read", "write"]})
    expected = {cid: {"job_title": f"Title {oid}"} for oid, cid in ids.items()}
    wait_for(lambda: _all_hold(sandbox, expected), timeout=20)
    assert not circuit.state().open
    assert DeadLetters(client).count() == 0
    applied = _by_contact([r for r in sandbox.patches() if r["applied"]])
    assert {cid: len(rows) for cid, rows in applied.items()} == dict.fromkeys(expected, 1)


# ---- 6. no ETA beyond the visibility timeout --------------------------------------------------
def test_no_broker_eta_beyond_the_visibility_timeout_while_work_is_parked(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """While the daily quota is spent (pause until 00:00 UTC) every queued or reserved message's
    ETA is within the visibility timeout; the long wait lives in Redis leases instead."""
    if 86_400 - time.time() % 86_400 < 120:
        pytest.skip("too close to 00:00 UTC, when the daily quota resets")
    sandbox.configure(daily=3)  # a real UTC day: the wait lasts until midnight
    ids = _seed_linked(sandbox, redis_url, list(range(6000, 6020)))
    oids = list(ids)
    workers(LEADLEX_DAILY_LIMIT="3", COALESCE_SECONDS="2")
    workers(LEADLEX_DAILY_LIMIT="3", COALESCE_SECONDS="2")
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in oids[:3]])
    wait_for(lambda: len(sandbox.patches()) == 3, timeout=20)
    client = _client(redis_url)
    budget = Budget(client, 200, 3)
    until, reason = wait_for(lambda: budget.paused_until()[0] and budget.paused_until())
    assert reason == "daily"
    assert until - time.time() > VISIBILITY_TIMEOUT  # a wait longer than any ETA may be
    t = now_ms()
    _post(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in oids[3:10]])

    seen: list[float | None] = []
    deadline = time.monotonic() + 6
    feed = iter(oids[10:])
    next_post = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_post:  # keep new work (flushes with a countdown) flowing
            oid = next(feed, None)
            if oid is not None:
                post_hubspot(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", now_ms())])
            next_post = time.monotonic() + 0.5
        now = time.time()
        etas = [_eta_seconds(m, now) for m in _broker_messages(client)]
        seen += etas
        late = [e for e in etas if e is not None and e > VISIBILITY_TIMEOUT]
        assert late == [], f"ETA {max(late):.0f} s ahead > visibility timeout"
        time.sleep(0.1)

    assert any(e is not None for e in seen), "no message with an ETA was ever observed"
    assert len(sandbox.patches()) == 3
    state = State(client)
    parked = [cid for cid in ids.values() if client.exists(f"lls:stage:{cid}")]
    assert len(parked) >= 15
    assert state.due_count() == len(parked)
    # The long wait lives in Redis: the shared pause (until the daily reset) keeps the pump
    # from dispatching; parked contacts are only re-checked, never put on a long ETA.
    assert budget.paused_until()[0] - time.time() > VISIBILITY_TIMEOUT


# ---- 7. LeadLex's 400 and the dead-letter store -----------------------------------------------
def test_leadlex_400_is_dead_lettered_other_fields_go_and_replay_applies_after_fix(
    receiver: Any,
    sandbox: Sandbox,
    workers: Any,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """A phone LeadLex refuses (400) is dead-lettered with its details and request id, the rest
    of the PATCH still applies, and `dlq replay --all` applies it once the mapping is fixed."""
    from cli import main

    # A mapping copied from the Berlin office: local numbers are read as German. "30123"
    # becomes +4930123, a possible German number to us but 7 digits, which LeadLex refuses.
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('default_region = "DE"\n')
    fixed = tmp_path / "fixed.toml"
    fixed.write_text('default_region = "LU"\n')
    problem = phone_problem("+4930123")
    assert problem is not None
    assert phone_problem("+35230123") is None

    ids = _seed_linked(sandbox, redis_url, [7001])
    cid = ids[7001]
    first = workers(MAPPING_FILE=str(wrong))
    t = now_ms()
    post_hubspot(
        receiver,
        [hs_change(7001, "phone", "30123", t), hs_change(7001, "jobtitle", "Head of Legal Ops", t)],
    )
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Head of Legal Ops", timeout=20)
    client = _client(redis_url)
    dlq = DeadLetters(client)
    wait_for(lambda: dlq.count() == 1, timeout=5)

    patches = sandbox.patches(cid)
    assert [p["status"] for p in patches] == [400, 200]
    assert patches[0]["body"] == {"phone": "+4930123", "job_title": "Head of Legal Ops"}
    assert patches[1]["body"] == {"job_title": "Head of Legal Ops"}
    assert sandbox.contact(cid)["phone"] is None
    (letter,) = list(dlq.iter())
    assert letter.reason == "validation_error"
    assert letter.contact == cid
    assert letter.details == {"field": "phone", "leadlex": problem}
    assert letter.request_id == patches[0]["request_id"]
    assert letter.payload["changes"] == {"phone": "30123"}
    assert letter.payload["leadlex_value"] == "+4930123"
    assert f"phone: {problem}" in letter.last_error

    first.stop()
    workers("fixed", beat=True, MAPPING_FILE=str(fixed))
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["dlq", "replay", "--all"])
    assert result.exit_code == 0, result.output
    assert "replayed 1;" in result.output

    wait_for(lambda: sandbox.contact(cid)["phone"] == "+35230123", timeout=20)
    assert dlq.count() == 0
    patches = sandbox.patches(cid)
    assert len(patches) == 3
    assert patches[2]["body"] == {"phone": "+35230123"}
    assert sandbox.contact(cid)["job_title"] == "Head of Legal Ops"

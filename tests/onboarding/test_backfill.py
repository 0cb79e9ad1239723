"""Backfill: only differing records, after live changes, within the budget share, resumable,
with an ETA that holds, on Starter limits and a simulated clock (real pipeline, Redis and
simulator; Celery's dispatches are played by the test)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from cli import main
from leadlex_sandbox import SandboxServer
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.mapping import default_mapping
from worker.onboarding import backfill
from worker.onboarding.backfill_plan import finish_at, per_day, plan_backfill
from worker.onboarding.crm_export import CrmRow
from worker.onboarding.directory import export_contacts
from worker.settings import Settings
from worker.state import State

ACCOUNT = "62515"
DAY = 86_400
N_RECORDS = 1000
KILL_DAY = 7
T0 = 1_780_012_800.0 + 3_600  # 01:00 UTC on a day boundary's day


class Clock:
    """A simulated clock shared by the pipeline, the budget and the simulator."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def advance(client: redis.Redis, clock: Clock, seconds: float) -> None:
    """Move the simulated clock; leases (Redis TTLs, durations on Redis's own clock) age by
    the same amount, as they would in that much real time."""
    clock.now += seconds
    for key in [*client.scan_iter(match="lls:lease:*"), *client.scan_iter(match="lls:lock:*")]:
        left = client.pttl(key)
        if left is not None and left > 0:
            if left <= seconds * 1000:
                client.delete(key)
            else:
                client.pexpire(key, int(left - seconds * 1000))


class KilledError(Exception):
    """The process releasing the backfill died."""


def crm_row(i: int, title: str) -> CrmRow:
    return CrmRow(
        i + 2,
        str(i),
        {
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "email": f"p{i}@example.com",
            "job_title": title,
        },
    )


def contact(i: int, title: str) -> dict[str, str]:
    return {
        "full_name": f"First{i} Last{i}",
        "email": f"P{i}@example.com",
        "job_title": title,
    }


def test_plan_sends_only_differing_fields_and_counts_equal_records_free() -> None:
    """A record already equal costs nothing; a differing name sends both name parts."""
    from worker.onboarding.matching import LeadLexContact

    leadlex = {
        "a": LeadLexContact(
            "a",
            fields={"full_name": "First0 Last0", "email": "p0@example.com", "job_title": "Partner"},
        ),
        "b": LeadLexContact(
            "b",
            fields={"full_name": "First1 Old", "email": "p1@example.com", "job_title": "Partner"},
        ),
    }
    rows = [crm_row(0, "Partner"), crm_row(1, "Partner"), crm_row(2, "Partner")]
    plan = plan_backfill(
        rows,
        source="hubspot",
        cfg=default_mapping(),
        links={"0": "a", "1": "b"},
        leadlex=leadlex,
        region="US",
    )
    assert (plan.equal, plan.unlinked, plan.calls) == (1, 1, 1)
    assert plan.items[0].changes == {"firstname": "First1", "lastname": "Last1"}
    assert plan.items[0].fields == ("full_name",)


def test_finish_at_counts_day_boundaries() -> None:
    """What is left today goes now, the rest from each following midnight."""
    assert finish_at(10, 50, 0, T0, 6) == T0 + 60
    assert finish_at(120, 50, 0, T0, 6) == (math.floor(T0 / DAY) + 2) * DAY + 20 * 6
    assert per_day(0.5, 100) == 50


def test_backfill_1000_records_on_starter_within_share_live_first_eta_and_resume(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """1,000 differing records at share 0.5 of Starter's 100 calls: at most 50 backfill
    PATCHes per simulated day, live changes synced within two minutes throughout, a kill
    mid-release neither loses nor repeats a record, the finish within 10 % of the ETA."""
    clock = Clock(T0)
    leadlex.state.configure({"plan": "starter"})
    leadlex.state.clock = clock
    ingest_q: list[list[dict[str, Any]]] = []
    flush_q: list[str] = []

    def build() -> pipeline.Runtime:
        return make_runtime(
            clock=clock,
            env={"LEADLEX_PLAN": "starter"},
            dispatch_ingest=ingest_q.append,
            dispatch_flush=lambda contact, countdown: flush_q.append(contact),
        )

    rt = build()
    n, live_n = N_RECORDS, 20
    seeded = leadlex.seed([contact(i, "Old") for i in range(n + live_n)])
    ids = [c["id"] for c in seeded]
    backfilled = set(ids[:n])
    pipeline.link_records(rt, [("hubspot", ACCOUNT, str(i), ids[i]) for i in range(n + live_n)])
    rows = [crm_row(i, "New") for i in range(n)]
    leadlex_now = {c.id: c for c in export_contacts(rt)}
    plan = plan_backfill(
        rows,
        source="hubspot",
        cfg=rt.mapping,
        links={str(i): ids[i] for i in range(n)},
        leadlex=leadlex_now,
        region="US",
    )
    assert plan.calls == n
    as_of_ms = int((T0 - 60) * 1000)
    events = [backfill.backfill_event("hubspot", ACCOUNT, item, as_of_ms) for item in plan.items]
    assert backfill.enqueue(rt.redis, events, share=0.5, seconds_per_record=6.0) == n
    assert backfill.enqueue(rt.redis, events, share=0.5, seconds_per_record=6.0) == 0  # resume
    eta = backfill.status(rt).finish_at

    live_at = [T0 + 1800 + k * 5 * 3600 for k in range(live_n * 4)]  # every 5 h, 4 per contact
    live_sent: dict[int, float] = {}
    live_synced: dict[int, float] = {}
    per_day_patches: dict[int, int] = defaultdict(int)
    last_backfill_patch = 0.0
    killed = False
    log_seen = len(leadlex.state.log.entries(0, None))

    def play() -> bool:
        nonlocal log_seen, last_backfill_patch
        worked = False
        while ingest_q:
            for raw in ingest_q.pop(0):
                pipeline.ingest(rt, ChangeEvent.from_dict(raw))
            worked = True
        pipeline.pump(rt)
        while flush_q:
            pipeline.flush(rt, flush_q.pop(0))
            worked = True
        entries = leadlex.state.log.entries(0, None)
        for e in entries[log_seen:]:
            if e.method == "PATCH" and e.status == 200:
                if e.contact_id in backfilled:
                    per_day_patches[math.floor(clock.now / DAY)] += 1
                    last_backfill_patch = clock.now
                else:
                    k = int(e.body["job_title"].split()[-1])
                    live_synced.setdefault(k, clock.now)
        log_seen = len(entries)
        return worked

    while rt.redis.llen(backfill.QUEUE) or rt.state.due_count() or ingest_q:
        while live_at and live_at[0] <= clock.now:
            k = len(live_sent)
            at = live_at.pop(0)
            target = n + k % live_n
            ts = int(at * 1000)
            pipeline.ingest(
                rt,
                ChangeEvent(
                    source="hubspot",
                    account=ACCOUNT,
                    object_type="contact",
                    object_id=str(target),
                    kind="update",
                    occurred_at_ms=ts,
                    fingerprint=fingerprint("live", k),
                    changes={"jobtitle": f"Live {k}"},
                    received_at_ms=ts,
                ),
            )
            live_sent[k] = at
        worked = play()
        if not killed and clock.now > T0 + KILL_DAY * DAY:

            def die(_n: int) -> None:
                raise KilledError

            try:
                worked = bool(backfill.release(rt, on_dispatched=die)) or worked
            except KilledError:
                killed = True
                rt.redis.delete(backfill.LOCK)  # the dead process's lock expires (30 s)
                rt = build()  # a fresh process takes over
                worked = True
        elif backfill.release(rt):
            worked = True
        if worked or rt.state.due_count():
            advance(rt.redis, clock, 10)
        else:
            next_day = (math.floor(clock.now / DAY) + 1) * DAY + 1
            advance(rt.redis, clock, min([next_day, *live_at[:1]]) - clock.now)
        if clock.now > T0 + 40 * DAY:
            due = [c.decode() for c in rt.redis.zrange("lls:due", 0, 5)]
            raise AssertionError(
                f"backfill did not finish: queue {rt.redis.llen(backfill.QUEUE)}, due {due}, "
                f"stage {[rt.state.read_stage(c) for c in due[:2]]}, "
                f"intent {[rt.state.read_intent(c) for c in due[:2]]}, "
                f"budget {rt.budget.status()}, {backfill.status(rt)}, days {dict(per_day_patches)}"
            )

    assert killed
    assert sum(per_day_patches.values()) == n  # each record once, the kill repeated none
    assert max(per_day_patches.values()) <= per_day(0.5, 100)
    with leadlex.state.lock:
        assert all(leadlex.state.store.get(c).job_title == "New" for c in backfilled)  # type: ignore[union-attr]
    assert set(live_synced) == set(live_sent)
    assert max(live_synced[k] - live_sent[k] for k in live_sent) <= 120
    actual = last_backfill_patch - T0
    assert abs((eta - T0) - actual) <= 0.1 * actual, (eta - T0, actual)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_backfill_command_prints_the_plan_first_and_queues_once(
    leadlex: SandboxServer, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The plan (differing records, calls, days) comes before the question; declining queues
    nothing; a second run queues nothing twice."""
    from tests.onboarding.conftest import API_KEY

    seeded = leadlex.seed([contact(i, "Old" if i < 30 else "New") for i in range(40)])
    State(redis_client).set_links([("hubspot", "", str(i), c["id"]) for i, c in enumerate(seeded)])
    export = tmp_path / "crm.csv"
    lines = ["Record ID,First Name,Last Name,Email,Job Title"]
    lines += [f"{i},First{i},Last{i},p{i}@example.com,New" for i in range(45)]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {
        "REDIS_URL": redis_url,
        "LEADLEX_BASE_URL": leadlex.base_url,
        "LEADLEX_API_KEY": API_KEY,
        "LEADLEX_PLAN": "starter",
    }
    args = ["backfill", str(export), "--source", "hubspot", "--budget-share", "0.2"]
    declined = CliRunner().invoke(main, args, env=env, input="n\n")
    assert declined.exit_code == 1
    plan_at = declined.output.index("30 contacts differ (30 fields): 30 LeadLex calls")
    assert "= 20 a day: 2 day(s)" in declined.output
    assert "10 linked records already equal" in declined.output
    assert "5 without a link" in declined.output
    assert plan_at < declined.output.index("queue the backfill?")
    assert redis_client.llen(backfill.QUEUE) == 0
    first = CliRunner().invoke(main, [*args, "--yes"], env=env)
    assert "queued 30 records" in first.output, first.output
    again = CliRunner().invoke(main, [*args, "--yes"], env=env)
    assert "queued 0 records (30 were queued before)" in again.output, again.output
    assert redis_client.llen(backfill.QUEUE) == 30
    progress = CliRunner().invoke(main, ["backfill"], env=env)
    assert "backfill: 0/30 released, 30 queued" in progress.output

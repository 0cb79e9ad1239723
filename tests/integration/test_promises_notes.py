"""The promises about notes, fencing and creation (issue 10, scenarios 1, 2, 3, 6, 7), each
on real parts: the test Redis, the LeadLex simulator on loopback, the pipeline's own code
(steps run inline, so each scenario's timing is exact), third-party edits through
LeadLex's normal API with a second key.

Invariant 5: a note is appended exactly once, or surfaced as a `notes_uncertain` dead
letter; never silently taken as applied, never appended twice. Invariant 9: a stalled
flush can never commit over a newer one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.integration.conftest import Sandbox
from tests.integration.support import API_KEY, now_ms
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.leadlex import LeadLexClient, LeadLexResponse
from worker.mapping import load_mapping
from worker.ratelimit import Grant
from worker.settings import load_settings

OTHER_KEY = "wbk_test_someone_else_0123456789"
TIMEOUT = 1.0  # LEADLEX_TIMEOUT_SECONDS and the client's timeout
GRACE = 2.0  # NOTES_SETTLE_DELAY_SECONDS
NOT_KNOWN = ("unknown_outcome", "retry", "dead_lettered")  # a flush whose write's fate is open


class Clock:
    """The pipeline's clock: real time plus an offset a test may move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def make_rt(redis_url: str, sandbox: Sandbox) -> Iterator[Callable[..., pipeline.Runtime]]:
    """Build pipeline Runtimes on the test Redis and the simulator (our key + a third party's)."""
    sandbox.configure(api_keys={API_KEY: ["read", "write"], OTHER_KEY: ["read", "write"]})
    built: list[tuple[redis.Redis, LeadLexClient]] = []

    def build(client_cls: type[LeadLexClient] = LeadLexClient, **env: str) -> pipeline.Runtime:
        settings = load_settings(
            {
                "REDIS_URL": redis_url,
                "LEADLEX_API_KEY": API_KEY,
                "LEADLEX_BASE_URL": sandbox.base_url,
                "LEADLEX_PLAN": "org",
                "COALESCE_SECONDS": "0",
                "LEADLEX_TIMEOUT_SECONDS": str(TIMEOUT),
                "NOTES_SETTLE_DELAY_SECONDS": str(GRACE),
                "MAX_RETRY_AGE_SECONDS": "60",
                **env,
            },
            env_file=None,
        )
        client = client_cls(sandbox.base_url, API_KEY, timeout=TIMEOUT)
        conn = redis.Redis.from_url(redis_url)
        built.append((conn, client))
        dispatched: list[dict[str, Any]] = []
        rt = pipeline.Runtime(
            settings=settings,
            redis=conn,
            mapping=load_mapping(None, "US"),
            client_factory=lambda: client,
            clock=Clock(),
            dispatch_ingest=dispatched.extend,
        )
        rt.dispatched = dispatched  # type: ignore[attr-defined]
        return rt

    yield build
    for conn, client in built:
        client.close()
        conn.close()


def _event(object_id: str, kind: str = "update", **changes: str) -> ChangeEvent:
    ts = now_ms()
    return ChangeEvent(
        source="hubspot",
        account="62515",
        object_type="contact",
        object_id=object_id,
        kind=kind,  # type: ignore[arg-type]
        occurred_at_ms=ts,
        fingerprint=fingerprint("promises", object_id, ts, sorted(changes.items())),
        changes=dict(changes),
    )


def _drain(rt: pipeline.Runtime, contact: str, timeout: float = 20.0) -> list[str]:
    """Flush `contact` until nothing is staged or in flight (what the pump would do)."""
    outcomes: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rt.state.read_intent(contact) is None and not rt.state.read_stage(contact):
            return outcomes
        outcomes.append(pipeline.flush(rt, contact).outcome)
        time.sleep(0.2)
    raise AssertionError(f"not drained in {timeout}s: {outcomes[-5:]}")


def _third_party_edit(sandbox: Sandbox, contact: str, **fields: str) -> None:
    """Somebody else edits the contact through LeadLex's normal API, with their own key."""
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}, timeout=5
    ) as other:
        other.patch(f"/v1/contacts/{contact}", json=fields).raise_for_status()


def _linked(rt: pipeline.Runtime, sandbox: Sandbox, object_id: str, **seed: str) -> str:
    cid = sandbox.seed(**seed)
    rt.state.set_links([("hubspot", "62515", object_id, cid)])
    return cid


def _note_patches(sandbox: Sandbox, contact: str, text: str) -> list[dict[str, Any]]:
    return [p for p in sandbox.patches(contact) if text in str((p["body"] or {}).get("notes"))]


# ---- scenario 1 -------------------------------------------------------------------------------


def test_third_party_edit_does_not_make_a_failed_note_look_applied(
    make_rt: Any, sandbox: Sandbox
) -> None:
    """Note A synced, somebody edits the contact, note B's PATCH gets a 5xx that was not
    applied: B still reaches LeadLex exactly once (its baseline is read fresh)."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "901", full_name="Ada Lovelace")
    pipeline.ingest(rt, _event("901", leadlex_notes="A"))
    assert _drain(rt, cid) == ["sent"]
    _third_party_edit(sandbox, cid, job_title="Countess")
    sandbox.faults(error_rate_5xx=1.0, error_statuses=[503], error_methods=["PATCH"])
    pipeline.ingest(rt, _event("901", leadlex_notes="A\nB"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    sandbox.faults(error_rate_5xx=0.0)
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B"
    assert list(rt.dlq.iter()) == []
    tries = _note_patches(sandbox, cid, "[HubSpot] B")
    assert [t["status"] for t in tries] == [503, 200]
    assert tries[0]["idempotency_key"] == tries[1]["idempotency_key"] is not None


# ---- scenario 2 -------------------------------------------------------------------------------


def test_late_apply_after_a_timeout_is_not_appended_twice(make_rt: Any, sandbox: Sandbox) -> None:
    """A notes PATCH times out on our side and LeadLex applies it seconds later: the settle
    waits past that point, finds the contact changed, and surfaces the note instead of
    sending it again."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "902", full_name="Grace Hopper")
    pipeline.ingest(rt, _event("902", leadlex_notes="A"))
    _drain(rt, cid)
    late = TIMEOUT + GRACE / 2  # after the client gave up, before the settle may run
    sandbox.faults(late_apply_seconds=late, late_apply_answer="timeout", late_apply_writes=1)
    pipeline.ingest(rt, _event("902", leadlex_notes="A\nB"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A"  # not applied yet
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B"
    assert len(_note_patches(sandbox, cid, "[HubSpot] B")) == 1
    (letter,) = rt.dlq.iter()
    assert letter.reason == "notes_uncertain"
    assert letter.payload["leadlex_value"] == "[HubSpot] B"
    assert rt.metrics.value("notes_uncertain") == 1
    pipeline.ingest(rt, _event("902", leadlex_notes="A\nB\nC"))
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B\n[HubSpot] C"


def test_a_write_stalled_before_its_patch_is_settled_from_when_it_left(
    make_rt: Any, sandbox: Sandbox
) -> None:
    """Found by the short CDC chaos run (seed 7): a notes flush stalled 16 s between building
    its write and arming it (a GC or VM pause; the chaos seam), then its PATCH was answered
    503 and applied 5 s later. The write's `sent_at` had been stamped before the stall, so
    the flush that took over could settle at once: its GET came before the late apply, saw
    nothing new, and sent the note again, appended twice. `sent_at` is stamped when the
    write is armed, right before the PATCH: the settle waits past the late apply."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "905", full_name="Grace Hopper")
    pipeline.ingest(rt, _event("905", leadlex_notes="A"))
    _drain(rt, cid)
    stalls: list[str] = []

    def stall_once(point: str, contact: str) -> None:
        if point == "before_arm" and not stalls:
            stalls.append(contact)
            rt.clock.offset += TIMEOUT + GRACE + 5  # type: ignore[attr-defined]

    rt.seam = stall_once
    sandbox.faults(late_apply_seconds=1.5, late_apply_answer="error", late_apply_writes=1)
    pipeline.ingest(rt, _event("905", leadlex_notes="A\nB"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    assert stalls == [cid]
    assert pipeline.flush(rt, cid).outcome == "settle_wait"  # not settled before it landed
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B"
    assert len(_note_patches(sandbox, cid, "[HubSpot] B")) == 1


def test_late_apply_with_honoured_idempotency_is_exactly_once(
    make_rt: Any, sandbox: Sandbox
) -> None:
    """When LeadLex honours Idempotency-Key (and the operator says so), the timed-out note is
    re-sent with the same key at once and lands exactly once, with nothing to surface."""
    rt = make_rt(LEADLEX_PATCH_IDEMPOTENCY="honored")
    sandbox.configure(honor_idempotency_key=True)
    cid = _linked(rt, sandbox, "903", full_name="Grace Hopper")
    sandbox.faults(late_apply_seconds=TIMEOUT + 1.5, late_apply_writes=1)
    pipeline.ingest(rt, _event("903", leadlex_notes="B"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    _drain(rt, cid)
    time.sleep(TIMEOUT + 2)  # the late original lands (as a replay) after the re-send
    assert sandbox.contact(cid)["notes"] == "[HubSpot] B"
    assert list(rt.dlq.iter()) == []
    assert [r["method"] for r in sandbox.requests()] == ["PATCH", "PATCH"]  # no GET needed


# ---- scenario 3 -------------------------------------------------------------------------------


def test_applied_patch_crossing_max_age_is_settled_not_dead_lettered(
    make_rt: Any, sandbox: Sandbox
) -> None:
    """The attempt that crosses MAX_RETRY_AGE_SECONDS is applied but its answer lost: it is
    settled first (surfaced, not dead-lettered as failed), and the next edit does not
    append it again."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "904", full_name="Mae Jemison")
    pipeline.ingest(rt, _event("904", leadlex_notes="A"))
    _drain(rt, cid)
    sandbox.faults(error_rate_5xx=1.0, error_statuses=[503], error_methods=["PATCH"])
    pipeline.ingest(rt, _event("904", leadlex_notes="A\nB", jobtitle="Astronaut"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN  # first failure: the clock starts
    rt.clock.offset += 30  # past the settle delay: not applied (GET), so sent again ...
    sandbox.faults(error_rate_5xx=0.0, drop_after_apply_rate=1.0)
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN  # ... applied, answer lost
    sandbox.faults(drop_after_apply_rate=0.0)
    rt.clock.offset += 31  # now past MAX_RETRY_AGE_SECONDS since the first failure
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B"
    assert sandbox.contact(cid)["job_title"] == "Astronaut"
    assert [d.reason for d in rt.dlq.iter()] == ["notes_uncertain"]
    pipeline.ingest(rt, _event("904", leadlex_notes="A\nB\nC"))
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] A\n[HubSpot] B\n[HubSpot] C"


def test_max_age_is_judged_only_after_the_settle(make_rt: Any, sandbox: Sandbox) -> None:
    """Past MAX_RETRY_AGE_SECONDS a write of unknown outcome is first settled; only a write
    known not to have landed is dead-lettered as max_age, and no note ends up twice."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "909", full_name="Mary Jackson")
    pipeline.ingest(rt, _event("909", leadlex_notes="A"))
    _drain(rt, cid)
    sandbox.faults(error_rate_5xx=1.0, error_statuses=[503], error_methods=["PATCH"])
    pipeline.ingest(rt, _event("909", leadlex_notes="A\nB"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    rt.clock.offset += 61
    sandbox.faults(error_rate_5xx=0.0, drop_after_apply_rate=1.0)
    pipeline.flush(rt, cid)
    sandbox.faults(drop_after_apply_rate=0.0)
    rt.clock.offset += TIMEOUT + GRACE + 1
    pipeline.flush(rt, cid)
    pipeline.ingest(rt, _event("909", leadlex_notes="A\nB\nC"))
    rt.clock.offset += TIMEOUT + GRACE + 1
    _drain(rt, cid)
    notes = sandbox.contact(cid)["notes"]
    assert notes.count("[HubSpot] B") <= 1
    assert notes.endswith("C")
    reasons = [d.reason for d in rt.dlq.iter()]
    assert reasons in (["max_age"], ["notes_uncertain"])


def test_2xx_with_unreadable_body_is_settled_as_applied(make_rt: Any, sandbox: Sandbox) -> None:
    """A notes PATCH answered 200 with a body that is not JSON is neither dead-lettered nor
    sent again: the settle sees LeadLex's 2xx and the changed contact, and records it."""
    rt = make_rt()
    cid = _linked(rt, sandbox, "905", full_name="Dorothy Vaughan")
    sandbox.faults(non_json_answer_rate=1.0)
    pipeline.ingest(rt, _event("905", leadlex_notes="B", jobtitle="Mathematician"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN
    sandbox.faults(non_json_answer_rate=0.0)
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] B"
    assert list(rt.dlq.iter()) == []
    assert rt.state.applied(cid)["job_title"][0] == "Mathematician"
    pipeline.ingest(rt, _event("905", leadlex_notes="B\nC"))
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] B\n[HubSpot] C"
    assert len(_note_patches(sandbox, cid, "[HubSpot] B")) == 1


# ---- scenario 6 -------------------------------------------------------------------------------


class _GetWatchingClient(LeadLexClient):
    """A real client that says when it has read a contact (the step before a notes PATCH)."""

    got = threading.Event()

    def get_contact(self, contact_id: str) -> LeadLexResponse:
        resp = super().get_contact(contact_id)
        type(self).got.set()
        return resp


def test_flush_stalled_past_its_lease_is_fenced_off(make_rt: Any, sandbox: Sandbox) -> None:
    """A flush that stalls (a VM pause) longer than its lease right before its PATCH is
    overtaken: exactly one note reaches LeadLex, the newer value wins, and our applied
    record says what LeadLex holds."""
    _GetWatchingClient.got = threading.Event()
    stalled = make_rt(client_cls=_GetWatchingClient)
    newer = make_rt()
    cid = _linked(stalled, sandbox, "906", full_name="Katherine Johnson")
    pipeline.ingest(stalled, _event("906", leadlex_notes="Orbit maths", jobtitle="Computer"))

    acquire = stalled.budget.acquire
    pauses: list[float] = []

    def pausing_acquire() -> Grant:
        if _GetWatchingClient.got.is_set() and not pauses:
            pauses.append(9.0)  # longer than any lease (today's and the old lock's)
            time.sleep(pauses[0])
        return acquire()

    stalled.budget.acquire = pausing_acquire  # type: ignore[method-assign]
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(pipeline.flush(stalled, cid).outcome))
    thread.start()
    assert _GetWatchingClient.got.wait(10)
    pipeline.ingest(newer, _event("906", jobtitle="Aerospace Technologist"))
    deadline = time.monotonic() + 12
    while newer.redis.exists(f"lls:lock:{cid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pipeline.flush(newer, cid).outcome == "sent"
    thread.join(20)
    _drain(newer, cid)
    contact = sandbox.contact(cid)
    assert contact["notes"] == "[HubSpot] Orbit maths"
    assert contact["job_title"] == "Aerospace Technologist"
    assert newer.state.applied(cid)["job_title"][0] == "Aerospace Technologist"
    assert result == ["fenced"]
    assert len(_note_patches(sandbox, cid, "Orbit maths")) == 1


def test_flush_stalled_after_its_answer_still_commits_its_own_write(
    make_rt: Any, sandbox: Sandbox
) -> None:
    """A flush that stalls between LeadLex's 200 and its commit, past its lease, still
    records its own write (its intent is unsettled), while the flush that took over waits
    for it and then sends only the newer value: one note, the newer value, nothing
    surfaced."""
    # a settle delay longer than the lease, as in production (150 s vs 3 x timeout + 2)
    stalled = make_rt(NOTES_SETTLE_DELAY_SECONDS="10")
    newer = make_rt(NOTES_SETTLE_DELAY_SECONDS="10")
    cid = _linked(stalled, sandbox, "911", full_name="Annie Easley")
    answered = threading.Event()

    def stall_after_answer(point: str, contact: str) -> None:
        if point == "after_answer":
            answered.set()
            time.sleep(3 * TIMEOUT + 4)  # past the lease

    stalled.seam = stall_after_answer
    pipeline.ingest(stalled, _event("911", leadlex_notes="Centaur", jobtitle="Programmer"))
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(pipeline.flush(stalled, cid).outcome))
    thread.start()
    assert answered.wait(10)
    pipeline.ingest(newer, _event("911", jobtitle="Rocket Scientist"))
    deadline = time.monotonic() + 12
    while newer.redis.exists(f"lls:lock:{cid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pipeline.flush(newer, cid).outcome == "settle_wait"  # the stalled write may land
    thread.join(20)
    assert result == ["sent"]
    newer.redis.delete(f"lls:lease:{cid}")
    _drain(newer, cid)
    contact = sandbox.contact(cid)
    assert contact["notes"] == "[HubSpot] Centaur"
    assert contact["job_title"] == "Rocket Scientist"
    assert newer.state.applied(cid)["job_title"][0] == "Rocket Scientist"
    assert list(newer.dlq.iter()) == []


# ---- scenario 7 -------------------------------------------------------------------------------


def test_two_deliveries_of_one_creation_create_one_contact(make_rt: Any, sandbox: Sandbox) -> None:
    """Two workers taking the same creation event at once create one LeadLex contact, and
    both link the record to it."""
    sandbox.configure(duplicate_email="allow")  # LeadLex's duplicate handling is undocumented
    sandbox.faults(latency_ms=500)
    a, b = make_rt(CREATE_ON_CREATION="true"), make_rt(CREATE_ON_CREATION="true")
    event = _event("907", kind="create", firstname="Hedy", lastname="Lamarr", email="hedy@x.org")
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda rt=rt: outcomes.append(pipeline.ingest(rt, event)))
        for rt in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    sandbox.faults(latency_ms=0)
    created = list(sandbox.http.get("/_sandbox/contacts").json()["data"])
    assert len(created) == 1
    assert len(sandbox.requests("POST")) == 1
    assert a.state.resolve_link("hubspot", "62515", "907") == created[0]["id"]
    assert sorted(outcomes)[0] in ("duplicate", "staged")


def test_create_whose_answer_is_lost_leaves_no_orphan(make_rt: Any, sandbox: Sandbox) -> None:
    """A POST applied but unanswered is settled by looking the contact up: it is linked, no
    second contact is created, and the record's later edits reach it."""
    rt = make_rt(CREATE_ON_CREATION="true")
    sandbox.faults(drop_after_apply_rate=1.0)
    created = _event("908", kind="create", firstname="Joan", lastname="Clarke", email="jc@x.org")
    assert pipeline.ingest(rt, created) == "unlinked"
    sandbox.faults(drop_after_apply_rate=0.0)
    assert pipeline.ingest(rt, _event("908", jobtitle="Cryptanalyst")) == "unlinked"
    assert pipeline.settle_creates(rt) == 0  # a late apply could still land
    rt.clock.offset += TIMEOUT + GRACE + 1
    assert pipeline.settle_creates(rt) == 1
    (contact,) = sandbox.http.get("/_sandbox/contacts").json()["data"]
    assert rt.state.resolve_link("hubspot", "62515", "908") == contact["id"]
    for data in rt.dispatched:
        pipeline.ingest(rt, ChangeEvent.from_dict(data))
    _drain(rt, contact["id"])
    assert sandbox.contact(contact["id"])["job_title"] == "Cryptanalyst"
    assert len(sandbox.requests("POST")) == 1


# ---- the operator's side of notes_uncertain -------------------------------------------------


def test_operator_replays_or_drops_a_surfaced_note(
    make_rt: Any, sandbox: Sandbox, redis_url: str, monkeypatch: Any
) -> None:
    """A note surfaced as notes_uncertain is counted by `status`, appended exactly once by a
    replay (a second replay adds nothing), and `dlq drop` removes a letter."""
    from click.testing import CliRunner

    from cli import main
    from cli.status import status_report
    from worker.replay import replay_letters

    rt = make_rt()
    cid = _linked(rt, sandbox, "910", full_name="Ida Rhodes")
    sandbox.faults(error_rate_5xx=1.0, error_statuses=[502], error_methods=["PATCH"])
    pipeline.ingest(rt, _event("910", leadlex_notes="B"))
    assert pipeline.flush(rt, cid).outcome in NOT_KNOWN  # not applied ...
    sandbox.faults(error_rate_5xx=0.0)
    _third_party_edit(sandbox, cid, job_title="Programmer")  # ... but the contact changed
    rt.clock.offset += TIMEOUT + GRACE + 1
    _drain(rt, cid)
    assert "notes" not in sandbox.contact(cid) or not sandbox.contact(cid)["notes"]
    (letter,) = rt.dlq.iter("notes_uncertain")
    assert status_report(rt.settings, rt.redis)["notes_uncertain"] == 1
    assert replay_letters(rt, [letter]) == (1, 0)
    _drain(rt, cid)
    assert replay_letters(rt, [letter]) == (1, 0)  # replayed twice by mistake
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] B"
    assert list(rt.dlq.iter()) == []
    other = rt.dlq.add("notes_uncertain", source="hubspot", payload={}, contact=cid)
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["dlq", "drop", other])
    assert result.exit_code == 0, result.output
    assert "dropped 1" in result.output
    assert rt.dlq.count() == 0
    missing = CliRunner().invoke(main, ["dlq", "drop", other])
    assert missing.exit_code != 0


def test_intent_left_by_the_previous_version_is_settled(make_rt: Any, sandbox: Sandbox) -> None:
    """An intent in the previous version's format (no key, no body) found after an upgrade
    is settled like any other: here not applied, so its note is sent, once."""
    import json

    rt = make_rt()
    cid = _linked(rt, sandbox, "912", full_name="Evelyn Boyd")
    pipeline.ingest(rt, _event("912", leadlex_notes="Legacy"))
    staged = rt.state.read_stage(cid)
    old = {
        "notes": "[HubSpot] Legacy",
        "items": [[s.field, s.raw, "n"] for s in staged],
        "sent_at": time.time() - 600,
        "updated_before": sandbox.contact(cid)["updated_date"],
    }
    rt.redis.set(f"lls:intent:{cid}", json.dumps(old))
    _drain(rt, cid)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] Legacy"
    assert len(_note_patches(sandbox, cid, "Legacy")) == 1
    assert list(rt.dlq.iter()) == []


def test_late_apply_through_real_workers_is_appended_once(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """Scenario 2 end to end (receiver, Celery worker and beat, simulator): a notes PATCH
    that LeadLex applies after the worker's timeout appears once, and is surfaced."""
    from tests.integration.support import hs_change, link, post_hubspot, wait_for
    from worker.deadletter import DeadLetters

    cid = sandbox.seed(full_name="Valerie Thomas")
    link(redis_url, "hubspot", "913", cid)
    # LEADLEX_TIMEOUT_SECONDS is 3 for the workers: applied 4 s after arrival, settled after 6.
    sandbox.faults(late_apply_seconds=4.0, late_apply_answer="timeout", late_apply_writes=1)
    workers(NOTES_SETTLE_DELAY_SECONDS="3")
    post_hubspot(receiver, [hs_change(913, "leadlex_notes", "Illusion transmitter", now_ms())])
    store = DeadLetters(redis.Redis.from_url(redis_url))
    wait_for(lambda: list(store.iter("notes_uncertain")), timeout=60)
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=30)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] Illusion transmitter"
    assert len(_note_patches(sandbox, cid, "Illusion transmitter")) == 1

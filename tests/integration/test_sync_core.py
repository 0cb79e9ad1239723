"""End to end over real parts: receiver -> Redis -> Celery worker(s) -> LeadLex simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner

from tests.integration.conftest import Sandbox
from tests.integration.support import hs_change, link, now_ms, post_hubspot, wait_for
from worker.celery_app import QUEUE_INGEST
from worker.deadletter import DeadLetters


def _fields(req: dict[str, Any]) -> set[str]:
    return set((req.get("body") or {}).keys())


def test_signed_batch_with_two_changes_updates_the_linked_contact(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """A signed HubSpot batch of two property changes leaves the contact holding both values."""
    cid = sandbox.seed(full_name="Ada Lovelace", email="ada@example.org")
    link(redis_url, "hubspot", "501", cid)
    workers()
    t = now_ms()
    post_hubspot(
        receiver,
        [hs_change(501, "jobtitle", "CTO", t), hs_change(501, "company", "Engines Ltd", t + 1)],
    )
    contact = wait_for(
        lambda: (
            (c := sandbox.contact(cid))["job_title"] == "CTO"
            and c["company_name"] == "Engines Ltd"
            and c
        )
    )
    assert contact["full_name"] == "Ada Lovelace"
    patches = sandbox.patches(cid)
    assert len(patches) == 1
    assert patches[0]["body"] == {"job_title": "CTO", "company_name": "Engines Ltd"}


def test_same_batch_delivered_three_times_costs_one_patch(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """HubSpot resending a batch (same events) has the effect of one delivery."""
    cid = sandbox.seed(full_name="Grace Hopper")
    link(redis_url, "hubspot", "502", cid)
    workers()
    t = now_ms()
    batch = [
        hs_change(502, "jobtitle", "Rear Admiral", t),
        hs_change(502, "phone", "+1 202 555 0101", t),
    ]
    for attempt in range(3):
        for event in batch:
            event["attemptNumber"] = attempt  # resends carry a new attempt number
        post_hubspot(receiver, batch)
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Rear Admiral")
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=15)
    patches = sandbox.patches(cid)
    assert len(patches) == 1
    assert patches[0]["body"] == {"job_title": "Rear Admiral", "phone": "+12025550101"}


def test_out_of_order_events_leave_the_newest_value_with_two_workers(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """Values for one field arriving t3, t1, t2 across two racing workers leave t3's value."""
    cid = sandbox.seed(full_name="Katherine Johnson")
    link(redis_url, "hubspot", "503", cid)
    workers()
    workers()
    t = now_ms()
    for ts, title in ((t + 3000, "third"), (t + 1000, "first"), (t + 2000, "second")):
        post_hubspot(receiver, [hs_change(503, "jobtitle", title, ts)])
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "third")
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=15)
    assert sandbox.contact(cid)["job_title"] == "third"
    sent = [p["body"].get("job_title") for p in sandbox.patches(cid)]
    assert sent[-1] == "third"
    assert "first" not in sent[sent.index("third") :]


def test_five_changes_within_a_second_become_one_patch(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """Five property changes of one contact within 1 s are sent as exactly one PATCH."""
    cid = sandbox.seed(full_name="Old Name")
    link(redis_url, "hubspot", "504", cid)
    # A generous window: the six requests must land inside it even on a loaded machine.
    workers(COALESCE_SECONDS="5")
    t = now_ms()
    changes = [
        ("firstname", "Mary"),
        ("lastname", "Jackson"),
        ("email", "mary.jackson@example.org"),
        ("phone", "+44 20 7946 0018"),
        ("jobtitle", "Engineer"),
        ("company", "NACA"),
    ]
    for i, (prop, value) in enumerate(changes):
        post_hubspot(receiver, [hs_change(504, prop, value, t + i)])
    wait_for(lambda: sandbox.patches(cid), timeout=20)
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=15)
    patches = sandbox.patches(cid)
    assert len(patches) == 1
    assert patches[0]["body"] == {
        "full_name": "Mary Jackson",
        "email": "mary.jackson@example.org",
        "phone": "+442079460018",
        "job_title": "Engineer",
        "company_name": "NACA",
    }


def test_notes_applied_but_connection_dropped_are_appended_once(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """LeadLex applies a notes PATCH and drops the connection; the note is not sent again, and
    since LeadLex cannot tell whether it was ours it is surfaced as notes_uncertain."""
    cid = sandbox.seed(full_name="Dorothy Vaughan")
    link(redis_url, "hubspot", "505", cid)
    sandbox.faults(drop_after_apply_rate=1.0)
    workers()
    post_hubspot(receiver, [hs_change(505, "leadlex_notes", "Met at ILTACON", now_ms())])
    wait_for(lambda: any(r.get("dropped") for r in sandbox.patches(cid)), timeout=20)
    sandbox.faults(drop_after_apply_rate=0.0)
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=30)
    wait_for(lambda: list(DeadLetters(redis.Redis.from_url(redis_url)).iter()), timeout=30)
    notes = sandbox.contact(cid)["notes"]
    assert notes.count("Met at ILTACON") == 1
    assert notes == "[HubSpot] Met at ILTACON"
    letters = list(DeadLetters(redis.Redis.from_url(redis_url)).iter())
    assert [d.reason for d in letters] == ["notes_uncertain"]
    assert letters[0].payload["leadlex_value"] == "[HubSpot] Met at ILTACON"


def test_notes_once_when_worker_dies_between_200_and_commit(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """A worker that dies right after LeadLex's 200 (before committing) causes no second append."""
    cid = sandbox.seed(full_name="Mae Jemison")
    link(redis_url, "hubspot", "506", cid)
    doomed = workers("doomed", app="tests.integration.crashing_worker")
    post_hubspot(receiver, [hs_change(506, "leadlex_notes", "Asked for a demo", now_ms())])
    wait_for(lambda: doomed.proc.poll() is not None, timeout=20)
    assert len(sandbox.patches(cid)) == 1
    workers("survivor", beat=True)
    wait_for(lambda: not redis.Redis.from_url(redis_url).zcard("lls:due"), timeout=45)
    assert sandbox.contact(cid)["notes"] == "[HubSpot] Asked for a demo"
    assert all("notes" not in (p["body"] or {}) for p in sandbox.patches(cid)[1:])
    # notes are write-only in LeadLex: whether the 200 was ours cannot be read back
    letters = list(DeadLetters(redis.Redis.from_url(redis_url)).iter())
    assert [d.reason for d in letters] == ["notes_uncertain"]


def test_kill9_with_staged_and_inflight_changes_loses_nothing(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """After a worker is SIGKILLed mid-work and another starts, every change reaches LeadLex."""
    ids = {}
    for n in range(12):
        ids[600 + n] = sandbox.seed(full_name=f"Person {n}")
        link(redis_url, "hubspot", str(600 + n), ids[600 + n])
    sandbox.faults(latency_ms=300)
    first = workers("first", COALESCE_SECONDS="0.2")
    t = now_ms()
    post_hubspot(receiver, [hs_change(oid, "jobtitle", f"Title {oid}", t) for oid in ids])
    wait_for(lambda: len(sandbox.patches()) >= 2, timeout=20)
    first.kill()
    sandbox.faults(latency_ms=0)
    workers("second", beat=True)
    for oid, cid in ids.items():
        wait_for(
            lambda cid=cid, oid=oid: sandbox.contact(cid)["job_title"] == f"Title {oid}", timeout=60
        )


def test_unlinked_event_is_parked_and_replayed_after_links_import(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """An event for an unlinked record waits, then applies once `links import` links it."""
    from cli import main

    cid = sandbox.seed(full_name="Hedy Lamarr")
    workers()
    post_hubspot(receiver, [hs_change(707, "jobtitle", "Inventor", now_ms())])
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.exists("lls:unlinked:hubspot:707"), timeout=20)
    assert sandbox.patches(cid) == []
    csv_file = tmp_path / "links.csv"
    csv_file.write_text(f"source,account,object_id,leadlex_id\nhubspot,,707,{cid}\n")
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["links", "import", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "1 parked events replayed" in result.output
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Inventor", timeout=30)
    wait_for(lambda: not client.exists("lls:unlinked:hubspot:707"), timeout=10)


def test_invalid_email_is_dead_lettered_and_other_fields_still_go(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """A bad email is left out and dead-lettered with its reason; the other field is applied."""
    cid = sandbox.seed(full_name="Joan Clarke", email="joan@example.org")
    link(redis_url, "hubspot", "508", cid)
    workers()
    t = now_ms()
    post_hubspot(
        receiver,
        [hs_change(508, "email", "not-an-email", t), hs_change(508, "jobtitle", "Cryptanalyst", t)],
    )
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Cryptanalyst")
    assert sandbox.contact(cid)["email"] == "joan@example.org"
    assert all("email" not in p["body"] for p in sandbox.patches(cid))
    letters = list(DeadLetters(redis.Redis.from_url(redis_url)).iter())
    assert [d.reason for d in letters] == ["invalid_email"]
    assert letters[0].details["field"] == "email"
    assert letters[0].contact == cid
    assert json.dumps(letters[0].payload).count("not-an-email") == 1


def test_ingest_message_of_the_old_shape_is_still_taken_in(
    sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """An ingest message queued before the upgrade (event dicts, not refs) still updates LeadLex,
    and one carrying a ref whose inbox record is gone counts as a duplicate."""
    from worker.celery_app import app as celery_app
    from worker.events import ChangeEvent, fingerprint

    cid = sandbox.seed(full_name="Mary Jackson")
    link(redis_url, "hubspot", "509", cid)
    workers()
    t = now_ms()
    event = ChangeEvent(
        source="hubspot",
        account="7070707",
        object_type="contact",
        object_id="509",
        kind="update",
        occurred_at_ms=t,
        fingerprint=fingerprint("old-shape", t),
        event_id="old-1",
        changes={"jobtitle": "Engineer"},
        received_at_ms=t,
    )
    celery_app.conf.broker_url = redis_url
    with celery_app.connection_for_write(redis_url) as conn:
        celery_app.send_task(
            "leadlex_sync.ingest_batch",
            args=[[event.to_dict()]],
            queue=QUEUE_INGEST,
            connection=conn,
        )
        celery_app.send_task(
            "leadlex_sync.ingest_batch", args=[["0" * 32]], queue=QUEUE_INGEST, connection=conn
        )
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Engineer")
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.hget("lls:metrics:counters", '["events_deduped","other"]'))

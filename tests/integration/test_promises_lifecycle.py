"""Issue 10, scenarios 4, 5, 8, 9, 10: record lifecycle by CRM time, parked events that
resume on every link path, per-field time from what changed, ties, and future times.

These drive worker.pipeline directly against a private Redis and the LeadLex simulator;
dispatched ingests are queued and run by the test (`Harness.drain`), dispatched flushes
are run by `Harness.flush_all`, so each scenario is deterministic and short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import defusedxml.ElementTree as SafeET
import pytest
import redis

from tests.integration.conftest import Sandbox
from tests.integration.support import (
    hs_change,
    now_ms,
    post_hubspot,
    runtime_factory,
    wait_for,
)
from webhook_app.sources.salesforce import parse_notification
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.ratelimit import Budget
from worker.state import Life

PORTAL = "62515"
ORG = "00D5g000004XmPqEAK"
YEAR_9999_MS = 253_402_300_799_000


@dataclass
class Harness:
    """A pipeline Runtime on the simulator whose dispatched ingests wait in `queue`."""

    rt: pipeline.Runtime
    queue: list[dict[str, Any]] = field(default_factory=list)

    def ingest(self, event: ChangeEvent) -> str:
        return pipeline.ingest(self.rt, event)

    def drain(self) -> list[str]:
        """Ingest every queued (replayed) event, including those queued meanwhile."""
        outcomes = []
        while self.queue:
            outcomes.append(pipeline.ingest(self.rt, ChangeEvent.from_dict(self.queue.pop(0))))
        return outcomes

    def flush_all(self) -> list[str]:
        """Flush every contact with staged changes now (what the dispatched tasks would do)."""
        return [
            pipeline.flush(self.rt, c.decode()).outcome
            for c in self.rt.redis.zrange("lls:due", 0, -1)
        ]

    def counter(self, name: str, **labels: Any) -> int:
        return self.rt.metrics.value(name, **labels)


@pytest.fixture
def harness(redis_url: str, sandbox: Sandbox) -> Iterator[Any]:
    """Factory: a Harness with extra settings (COALESCE_SECONDS=0)."""
    with runtime_factory(redis_url, sandbox.base_url) as make:

        def build(**env: str) -> Harness:
            h = Harness(make(env))
            h.rt.dispatch_ingest = h.queue.extend
            return h

        yield build


def hs(
    object_id: str,
    changes: dict[str, str | None],
    ts: int,
    *,
    kind: str = "update",
    merged: tuple[str, ...] = (),
    tag: str = "",
    received: int = 0,
) -> ChangeEvent:
    """A HubSpot ChangeEvent (`tag` makes a fresh fingerprint, as a replay has)."""
    return ChangeEvent(
        source="hubspot",
        account=PORTAL,
        object_type="contact",
        object_id=object_id,
        kind=kind,  # type: ignore[arg-type]
        occurred_at_ms=ts,
        fingerprint=fingerprint("t", object_id, kind, ts, sorted(changes), tag),
        changes=changes,
        merged_ids=merged,
        received_at_ms=received or now_ms(),
    )


def sf(notification_id: str, object_id: str, ts_ms: int, fields: dict[str, str]) -> ChangeEvent:
    """A Salesforce outbound-message Notification parsed by the receiver's own parser."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + ".000Z"
    body = "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in sorted(fields.items()))
    xml = (
        '<Notification xmlns="http://soap.sforce.com/2005/09/outbound" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<Id>{notification_id}</Id>"
        '<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"<sf:Id>{object_id}</sf:Id>{body}"
        f"<sf:LastModifiedDate>{iso}</sf:LastModifiedDate></sObject></Notification>"
    )
    event = parse_notification(SafeET.fromstring(xml), ORG, now_ms())
    assert isinstance(event, ChangeEvent)
    return event


def link(h: Harness, source: str, account: str, object_id: str, contact: str) -> None:
    h.rt.state.set_links([(source, account, object_id, contact)])


# ---- scenario 4 and 10: lifecycle by CRM time --------------------------------------------------
def test_restore_resumes_syncing_and_replays_edits_dated_before_the_deletion(
    harness: Any, sandbox: Sandbox
) -> None:
    """After a deletion and a later restore, new edits sync again, and an edit made before
    the deletion but delivered while the record was deleted reaches LeadLex too."""
    cid = sandbox.seed(full_name="Ada Lovelace")
    h = harness()
    link(h, "hubspot", PORTAL, "40", cid)
    t0 = now_ms() - 60_000
    assert h.ingest(hs("40", {}, t0 + 10_000, kind="delete")) == "deleted"
    assert h.ingest(hs("40", {"jobtitle": "Analyst"}, t0 + 5_000)) == "gone"
    assert h.flush_all() == []
    assert h.ingest(hs("40", {}, t0 + 20_000, kind="restore")) == "restored"
    assert h.drain() == ["staged"]
    assert h.ingest(hs("40", {"company": "Engines Ltd"}, t0 + 30_000)) == "staged"
    assert h.flush_all() == ["sent"]
    contact = sandbox.contact(cid)
    assert (contact["job_title"], contact["company_name"]) == ("Analyst", "Engines Ltd")


def test_deletion_replayed_after_a_later_restore_does_nothing(
    harness: Any, sandbox: Sandbox
) -> None:
    """A deletion delivered again (a replay, new fingerprint) after a later restore leaves the
    record active: later edits still sync."""
    cid = sandbox.seed(full_name="Grace Hopper")
    h = harness()
    link(h, "hubspot", PORTAL, "41", cid)
    t0 = now_ms() - 60_000
    assert h.ingest(hs("41", {}, t0 + 10_000, kind="delete")) == "deleted"
    assert h.ingest(hs("41", {}, t0 + 20_000, kind="restore")) == "restored"
    replayed = hs("41", {}, t0 + 10_000, kind="delete", tag="replay")
    assert h.ingest(replayed) == "stale_lifecycle"
    assert h.rt.state.life(f"hubspot:{PORTAL}:41") == Life("active", t0 + 20_000)
    assert h.ingest(hs("41", {"jobtitle": "Rear Admiral"}, t0 + 30_000)) == "staged"
    assert h.flush_all() == ["sent"]
    assert sandbox.contact(cid)["job_title"] == "Rear Admiral"
    assert h.counter("lifecycle_events", kind="delete", outcome="stale") == 1


def test_older_restore_after_a_newer_deletion_does_nothing(harness: Any, sandbox: Sandbox) -> None:
    """A restore older than the record's deletion, arriving after it, does not resume
    syncing: an edit dated between the two is not sent."""
    cid = sandbox.seed(full_name="Alan Turing")
    h = harness()
    link(h, "hubspot", PORTAL, "42", cid)
    t0 = now_ms() - 60_000
    assert h.ingest(hs("42", {}, t0 + 20_000, kind="delete")) == "deleted"
    assert h.ingest(hs("42", {}, t0 + 10_000, kind="restore")) == "stale_lifecycle"
    assert h.ingest(hs("42", {"jobtitle": "Codebreaker"}, t0 + 15_000)) == "gone"
    assert h.drain() == []
    assert h.flush_all() == []
    assert sandbox.patches(cid) == []
    assert h.rt.state.life(f"hubspot:{PORTAL}:42") == Life("deleted", t0 + 20_000)


def test_merges_are_ordered_by_time_and_a_replayed_merge_is_harmless(
    harness: Any, sandbox: Sandbox
) -> None:
    """The survivor inherits the merged record's link; a replayed merge and an older
    deletion of the merged record delivered afterwards change nothing."""
    cid = sandbox.seed(full_name="Merged Person")
    h = harness()
    link(h, "hubspot", PORTAL, "43", cid)
    t0 = now_ms() - 60_000
    assert h.ingest(hs("44", {}, t0 + 10_000, kind="merge", merged=("43",))) == "merged"
    assert h.ingest(hs("44", {}, t0 + 10_000, kind="merge", merged=("43",), tag="r")) == "merged"
    assert h.ingest(hs("43", {}, t0 + 5_000, kind="delete")) == "stale_lifecycle"
    assert h.rt.state.resolve_link("hubspot", PORTAL, "44") == cid
    assert h.rt.state.resolve_link("hubspot", PORTAL, "43") is None
    assert h.ingest(hs("43", {"jobtitle": "Old record"}, t0 + 6_000)) == "merged"
    assert h.ingest(hs("44", {"jobtitle": "Survivor"}, t0 + 30_000)) == "staged"
    assert h.flush_all() == ["sent"]
    assert sandbox.contact(cid)["job_title"] == "Survivor"
    assert h.counter("lifecycle_events", kind="merge", outcome="stale") == 1


def test_privacy_deletion_is_final(harness: Any, sandbox: Sandbox) -> None:
    """After a privacy deletion no restore or later edit syncs the record again, and the
    CRM values we held for it (snapshot, unsent staged values, link) are gone."""
    cid = sandbox.seed(full_name="Private Person")
    h = harness()
    link(h, "hubspot", PORTAL, "45", cid)
    t0 = now_ms() - 60_000
    assert h.ingest(hs("45", {"jobtitle": "Known"}, t0)) == "staged"
    assert h.flush_all() == ["sent"]
    assert h.ingest(hs("45", {"phone": "+1 415 555 0145"}, t0 + 5_000)) == "staged"
    assert h.ingest(hs("45", {}, t0 + 10_000, kind="privacy_delete")) == "erased"
    assert h.rt.state.read_stage(cid) == []  # not sent after the erasure
    assert h.ingest(hs("45", {}, t0 + 20_000, kind="restore")) == "erased"
    assert h.ingest(hs("45", {"jobtitle": "Again"}, t0 + 30_000)) == "erased"
    assert h.rt.state.snapshot(f"hubspot:{PORTAL}:45") == {}
    assert h.rt.state.resolve_link("hubspot", PORTAL, "45") is None
    assert h.flush_all() == ["empty"]  # the contact was due; nothing is left to send
    assert len(sandbox.patches(cid)) == 1
    assert sandbox.contact(cid)["job_title"] == "Known"


# ---- scenario 5: every link path replays parked events ---------------------------------------
def test_leadlex_id_property_on_a_later_event_replays_parked_events(
    harness: Any, sandbox: Sandbox
) -> None:
    """An edit parked as unlinked reaches LeadLex once a later event carries the LeadLex id."""
    cid = sandbox.seed(full_name="Katherine Johnson")
    h = harness()
    t0 = now_ms() - 60_000
    assert h.ingest(hs("50", {"jobtitle": "Mathematician"}, t0)) == "unlinked"
    # The id property alone maps to no LeadLex field: nothing of its own to stage.
    assert h.ingest(hs("50", {"leadlex_contact_id": cid}, t0 + 1_000)) == "stale"
    assert h.drain() == ["staged"]
    h.flush_all()
    assert sandbox.contact(cid)["job_title"] == "Mathematician"
    assert not h.rt.redis.exists("lls:unlinked:hubspot:50")


def test_email_lookup_refused_for_budget_is_retried_and_the_event_synced(
    harness: Any, sandbox: Sandbox
) -> None:
    """With RESOLVE_BY_EMAIL, an event whose lookup had no budget is parked, retried by the
    periodic step once budget returns, linked by the lookup and synced."""
    cid = sandbox.seed(full_name="Mary Jackson", email="mary@example.org")
    h = harness(
        RESOLVE_BY_EMAIL="true", LEADLEX_RATE_PER_MINUTE="2", LEADLEX_RATE_WINDOW_SECONDS="1"
    )
    # Someone else spent the minute's budget.
    assert h.rt.budget.acquire().ok
    assert h.rt.budget.acquire().ok
    event = hs("51", {"email": "mary@example.org", "jobtitle": "Engineer"}, now_ms())
    assert h.ingest(event) == "unlinked"
    assert h.counter("events_parked", reason="lookup_pending") == 1
    assert sandbox.requests() == []
    deadline = time.monotonic() + 20
    while not h.rt.state.resolve_link("hubspot", PORTAL, "51"):
        assert time.monotonic() < deadline, "the parked lookup was never retried"
        time.sleep(0.2)
        pipeline.retry_unresolved(h.rt)
        h.drain()
    while h.rt.redis.zcard("lls:due"):
        assert time.monotonic() < deadline, "the flush never went"
        h.flush_all()
        time.sleep(0.2)
    assert h.rt.state.resolve_link("hubspot", PORTAL, "51") == cid
    assert sandbox.contact(cid)["job_title"] == "Engineer"
    assert h.rt.state.count_resolve_retries() == 0


def test_celery_pump_retries_a_lookup_refused_for_budget(
    receiver: Any, sandbox: Sandbox, workers: Any, redis_url: str
) -> None:
    """With real workers and beat: a HubSpot edit whose email lookup found the budget spent
    is parked, retried by the periodic pump once budget returns, and reaches LeadLex."""
    cid = sandbox.seed(full_name="Annie Easley", email="annie@example.org")
    workers(RESOLVE_BY_EMAIL="true", LEADLEX_RATE_PER_MINUTE="1", LEADLEX_RATE_WINDOW_SECONDS="4")
    client = redis.Redis.from_url(redis_url)
    budget = Budget(client, 1, 10_000, window_seconds=4)
    assert budget.acquire().ok  # another worker spent this window's only call
    t = now_ms()
    post_hubspot(
        receiver,
        [hs_change(811, "email", "annie@example.org", t), hs_change(811, "jobtitle", "Rocket", t)],
    )
    wait_for(lambda: client.exists("lls:unlinked:hubspot:811"), timeout=20)
    assert sandbox.requests() == []  # parked without spending a call
    wait_for(lambda: sandbox.contact(cid)["job_title"] == "Rocket", timeout=60)
    assert [r["method"] for r in sandbox.requests()] == ["GET", "PATCH"]
    assert client.zcard("lls:resolve:retry") == 0
    client.close()


def test_contact_creation_replays_events_parked_before_it(harness: Any, sandbox: Sandbox) -> None:
    """With CREATE_ON_CREATION, an edit delivered before the record's creation event is
    parked, then sent to the contact the creation made."""
    h = harness(CREATE_ON_CREATION="true")
    t0 = now_ms() - 60_000
    note = hs("52", {"leadlex_notes": "Met at the fair"}, t0 + 1_000)
    assert h.ingest(note) == "unlinked"
    created = hs("52", {"firstname": "Hedy", "lastname": "Lamarr"}, t0, kind="create")
    assert h.ingest(created) == "staged"
    cid = h.rt.state.resolve_link("hubspot", PORTAL, "52")
    assert cid is not None
    assert h.drain() == ["staged"]
    h.flush_all()
    bodies = [p["body"] for p in sandbox.patches(cid)]
    assert any("Met at the fair" in str(b.get("notes", "")) for b in bodies), bodies


def test_a_link_set_while_an_event_parks_is_not_missed(harness: Any, sandbox: Sandbox) -> None:
    """Parking checks the link in the same step: an event resolved before `links import` but
    parked after it is staged instead of waiting forever."""
    cid = sandbox.seed(full_name="Race Person")
    h = harness()
    link(h, "hubspot", PORTAL, "53", cid)  # appears between resolution and parking
    event = hs("53", {"jobtitle": "Racer"}, now_ms())
    assert h.rt.state.park(event.to_dict(), check_link=True) == cid
    assert not h.rt.redis.exists("lls:unlinked:hubspot:53")


# ---- scenario 8: per-field time from what changed, ties ---------------------------------------
def test_salesforce_resend_of_an_unchanged_title_keeps_a_newer_hubspot_title(
    harness: Any, sandbox: Sandbox
) -> None:
    """A Salesforce message for a Phone edit re-sends the old Title with the record's new
    LastModifiedDate; the newer Title set from HubSpot a minute earlier stays in LeadLex."""
    cid = sandbox.seed(full_name="Mara Quist")
    h = harness()
    link(h, "salesforce", ORG, "0035g00000XyZ12AAB", cid)
    link(h, "hubspot", PORTAL, "60", cid)
    t0 = (now_ms() // 1000 - 600) * 1000
    first = {"Title": "Buyer", "Phone": "+1 415 555 0100"}
    assert h.ingest(sf("04l5g00000Hh1aBAAR", "0035g00000XyZ12AAB", t0, first)) == "staged"
    h.flush_all()
    assert h.ingest(hs("60", {"jobtitle": "Head of Buying"}, t0 + 60_000)) == "staged"
    h.flush_all()
    second = {"Title": "Buyer", "Phone": "+1 415 555 0199"}
    assert h.ingest(sf("04l5g00000Hh1aCAAR", "0035g00000XyZ12AAB", t0 + 120_000, second)) == (
        "staged"
    )
    h.flush_all()
    contact = sandbox.contact(cid)
    assert (contact["job_title"], contact["phone"]) == ("Head of Buying", "+14155550199")


@pytest.mark.parametrize("flush_between", [True, False])
def test_same_second_salesforce_edits_converge_whatever_the_order(
    harness: Any, sandbox: Sandbox, flush_between: bool
) -> None:
    """Two Salesforce edits with the same LastModifiedDate, delivered in either order (with
    or without a flush in between), leave the same value in LeadLex, and the tie is counted."""
    h = harness()
    t = (now_ms() // 1000 - 300) * 1000
    final = []
    for n, order in enumerate(((0, 1), (1, 0))):
        cid = sandbox.seed(full_name=f"Tie Person {n}")
        record = f"0035g00000TieR{n}AAB"
        link(h, "salesforce", ORG, record, cid)
        messages = [
            sf(f"04l5g00000Tie{n}aAAR", record, t, {"Title": "Analyst"}),
            sf(f"04l5g00000Tie{n}bAAR", record, t, {"Title": "Director"}),
        ]
        for i in order:
            h.ingest(messages[i])
            if flush_between:
                h.flush_all()
        h.flush_all()
        final.append(sandbox.contact(cid)["job_title"])
    assert final[0] == final[1]
    assert h.counter("field_time_ties") >= 1


# ---- scenario 9: times from the future ---------------------------------------------------------
def test_event_dated_9999_is_clamped_so_a_later_edit_syncs(
    harness: Any, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """An event dated in 9999 takes the receive time + MAX_CLOCK_SKEW_SECONDS instead (once
    counted and logged, duplicates not), so a normal edit made after that still syncs."""
    cid = sandbox.seed(full_name="Time Traveller")
    h = harness()
    link(h, "hubspot", PORTAL, "70", cid)
    received = now_ms() - 600_000
    future = hs("70", {"jobtitle": "Frozen"}, YEAR_9999_MS, received=received)
    with caplog.at_level(logging.WARNING, logger="leadlex_sync.worker"):
        assert h.ingest(future) == "staged"
        assert h.ingest(future) == "duplicate"
    h.flush_all()
    assert h.rt.state.applied(cid)["job_title"] == ("Frozen", received + 300_000)
    later = received + 400_000
    assert h.ingest(hs("70", {"jobtitle": "Thawed"}, later, received=later)) == "staged"
    h.flush_all()
    assert sandbox.contact(cid)["job_title"] == "Thawed"
    assert h.counter("event_times_clamped", source="hubspot") == 1
    clamped = [r for r in caplog.records if "from the future" in r.getMessage()]
    assert len(clamped) == 1
    assert clamped[0].levelno == logging.WARNING


def test_a_parked_future_event_is_stored_clamped(harness: Any, sandbox: Sandbox) -> None:
    """An unlinked event from the future is parked with its clamped time, so its replay is
    neither clamped (nor counted) again nor able to freeze a field."""
    h = harness()
    received = now_ms()
    assert h.ingest(hs("71", {"jobtitle": "Later"}, YEAR_9999_MS, received=received)) == (
        "unlinked"
    )
    (parked,) = h.rt.state.take_unlinked("hubspot", "71")
    assert parked["occurred_at_ms"] == received + 300_000
    assert h.counter("event_times_clamped", source="hubspot") == 1

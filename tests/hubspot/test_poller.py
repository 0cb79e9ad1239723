"""One journal poll on real parts (simulator on loopback, test Redis, the real hand-off step):
events reach the inbox and the ingest queue, and only then does the offset move."""

from __future__ import annotations

import redis

from pull_sources.hubspot_journal.poller import PollRuntime, poll_once
from pull_sources.hubspot_journal.position import EARLIEST, Position
from tests.hubspot.conftest import HubSpot
from tests.receiver.senders import ingest_batches
from worker.metrics import Metrics
from worker.state import INBOX


def change(object_id: int, **props: str) -> dict[str, object]:
    return {"objectId": object_id, "properties": props}


def test_poll_hands_events_over_then_advances(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """Three entries become inbox records and ingest messages; the offset is the last entry."""
    offsets = [
        hubspot.record(change(1, jobtitle="A"), change(2, jobtitle="B"))["offset"],
        hubspot.record(change(1, jobtitle="C", phone="+44 20 7946 0018"))["offset"],
        hubspot.record({"objectId": 3, "action": "DELETE"})["offset"],
    ]
    result = poll_once(poll_runtime)
    assert (result.outcome, result.entries, result.events) == ("tip", 3, 5)
    events = [e for batch in ingest_batches(redis_client) for e in batch]
    assert [(e["object_id"], e["kind"], e["changes"]) for e in events] == [
        ("1", "update", {"jobtitle": "A"}),
        ("2", "update", {"jobtitle": "B"}),
        ("1", "update", {"jobtitle": "C"}),
        ("1", "update", {"phone": "+44 20 7946 0018"}),
        ("3", "delete", {}),
    ]
    assert redis_client.hlen(INBOX) == 5
    assert poll_runtime.position.offset() == offsets[-1]
    again = poll_once(poll_runtime)
    assert (again.outcome, again.entries) == ("tip", 0)
    assert Metrics(redis_client).value("journal_entries_read") == 3


def test_start_latest_skips_history_and_reads_what_comes_after(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """HUBSPOT_JOURNAL_START=latest: the first poll only stores the newest entry's offset."""
    poll_runtime.start = "latest"
    hubspot.record(change(1, jobtitle="old"))
    assert poll_once(poll_runtime).events == 0
    hubspot.record(change(1, jobtitle="new"))
    assert poll_once(poll_runtime).events == 1
    [[event]] = ingest_batches(redis_client)
    assert event["changes"] == {"jobtitle": "new"}


def test_start_latest_on_an_empty_journal_reads_everything_later(
    hubspot: HubSpot, poll_runtime: PollRuntime
) -> None:
    """An empty journal at the first poll stores EARLIEST, so the first entry is not skipped."""
    poll_runtime.start = "latest"
    assert poll_once(poll_runtime).outcome == "tip"
    assert poll_runtime.position.offset() == EARLIEST
    hubspot.record(change(1, jobtitle="first"))
    assert poll_once(poll_runtime).events == 1


def test_expired_offset_restarts_from_earliest_and_counts_the_gap(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """After more than three days away the offset is gone: read from the earliest, count a gap."""
    poll_runtime.wall = hubspot.server.state.clock.now  # the poller lives on HubSpot's time
    hubspot.record(change(1, jobtitle="A"))
    poll_once(poll_runtime)
    hubspot.record(change(1, jobtitle="lost"))
    hubspot.advance(3 * 86_400 + 10)
    hubspot.record(change(1, jobtitle="kept"))
    result = poll_once(poll_runtime)
    assert (result.gaps, result.events) == (1, 1)
    assert ingest_batches(redis_client)[-1][0]["changes"] == {"jobtitle": "kept"}
    assert Metrics(redis_client).value("journal_gaps") == 1
    status = poll_runtime.position.status()
    assert status is not None
    assert status.gaps == 1
    assert status.last_gap_at > 0


def test_failed_download_is_read_again_not_skipped(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """A download error stops the poll before that entry; the next poll hands it over."""
    hubspot.record(change(1, jobtitle="A"))
    hubspot.record(change(1, jobtitle="B"))
    hubspot.configure(fail_downloads=1)
    # The first download fails: nothing is handed over and the offset stays unset.
    failed = poll_once(poll_runtime)
    assert (failed.outcome, failed.entries) == ("download_failed", 0)
    assert poll_runtime.position.offset() in (None, EARLIEST)
    ok = poll_once(poll_runtime)
    assert (ok.outcome, ok.entries) == ("tip", 2)
    values = [e["changes"]["jobtitle"] for b in ingest_batches(redis_client) for e in b]
    assert values == ["A", "B"]
    assert Metrics(redis_client).value("journal_download_failures") == 1


def test_rate_limit_leaves_the_offset_alone(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """A 429 ends the poll as `retry` with the offset unchanged; the next poll catches up."""
    hubspot.record(change(1, jobtitle="A"))
    poll_once(poll_runtime)
    before = poll_runtime.position.offset()
    hubspot.record(change(1, jobtitle="B"))
    hubspot.configure(force_429=1)
    assert poll_once(poll_runtime).outcome == "retry"
    assert poll_runtime.position.offset() == before
    assert "429" in (poll_runtime.position.status() or object()).last_error  # type: ignore[attr-defined]
    assert poll_once(poll_runtime).events == 1


def test_second_poller_is_busy_and_a_lost_lease_cannot_advance(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """A held lease makes another poller busy; a stale token never moves the offset."""
    pos = Position(redis_client, "global")
    token = pos.acquire(30)
    assert token is not None
    assert poll_once(poll_runtime).outcome == "busy"
    pos.release(token)
    assert not pos.advance("not-the-token", 30, "x", 1, 1, 1)
    assert pos.offset() is None


def test_offset_aging_out_of_a_quiet_journal_is_not_a_gap(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """At the tip a minute before its offset expires, the poller reads on without a gap."""
    poll_runtime.wall = hubspot.server.state.clock.now
    hubspot.record(change(1, jobtitle="A"))
    poll_once(poll_runtime)
    hubspot.advance(3 * 86_400 - 60)
    assert poll_once(poll_runtime).outcome == "tip"  # still there, nothing new
    hubspot.advance(120)  # the only entry (our offset) ages out
    hubspot.record(change(1, jobtitle="B"))
    result = poll_once(poll_runtime)
    assert (result.gaps, result.events) == (0, 1)
    assert Metrics(redis_client).value("journal_gaps") == 0


def test_a_large_entry_goes_as_messages_of_at_most_100_events(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_client: redis.Redis
) -> None:
    """An entry of 100 changes x 2 properties is handed over as two messages of 100."""
    hubspot.record(*[change(i, jobtitle=f"T{i}", phone="+44 20 7946 0018") for i in range(100)])
    assert poll_once(poll_runtime).events == 200
    assert [len(b) for b in ingest_batches(redis_client)] == [100, 100]
    assert redis_client.hlen(INBOX) == 200

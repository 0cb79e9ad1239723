"""One poll of the Webhooks Journal: read from the stored offset, hand events over, advance.

`poll_once` (no Celery here; `tasks.py` calls it from beat):
1. take the lease (one poller per journal scope at a time; others answer "busy");
2. no stored offset yet: HUBSPOT_JOURNAL_START=latest stores the newest entry (or, for an
   empty journal, EARLIEST: everything that appears from now on is new); `earliest`
   starts with the oldest entry still kept (up to three days of history);
3. read up to HUBSPOT_JOURNAL_BATCH_SIZE entry pointers after the offset, download each
   file in order, parse it (`entries.parse_entry`), hand ALL their events to
   `worker.handoff.Enqueuer.submit` (inbox + one Celery message, as the receiver does),
   and only then advance the offset to the last downloaded entry (fenced by the lease);
4. repeat until the tip or the time budget. A download that fails stops the run at the
   entry before it (nothing is skipped: the next poll reads it again with a fresh URL);
   an expired offset (404) restarts from the earliest entry, counts a gap
   (`leadlex_sync_journal_gaps_total`), and `status` shows an alert line, unless the
   poller was at the tip within QUIET_TIP_SECONDS (the offset aged out of a journal
   that was quiet for three days: nothing after it was published, so nothing missed).

Crash safety: killed before `submit` returned, nothing moved; killed between `submit` and
`advance`, the next poll hands the same events over again and the fingerprint ledger
drops them. The lease expires on its own (`lease_seconds`), so a killed poller delays
the next one by at most that long.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from pull_sources.hubspot_journal.api import (
    DownloadFailed,
    JournalClient,
    JournalError,
    JournalRetryable,
    OffsetExpired,
    Pointer,
)
from pull_sources.hubspot_journal.entries import InvalidFile, parse_entry
from pull_sources.hubspot_journal.position import EARLIEST, Position
from worker.batch import Batch, InvalidEvent
from worker.handoff import EnqueueUnavailable
from worker.metrics import Metrics

log = logging.getLogger("leadlex_sync.hubspot_journal")

# An expired offset is a gap unless the poller was at the tip this recently (a quiet
# journal: nothing newer was published for three days, so nothing was missed).
QUIET_TIP_SECONDS = 600.0
MESSAGE_EVENTS = 100  # events per hand-off message, like one HubSpot webhook batch
SOURCE_LABEL = "hubspot_journal"  # metrics / dead letters; the events' source stays "hubspot"


class Submitter(Protocol):
    def submit(self, source: str, batch: Batch) -> None: ...


@dataclass
class PollRuntime:
    """What a poll needs (built once per process by tasks.py; tests build their own)."""

    client: JournalClient
    position: Position
    enqueuer: Submitter
    metrics: Metrics
    start: str = "latest"
    batch_size: int = 50
    lease_seconds: float = 30.0
    portals: frozenset[str] = frozenset()
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass
class PollResult:
    """What one poll did (for logs, the task result and tests)."""

    outcome: str  # tip | budget | busy | download_failed | offset_expired... see poll_once
    entries: int = 0
    events: int = 0
    gaps: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def _merge(into: Batch, part: Batch) -> None:
    into.events.extend(part.events)
    into.rejected.extend(part.rejected)
    into.ignored.update(part.ignored)
    into.accounts |= part.accounts


def _chunks(batch: Batch, size: int = MESSAGE_EVENTS) -> list[Batch]:
    """The batch as hand-off messages of at most `size` events (as the receiver's); the
    first one carries the dead letters and ignored counts."""
    parts = []
    for start in range(0, max(1, len(batch.events)), size):
        part = Batch()
        for event in batch.events[start : start + size]:
            part.add(event)
        parts.append(part)
    parts[0].rejected.extend(batch.rejected)
    parts[0].ignored.update(batch.ignored)
    return parts


def _read(rt: PollRuntime, offset: str) -> list[Pointer]:
    if offset == EARLIEST:
        return rt.client.earliest(rt.batch_size)
    return rt.client.after(offset, rt.batch_size)


def poll_once(rt: PollRuntime, max_seconds: float | None = None) -> PollResult:
    """Read and hand over journal entries until the tip or `max_seconds` (default lease/2).

    Outcomes: `tip` (all read), `budget` (time up, more to read), `busy` (another poller
    holds the lease), `download_failed`, `retry` (HubSpot 429/5xx/network), `error`
    (credentials, scope: see the log and `status`), `enqueue_unavailable` (Redis or the
    broker failed: nothing advanced), `redis_unavailable`, `lost_lease`."""
    pos = rt.position
    try:
        token = pos.acquire(rt.lease_seconds)
    except redis.RedisError:
        return PollResult("redis_unavailable")
    if token is None:
        return PollResult("busy")
    result = PollResult("budget")
    deadline = rt.clock() + (rt.lease_seconds / 2 if max_seconds is None else max_seconds)
    try:
        result = _poll(rt, token, deadline, result)
    except JournalRetryable as exc:
        result.outcome = "retry"
        _error(rt, "retry", str(exc))
    except JournalError as exc:
        result.outcome = "error"
        _error(rt, "error", str(exc))
        log.error("HubSpot journal poll failed: %s", exc)
    except EnqueueUnavailable as exc:
        result.outcome = "enqueue_unavailable"
        _error(rt, "enqueue_unavailable", str(exc))
    except redis.RedisError as exc:
        result.outcome = "redis_unavailable"
        log.warning("HubSpot journal poll stopped: Redis %s", type(exc).__name__)
    finally:
        with contextlib.suppress(redis.RedisError):  # else the lease expires by itself
            pos.release(token)
    pos.note(last_poll_at=rt.wall())
    if result.outcome in ("tip", "budget"):
        pos.note(last_error="")
    return result


def _error(rt: PollRuntime, reason: str, message: str) -> None:
    rt.metrics.incr("journal_poll_errors", reason=reason)
    rt.position.note(last_error=f"{reason}: {message}"[:300], last_error_at=rt.wall())


def _poll(rt: PollRuntime, token: str, deadline: float, result: PollResult) -> PollResult:
    pos = rt.position
    while rt.clock() < deadline:
        offset = pos.offset()
        if offset is None:
            if rt.start == "latest":
                tip = rt.client.latest()
                if not pos.advance(
                    token, rt.lease_seconds, tip.offset if tip else EARLIEST, 0, 0, 0
                ):
                    result.outcome = "lost_lease"
                    return result
                log.info("HubSpot journal: starting after the newest entry")
                continue
            offset = EARLIEST
        try:
            pointers = _read(rt, offset)
        except OffsetExpired:
            status = pos.status()
            if status is not None and rt.wall() - status.tip_at < QUIET_TIP_SECONDS:
                # We were at the tip moments ago, so every entry after our offset is still
                # unread and kept: the offset merely aged out of a quiet journal. No gap.
                if not pos.advance(token, rt.lease_seconds, EARLIEST, 0, 0, 0):
                    result.outcome = "lost_lease"
                    return result
                log.info("HubSpot journal offset aged out of a quiet journal; reading on")
                continue
            if not pos.restart_from_earliest(token, rt.lease_seconds, offset):
                result.outcome = "lost_lease"
                return result
            result.gaps += 1
            rt.metrics.incr("journal_gaps")
            log.error(
                "HubSpot journal offset expired (down longer than the journal keeps changes); "
                "restarting from the earliest entry: changes in between may be missing"
            )
            continue
        if not pointers:
            pos.note(tip_at=rt.wall())
            result.outcome = "tip"
            return result

        batch = Batch()
        newest_ms = 0
        done: list[Pointer] = []
        failure: DownloadFailed | None = None
        received_ms = int(rt.wall() * 1000)
        for pointer in pointers:
            try:
                data = rt.client.download(pointer)
            except DownloadFailed as exc:
                failure = exc
                break
            try:
                part, newest = parse_entry(data, received_ms, rt.portals)
            except InvalidFile as exc:
                part, newest = Batch(), 0
                part.reject(data, InvalidEvent("$", str(exc)), 0)
            _merge(batch, part)
            newest_ms = max(newest_ms, newest)
            done.append(pointer)
        if done:
            for part in _chunks(batch):  # inbox + enqueue (messages of <= 100 events) ...
                rt.enqueuer.submit(SOURCE_LABEL, part)
            # ... and only then advance
            if not pos.advance(
                token, rt.lease_seconds, done[-1].offset, len(done), len(batch.events), newest_ms
            ):
                result.outcome = "lost_lease"
                return result
            rt.metrics.incr("journal_entries_read", len(done))
            result.entries += len(done)
            result.events += len(batch.events)
        if failure is not None:
            rt.metrics.incr("journal_download_failures")
            _error(rt, "download_failed", str(failure))
            result.outcome = "download_failed"
            return result
    return result

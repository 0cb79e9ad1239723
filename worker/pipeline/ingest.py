"""Ingest: take ChangeEvents into the sync state (dedupe, order, map, resolve, stage), a
whole message in a few round trips (`ingest_batch`; `ingest` is its one-event case).

Order: the event's time is first clamped (`clamp_future`: no later than receive time +
MAX_CLOCK_SKEW_SECONDS); lifecycle events go to worker.pipeline.lifecycle; field values
merge into the record's snapshot per field by CRM time, then `seq` (the order within one
time, CDC only; equal pairs: the tie rule, see worker.state; whole-record events stamp
only the fields whose value changed), and only the fields this event set are mapped and
staged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis

from worker.events import ChangeEvent, clamp_future
from worker.mapping import map_record, unsendable
from worker.metrics import Metrics
from worker.pipeline.lifecycle import LIFECYCLE_KINDS, apply_lifecycle
from worker.pipeline.linking import replay_parked
from worker.pipeline.resolve import resolve
from worker.pipeline.runtime import Runtime
from worker.state import NOTES_PREFIX, Prelude, State, Steps, seq_of_time

log = logging.getLogger("leadlex_sync.worker")

# An acknowledged event not taken in this long after the broker's visibility timeout was lost.
INBOX_GRACE_SECONDS = 30.0


# Events per run: one script call holds Redis for the whole run (~15 µs per event).
RUN_MAX = 100

# Called with (event, exception) for an event whose ingest failed (not a Redis error): the
# Celery task dead-letters it and goes on with the batch.
OnError = Callable[[ChangeEvent, Exception], None]


def ingest(rt: Runtime, event: ChangeEvent) -> str:
    """Take one event into the sync state; returns the outcome (for logs and tests)."""
    return ingest_batch(rt, [event])[0]


def ingest_batch(
    rt: Runtime, events: Sequence[ChangeEvent], on_error: OnError | None = None
) -> list[str]:
    """Take a batch of events (one ingest message) into the sync state, in order; returns
    each event's outcome. The effect is that of `ingest` called for each event in turn.

    Round trips: the batch is cut into runs of up to RUN_MAX events with values (a
    lifecycle event is applied on its own between runs; a fingerprint already in the run
    starts the next one, so a duplicate inside a batch meets the ledger like any other).
    Per run ONE script call runs every event's prelude (dedupe, lifecycle, link, snapshot
    merge, in order, so an event sees the merges of those before it), Python maps them,
    and ONE round trip carries every event's staging step (one script call; it marks the
    event seen, so the inbox sweep forgets it only then) with the run's other writes
    (counters, seen marks of ignored events); the flushes of contacts that became due are
    dispatched together after it. Resolution, parking and dead letters of the rare event
    that needs them run in between, as before. A worker dying mid-run leaves merged
    snapshots without staged values: the redelivered message stages them (ingest is
    idempotent; docs/architecture.md, "Ingest in batches").

    `on_error`: an event whose ingest raises (a Redis error always propagates) is handed
    to it and its outcome is "ingest_error"; without it the exception propagates."""
    now_ms = int(rt.clock() * 1000)
    skew_ms = rt.settings.max_clock_skew_seconds * 1000
    outcomes: list[str] = []
    run: list[tuple[ChangeEvent, int]] = []
    run_fps: set[str] = set()
    for original in events:
        event, future_ms = clamp_future(original, now_ms, skew_ms)
        lifecycle = event.kind in LIFECYCLE_KINDS
        if run and (lifecycle or event.fingerprint in run_fps or len(run) == RUN_MAX):
            outcomes += _ingest_run(rt, run, on_error)
            run, run_fps = [], set()
        if not lifecycle:
            run.append((event, future_ms))
            run_fps.add(event.fingerprint)
            continue
        try:
            outcome = apply_lifecycle(rt, event)
        except redis.RedisError:
            raise
        except Exception as exc:
            if on_error is None:
                raise
            on_error(event, exc)
            outcome = "ingest_error"
        if future_ms and outcome not in ("duplicate", "ingest_error"):
            _report_clamp(rt, event, future_ms)
        outcomes.append(outcome)
    if run:
        outcomes += _ingest_run(rt, run, on_error)
    return outcomes


def _ingest_run(
    rt: Runtime, run: list[tuple[ChangeEvent, int]], on_error: OnError | None
) -> list[str]:
    """Ingest events with distinct fingerprints and no lifecycle event among them."""
    st = rt.state
    calls = []
    for event, _future in run:
        with_values = event.kind in ("update", "create") and bool(event.changes)
        calls.append(
            st.prelude_call(
                event.fingerprint,
                event.record_key,
                event.occurred_at_ms,
                event.changes if with_values else None,
                whole_record=event.whole_record,
                seq=event.seq,
            )
        )
    first = Steps(rt.redis)
    at = st.preludes_on(first, calls)
    preludes = State.prelude_replies(first.execute()[at])
    steps = Steps(rt.redis)  # the run's plain writes (metrics, seen marks) and its staging
    stages: list[list[Any]] = []
    staged_at: list[tuple[int, str]] = []  # (outcome index, contact) per staging step
    outcomes: list[str] = []
    for (event, future_ms), prelude in zip(run, preludes, strict=True):
        try:
            outcome = _take(rt, event, future_ms, prelude, steps.pipe)
        except redis.RedisError:
            raise
        except Exception as exc:
            if on_error is None:
                _stage(rt, steps, stages, staged_at, outcomes)  # as one by one: earlier
                raise  # events stand
            on_error(event, exc)
            outcome = "ingest_error"
        if isinstance(outcome, tuple):
            contact, call = outcome
            staged_at.append((len(outcomes), contact))
            stages.append(call)
            outcome = ""
        outcomes.append(outcome)
    _stage(rt, steps, stages, staged_at, outcomes)
    return outcomes


def _stage(
    rt: Runtime,
    steps: Steps,
    stages: list[list[Any]],
    staged_at: list[tuple[int, str]],
    outcomes: list[str],
) -> None:
    """Send the run's staging steps (one script call) with its other writes; dispatch the
    flushes of contacts that became due and fill in the staged events' outcomes."""
    at = rt.state.stages_on(steps, stages) if stages else -1
    replies = steps.execute()
    if at < 0:
        return
    due: dict[str, None] = {}
    for (index, contact), (newly_due, staged, _stale) in zip(
        staged_at, State.stage_replies(replies[at]), strict=True
    ):
        if newly_due:
            due[contact] = None
        outcomes[index] = "staged" if staged else "stale"
    # A dispatch lost here (the worker dies) is not lost work: the staging step leased the
    # contact, and the pump dispatches a due contact once its lease has expired.
    rt.dispatch_flush_many(list(due), rt.settings.coalesce_seconds)


def _take(
    rt: Runtime,
    event: ChangeEvent,
    future_ms: int,
    prelude: Prelude,
    pipe: Any,
) -> str | tuple[str, list[Any]]:
    """One event after its prelude: the outcome, or (contact, its staging step) when it is
    to be staged (the outcome then follows from the step's reply). Plain writes (metrics,
    seen marks) go on `pipe`, sent with the run's staging."""
    st = rt.state
    seen, life, link, snapshot, seqs = prelude
    if seen:
        rt.metrics.incr("events_deduped", pipe=pipe, source=event.source)
        return "duplicate"
    if future_ms:
        _report_clamp(rt, event, future_ms, pipe=pipe)
    ttl = rt.settings.dedupe_ttl_seconds
    record = event.record_key

    if event.kind not in ("update", "create") or not event.changes:
        st.mark_seen(event.fingerprint, ttl, pipe=pipe)
        rt.metrics.incr("events_ignored", pipe=pipe, source=event.source, kind=event.kind)
        return "ignored"
    if life is not None and life.blocks(event.occurred_at_ms):
        if life.state == "deleted":
            # Dated at or before the record's deletion: a restore replays it.
            if st.park(event.to_dict(), check_link=False) is not None:
                rt.dispatch_ingest([event.to_dict()])  # restored meanwhile: take it again
                return "requeued"
            rt.metrics.incr("events_parked", pipe=pipe, reason="deleted")
            return "gone"
        st.mark_seen(event.fingerprint, ttl, pipe=pipe)  # erased, or merged away
        rt.metrics.incr("events_ignored", pipe=pipe, source=event.source, kind=event.kind)
        log.info("event of an erased or merged record ignored", extra={"record": record})
        return life.state

    # The fields whose value this event set (or, on a tie, competes for): an unchanged
    # field of a whole-record event and a field a newer event set (by time, then seq) are
    # left out. On a tie the event's own value is mapped and the staging step applies the
    # tie rule to the LeadLex values, so ties resolve the same way whatever the arrival order.
    current = [
        name
        for name in event.changes
        if name in snapshot
        and snapshot[name][1] == event.occurred_at_ms
        and seqs.get(name, 0) == event.seq
    ]
    if len(current) < len(event.changes):
        current += _under_unsendable(rt, event, snapshot, seqs)
    stale = len(event.changes) - len(current)
    view = dict(snapshot)
    for name in current:
        view[name] = (event.changes[name], event.occurred_at_ms)
    result = map_record(rt.mapping, event.source, event.object_type, view, current)

    contact = link
    if contact is None:
        contact, retry_at = resolve(rt, event, result.leadlex_id, result.email)
        if contact is None:
            contact = st.park(event.to_dict(), check_link=True, retry_at=retry_at)
        if contact is None:
            reason = "lookup_pending" if retry_at is not None else "unlinked"
            rt.metrics.incr("events_parked", pipe=pipe, reason=reason)
            log.info("event parked: no LeadLex link", extra={"record": record, "reason": reason})
            return "unlinked"

    for rej in result.rejected:
        # A composed field (full_name) names its parts as "firstname+lastname".
        parts = {f: view.get(f, (None, 0))[0] for f in rej.crm_field.split("+")}
        rt.dlq.add(
            rej.reason,
            source=event.source,
            payload=_replay_event(event, parts),
            details={
                "field": rej.leadlex_field,
                "crm_field": rej.crm_field,
                "problem": rej.message,
            },
            contact=contact,
        )
        rt.metrics.incr("dead_lettered", pipe=pipe, reason=rej.reason)

    origin = {
        "r": record,
        "t": event.object_type,
        "c": {k: event.changes[k] for k in current},
        "o": event.occurred_at_ms,
        "q": event.received_at_ms,
    }
    # A composed value (full_name) is marked "p" (from the record's parts): staging lets the
    # record's next composition of the same time replace it (worker.state, _STAGE).
    composed_origin = {**origin, "p": 1}
    rows: list[tuple[str, str, int, dict[str, Any]]] = [
        (name, fv.value, fv.ts_ms, composed_origin if name in result.composed else origin)
        for name, fv in result.fields.items()
    ]
    if result.notes is not None:
        rows.append((NOTES_PREFIX + record, result.notes.value, result.notes.ts_ms, origin))

    call = st.stage_call(
        contact,
        rows,
        due_at=rt.clock() + rt.settings.coalesce_seconds,
        fp=event.fingerprint,
        seen_ttl=ttl,
        unpark=(event.source, event.object_id),
        lease_seconds=rt.settings.coalesce_seconds + rt.lease_seconds,
        counters=_counter_fields(event.source),
        extra_stale=stale,
        seqs=row_seqs(rows, snapshot, seqs, event.occurred_at_ms, event.seq, result.composed),
    )
    return contact, call


def _under_unsendable(
    rt: Runtime,
    event: ChangeEvent,
    snapshot: Mapping[str, tuple[str | None, int]],
    seqs: Mapping[str, int],
) -> list[str]:
    """The event's fields that a newer value of the record hides, where LeadLex cannot be
    given that newer value (`mapping.unsendable`: refused, e.g. an `invalid_phone` its own
    event dead-lettered, or cleared under clear_policy "skip"). The event's value is then
    the newest LeadLex can hold and is staged as if current, so the outcome does not
    depend on arrival order (in order, it was staged before the newer one came and kept;
    chaos seed 1301). Staging's time rule still keeps anything newer staged or applied."""
    mine = (event.occurred_at_ms, event.seq)
    hidden = [
        name
        for name in event.changes
        if name in snapshot and (snapshot[name][1], seqs.get(name, 0)) > mine
    ]
    if not hidden:
        return []
    refused = unsendable(rt.mapping, event.source, event.object_type, snapshot, hidden)
    return [name for name in hidden if name in refused]


def row_seqs(
    rows: list[tuple[str, str, int, dict[str, Any]]],
    snapshot: Mapping[str, tuple[str | None, int]],
    snapshot_seqs: Mapping[str, int],
    ts_ms: int,
    seq: int,
    composed: Collection[str] = (),
) -> dict[str, int]:
    """The within-time order of each staged row: the event's own `seq` for a value of its
    time; a value of another time (a name composed with a newer part) takes the greatest
    seq of the record's snapshot fields of that time (the flush re-maps it if needed), and
    so does a composed value of the event's time when a part of that time has a greater
    one (a name is as new as its newest part, as in the flush's re-mapping)."""
    out: dict[str, int] = {}
    for name, _value, ts, _origin in rows:
        if ts != ts_ms:
            row_seq = seq_of_time(snapshot, snapshot_seqs, ts)
        elif name in composed:
            row_seq = max(seq, seq_of_time(snapshot, snapshot_seqs, ts))
        else:
            row_seq = seq
        if row_seq:
            out[name] = row_seq
    return out


@functools.cache
def _counter_fields(source: str) -> tuple[str, str, str]:
    return (
        Metrics.field("fields_staged", source=source),
        Metrics.field("fields_stale", source=source),
        Metrics.field("events_coalesced"),
    )


def _replay_event(event: ChangeEvent, changes: dict[str, str | None]) -> dict[str, Any]:
    """A ChangeEvent dict carrying only `changes`, for the dead-letter store's replay."""
    data = event.to_dict()
    data["changes"] = changes
    return data


def _report_clamp(rt: Runtime, event: ChangeEvent, future_ms: int, *, pipe: Any = None) -> None:
    """Count and log (once per event: parked and replayed copies carry the clamped time)."""
    rt.metrics.incr("event_times_clamped", pipe=pipe, source=event.source)
    log.warning(
        "event time from the future clamped to receive time + MAX_CLOCK_SKEW_SECONDS",
        extra={
            "record": event.record_key,
            "event_id": event.event_id,
            "occurred_at_ms": future_ms,
            "clamped_to_ms": event.occurred_at_ms,
        },
    )


def replay_unlinked(rt: Runtime, records: list[tuple[str, str]]) -> int:
    """Re-enqueue parked events of (source, object_id) records (see `replay_parked`)."""
    return replay_parked(rt, records)


def recover_lost(rt: Runtime, limit: int = 500) -> int:
    """Enqueue again acknowledged events the broker lost; returns how many (periodic).

    The receiver records every event it acknowledges in the inbox (worker.state). Once
    the broker's visibility timeout has passed, a killed worker's unacknowledged messages
    have been delivered again, so an event still neither seen, parked nor dead-lettered
    was lost on the way: kombu's Redis transport pops a message and only then records it
    as unacknowledged, so a worker (or Redis) dying in between loses it, and Celery drops
    an `acks_late` message whose retry cannot be published. Duplicates are harmless (the
    fingerprint ledger); each event is tried again once per grace period."""
    now = rt.clock()
    grace = rt.settings.visibility_timeout_seconds + INBOX_GRACE_SECONDS
    events = rt.state.sweep_inbox(now - grace, now, limit)
    for i in range(0, len(events), 100):
        rt.dispatch_ingest(events[i : i + 100])
    if events:
        rt.metrics.incr("events_recovered", len(events))
        log.warning("acknowledged events enqueued again", extra={"events": len(events)})
    return len(events)

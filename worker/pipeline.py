"""Orchestration: what happens to a ChangeEvent behind the queue (no Celery here).

ingest(event)   dedupe -> merge into the record snapshot (newest per field) -> map to
                LeadLex fields -> resolve the LeadLex contact -> stage fields for it
                (never older than applied) -> mark seen -> schedule one flush.
flush(contact)  lock -> settle an in-flight PATCH of unknown outcome -> drop no-op
                fields -> take the global budget -> write intent -> PATCH once with
                every staged field -> commit / park / back off / dead-letter.

Celery tasks (worker.tasks) are thin wrappers that call these with a `Runtime`.

Notes at most once: before a PATCH that appends notes, an intent (the text, the time,
and the contact's last known `updated_date`) is stored. After LeadLex's 200 the commit
deletes it in the same Lua step that records the text as appended. If the worker dies
or the answer is lost in between, the next flush finds the intent and reads the
contact back (one GET) before sending anything: when LeadLex shows our text, or its
`updated_date` differs from the last one we saw (notes are write-only in LeadLex's
docs, so this is usually the evidence), the PATCH is taken as applied and committed;
otherwise it is sent again. A PATCH taken as applied is committed with exactly what it
carried, also for fields restaged since. So that "the last one we saw" is always known,
the first notes append to a contact we have never written costs one GET beforehand, and
so does the first one after a PATCH without notes whose outcome stayed unknown: settling
such a PATCH marks the values it carried, and updated_date, as unknown, so they are sent
(read) again rather than taken as already in LeadLex. A note is therefore never
appended twice by us. The price, in the rare case that somebody else edited the same
contact in LeadLex in the seconds between our lost answer and the GET, is that the note
is taken as applied when it may not be: that case is logged at WARNING and counted
(`leadlex_sync_notes_assumed_applied_total`).

Fault injection for tests: LEADLEX_SYNC_FAULT=crash_after_patch makes the process
exit right after LeadLex's answer, before local state is committed.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker.deadletter import DeadLetters
from worker.events import ChangeEvent
from worker.leadlex import (
    ContactNotFoundError,
    LeadLexClient,
    LeadLexError,
    LeadLexValidationError,
    RateInfo,
    RateLimitedError,
)
from worker.mapping import MappingConfig, map_record, notes_delta
from worker.metrics import Metrics
from worker.ratelimit import Budget, Circuit
from worker.settings import Settings
from worker.state import NOTES_PREFIX, Staged, State

log = logging.getLogger("leadlex_sync.worker")

BACKOFF_BASE = 2.0
BACKOFF_CAP = 900.0
# An acknowledged event not taken in this long after the broker's visibility timeout was lost.
INBOX_GRACE_SECONDS = 30.0
_FAULT = os.environ.get("LEADLEX_SYNC_FAULT", "")


@dataclass
class Runtime:
    """Everything the pipeline needs, built once per worker process (tests build their own)."""

    settings: Settings
    redis: redis.Redis
    mapping: MappingConfig
    client_factory: Callable[[], LeadLexClient]
    dispatch_flush: Callable[[str, float], None] = lambda contact, countdown: None
    dispatch_ingest: Callable[[list[dict[str, Any]]], None] = lambda events: None
    clock: Callable[[], float] = time.time
    lease_seconds: float = 60.0
    state: State = field(init=False)
    dlq: DeadLetters = field(init=False)
    metrics: Metrics = field(init=False)
    budget: Budget = field(init=False)
    circuit: Circuit = field(init=False)

    def __post_init__(self) -> None:
        self.state = State(self.redis)
        self.dlq = DeadLetters(self.redis)
        self.metrics = Metrics(self.redis)
        self.budget = Budget(
            self.redis,
            self.settings.rate_per_minute,
            self.settings.daily_limit,
            window_seconds=self.settings.leadlex_rate_window_seconds,
            clock=self.clock,
        )
        self.circuit = Circuit(
            self.redis, probe_interval=self.settings.circuit_probe_seconds, clock=self.clock
        )

    @property
    def client(self) -> LeadLexClient:
        return cast(LeadLexClient, _CountedClient(self.client_factory(), self.metrics))


class _CountedClient:
    """Counts every LeadLex call by method and status in the shared metrics."""

    METHODS = {
        "update_contact": "PATCH",
        "get_contact": "GET",
        "search_contacts": "GET",
        "create_contact": "POST",
    }

    def __init__(self, client: LeadLexClient, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._client, name)
        method = self.METHODS.get(name)
        if method is None:
            return fn

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                resp = fn(*args, **kwargs)
            except LeadLexError as err:
                status = str(err.status) if err.status else "no_answer"
                self._metrics.incr("leadlex_calls", method=method, status=status)
                raise
            self._metrics.incr("leadlex_calls", method=method, status=str(resp.status))
            return resp

        return call


# ======================================================================================
# ingest
# ======================================================================================
def ingest(rt: Runtime, event: ChangeEvent) -> str:
    """Take one event into the sync state; returns the outcome (for logs and tests)."""
    st = rt.state
    record = event.record_key
    with_values = event.kind in ("update", "create") and bool(event.changes)
    seen, gone, link, snapshot = st.prelude(
        event.fingerprint, record, event.occurred_at_ms, event.changes if with_values else None
    )
    if seen:
        rt.metrics.incr("events_deduped", source=event.source)
        return "duplicate"
    ttl = rt.settings.dedupe_ttl_seconds

    if event.kind in ("delete", "privacy_delete"):
        if rt.settings.deletion_policy == "unlink":
            st.mark_gone(record, event.occurred_at_ms)
            st.remove_links_for_record(event.source, event.account, event.object_id)
        st.mark_seen(event.fingerprint, ttl)
        log.info("record deleted in CRM", extra={"record": record, "kind": event.kind})
        return "deleted"
    if event.kind == "merge":
        _merge_links(rt, event)
        st.mark_seen(event.fingerprint, ttl)
        return "merged"
    if event.kind == "restore":
        st.unmark_gone(record)
        st.mark_seen(event.fingerprint, ttl)
        return "restored"
    if not with_values:
        st.mark_seen(event.fingerprint, ttl)
        rt.metrics.incr("events_ignored", source=event.source, kind=event.kind)
        return "ignored"
    if gone is not None and gone >= event.occurred_at_ms:
        st.mark_seen(event.fingerprint, ttl)
        return "gone"

    current = [
        name
        for name in event.changes
        if name in snapshot and snapshot[name][1] == event.occurred_at_ms
    ]
    stale = len(event.changes) - len(current)
    result = map_record(rt.mapping, event.source, event.object_type, snapshot, current)

    contact = link or _resolve(rt, event, result.leadlex_id, result.email)
    if contact is None:
        st.park_unlinked(event.source, event.object_id, event.fingerprint, event.to_dict())
        rt.metrics.incr("events_parked", reason="unlinked")
        log.info("event parked: no LeadLex link", extra={"record": record})
        return "unlinked"

    for rej in result.rejected:
        # A composed field (full_name) names its parts as "firstname+lastname".
        parts = {f: snapshot.get(f, (None, 0))[0] for f in rej.crm_field.split("+")}
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
        rt.metrics.incr("dead_lettered", reason=rej.reason)

    origin = {
        "r": record,
        "t": event.object_type,
        "c": {k: event.changes[k] for k in current},
        "o": event.occurred_at_ms,
        "q": event.received_at_ms,
    }
    rows: list[tuple[str, str, int, dict[str, Any]]] = [
        (name, fv.value, fv.ts_ms, origin) for name, fv in result.fields.items()
    ]
    if result.notes is not None:
        rows.append((NOTES_PREFIX + record, result.notes.value, result.notes.ts_ms, origin))

    now = rt.clock()
    newly_due, staged, _stale = st.stage(
        contact,
        rows,
        due_at=now + rt.settings.coalesce_seconds,
        fp=event.fingerprint,
        seen_ttl=ttl,
        unpark=(event.source, event.object_id),
        lease_seconds=rt.settings.coalesce_seconds + rt.lease_seconds,
        counters=_counter_fields(event.source),
        extra_stale=stale,
    )
    if newly_due:
        rt.dispatch_flush(contact, rt.settings.coalesce_seconds)
    return "staged" if staged else "stale"


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


def _merge_links(rt: Runtime, event: ChangeEvent) -> None:
    """HubSpot merge: the surviving record inherits a merged record's link if it has none."""
    st = rt.state
    target = st.resolve_link(event.source, event.account, event.object_id)
    for merged in event.merged_ids:
        contact = st.resolve_link(event.source, event.account, merged)
        if contact and target is None:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            target = contact
            replay_unlinked(rt, [(event.source, event.object_id)])
        st.remove_links_for_record(event.source, event.account, merged)


def _resolve(rt: Runtime, event: ChangeEvent, id_hint: str | None, email: str | None) -> str | None:
    """Find the LeadLex contact: link store, mapped id field, email lookup, create."""
    st = rt.state
    contact = st.resolve_link(event.source, event.account, event.object_id)
    if contact:
        return contact
    if id_hint:
        st.set_links([(event.source, event.account, event.object_id, id_hint)])
        return id_hint
    if rt.settings.resolve_by_email and email and not rt.circuit.state().open:
        contact = _lookup_by_email(rt, email)
        if contact:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            return contact
    if rt.settings.create_on_creation and event.kind == "create" and not rt.circuit.state().open:
        contact = _create_contact(rt, event)
        if contact:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            return contact
    return None


def _budgeted_call(rt: Runtime, call: Callable[[LeadLexClient], Any]) -> Any:
    """One resolution call under the shared budget; None when refused or failed."""
    if not rt.budget.acquire().ok:
        return None
    try:
        resp = call(rt.client)
    except LeadLexError as err:
        _observe_error(rt, err)
        return None
    rt.budget.observe(resp.rate)
    return resp


def _lookup_by_email(rt: Runtime, email: str) -> str | None:
    """GET /v1/contacts?search=email; accept only one exact email match (costs one call)."""
    resp = _budgeted_call(rt, lambda c: c.search_contacts(email))
    if resp is None:
        return None
    rows = (resp.data or {}).get("contacts") or []
    exact = [r for r in rows if str(r.get("email", "")).lower() == email.lower()]
    return str(exact[0]["id"]) if len(exact) == 1 else None


def _create_contact(rt: Runtime, event: ChangeEvent) -> str | None:
    """POST /v1/contacts from the record's mapped fields (opt-in: CREATE_ON_CREATION)."""
    snapshot = rt.state.snapshot(event.record_key)
    result = map_record(rt.mapping, event.source, event.object_type, snapshot, list(snapshot))
    body = {k: v.value for k, v in result.fields.items()}
    if "company_name" in body:  # create spells it `company` (reference §6, §12.10)
        body["company"] = body.pop("company_name")
    resp = _budgeted_call(rt, lambda c: c.create_contact(body)) if body else None
    if resp is None:
        return None
    cid = (resp.data or {}).get("id")
    return str(cid) if cid else None


def replay_unlinked(rt: Runtime, records: list[tuple[str, str]]) -> int:
    """Re-enqueue parked events of (source, object_id) records that now have a link."""
    events: list[dict[str, Any]] = []
    for source, object_id in records:
        events.extend(rt.state.take_unlinked(source, object_id))
    for i in range(0, len(events), 100):
        rt.dispatch_ingest(events[i : i + 100])
    return len(events)


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


# ======================================================================================
# flush
# ======================================================================================
@dataclass
class FlushOutcome:
    """What one flush did (returned for logs and tests)."""

    outcome: str
    fields: list[str] = field(default_factory=list)
    status: int | None = None
    request_id: str = ""
    coalesced: int = 0


def flush(rt: Runtime, contact: str) -> FlushOutcome:
    """Send everything staged for `contact` as one PATCH, if budget and circuit allow."""
    st = rt.state
    # Long enough for a GET and a PATCH at the client timeout; a dead holder frees it soon.
    token = st.lock(contact, rt.settings.leadlex_timeout_seconds * 3 + 5)
    if token is None:
        return FlushOutcome("locked")
    try:
        out = _flush_locked(rt, contact)
    finally:
        st.unlock(contact, token)
    log.info(
        "flush",
        extra={
            "contact": contact,
            "outcome": out.outcome,
            "fields": out.fields,
            "status": out.status,
            "leadlex_request_id": out.request_id,
            "events_coalesced": out.coalesced,
            "attempt": st.attempts(contact)[0],
        },
    )
    rt.metrics.incr("flushes", outcome=out.outcome)
    return out


# Waits for budget are re-checked at least once a lease: what blocks may end sooner than
# it said (LeadLex's X-RateLimit-Reset arrives after the refusal; a pause is cleared), and a
# re-check costs Redis work only, never a LeadLex call.
_RECHECKED = frozenset({"minute", "daily", "paused", "budget"})


def _park(rt: Runtime, contact: str, until: float, reason: str) -> None:
    wait = max(0.05, until - rt.clock())
    if reason in _RECHECKED:
        wait = min(wait, rt.lease_seconds)
    rt.state.lease(contact, wait)
    rt.metrics.incr("flushes_parked", reason=reason)


def _flush_locked(rt: Runtime, contact: str) -> FlushOutcome:
    st = rt.state
    now = rt.clock()
    circuit = rt.circuit.state()
    if circuit.open:
        _park(rt, contact, max(circuit.next_probe_at, now + 5), "circuit")
        return FlushOutcome("circuit_open")

    intent = st.read_intent(contact)
    if intent is not None:
        settled = _settle_intent(rt, contact, intent)
        if settled is not None:
            return settled

    staged = st.read_stage(contact)
    if not staged:
        st.commit(contact, [])
        return FlushOutcome("empty")
    fixes = _recompose(rt, staged)
    if fixes:
        st.stage(contact, fixes, due_at=now, fp=None, seen_ttl=1)
        staged = st.read_stage(contact)

    applied = st.applied(contact)
    appended = st.notes_appended(contact)
    body: dict[str, str] = {}
    items: list[tuple[Staged, str]] = []
    note_parts: list[str] = []
    for s in sorted(staged, key=lambda s: s.field):
        if s.field.startswith(NOTES_PREFIX):
            record = s.field[len(NOTES_PREFIX) :]
            source = record.split(":", 1)[0]
            prefix = rt.mapping.notes_prefix(source, str(s.origin.get("t", "contact")))
            delta = notes_delta(appended.get(record), s.value, prefix)
            if delta:
                note_parts.append(delta)
            items.append((s, "n"))
            continue
        prev = applied.get(s.field)
        if not (prev and prev[0] == s.value):
            body[s.field] = s.value
        items.append((s, "f"))
    if note_parts:
        body["notes"] = "\n".join(note_parts)
    coalesced = len({json_origin(s) for s in staged})

    if not body:
        st.commit(contact, items)
        return FlushOutcome("noop", coalesced=coalesced)

    grant = rt.budget.acquire()
    if not grant.ok:
        _park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"), list(body))

    updated_before = str(applied.get("_updated", ""))
    if "notes" in body and not updated_before:
        known = _read_updated_date(rt, contact)
        if isinstance(known, FlushOutcome):
            return known
        updated_before = known
        grant = rt.budget.acquire()
        if not grant.ok:
            _park(rt, contact, grant.retry_at, grant.reason or "budget")
            return FlushOutcome("parked_" + (grant.reason or "budget"), list(body))

    st.write_intent(
        contact,
        {
            "notes": body.get("notes", ""),
            "items": [[s.field, s.raw, kind] for s, kind in items],
            "sent_at": rt.clock(),
            "updated_before": updated_before,
        },
    )
    try:
        resp = rt.client.update_contact(contact, body)
    except LeadLexError as err:
        if err.status is None and not err.maybe_applied:
            rt.budget.release(grant)  # never reached LeadLex: give the call back
        return _on_error(rt, contact, err, staged, items, list(body))
    if _FAULT == "crash_after_patch":
        os._exit(137)

    rt.budget.observe(resp.rate)
    updated = str((resp.data or {}).get("updated_date") or "")
    st.commit(contact, items, updated_date=updated)
    _observe_latency(rt, staged)
    return FlushOutcome("sent", sorted(body), resp.status, resp.request_id, coalesced=coalesced)


def _recompose(rt: Runtime, staged: list[Staged]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """Staged values recomputed from their records' current snapshots, where they differ.

    Two events of one record ingested at once (say first and last name, by two worker
    threads) each compose full_name from a snapshot that may lack the other's part; the
    snapshot itself is merged atomically and always ends up complete. So before sending,
    every staged value is mapped again from its record's current snapshot: a value at
    least as new that differs replaces the staged one."""
    by_record: dict[tuple[str, str], list[Staged]] = {}
    for s in staged:
        if not s.field.startswith(NOTES_PREFIX) and s.origin.get("r"):
            by_record.setdefault(
                (str(s.origin["r"]), str(s.origin.get("t", "contact"))), []
            ).append(s)
    fixes: list[tuple[str, str, int, dict[str, Any]]] = []
    for (record, object_type), group in by_record.items():
        snapshot = rt.state.snapshot(record)
        if not snapshot:
            continue
        result = map_record(
            rt.mapping, record.split(":", 1)[0], object_type, snapshot, list(snapshot)
        )
        for s in group:
            fv = result.fields.get(s.field)
            if fv is not None and fv.value != s.value and fv.ts_ms >= s.ts_ms:
                fixes.append((s.field, fv.value, fv.ts_ms, s.origin))
    return fixes


def _read_updated_date(rt: Runtime, contact: str) -> str | FlushOutcome:
    """GET the contact's current updated_date (the budget grant was already taken)."""
    try:
        resp = rt.client.get_contact(contact)
    except LeadLexError as err:
        return _on_error(rt, contact, err, rt.state.read_stage(contact), [], [])
    rt.budget.observe(resp.rate)
    updated = str((resp.data or {}).get("updated_date") or "")
    rt.state.set_updated(contact, updated)
    return updated


def json_origin(s: Staged) -> str:
    """Identity of the event a staged value came from (record + CRM time)."""
    return f"{s.origin.get('r', '')}@{s.origin.get('o', s.ts_ms)}"


def _observe_latency(rt: Runtime, staged: list[Staged]) -> None:
    now = rt.clock()
    pipe = rt.redis.pipeline(transaction=False)
    for s in staged:
        source = str(s.origin.get("r", "")).split(":", 1)[0] or "unknown"
        rt.metrics.observe(
            "sync_latency_seconds", max(0.0, now - s.ts_ms / 1000), pipe=pipe, source=source
        )
    pipe.execute()


def _observe_error(rt: Runtime, err: LeadLexError) -> None:
    if err.rate is not None:
        rt.budget.observe(err.rate)
    if isinstance(err, RateLimitedError):
        rt.metrics.incr("leadlex_429")
        rt.budget.on_rate_limited(err.rate or RateInfo())
    elif getattr(err, "opens_circuit", False):
        rt.circuit.open(err.code or "unauthorized", str(err))


def _on_error(
    rt: Runtime,
    contact: str,
    err: LeadLexError,
    staged: list[Staged],
    items: list[tuple[Staged, str]],
    fields: list[str],
) -> FlushOutcome:
    st = rt.state
    now = rt.clock()
    _observe_error(rt, err)
    base = FlushOutcome("error", fields, err.status, err.request_id)
    if not err.maybe_applied:
        st.clear_intent(contact)

    if isinstance(err, RateLimitedError):
        until, _reason = rt.budget.paused_until()
        _park(rt, contact, max(until, now + 1), "rate_limited")
        base.outcome = "rate_limited"
        return base
    if getattr(err, "opens_circuit", False):
        _park(rt, contact, now + 5, "circuit")
        base.outcome = "circuit_open"
        return base
    if isinstance(err, LeadLexValidationError):
        bad = set(err.field_errors)
        dropped = [
            (s, "d")
            for s, _k in items
            if s.field in bad or ("notes" in bad and s.field.startswith(NOTES_PREFIX))
        ]
        if not dropped:  # LeadLex named nothing we sent: the whole request is bad
            dropped = [(s, "d") for s, _k in items]
        for s, _ in dropped:
            name = "notes" if s.field.startswith(NOTES_PREFIX) else s.field
            _dead_letter_staged(
                rt,
                contact,
                s,
                "validation_error",
                err,
                {"field": name, "leadlex": err.field_errors.get(name, err.message)},
            )
        st.commit(contact, dropped)
        if len(dropped) < len(items):
            rt.dispatch_flush(contact, 0)
        base.outcome = "validation_error"
        return base
    if isinstance(err, ContactNotFoundError):
        removed = st.remove_links_to(contact)
        for s in staged:
            _dead_letter_staged(rt, contact, s, "not_found", err, {"unlinked": removed})
        st.commit(contact, [(s, "d") for s in staged])
        base.outcome = "not_found"
        return base
    if err.retryable:
        n, first = st.record_failure(contact, now)
        if now - first > rt.settings.max_retry_age_seconds:
            for s in staged:
                _dead_letter_staged(rt, contact, s, "max_age", err, {"attempts": n})
            st.commit(contact, [(s, "d") for s in staged])
            base.outcome = "dead_lettered"
            return base
        delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(n, 20))))
        _park(rt, contact, now + max(0.2, delay), "backoff")
        base.outcome = "retry"
        return base
    for s in staged:
        _dead_letter_staged(rt, contact, s, err.code or "leadlex_error", err, {})
    st.commit(contact, [(s, "d") for s in staged])
    base.outcome = "dead_lettered"
    return base


def _dead_letter_staged(
    rt: Runtime,
    contact: str,
    s: Staged,
    reason: str,
    err: LeadLexError | None,
    details: dict[str, Any],
) -> None:
    record = str(s.origin.get("r", "::"))
    source, account, object_id = ([*record.split(":", 2), "", ""])[:3]
    payload = {
        "source": source,
        "account": account,
        "object_type": s.origin.get("t", "contact"),
        "object_id": object_id,
        "kind": "update",
        "occurred_at_ms": s.ts_ms,
        "fingerprint": "",
        "changes": s.origin.get("c", {}),
        "leadlex_field": "notes" if s.field.startswith(NOTES_PREFIX) else s.field,
        "leadlex_value": s.value,
    }
    rt.dlq.add(
        reason,
        source=source,
        payload=payload,
        details=details,
        contact=contact,
        attempts=rt.state.attempts(contact)[0],
        last_error=str(err) if err else "",
        request_id=err.request_id if err else "",
    )
    rt.metrics.incr("dead_lettered", reason=reason)


def _settle_intent(rt: Runtime, contact: str, intent: dict[str, Any]) -> FlushOutcome | None:
    """A PATCH of unknown outcome is pending: decide whether it applied before sending more.

    Returns a FlushOutcome to stop this flush (parked), or None to continue normally."""
    st = rt.state
    if not intent.get("notes"):
        # Plain overwrites are safe to send again, but LeadLex may now hold them: forget what
        # we believed it holds, or a staged value equal to that belief would be skipped as a
        # no-op (and a stale updated_date would fool the next notes settle).
        st.forget_applied(contact, [f for f, _raw, kind in intent.get("items", []) if kind == "f"])
        st.clear_intent(contact)
        return None
    grant = rt.budget.acquire()
    if not grant.ok:
        _park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"))
    try:
        resp = rt.client.get_contact(contact)
    except ContactNotFoundError:
        st.clear_intent(contact)
        return None  # the PATCH will meet the same 404 and be handled there
    except LeadLexError as err:
        _observe_error(rt, err)
        _park(rt, contact, rt.clock() + 2, "verify")
        return FlushOutcome("verify_failed", status=err.status, request_id=err.request_id)
    rt.budget.observe(resp.rate)
    data = resp.data or {}
    text = str(intent["notes"])
    notes = data.get("notes")
    if isinstance(notes, str):
        applied = notes.endswith(text) or f"{text}\n" in notes
        assumed = False
    else:
        updated = str(data.get("updated_date") or "")
        applied = bool(updated) and updated != str(intent.get("updated_before") or "")
        assumed = applied
    if not applied:
        st.clear_intent(contact)
        return None
    # Record exactly what was sent (the raw values in the intent), also for fields restaged
    # since: LeadLex holds the sent value and its notes end with the sent text. The commit
    # keeps a restaged (newer) value staged, so it goes with the next PATCH.
    items = [(Staged(field, "", 0, {}, raw), kind) for field, raw, kind in intent.get("items", [])]
    st.commit(contact, items, updated_date=str(data.get("updated_date") or ""))
    if assumed:
        log.warning(
            "notes append of unknown outcome taken as applied (contact changed since)",
            extra={"contact": contact, "leadlex_request_id": resp.request_id},
        )
        rt.metrics.incr("notes_assumed_applied")
    return None


# ======================================================================================
# pump (periodic)
# ======================================================================================
def pump(rt: Runtime, limit: int | None = None) -> int:
    """Dispatch due flushes that nobody holds, oldest change first; probe an open circuit."""
    now = rt.clock()
    circuit = rt.circuit.state()
    if circuit.open:
        if rt.circuit.probe_due():
            probe(rt)
        return 0
    until, _ = rt.budget.paused_until()
    if until > now:
        return 0
    n = limit or max(1, rt.settings.rate_per_minute)
    contacts = rt.state.claim_due(now, rt.lease_seconds, n)
    for contact in contacts:
        rt.dispatch_flush(contact, 0)
    return len(contacts)


def probe(rt: Runtime) -> bool:
    """One cheap call to see whether the key works again; closes the circuit if it does."""
    due = rt.state.redis.zrange("lls:due", 0, 0)
    contact = due[0].decode() if due else "00000000-0000-0000-0000-000000000000"
    if not rt.budget.acquire().ok:
        return False
    try:
        resp = rt.client.get_contact(contact)
    except ContactNotFoundError as err:
        if err.rate is not None:
            rt.budget.observe(err.rate)
        rt.circuit.close()
        return True
    except LeadLexError as err:
        _observe_error(rt, err)
        if not getattr(err, "opens_circuit", False):
            rt.circuit.close()
            return True
        return False
    rt.budget.observe(resp.rate)
    rt.circuit.close()
    return True

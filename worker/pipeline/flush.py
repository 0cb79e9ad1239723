"""Flush: send everything staged for one contact as one PATCH, under lock and budget."""

from __future__ import annotations

import logging
import os
from typing import Any

from worker.leadlex import (
    LeadLexError,
)
from worker.mapping import map_record, notes_delta
from worker.pipeline.failures import on_error
from worker.pipeline.runtime import FlushOutcome, Runtime, park
from worker.pipeline.settle import settle_intent
from worker.state import NOTES_PREFIX, Staged

log = logging.getLogger("leadlex_sync.worker")

_FAULT = os.environ.get("LEADLEX_SYNC_FAULT", "")


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


def _flush_locked(rt: Runtime, contact: str) -> FlushOutcome:
    st = rt.state
    now = rt.clock()
    circuit = rt.circuit.state()
    if circuit.open:
        park(rt, contact, max(circuit.next_probe_at, now + 5), "circuit")
        return FlushOutcome("circuit_open")

    intent = st.read_intent(contact)
    if intent is not None:
        settled = settle_intent(rt, contact, intent)
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
        park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"), list(body))

    updated_before = str(applied.get("_updated", ""))
    if "notes" in body and not updated_before:
        known = _read_updated_date(rt, contact)
        if isinstance(known, FlushOutcome):
            return known
        updated_before = known
        grant = rt.budget.acquire()
        if not grant.ok:
            park(rt, contact, grant.retry_at, grant.reason or "budget")
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
        return on_error(rt, contact, err, staged, items, list(body))
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
        return on_error(rt, contact, err, rt.state.read_stage(contact), [], [])
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

"""Flush: send everything staged for one contact as one PATCH, under a fenced lease."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from worker.leadlex import LeadLexError
from worker.mapping import map_record, notes_delta
from worker.pipeline.failures import on_error
from worker.pipeline.runtime import (
    FlushOutcome,
    Runtime,
    flush_lease_seconds,
    park,
    park_for_budget,
)
from worker.pipeline.send import send
from worker.pipeline.settle import settle_intent
from worker.state import NOTES_PREFIX, Staged, seq_of_time

log = logging.getLogger("leadlex_sync.worker")

DLQ_NOTES = "dlq:"  # staged notes replayed from the dead-letter store: appended verbatim


def flush(rt: Runtime, contact: str) -> FlushOutcome:
    """Send everything staged for `contact` as one PATCH, if budget and circuit allow."""
    st = rt.state
    token = st.acquire(contact, flush_lease_seconds(rt))
    if token is None:
        return FlushOutcome("locked")
    try:
        out = _flush_held(rt, contact, token)
    finally:
        st.release(contact, token)
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
            "fence_token": token,
        },
    )
    rt.metrics.incr("flushes", outcome=out.outcome)
    return out


def _flush_held(rt: Runtime, contact: str, token: int) -> FlushOutcome:
    st = rt.state
    now = rt.clock()
    circuit = rt.circuit.state()
    if circuit.open:
        park(rt, contact, max(circuit.next_probe_at, now + 5), "circuit")
        return FlushOutcome("circuit_open")

    intent = st.read_intent(contact)
    if intent is not None and "key" not in intent:
        intent = _upgraded(intent)  # written by a version before Idempotency-Keys
        if not st.arm(contact, token, intent, flush_lease_seconds(rt)):
            return FlushOutcome("fenced")
    if intent is not None:
        settled = settle_intent(rt, contact, token, intent)
        if settled is not None:
            return settled

    staged = st.read_stage(contact)
    if not staged:
        left = st.commit(contact, [], token=token)
        return FlushOutcome("empty" if left is not None else "fenced")
    fixes, fix_seqs = _recompose(rt, staged)
    if fixes:
        st.stage(contact, fixes, due_at=now, fp=None, seen_ttl=1, seqs=fix_seqs)
        staged = st.read_stage(contact)

    applied = st.applied(contact)
    appended = st.notes_appended(contact)
    body: dict[str, str] = {}
    items: list[tuple[Staged, str]] = []
    note_parts: list[str] = []
    for s in sorted(staged, key=lambda s: s.field):
        if s.field.startswith(NOTES_PREFIX):
            record = s.field[len(NOTES_PREFIX) :]
            if record.startswith(DLQ_NOTES):
                delta = s.value.strip() if appended.get(record) != s.value else None
            else:
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
        left = st.commit(contact, items, token=token)
        return FlushOutcome("noop" if left is not None else "fenced", coalesced=coalesced)

    grant = rt.budget.acquire()
    if not grant.ok:
        park_for_budget(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"), list(body))

    baseline = ""
    if "notes" in body and rt.settings.leadlex_patch_idempotency != "honored":
        # The baseline a settle compares with is read here, inside this lease, right before
        # the write: never older than the attempt it may have to settle.
        read = _read_baseline(rt, contact, token, staged)
        if isinstance(read, FlushOutcome):
            return read
        baseline = read
        grant = rt.budget.acquire()
        if not grant.ok:
            park_for_budget(rt, contact, grant.retry_at, grant.reason or "budget")
            return FlushOutcome("parked_" + (grant.reason or "budget"), list(body))

    intent = {
        "key": str(uuid.uuid4()),
        "body": body,
        "notes": body.get("notes", ""),
        "items": [[s.field, s.raw, kind] for s, kind in items],
        "baseline": baseline,
        "sent_at": rt.clock(),
        "token": token,
        "attempt": 1,
        "coalesced": coalesced,
    }
    return send(rt, contact, token, intent, grant)


def _recompose(
    rt: Runtime, staged: list[Staged]
) -> tuple[list[tuple[str, str, int, dict[str, Any]]], dict[str, int]]:
    """Staged values recomputed from their records' current snapshots, where they differ.

    Two events of one record ingested at once (say first and last name, by two worker
    threads) each compose full_name from a snapshot that may lack the other's part; the
    snapshot itself is merged atomically and always ends up complete. So before sending,
    every staged value is mapped again from its record's current snapshot: a value at
    least as new that differs replaces the staged one. (A half name already sent is
    replaced too: staging lets a composition of the same record and time through.)"""
    by_record: dict[tuple[str, str], list[Staged]] = {}
    for s in staged:
        if not s.field.startswith(NOTES_PREFIX) and s.origin.get("r"):
            by_record.setdefault(
                (str(s.origin["r"]), str(s.origin.get("t", "contact"))), []
            ).append(s)
    fixes: list[tuple[str, str, int, dict[str, Any]]] = []
    seqs: dict[str, int] = {}
    for (record, object_type), group in by_record.items():
        snapshot, snapshot_seqs = rt.state.snapshot_seq(record)
        if not snapshot:
            continue
        result = map_record(
            rt.mapping, record.split(":", 1)[0], object_type, snapshot, list(snapshot)
        )
        for s in group:
            fv = result.fields.get(s.field)
            if fv is None or fv.value == s.value:
                continue
            seq = seq_of_time(snapshot, snapshot_seqs, fv.ts_ms)
            if (fv.ts_ms, seq) >= (s.ts_ms, s.seq):
                origin = {**s.origin, "p": 1} if s.field in result.composed else s.origin
                fixes.append((s.field, fv.value, fv.ts_ms, origin))
                seqs[s.field] = seq
    return fixes, seqs


def _read_baseline(
    rt: Runtime, contact: str, token: int, staged: list[Staged]
) -> str | FlushOutcome:
    """GET the contact's current updated_date (the budget grant was already taken)."""
    try:
        resp = rt.client.get_contact(contact)
    except LeadLexError as err:
        return on_error(rt, contact, token, err, None, staged)
    rt.budget.observe(resp.rate)
    return str((resp.data or {}).get("updated_date") or "")


def _upgraded(old: dict[str, Any]) -> dict[str, Any]:
    """An intent stored by an older version (no key, no body) in today's shape: its PATCH
    carried no Idempotency-Key, so it gets a new one; its baseline is the updated_date it
    knew (maybe stale: a settle then surfaces the note rather than assume it applied)."""
    body: dict[str, str] = {}
    for field, raw, kind in old.get("items", []):
        if kind == "f":
            body[field] = json.loads(raw)[0]
    if old.get("notes"):
        body["notes"] = str(old["notes"])
    return {
        "key": str(uuid.uuid4()),
        "body": body,
        "notes": str(old.get("notes") or ""),
        "items": old.get("items", []),
        "baseline": str(old.get("updated_before") or ""),
        "sent_at": float(old.get("sent_at") or 0),
        "attempt": 1,
    }


def json_origin(s: Staged) -> str:
    """Identity of the event a staged value came from (record + CRM time)."""
    return f"{s.origin.get('r', '')}@{s.origin.get('o', s.ts_ms)}"

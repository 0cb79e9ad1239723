"""Send one write (a PATCH with its Idempotency-Key) under the fenced lease, and commit it."""

from __future__ import annotations

import logging
from typing import Any

from worker.leadlex import LeadLexError
from worker.pipeline.failures import (
    intent_items,
    notes_uncertain_letter,
    on_error,
    plain_fields,
)
from worker.pipeline.runtime import FlushOutcome, Runtime, flush_lease_seconds
from worker.ratelimit import Grant

log = logging.getLogger("leadlex_sync.worker")


def send(
    rt: Runtime, contact: str, token: int, intent: dict[str, Any], grant: Grant
) -> FlushOutcome:
    """Arm the intent (lease re-checked and extended, intent stored: one Lua step), PATCH,
    then commit the outcome under the write's key. A flush fenced off before sending sends
    nothing; one overtaken after sending surfaces what it cannot commit."""
    st = rt.state
    body: dict[str, str] = intent["body"]
    rt.seam("before_arm", contact)
    # When the write leaves, not when it was prepared: a flush stalled in between (GC or
    # VM pause) would otherwise let the settle of an unknown outcome come before a late
    # apply of this very write could land (a note appended twice; found by the chaos run).
    intent["sent_at"] = rt.clock()
    if not st.arm(contact, token, intent, flush_lease_seconds(rt)):
        rt.budget.release(grant)
        rt.metrics.incr("flushes_fenced")
        return FlushOutcome("fenced", sorted(body))
    try:
        resp = rt.client.update_contact(contact, body, idempotency_key=str(intent["key"]))
    except LeadLexError as err:
        if err.status is None and not err.maybe_applied:
            rt.budget.release(grant)  # never reached LeadLex: give the call back
        return on_error(rt, contact, token, err, intent, st.read_stage(contact))
    rt.seam("after_answer", contact)
    rt.budget.observe(resp.rate)
    updated = str((resp.data or {}).get("updated_date") or "")
    items = intent_items(intent)
    left = st.commit(
        contact, items, token=token, intent_key=str(intent["key"]), updated_date=updated
    )
    if left is None:
        overtaken(rt, contact, intent, resp.request_id)
        return FlushOutcome("overtaken", sorted(body), resp.status, resp.request_id)
    now = rt.clock()
    pipe = rt.redis.pipeline(transaction=False)
    for s, _kind in items:
        source = str(s.origin.get("r", "")).split(":", 1)[0] or "unknown"
        rt.metrics.observe(
            "sync_latency_seconds", max(0.0, now - s.ts_ms / 1000), pipe=pipe, source=source
        )
    pipe.execute()
    return FlushOutcome(
        "sent",
        sorted(body),
        resp.status,
        resp.request_id,
        coalesced=int(intent.get("coalesced", 0)),
    )


def overtaken(rt: Runtime, contact: str, intent: dict[str, Any], request_id: str) -> None:
    """Our write went through but a newer flush settled its intent meanwhile (we stalled
    past the lease): what LeadLex holds for the fields we sent is no longer known, so they
    are marked unknown (a staged value is sent again, never skipped as already there), and a
    note we carried is surfaced unless the newer flush surfaced this write already."""
    rt.state.forget_applied(contact, plain_fields(intent))
    rt.metrics.incr("flushes_fenced")
    log.warning(
        "write applied by a flush that was overtaken; its fields are marked unknown",
        extra={"contact": contact, "leadlex_request_id": request_id},
    )
    if intent.get("notes"):
        rt.state.add_letter(
            notes_uncertain_letter(
                rt,
                contact,
                intent,
                "applied by a flush that stalled past its lease; the flush that took over "
                "settled this write without its answer and may have sent the note again",
                request_id,
            )
        )

"""Resolution: find (or create, at most once) the LeadLex contact a CRM record is linked to.

Create at most once (CREATE_ON_CREATION): the record's creation is claimed in Redis before
the POST (`lls:create:{record}`, pending, with the POST's Idempotency-Key) and only the
holder of the record's create lease may POST. A second delivery of the creation event
waits for that answer (bounded by the lease) and uses the created contact. A POST whose
answer is lost stays pending; `settle_creates` (run by the periodic pump) settles it once
a late apply can no longer land: with LEADLEX_PATCH_IDEMPOTENCY=honored by sending it
again with the same key, otherwise by looking the contact up by its email (exactly one
match: that is ours; none: not created, sent again with the same key; several, or no
email to look by: dead letter `create_uncertain`, the record's events stay parked until
an operator links it). Whatever links the record replays its parked events.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from typing import Any

from worker.events import ChangeEvent
from worker.leadlex import LeadLexError, RateLimitedError
from worker.mapping import map_record
from worker.metrics import Metrics
from worker.pipeline.linking import link_records
from worker.pipeline.runtime import Runtime, budgeted_call, flush_lease_seconds, observe_error
from worker.state import Letter

log = logging.getLogger("leadlex_sync.worker")


def resolve(
    rt: Runtime, event: ChangeEvent, id_hint: str | None, email: str | None
) -> tuple[str | None, float | None]:
    """Find the LeadLex contact: link store, mapped id field, email lookup, create.

    Returns (contact, None) when linked (every new link goes through `link_records`, which
    replays the record's parked events), (None, retry_at) when a lookup could not run now
    (no budget, circuit open, a LeadLex error: the parked event is retried then), and
    (None, None) when nothing was found."""
    st = rt.state
    contact = st.resolve_link(event.source, event.account, event.object_id)
    if contact:
        return contact, None
    if id_hint:
        link_records(rt, [(event.source, event.account, event.object_id, id_hint)])
        return id_hint, None
    retry_at: float | None = None
    if rt.settings.resolve_by_email and email:
        contact, retry_at = _lookup_by_email(rt, email)
        if contact:
            link_records(rt, [(event.source, event.account, event.object_id, contact)])
            return contact, None
    if rt.settings.create_on_creation and event.kind == "create" and not rt.circuit.state().open:
        contact = _create_once(rt, event)
        if contact:
            link_records(rt, [(event.source, event.account, event.object_id, contact)])
            return contact, None
    return None, retry_at


# A lookup that failed for a reason that passes (LeadLex error) is tried again this much later.
LOOKUP_RETRY_SECONDS = 30.0


def _lookup_by_email(rt: Runtime, email: str) -> tuple[str | None, float | None]:
    """GET /v1/contacts?search=email; accept only one exact email match (costs one call).

    Returns (contact, None), (None, None) when there is no single exact match, or (None,
    retry_at) when the lookup could not be made now (budget, circuit, LeadLex error)."""
    circuit = rt.circuit.state()
    if circuit.open:
        return None, max(circuit.next_probe_at, rt.clock() + LOOKUP_RETRY_SECONDS)
    grant = rt.budget.acquire()
    if not grant.ok:
        return None, grant.retry_at
    try:
        resp = rt.client.search_contacts(email)
    except LeadLexError as err:
        observe_error(rt, err)
        if isinstance(err, RateLimitedError):  # everyone pauses: retry when the pause ends
            return None, max(rt.budget.paused_until()[0], rt.clock() + 1)
        if err.retryable or getattr(err, "opens_circuit", False):
            return None, rt.clock() + LOOKUP_RETRY_SECONDS
        return None, None
    rt.budget.observe(resp.rate)
    rows = (resp.data or {}).get("contacts") or []
    exact = [r for r in rows if str(r.get("email", "")).lower() == email.lower()]
    return (str(exact[0]["id"]) if len(exact) == 1 else None), None


def _create_once(rt: Runtime, event: ChangeEvent) -> str | None:
    """POST /v1/contacts for the record at most once; None when it is not (yet) known."""
    st = rt.state
    record = event.record_key
    owner = secrets.token_hex(8)
    ttl = flush_lease_seconds(rt)  # outlasts one POST at the client's timeouts
    deadline = time.monotonic() + ttl
    while not st.take_create_lease(record, owner, ttl):
        claim = st.create_claim(record)
        if claim.get("state") == "done":
            return claim["id"]
        if time.monotonic() > deadline:
            return None  # still in flight elsewhere: parked; linking it replays the event
        time.sleep(0.1)  # another delivery of this creation is POSTing right now
    try:
        claim = st.create_claim(record)
        if claim.get("state") == "done":
            return claim["id"]
        if claim:
            return None  # a POST of unknown outcome: settle_creates decides (event parked)
        body = _create_body(rt, record, event.object_type)
        if not body:
            return None
        key = str(uuid.uuid4())
        grant = rt.budget.acquire()
        if not grant.ok:
            return None
        now = rt.clock()
        st.start_create(record, key, now, str(body.get("email") or ""), _settle_at(rt, now))
        return _post(rt, record, body, key, grant)
    finally:
        st.release_create_lease(record, owner)


def _create_body(rt: Runtime, record: str, object_type: str = "contact") -> dict[str, Any]:
    """The POST body from the record's current snapshot (mapped like any change)."""
    snapshot = rt.state.snapshot(record)
    source = record.split(":", 1)[0]
    result = map_record(rt.mapping, source, object_type, snapshot, list(snapshot))
    body: dict[str, Any] = {k: v.value for k, v in result.fields.items()}
    if "company_name" in body:  # create spells it `company` (reference §6, §12.10)
        body["company"] = body.pop("company_name")
    return body


def _settle_at(rt: Runtime, sent_at: float) -> float:
    return sent_at + rt.settings.leadlex_timeout_seconds + rt.settings.notes_settle_delay_seconds


def _post(rt: Runtime, record: str, body: dict[str, Any], key: str, grant: Any) -> str | None:
    """One POST under an existing claim: done on 2xx, pending on an unknown outcome, dropped
    when it certainly created nothing."""
    st = rt.state
    try:
        resp = rt.client.create_contact(body, idempotency_key=key)
    except LeadLexError as err:
        observe_error(rt, err)
        if err.status is None and not err.maybe_applied:
            rt.budget.release(grant)
        if err.maybe_applied:
            log.warning(
                "contact create of unknown outcome; settled later", extra={"record": record}
            )
        else:
            st.drop_create(record)
        return None
    rt.budget.observe(resp.rate)
    cid = (resp.data or {}).get("id")
    if not cid:
        return None  # a 2xx without an id: pending, settled like a lost answer
    st.finish_create(record, str(cid), rt.settings.dedupe_ttl_seconds)
    return str(cid)


def settle_creates(rt: Runtime, limit: int = 20) -> int:
    """Settle creates whose answer was lost, once a late apply can no longer land; link
    what was created and replay the record's parked events. Returns how many were settled."""
    st = rt.state
    settled = 0
    for record in st.due_creates(rt.clock(), limit):
        owner = secrets.token_hex(8)
        if not st.take_create_lease(record, owner, flush_lease_seconds(rt)):
            continue
        try:
            contact = _settle_create(rt, record)
        finally:
            st.release_create_lease(record, owner)
        if contact:
            source, account, object_id = record.split(":", 2)
            link_records(rt, [(source, account, object_id, contact)])  # replays parked events
            settled += 1
    return settled


def _settle_create(rt: Runtime, record: str) -> str | None:
    st = rt.state
    claim = st.create_claim(record)
    if not claim:
        st.drop_create(record)  # nothing left to settle
        return None
    if claim.get("state") != "pending":
        st.set_create_state(record, claim["state"], None)
        return claim.get("id") if claim.get("state") == "done" else None
    email = claim.get("email", "")
    if rt.settings.leadlex_patch_idempotency != "honored":
        if not email:
            _uncertain(rt, record, claim, "no email to look the contact up by")
            return None
        resp = budgeted_call(rt, lambda c: c.search_contacts(email))
        if resp is None:
            st.set_create_state(record, "pending", rt.clock() + 5)  # budget or LeadLex: later
            return None
        rows = (resp.data or {}).get("contacts") or []
        exact = [r for r in rows if str(r.get("email", "")).lower() == email.lower()]
        if len(exact) == 1:
            st.finish_create(record, str(exact[0]["id"]), rt.settings.dedupe_ttl_seconds)
            return str(exact[0]["id"])
        if len(exact) > 1:
            _uncertain(rt, record, claim, f"{len(exact)} contacts have this email")
            return None
    # Not created (or LeadLex honours the key): send it again with the same key.
    body = _create_body(rt, record)
    grant = rt.budget.acquire()
    if not body or not grant.ok:
        st.set_create_state(record, "pending", rt.clock() + 5)
        return None
    now = rt.clock()
    st.start_create(record, claim["key"], now, email, _settle_at(rt, now))
    return _post(rt, record, body, claim["key"], grant)


def _uncertain(rt: Runtime, record: str, claim: dict[str, str], why: str) -> None:
    """Surface a create whose outcome cannot be told: the operator links the record."""
    source, account, object_id = record.split(":", 2)
    fields = rt.dlq.fields(
        "create_uncertain",
        source=source,
        payload={"record": record, "account": account, "object_id": object_id, **claim},
        details={"why": why, "fix": "find the contact in LeadLex, then `links import`"},
    )
    rt.state.add_letter(
        Letter(fields, (Metrics.field("dead_lettered", reason="create_uncertain"),))
    )
    rt.state.set_create_state(record, "uncertain", None)
    log.warning("contact create of unknown outcome surfaced", extra={"record": record, "why": why})

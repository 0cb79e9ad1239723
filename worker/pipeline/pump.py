"""The periodic pump: dispatch due flushes nobody holds; probe an open circuit."""

from __future__ import annotations

from worker.leadlex import (
    ContactNotFoundError,
    LeadLexError,
)
from worker.pipeline.runtime import Runtime, observe_error


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
        observe_error(rt, err)
        if not getattr(err, "opens_circuit", False):
            rt.circuit.close()
            return True
        return False
    rt.budget.observe(resp.rate)
    rt.circuit.close()
    return True

"""Links: the one place that links CRM records to LeadLex contacts and replays what waited.

Every path that sets a link (`links import`, a LeadLex id property on an event, an email
lookup, contact creation, a merge's survivor) goes through `link_records`, which stores the
links and, in the same Redis transaction, learns which of those records have parked events;
those are enqueued again. Parking checks the link in the same Lua step that parks (see
`State.park`), so an event can never be parked after its record was linked and stay there.

Events parked because a lookup could not run (no budget, circuit open, a LeadLex error) are
retried by `retry_unresolved`, called by the periodic pump, a few records per tick: each
retry takes the shared budget like any call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from worker.pipeline.runtime import Runtime

log = logging.getLogger("leadlex_sync.worker")

# How many records' lookups the pump retries per tick, and how long a claimed retry is left
# alone before another tick may claim it again (a worker that died with it).
RETRY_PER_TICK = 5
RETRY_LEASE_SECONDS = 60.0


def link_records(rt: Runtime, rows: Iterable[tuple[str, str, str, str]]) -> int:
    """Store (source, account, object_id, leadlex_id) links and replay the parked events of
    every record linked; returns how many events were enqueued again."""
    return replay_parked(rt, rt.state.link(rows))


def replay_parked(rt: Runtime, records: Iterable[tuple[str, str]]) -> int:
    """Enqueue again the parked events of (source, object_id) records (ingest unparks each
    one it stages; one that still cannot be synced is parked again)."""
    events: list[dict[str, Any]] = []
    for source, object_id in records:
        events.extend(rt.state.take_unlinked(source, object_id))
    for i in range(0, len(events), 100):
        rt.dispatch_ingest(events[i : i + 100])
    if events:
        rt.metrics.incr("events_replayed", len(events))
    return len(events)


def retry_unresolved(rt: Runtime, limit: int = RETRY_PER_TICK) -> int:
    """Periodic: replay parked events of records whose lookup is due again (budget permitting);
    returns how many events were enqueued."""
    if rt.circuit.state().open:
        return 0
    now = rt.clock()
    until, _ = rt.budget.paused_until()
    if until > now:
        return 0
    pairs: list[tuple[str, str]] = []
    for record in rt.state.claim_resolve_retries(now, RETRY_LEASE_SECONDS, limit):
        source, object_id = record.split(":", 1)
        if rt.state.has_parked(source, object_id):
            pairs.append((source, object_id))
        else:  # nothing waits any more (staged or erased meanwhile)
            rt.state.end_resolve_retry(source, object_id)
    n = replay_parked(rt, pairs)
    if n:
        log.info("parked events retried", extra={"records": len(pairs), "events": n})
    return n

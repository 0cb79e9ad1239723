"""Orchestration: what happens to a ChangeEvent behind the queue (no Celery here).

One module per stage: runtime (the Runtime and shared pieces), ingest, lifecycle
(deletion, restore, merge by CRM time), resolve (with create at most once), linking
(every new link, replay of parked events), flush, send (arm + PATCH + commit), settle (a
write of unknown outcome), failures (what an error does), pump.

ingest(event)   clamp a future time -> dedupe -> (lifecycle events: apply in CRM-time
                order) -> merge into the record snapshot (newest per field, whole-record
                events only where the value changed, ties by value) -> map to LeadLex
                fields -> resolve the LeadLex contact (a new link replays the record's
                parked events) or park -> stage fields for it (never older than
                applied) -> mark seen -> schedule one flush.
flush(contact)  fenced lease (INCR token) -> settle a write of unknown outcome -> drop
                no-op fields -> take the global budget -> notes: GET a fresh baseline ->
                arm (re-check + extend the lease, store the intent) -> PATCH once with an
                Idempotency-Key -> commit (fenced) / park / back off / dead-letter.

Celery tasks (worker.tasks) are thin wrappers that call these with a `Runtime`.

Notes exactly once, or surfaced (docs/architecture.md has the whole rule and the cost in
calls): a notes PATCH is preceded by a GET of the contact's `updated_date` inside the same
lease (the baseline) and an intent holding its text, its Idempotency-Key and that
baseline. When LeadLex's answer is lost, nothing else is sent for the contact until
`sent_at + LEADLEX_TIMEOUT_SECONDS + NOTES_SETTLE_DELAY_SECONDS`; then one GET decides:
unchanged -> not applied -> sent again with the same key; changed -> applied only if
LeadLex had answered 2xx, else the note goes to the dead-letter store as
`notes_uncertain` with its text and its other fields are sent again without it. No
error, max-age or dead-letter path deletes an unsettled intent. With
LEADLEX_PATCH_IDEMPOTENCY=honored the write is re-sent with its key instead.

Fencing: every flush-time state change is Lua that refuses a token that is no longer the
newest, except that a write's outcome commits while its intent still carries its key.

Test seam: `Runtime.seam(point, contact)` is called at "before_arm" and "after_answer";
tests stall or crash there (tests/integration/crashing_worker.py). Faults of LeadLex
itself are injected by the simulator (leadlex_sandbox: late applies, drops, 5xx...).
"""

from worker.pipeline.flush import flush
from worker.pipeline.ingest import (
    INBOX_GRACE_SECONDS,
    ingest,
    ingest_batch,
    recover_lost,
    replay_unlinked,
)
from worker.pipeline.linking import link_records, replay_parked, retry_unresolved
from worker.pipeline.pump import probe, pump
from worker.pipeline.resolve import settle_creates
from worker.pipeline.runtime import FlushOutcome, Runtime

__all__ = [
    "INBOX_GRACE_SECONDS",
    "FlushOutcome",
    "Runtime",
    "flush",
    "ingest",
    "ingest_batch",
    "link_records",
    "probe",
    "pump",
    "recover_lost",
    "replay_parked",
    "replay_unlinked",
    "retry_unresolved",
    "settle_creates",
]

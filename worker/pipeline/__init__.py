"""Orchestration: what happens to a ChangeEvent behind the queue (no Celery here).

One module per stage: runtime (the Runtime and shared pieces), ingest, lifecycle
(deletion, restore, merge by CRM time), resolve, linking (every new link, replay of
parked events), flush, settle (a PATCH of unknown outcome), failures (what an error
does), pump.

ingest(event)   clamp a future time -> dedupe -> (lifecycle events: apply in CRM-time
                order) -> merge into the record snapshot (newest per field, whole-record
                events only where the value changed, ties by value) -> map to LeadLex
                fields -> resolve the LeadLex contact (a new link replays the record's
                parked events) or park -> stage fields for it (never older than
                applied) -> mark seen -> schedule one flush.
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

from worker.pipeline.flush import flush
from worker.pipeline.ingest import INBOX_GRACE_SECONDS, ingest, recover_lost, replay_unlinked
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
    "link_records",
    "probe",
    "pump",
    "recover_lost",
    "replay_parked",
    "replay_unlinked",
    "retry_unresolved",
    "settle_creates",
]

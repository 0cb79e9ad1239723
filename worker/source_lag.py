"""How far behind each source is: the newest CRM time each source label handed over and
when its last batch came (written by `worker.handoff.Enqueuer`, read by `status` and
/metrics). Labels: `hubspot`, `salesforce`, `generic` (receiver), `hubspot_journal`
(the journal poller)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from worker.handoff import SOURCES_LAST_BATCH, SOURCES_NEWEST


@dataclass(frozen=True, slots=True)
class SourceLag:
    source: str
    newest_event_ms: int
    last_batch_at: float

    def age_seconds(self, now: float) -> float:
        """Age of the newest change this source handed over."""
        return max(0.0, now - self.newest_event_ms / 1000)


def source_lags(client: redis.Redis) -> list[SourceLag]:
    """One row per source label that ever handed events over, sorted by label."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(SOURCES_NEWEST, 0, -1, withscores=True)
    pipe.zrange(SOURCES_LAST_BATCH, 0, -1, withscores=True)
    newest_raw, last_raw = pipe.execute()

    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value

    last = {text(k): float(v) for k, v in last_raw}
    return sorted(
        (SourceLag(text(k), int(v), last.get(text(k), 0.0)) for k, v in newest_raw),
        key=lambda row: row.source,
    )

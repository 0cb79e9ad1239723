"""Metrics shared by every process: counters and histograms held in Redis.

The receiver (gunicorn workers) and the Celery workers are separate processes on
possibly separate machines, so their counters live in one Redis hash; the
receiver's `GET /metrics` turns that hash into Prometheus text with a custom
collector (`RedisCollector`). Writes are one HINCRBY each and can ride on a
pipeline the caller already sends, so counting costs no extra round trip.

Names (all prefixed `leadlex_sync_` on export) and their labels are listed in
`COUNTERS` / `HISTOGRAMS`; an unknown name is a programming error (KeyError).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

COUNTERS_KEY = "lls:metrics:counters"
HIST_KEY = "lls:metrics:hist"

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "webhooks_received": ("Webhook requests received", ("source",)),
    "webhooks_rejected": ("Webhook requests refused", ("source", "reason")),
    "events_enqueued": ("Change events enqueued for the worker", ("source",)),
    "events_ignored": ("Events accepted but not synced (other object types)", ("source", "kind")),
    "events_invalid": ("Events dead-lettered by the receiver as invalid", ("source",)),
    "events_deduped": ("Events dropped as duplicates", ("source",)),
    "fields_stale": ("Field values skipped because a newer value was applied", ("source",)),
    "fields_staged": ("Field values staged for a contact", ("source",)),
    "events_coalesced": ("Events folded into a flush with others", ()),
    "events_parked": ("Events parked (unlinked record)", ("reason",)),
    "events_recovered": ("Acknowledged events the broker lost, enqueued again", ()),
    "dead_lettered": ("Entries written to the dead-letter store", ("reason",)),
    "flushes": ("Contact flushes by outcome", ("outcome",)),
    "leadlex_calls": ("LeadLex API calls by method and status", ("method", "status")),
    "leadlex_429": ("429 answers from LeadLex", ()),
    "flushes_parked": ("Flushes parked waiting for budget", ("reason",)),
    "notes_assumed_applied": ("Notes appends of lost outcome taken as applied", ()),
    # Salesforce CDC subscriber (pull_sources/salesforce_cdc)
    "cdc_events_received": ("Salesforce CDC events read from the Pub/Sub API", ("topic",)),
    "cdc_events_filtered": ("CDC events left out by changeOrigin/commitUser", ("topic",)),
    "cdc_gaps": ("CDC changes that must be resynced (gap, overflow, diff...)", ("cause",)),
    "cdc_replay_resets": (
        "Stored replay ids refused as too old; restarted at EARLIEST",
        ("topic",),
    ),
    "cdc_stream_errors": ("Pub/Sub streams ended by an error", ("code",)),
}

# Buckets in seconds, for CRM-time -> LeadLex-200 latency.
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "sync_latency_seconds": (
        "From the CRM change (occurred_at) to LeadLex's 200",
        ("source",),
        (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    ),
}


def _label_key(name: str, labels: dict[str, Any], allowed: tuple[str, ...]) -> str:
    values = [str(labels.get(label, "")) for label in allowed]
    extra = set(labels) - set(allowed)
    if extra:
        raise KeyError(f"metric {name} has no label(s) {sorted(extra)}")
    return json.dumps([name, *values], separators=(",", ":"))


class Metrics:
    """Increment shared counters and histograms in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def incr(self, name: str, amount: int = 1, *, pipe: Any = None, **labels: Any) -> None:
        """Add `amount` to counter `name`; on `pipe` when given (no extra round trip)."""
        if amount == 0:
            return
        key = _label_key(name, labels, COUNTERS[name][1])
        target = pipe if pipe is not None else self.redis
        try:
            target.hincrby(COUNTERS_KEY, key, amount)
        except redis.RedisError:
            if pipe is not None:
                raise
            # Metrics are best effort: a Redis hiccup must not fail the request or the task.

    def observe(self, name: str, value: float, *, pipe: Any = None, **labels: Any) -> None:
        """Record one observation of histogram `name`."""
        _help, allowed, buckets = HISTOGRAMS[name]
        base = _label_key(name, labels, allowed)
        target = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        for bound in buckets:
            if value <= bound:
                target.hincrby(HIST_KEY, f"{base}|{bound}", 1)
        target.hincrby(HIST_KEY, f"{base}|+Inf", 1)
        target.hincrbyfloat(HIST_KEY, f"{base}|sum", value)
        if pipe is None:
            with contextlib.suppress(redis.RedisError):
                target.execute()

    def counters(self) -> dict[tuple[str, ...], int]:
        """All counters as {(name, *label values): value}."""
        raw = self.redis.hgetall(COUNTERS_KEY)
        return {tuple(json.loads(k)): int(v) for k, v in raw.items()}

    @staticmethod
    def field(name: str, **labels: Any) -> str:
        """The hash field of counter `name` with `labels` (for callers that HINCRBY in Lua)."""
        return _label_key(name, labels, COUNTERS[name][1])

    def value(self, name: str, **labels: Any) -> int:
        """One counter's current value (0 when never incremented)."""
        raw = self.redis.hget(COUNTERS_KEY, _label_key(name, labels, COUNTERS[name][1]))
        return int(raw or 0)


class RedisCollector(Collector):
    """Exports the Redis-held counters and histograms, plus live gauges from `gauges()`."""

    def __init__(self, client: redis.Redis, gauges: Any = None) -> None:
        self.redis = client
        self.gauges = gauges  # callable returning [(name, help, value)], or None

    def collect(self) -> Iterator[Any]:
        counters = Metrics(self.redis).counters()
        for name, (help_text, labels) in COUNTERS.items():
            family = CounterMetricFamily(f"leadlex_sync_{name}", help_text, labels=list(labels))
            for key, value in counters.items():
                if key[0] == name:
                    family.add_metric(list(key[1:]), value)
            yield family
        raw = self.redis.hgetall(HIST_KEY)
        for name, (help_text, labels, buckets) in HISTOGRAMS.items():
            family_h = HistogramMetricFamily(f"leadlex_sync_{name}", help_text, labels=list(labels))
            series: dict[str, dict[str, float]] = {}
            for hfield, hvalue in raw.items():
                field_s = hfield.decode() if isinstance(hfield, bytes) else str(hfield)
                base, _, bound = field_s.rpartition("|")
                series.setdefault(base, {})[bound] = float(hvalue)
            for base, points in series.items():
                key = json.loads(base)
                if key[0] != name:
                    continue
                cumulative = [(str(b), points.get(str(b), 0.0)) for b in buckets]
                cumulative.append(("+Inf", points.get("+Inf", 0.0)))
                family_h.add_metric(list(key[1:]), cumulative, points.get("sum", 0.0))
            yield family_h
        if self.gauges is not None:
            for name, help_text, value in self.gauges():
                yield GaugeMetricFamily(f"leadlex_sync_{name}", help_text, value=value)

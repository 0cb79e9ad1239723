"""Metrics shared by every process: counters and histograms held in Redis.

The receiver (gunicorn workers) and the Celery workers are separate processes on
possibly separate machines, so their counters live in one Redis hash; the
receiver's `GET /metrics` turns that hash into Prometheus text with a custom
collector (`RedisCollector`). Writes are one HINCRBY each and can ride on a
pipeline the caller already sends, so counting costs no extra round trip.

Names (all prefixed `leadlex_sync_` on export) and their labels are listed in
`COUNTERS` / `HISTOGRAMS`; an unknown name is a programming error (KeyError).

Label values come from fixed sets (issue 11: a sender must not be able to create series):
`source`, `kind`, `method` and `status` are checked against `LABEL_VALUES` and anything
else is exported as `other`; `reason` and `outcome` are codes written in our own source
(never copied from a request) and must look like one (`[a-z0-9_]`, at most 48
characters), else they too become `other`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
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
    # HubSpot Webhooks Journal (pull_sources/hubspot_journal)
    "journal_entries_read": ("HubSpot journal entries handed over", ()),
    "journal_gaps": ("HubSpot journal offsets found expired (changes may be missing)", ()),
    "journal_download_failures": ("HubSpot journal entry downloads that failed", ()),
    "journal_poll_errors": ("HubSpot journal polls that failed", ("reason",)),
    "dead_letters_trimmed": (
        "Invalid-input dead letters trimmed to keep DLQ_INVALID_MAXLEN",
        ("reason",),
    ),
    # promises-clock-chaos: one clock for the budget
    "budget_grants_lapsed": (
        "Calls not made because their budget grant lapsed (a stall after the grant) and the "
        "window had no slot left",
        (),
    ),
    "notes_uncertain": (
        "Notes writes whose outcome LeadLex could not tell, surfaced as dead letters",
        (),
    ),
    "flushes_fenced": ("Flush steps refused because a newer flush holds the contact", ()),
    # promises-lifecycle: record lifecycle, per-field time, ties, future clamp
    "lifecycle_events": (
        "Deletions, restores, merges and privacy deletions by outcome (stale = older than "
        "the record's newest lifecycle event)",
        ("kind", "outcome"),
    ),
    "field_time_ties": ("Field values with equal CRM times, decided by the tie rule", ()),
    "event_times_clamped": (
        "Event times from the future clamped to receive time + MAX_CLOCK_SKEW_SECONDS",
        ("source",),
    ),
    "events_replayed": ("Parked events enqueued again (a link appeared, a lookup retry)", ()),
    # onboarding (issue 13)
    "drift_repaired": ("Drifted fields staged again by reconcile --repair", ()),
    "backfill_released": ("Backfill events released into ingest", ()),
    "reconcile_skipped": (
        "Daily reconciles skipped (export refused and the paged list over its share, or no "
        "budget); the reason is in `status`",
        (),
    ),
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

OTHER = "other"
# The values each sender-influenced label may take; anything else is counted as OTHER.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "source": frozenset({"hubspot", "salesforce", "generic", "hubspot_journal"}),
    "kind": frozenset(
        {
            # ChangeEvent kinds (worker.events.KINDS)
            "create",
            "update",
            "delete",
            "privacy_delete",
            "merge",
            "restore",
            "association",
            # CRM object types the receivers count as ignored
            "company",
            "deal",
            "ticket",
            "product",
            "line_item",
            "quote",
            "call",
            "email",
            "meeting",
            "note",
            "task",
            "conversation",
            "0-2",
            "0-3",
            "0-5",
            "0-7",
            "0-8",
            "Account",
            "Opportunity",
            "Case",
            "Task",
            "Event",
            "User",
            "Campaign",
            "CampaignMember",
            "Contract",
            "Order",
            "Asset",
            "lead",
            "contact",
        }
    ),
    "method": frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"}),
    "status": frozenset({str(code) for code in range(100, 600)} | {"no_answer"}),
}
_CODE = re.compile(r"[a-z0-9_]{1,48}")
# Labels whose values come from the operator's configuration, never from a sender: a CDC
# channel such as /data/ContactChangeEvent (SALESFORCE_CDC_TOPICS).
_CONFIGURED = {"topic": re.compile(r"/[A-Za-z0-9_/]{1,100}")}

# Buckets in seconds, for CRM-time -> LeadLex-200 latency.
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "sync_latency_seconds": (
        "From the CRM change (occurred_at) to LeadLex's 200",
        ("source",),
        (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    ),
}


def label_value(label: str, value: Any) -> str:
    """`value` when the label may take it, else OTHER (bounded cardinality)."""
    text = str(value)
    if text == "":
        return text
    fixed = LABEL_VALUES.get(label)
    if fixed is not None:
        return text if text in fixed else OTHER
    return text if _CONFIGURED.get(label, _CODE).fullmatch(text) else OTHER


def _label_key(name: str, labels: dict[str, Any], allowed: tuple[str, ...]) -> str:
    values = [label_value(label, labels.get(label, "")) for label in allowed]
    extra = set(labels) - set(allowed)
    if extra:
        raise KeyError(f"metric {name} has no label(s) {sorted(extra)}")
    return json.dumps([name, *values], separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def _counter_key(name: str, labels: tuple[tuple[str, Any], ...]) -> str:
    """A counter's hash field, built once per name and label values (hot paths count the
    same few series over and over)."""
    return _label_key(name, dict(labels), COUNTERS[name][1])


class Metrics:
    """Increment shared counters and histograms in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def incr(self, name: str, amount: int = 1, *, pipe: Any = None, **labels: Any) -> None:
        """Add `amount` to counter `name`; on `pipe` when given (no extra round trip)."""
        if amount == 0:
            return
        try:
            key = _counter_key(name, tuple(labels.items()))
        except TypeError:  # an unhashable label value: not cached
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
        # callable returning [(name, help, value)] or [(name, help, value, {label: v})]
        self.gauges = gauges

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
            labelled: dict[str, GaugeMetricFamily] = {}
            for item in self.gauges():
                name, help_text, value = item[0], item[1], item[2]
                if len(item) < 4:
                    yield GaugeMetricFamily(f"leadlex_sync_{name}", help_text, value=value)
                    continue
                gauge_labels: dict[str, str] = item[3]  # (name, help, value, {label: v})
                gauge = labelled.get(name)
                if gauge is None:
                    gauge = GaugeMetricFamily(
                        f"leadlex_sync_{name}", help_text, labels=list(gauge_labels)
                    )
                    labelled[name] = gauge
                gauge.add_metric(list(gauge_labels.values()), value)
            yield from labelled.values()

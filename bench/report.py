"""Render benchmark results (the JSON each bench/*.py prints) as docs/benchmarks.md + charts.

    .venv/bin/python bench/report.py RESULTS.json     # re-render a saved run_all result

`bench/run_all.py` runs the benchmarks and calls `write_report`; this module only reads
the collected JSON, judges the targets and draws PNGs with matplotlib's Agg backend.
Every figure carries the machine (CPU count, platform) and the date of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"

OURS = "#1f6feb"  # leadlex-sync
BASE = "#9aa4b2"  # yardstick / naive baseline
GOOD = "#2da44e"
BAD = "#cf222e"
WARN = "#bf8700"


# ---- reading the results ----------------------------------------------------------------------
def dig(data: Any, *path: str | int, default: Any = None) -> Any:
    """data[path[0]][path[1]]... or `default` when any step is missing."""
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def first(data: Any, *paths: tuple[str | int, ...], default: Any = None) -> Any:
    """The value at the first of `paths` that exists in `data`."""
    for path in paths:
        value = dig(data, *path)
        if value is not None:
            return value
    return default


def number(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class Target:
    """One target from the issues, judged against one measured value."""

    bench: str
    name: str
    goal: str
    value: Any
    met: bool | None  # None: not measured (benchmark missing or failed)
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "NOT MET", None: "NOT RUN"}[self.met]


def _judge(
    bench: str, name: str, goal: str, value: Any, test: Callable[[float], bool], note: str = ""
) -> Target:
    num = number(value)
    return Target(bench, name, goal, value, None if num is None else bool(test(num)), note)


def targets(results: dict[str, Any]) -> list[Target]:
    """Every target of the issues ([receiver], [sync-core], [budget], [chaos]) with a verdict."""
    rec = dig(results, "receiver", "result")
    wrk = dig(results, "worker", "result")
    bud = dig(results, "budget", "result")
    b60 = dig(results, "budget60", "result")
    cha = dig(results, "chaos", "result")
    half = dig(rec, "latency_at_half_max") or {}
    out = [
        _judge(
            "receiver",
            "singles req/s ÷ bare-WSGI hello req/s",
            ">= 0.5",
            dig(rec, "ratio_singles_to_hello"),
            lambda v: v >= 0.5,
        ),
        _judge(
            "receiver",
            "events/s in 100-event batches",
            ">= 16,000",
            dig(rec, "batches", "events_per_s"),
            lambda v: v >= 16000,
        ),
        _judge(
            "receiver",
            "p99 latency at half the max rate (ms)",
            "< 25",
            half.get("p99_ms"),
            lambda v: v < 25,
            f"paced at {half.get('achieved_rate')} req/s" if half else "",
        ),
        _judge(
            "worker",
            "ingest events/s (one process, 100-event messages; issue 14)",
            ">= 5,000",
            dig(wrk, "ingest", "events_per_second"),
            lambda v: v >= 5000,
            f"{dig(wrk, 'ingest', 'us_per_event')} µs per event; 1-event messages: "
            f"{dig(wrk, 'ingest', '1_event_messages', 'events_per_second')} events/s",
        ),
        _judge(
            "worker",
            "ingest events/s on a loaded machine (busy loop on one core; issue 14)",
            ">= 5,000",
            dig(wrk, "ingest_loaded", "events_per_second"),
            lambda v: v >= 5000,
            f"{dig(wrk, 'ingest_loaded', 'us_per_event')} µs per event; 1-event messages: "
            f"{dig(wrk, 'ingest_loaded', '1_event_messages', 'events_per_second')} events/s",
        ),
        _judge(
            "worker",
            "a real Celery worker process: events/s from 100-event messages",
            ">= 5,000",
            dig(wrk, "worker_rss", "celery_events_per_second"),
            lambda v: v >= 5000,
            "Celery's per-message work and the flush dispatches included",
        ),
        _judge(
            "worker",
            "LeadLex calls per 5-edit burst",
            "1.00",
            dig(wrk, "calls_per_burst", "calls_per_burst"),
            lambda v: abs(v - 1.0) < 1e-9,
            f"naive: {dig(wrk, 'calls_per_burst', 'naive_calls_per_burst')}",
        ),
        _judge(
            "worker",
            "peak RSS of a Celery worker (MB)",
            "< 150",
            dig(wrk, "worker_rss", "peak_rss_mb"),
            lambda v: v < 150,
        ),
        _judge(
            "budget",
            "calls made ÷ calls allowed (busy period)",
            ">= 0.95",
            dig(bud, "leadlex_sync", "utilization"),
            lambda v: v >= 0.95,
            _budget_note(bud),
        ),
        _judge(
            "budget",
            "429 responses",
            "0",
            dig(bud, "leadlex_sync", "status_429"),
            lambda v: v == 0,
            f"naive: {dig(bud, 'naive_celery', 'status_429')}",
        ),
        _judge(
            "budget",
            "two worker hosts: most calls in any window ÷ allowed",
            "<= 1",
            _ratio(
                dig(bud, "leadlex_sync", "max_accepted_calls_in_any_window"),
                dig(bud, "setup", "per_window"),
            ),
            lambda v: v <= 1,
            f"hosts: {', '.join(dig(bud, 'leadlex_sync', 'worker_hosts') or [])}",
        ),
        _judge(
            "budget",
            "two worker hosts: most PATCHes to one contact in any window",
            "1",
            dig(bud, "leadlex_sync", "max_patches_per_contact_in_any_window"),
            lambda v: v <= 1,
        ),
    ]
    if results.get("budget60") is not None:
        out += [
            _judge(
                "budget60",
                "same at LeadLex's 60 s window: calls ÷ allowed",
                ">= 0.98",
                dig(b60, "leadlex_sync", "utilization"),
                lambda v: v >= 0.98,
                f"{dig(b60, 'setup', 'per_window')} per 60 s; "
                f"429s: {dig(b60, 'leadlex_sync', 'status_429')}",
            ),
            _judge(
                "budget60",
                "429 responses",
                "0",
                dig(b60, "leadlex_sync", "status_429"),
                lambda v: v == 0,
            ),
        ]
    if results.get("chaos") is not None:
        out.append(
            _judge("chaos", "invariant violations", "0", chaos_violations(cha), lambda v: v == 0)
        )
    return out


def _ratio(a: Any, b: Any) -> float | None:
    x, y = number(a), number(b)
    return None if x is None or not y else round(x / y, 3)


def _budget_note(bud: Any) -> str:
    ceiling = dig(bud, "setup", "utilization_ceiling")
    enforced = dig(bud, "leadlex_sync", "utilization_of_enforced_budget")
    parts = []
    if ceiling is not None:
        margin = dig(bud, "setup", "budget_safety_seconds")
        parts.append(f"ceiling with the {margin} s margin at this window: {ceiling}")
    if enforced is not None:
        parts.append(f"of the enforced budget: {enforced}")
    return "; ".join(parts)


def chaos_violations(cha: Any) -> float | None:
    n = _chaos_violations(cha)
    return int(n) if n is not None and n == int(n) else n


def _chaos_violations(cha: Any) -> float | None:
    """Total invariant violations in a chaos summary (a number, a list or a dict of counts)."""
    value = first(cha, ("violation_count",), ("violations",))
    if isinstance(value, list):
        return float(len(value))
    if isinstance(value, dict):
        nums = [
            number(v)
            if number(v) is not None
            else float(len(v))
            if isinstance(v, list)
            else float(bool(v))
            for v in value.values()
        ]
        return float(sum(n or 0 for n in nums))
    return number(value)


# ---- charts -------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
        }
    )
    return plt


def machine_line(meta: dict[str, Any]) -> str:
    return (
        f"{meta.get('cpus')} CPUs · {meta.get('platform')} · Python {meta.get('python')} · "
        f"{meta.get('date')} · load avg at start {meta.get('loadavg', '?')}"
    )


def _finish(fig: Any, title: str, meta: dict[str, Any], path: Path) -> None:
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.text(0.5, 0.01, machine_line(meta), ha="center", va="bottom", fontsize=7.5, color="#57606a")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _bars(
    ax: Any, labels: list[str], values: list[float | None], colors: list[str], fmt: str = "{:,.0f}"
) -> None:
    heights = [v or 0 for v in values]
    bars = ax.bar(labels, heights, color=colors, width=0.6)
    top = max(heights, default=0) or 1
    for bar, value in zip(bars, values, strict=True):
        text = "n/a" if value is None else fmt.format(value)
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + top * 0.015,
            text,
            ha="center",
            va="bottom",
            fontsize=8.5,
        )
    ax.set_ylim(0, top * 1.22)


def _target_line(ax: Any, y: float, label: str, color: str = BAD, va: str = "bottom") -> None:
    """A horizontal target line, labelled in a margin right of the bars (made once per axes)."""
    ax.axhline(y, color=color, linestyle="--" if color == BAD else ":", linewidth=1)
    if not getattr(ax, "_lls_margin", False):
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + (hi - lo) * 0.32)
        ax._lls_margin = True
    ax.text(
        0.995,
        y,
        label,
        color=color,
        va=va,
        ha="right",
        fontsize=8,
        transform=ax.get_yaxis_transform(),
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )
    lo, hi = ax.get_ylim()
    if y > hi * 0.95:
        ax.set_ylim(lo, y * 1.2)


def _missing(ax: Any, what: str, why: str = "not measured in this run") -> None:
    ax.text(
        0.5,
        0.5,
        f"{what}\n{why}" if why else what,
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#57606a",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def chart_receiver(rec: Any, meta: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    if not rec:
        for ax in axes:
            _missing(ax, "receiver")
        _finish(fig, "Receiver throughput and latency vs a bare WSGI app", meta, path)
        return
    hello = number(dig(rec, "hello", "requests_per_s"))
    singles = number(dig(rec, "singles", "requests_per_s"))
    ax = axes[0]
    _bars(ax, ["bare WSGI\nhello", "receiver\n1-event POST"], [hello, singles], [BASE, OURS])
    ax.set_ylabel("requests/s")
    ratio = dig(rec, "ratio_singles_to_hello")
    ax.set_title(f"1-event POSTs vs bare WSGI\nratio {ratio} (target >= 0.5)")
    if hello:
        _target_line(ax, hello * 0.5, "0.5 x hello")

    ax = axes[1]
    batch_ev = number(dig(rec, "batches", "events_per_s"))
    _bars(
        ax,
        ["receiver\n1-event POSTs", "receiver\n100-event POSTs"],
        [singles, batch_ev],
        [OURS, OURS],
    )
    ax.set_ylabel("events/s")
    ax.set_title("Events/s, singles vs batches\n(target >= 5,000 in batches)")
    _target_line(ax, 5000, "5,000 events/s")

    ax = axes[2]
    half = dig(rec, "latency_at_half_max") or {}
    groups = [
        ("at max load\n(singles)", dig(rec, "singles")),
        (f"at half max\n({half.get('achieved_rate', '?')} req/s)", half),
    ]
    x = range(len(groups))
    p50 = [number(g.get("p50_ms")) or 0 for _, g in groups]
    p99 = [number(g.get("p99_ms")) or 0 for _, g in groups]
    b1 = ax.bar([i - 0.18 for i in x], p50, 0.36, color=BASE, label="p50")
    b2 = ax.bar([i + 0.18 for i in x], p99, 0.36, color=OURS, label="p99")
    for bar in [*b1, *b2]:
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{bar.get_height():.1f}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(list(x), [g for g, _ in groups])
    ax.set_ylabel("ms")
    ax.set_ylim(0, max([*p99, 25]) * 1.45)
    ax.set_title("Latency of 1-event POSTs\n(target p99 < 25 ms at half max)")
    _target_line(ax, 25, "25 ms")
    ax.legend(loc="upper left", frameon=False)
    _finish(
        fig, "Receiver throughput and latency vs a bare WSGI app (gunicorn, loopback)", meta, path
    )


def chart_calls(wrk: Any, bud: Any, meta: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ours = number(dig(wrk, "calls_per_burst", "calls_per_burst"))
    naive = number(dig(wrk, "calls_per_burst", "naive_calls_per_burst"))
    if ours is None and naive is None:
        _missing(ax, "worker calls per burst")
    else:
        _bars(
            ax,
            ["leadlex-sync", "naive\n(one PATCH per event)"],
            [ours, naive],
            [OURS, BASE],
            "{:.2f}",
        )
        ax.set_ylabel("LeadLex calls per burst of 5 edits")
        n = dig(wrk, "calls_per_burst", "contacts")
        ax.set_title(f"Worker bench: {n} contacts x 5 edits (target 1.00)")
        _target_line(ax, 1.0, "1.00")
    ax = axes[1]
    ours_e = number(dig(bud, "leadlex_sync", "calls_per_edit"))
    naive_e = number(dig(bud, "naive_celery", "calls_per_edit"))
    if ours_e is None and naive_e is None:
        _missing(ax, "budget calls per edit")
    else:
        _bars(
            ax,
            ["leadlex-sync", "naive Celery\n(rate_limit + retry)"],
            [ours_e, naive_e],
            [OURS, BASE],
            "{:.2f}",
        )
        ax.set_ylabel("LeadLex calls (incl. 429s) per CRM edit")
        e = dig(bud, "setup", "edits_per_contact")
        ax.set_title(f"Budget bench: {e} edits per contact, tight budget")
        for i, key in enumerate(("leadlex_sync", "naive_celery")):
            n429 = dig(bud, key, "status_429")
            if n429 is not None:
                ax.text(
                    i,
                    0,
                    f"{n429} x 429",
                    ha="center",
                    va="bottom",
                    color="white",
                    fontsize=8,
                    fontweight="bold",
                )
    _finish(fig, "LeadLex calls per CRM edit: leadlex-sync vs a naive baseline", meta, path)


def budget_series(bud: Any) -> dict[str, dict[str, list[float]]]:
    """Per phase, calls per window over time: {"leadlex_sync": {"t": [...], "calls": [...],
    "rejected": [...]}}; taken from per-window counts or call timestamps in the JSON."""
    out: dict[str, dict[str, list[float]]] = {}
    window = number(dig(bud, "setup", "window_seconds")) or 60.0
    for phase in ("leadlex_sync", "naive_celery"):
        section = dig(bud, phase) or {}
        series = first(section, ("calls_per_window",), ("timeline",), ("per_window",))
        if isinstance(series, list) and series and all(isinstance(r, dict) for r in series):
            t = [number(first(r, ("t",), ("start",), ("second",), ("at",))) for r in series]
            calls = [number(first(r, ("calls",), ("count",), ("n",))) for r in series]
            rej = [number(first(r, ("status_429",), ("rejected",), ("429",))) or 0 for r in series]
            if all(v is not None for v in t + calls):
                out[phase] = {"t": t, "calls": calls, "rejected": rej}  # type: ignore[dict-item]
                continue
        if isinstance(series, list) and series and all(number(v) is not None for v in series):
            out[phase] = {
                "t": [i * window for i in range(len(series))],
                "calls": [float(v) for v in series],
                "rejected": [0.0] * len(series),
            }
            continue
        times = first(
            section, ("call_times",), ("request_times",), ("call_offsets",), ("request_log",)
        )
        if isinstance(times, list) and times:
            rows = [
                (number(r.get("ts", r.get("t"))), r.get("status"))
                if isinstance(r, dict)
                else (number(r), None)
                for r in times
            ]
            stamps = [(t, s) for t, s in rows if t is not None]
            if stamps:
                out[phase] = _rolling(stamps, window)
    return out


def _rolling(stamps: list[tuple[float, Any]], window: float) -> dict[str, list[float]]:
    """Calls in the trailing `window` seconds, sampled every second, from call timestamps."""
    stamps.sort(key=lambda r: r[0])
    t0 = stamps[0][0]
    end = stamps[-1][0] - t0
    ts, calls, rejected = [], [], []
    step = max(0.5, window / 12)
    t = 0.0
    while t <= end + step:
        ok = sum(1 for s, st in stamps if t - window < s - t0 <= t and st != 429)
        bad = sum(1 for s, st in stamps if t - window < s - t0 <= t and st == 429)
        ts.append(t)
        calls.append(float(ok))
        rejected.append(float(bad))
        t += step
    return {"t": ts, "calls": calls, "rejected": rejected}


def chart_budget(bud: Any, meta: dict[str, Any], path: Path) -> bool:
    """Budget utilization over time (or, without a time series, the summary); True if a
    time series was drawn."""
    plt = _plt()
    series = budget_series(bud)
    per_window = number(dig(bud, "setup", "per_window"))
    window = number(dig(bud, "setup", "window_seconds"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if series:
        ax = axes[0]
        for phase, color, label in (
            ("leadlex_sync", OURS, "leadlex-sync"),
            ("naive_celery", BASE, "naive Celery"),
        ):
            if phase in series:
                s = series[phase]
                ax.plot(s["t"], s["calls"], color=color, label=f"{label}: calls answered")
                if any(s["rejected"]):
                    ax.plot(
                        s["t"], s["rejected"], color=color, linestyle=":", label=f"{label}: 429s"
                    )
        if per_window:
            _target_line(ax, per_window, f"allowed: {per_window:g} per {window:g} s")
        ax.set_xlabel("seconds since the first call")
        ax.set_ylabel(f"calls in the trailing {window:g} s window")
        ax.set_title("Calls per window over time")
        ax.legend(frameon=False, fontsize=8, loc="best")
    else:  # no time series in the JSON: how long each took to apply every edit instead
        ax = axes[0]
        ours = number(dig(bud, "leadlex_sync", "drained_seconds_after_first_wave"))
        naive = number(dig(bud, "naive_celery", "finished_seconds_after_first_wave"))
        if ours is None and naive is None:
            _missing(ax, "per-window call counts", "(bench/budget.py prints no time series)")
        else:
            _bars(ax, ["leadlex-sync", "naive Celery"], [ours, naive], [OURS, BASE], "{:.0f} s")
            ax.set_ylabel("seconds after the first wave")
            stale = dig(bud, "naive_celery", "stale_final_values")
            if stale is None:
                stale = dig(bud, "naive_celery", "final_values_not_the_newest")
            ax.set_title(
                "Time to apply all edits (no per-window time series in the JSON)\n"
                f"naive: {stale} final values older than the newest edit"
            )
    ax = axes[1]
    if not bud:
        _missing(ax, "budget")
    else:
        labels = [
            "utilization\n(calls ÷ allowed)",
            "of the enforced\nbudget (+ margin)",
            "busiest window\n÷ allowed",
        ]
        x = list(range(len(labels)))
        for k, (phase, color, label) in enumerate(
            (("leadlex_sync", OURS, "leadlex-sync"), ("naive_celery", BASE, "naive Celery"))
        ):
            sec = dig(bud, phase) or {}
            busiest = number(
                first(
                    sec, ("max_accepted_calls_in_any_window",), ("max_counted_calls_in_any_window",)
                )
            )
            vals = [
                number(sec.get("utilization")),
                number(sec.get("utilization_of_enforced_budget")),
                busiest / per_window if busiest is not None and per_window else None,
            ]
            xs = [i + (k - 0.5) * 0.36 for i in x]
            bars = ax.bar(xs, [v or 0 for v in vals], 0.36, color=color, label=label)
            for bar, v in zip(bars, vals, strict=True):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height(),
                    "—" if v is None else f"{v:.2f}",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.45)
        _target_line(ax, 0.95, "target 0.95")
        ceiling = number(dig(bud, "setup", "utilization_ceiling"))
        if ceiling:
            _target_line(ax, ceiling, f"ceiling {ceiling:.3f}", color=WARN, va="top")
        ax.legend(frameon=False, fontsize=8, loc="upper left", ncol=2)
        ax.set_title("Share of the budget used while a backlog waited")
    sub = f"{per_window:g} calls per {window:g} s window" if per_window and window else ""
    _finish(fig, f"LeadLex budget utilization ({sub})", meta, path)
    return bool(series)


def chaos_not_ingested(cha: Any) -> float | None:
    """Acknowledged events missing from the dedupe ledger, from the chaos violations."""
    violations = dig(cha, "violations")
    if not isinstance(violations, list):
        return None
    n = 0.0
    for v in violations:
        if isinstance(v, dict) and v.get("check") == "acked_event_not_ingested":
            n += number(v.get("more")) or 1.0
    return n


def chart_chaos(cha: Any, meta: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.4))
    if not cha:
        for ax in axes:
            _missing(ax, "chaos run")
        _finish(fig, "Chaos run outcome", meta, path)
        return
    ax = axes[0]
    calls = number(first(cha, ("calls", "total"), ("calls",)))
    minimum = number(first(cha, ("calls", "min_possible"), ("calls", "minimum")))
    if calls is None and minimum is None:
        _missing(ax, "calls")
    else:
        patches = number(dig(cha, "calls", "patches"))
        n429 = number(dig(cha, "calls", "429", "total"))
        _bars(
            ax,
            ["minimum\n(contacts changed)", "made\n(all)", "PATCH", "429\n(injected)"],
            [minimum, calls, patches, n429],
            [BASE, OURS, OURS, WARN],
        )
        ax.set_title(f"LeadLex calls vs the minimum (x{dig(cha, 'calls', 'ratio')})")
    ax = axes[1]
    sent = number(dig(cha, "events", "sent"))
    acked = number(first(cha, ("events", "acked"), ("checked", "acked_events")))
    missing = chaos_not_ingested(cha)
    ingested = acked - missing if acked is not None and missing is not None else None
    if acked is None:
        _missing(ax, "events")
    else:
        _bars(
            ax,
            ["sent", "acked by\nthe receiver", "taken in\n(in the ledger)"],
            [sent, acked, ingested],
            [BASE, BASE, OURS],
        )
        dups = dig(cha, "events", "duplicates")
        late = dig(cha, "events", "late")
        ax.set_title(f"Events acked vs taken in\n({dups} duplicates, {late} late deliveries)")
    ax = axes[2]
    dead = first(cha, ("dead_letters",), ("dead_letters_by_reason",))
    if isinstance(dead, dict) and dead and all(number(v) is not None for v in dead.values()):
        names = sorted(dead, key=lambda k: -float(dead[k]))
        ax.barh(names, [float(dead[k]) for k in names], color=WARN)
        for i, k in enumerate(names):
            ax.text(float(dead[k]), i, f" {dead[k]}", va="center", fontsize=8)
        ax.invert_yaxis()
        gen = dig(cha, "checked", "invalid_phones_generated")
        ax.set_title(f"Dead letters by reason\n({gen} invalid phones were sent)")
    elif isinstance(dead, dict):
        _missing(ax, "Dead letters: none", "")
    else:
        _missing(ax, "dead letters by reason")
    ax = axes[3]
    v = chaos_violations(cha)
    if v is None:
        _missing(ax, "violations")
    else:
        color = GOOD if v == 0 else BAD
        ax.bar(["violations"], [v], color=color, width=0.5)
        ax.text(
            0, v, f"{v:g}", ha="center", va="bottom", fontsize=16, fontweight="bold", color=color
        )
        ax.set_ylim(0, max(1.0, v * 1.3))
        checks = Counter(
            str(x.get("check")) for x in dig(cha, "violations") or [] if isinstance(x, dict)
        )
        names = ", ".join(f"{k} ({n})" for k, n in checks.most_common(3))
        ax.set_title("Invariant violations (target 0)" + (f"\n{names}" if names else ""))
    faults = dig(cha, "faults")
    n_faults = len(faults) if isinstance(faults, list | dict) else "?"
    _finish(
        fig,
        f"Chaos run ({dig(cha, 'profile')} profile, seed {dig(cha, 'seed')}, "
        f"{n_faults} injected faults): outcome after the drain",
        meta,
        path,
    )


# ---- markdown -----------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    num = number(value)
    if num is None:
        return "—" if value is None else str(value)
    if num == int(num) and (abs(num) >= 10 or isinstance(value, int)):
        return f"{int(num):,}"
    if abs(num) >= 10:
        return f"{num:,.1f}"
    return f"{num:.2f}" if abs(num) >= 1 else f"{num:.3f}"


def _table(rows: Iterable[tuple[Any, ...]], head: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(results: dict[str, Any], images: dict[str, str], series_drawn: bool) -> str:
    meta = results.get("meta", {})
    rec = dig(results, "receiver", "result")
    wrk = dig(results, "worker", "result")
    bud = dig(results, "budget", "result")
    cha = dig(results, "chaos", "result")
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/run_all.py (bench/report.py); do not edit by hand. -->",
        "",
        "## Rerunning them",
        "",
        "```bash",
        "make bench                   # = python3 bootstrap.py bench",
        "python3 bootstrap.py bench   # installs .[test,bench] (matplotlib), runs bench/run_all.py",
        "python3 bootstrap.py bench --full          # chaos run in full instead of --short",
        ".venv/bin/python bench/run_all.py --help   # options: which benches, Redis URLs, bounds",
        "```",
        "",
        "`bench/run_all.py` runs `bench/receiver.py`, `bench/worker.py`, `bench/budget.py` and "
        "`bench/chaos.py` (when present; `--short` unless `--full`) one after the other as "
        "subprocesses, each with a time limit, on loopback only, collects the JSON each "
        "prints, and rewrites this page and `docs/img/*.png`. Redis: the receiver bench uses "
        "database 12 (it refuses a non-empty one), the worker and budget benches database 7 "
        "(they flush it).",
        "",
        "Benchmarks `make bench` does not run (slow clients, linking calls, the receiver's "
        "per-part CPU breakdown) are recorded by hand in "
        "[docs/benchmarks-more.md](benchmarks-more.md).",
        "",
        "**Compare ratios between runs, not absolute numbers.** Absolute requests/s and events/s "
        "depend on the machine and on whatever else it was doing (the load average at the start "
        "is recorded below; other work running at the same time lowers them); ratios against "
        "a yardstick measured in the same run (bare WSGI app, "
        "naive baseline, the budget's own allowance) are what carry over.",
        "",
        f"Machine: {meta.get('cpus')} CPUs ({meta.get('cpu_model', '?')}), "
        f"{meta.get('platform')}, Python {meta.get('python')}; run on {meta.get('date')}, "
        f"load average at start {meta.get('loadavg', '?')}; total time "
        f"{meta.get('seconds', '?')} s.",
        "",
        "## Targets",
        "",
    ]
    rows = [
        (t.bench, t.name, t.goal, _fmt(t.value), f"**{t.verdict}**", t.note)
        for t in targets(results)
    ]
    lines += _table(rows, ("bench", "what", "target", "measured", "verdict", "note"))
    lines += ["", "Status of each benchmark run:", ""]
    lines += _table(
        [
            (name, r.get("status"), r.get("seconds"), " ".join(r.get("argv", [])[1:]))
            for name, r in results.items()
            if name != "meta" and isinstance(r, dict)
        ],
        ("bench", "status", "seconds", "arguments"),
    )
    lines += ["", "## Receiver", "", f"![receiver]({images['receiver']})", ""]
    if rec:
        g = rec.get("gunicorn", {})
        lines += [
            f"gunicorn {g.get('workers')} workers x {g.get('threads')} threads "
            f"({g.get('worker_class')}), "
            f"{rec.get('connections')} keep-alive connections, {rec.get('seconds_per_phase')} s "
            "per phase. The yardstick is a bare WSGI app under the same gunicorn settings given "
            "the same POST; the receiver verifies the HubSpot v3 signature, parses, and "
            "records the event in the inbox and an ingest message in Redis before answering "
            "(webhooks answered on one turn of a worker's event loop share one message: "
            f"{_fmt(dig(rec, 'singles', 'requests_per_message'))} 1-event requests per "
            "message in the singles phase).",
            "",
        ]
        cpu = rec.get("cpu_us_per_request") or {}
        if cpu:
            lines += [
                "CPU per request of the gunicorn workers (µs): bare WSGI hello "
                f"{_fmt(dig(cpu, 'hello', 'gunicorn'))}, bare hello answered on the event loop "
                f"{_fmt(dig(cpu, 'async_hello', 'gunicorn'))}, 1-event POST "
                f"{_fmt(dig(cpu, 'singles', 'gunicorn'))} (plus "
                f"{_fmt(dig(cpu, 'singles', 'redis'))} of redis-server). The stricter ratio, "
                "singles ÷ the loop's bare hello: "
                f"{_fmt(rec.get('ratio_singles_to_async_hello'))} (req/s), "
                f"{_fmt(cpu.get('cpu_ratio_async_hello'))} (CPU). Each worker's share of a "
                f"phase's CPU: {cpu.get('worker_shares')}.",
                "",
            ]
        lines += _table(
            [
                ("bare WSGI hello", _fmt(dig(rec, "hello", "requests_per_s")), "—", "—", "—"),
                (
                    "1-event POSTs",
                    _fmt(dig(rec, "singles", "requests_per_s")),
                    _fmt(dig(rec, "singles", "events_per_s")),
                    _fmt(dig(rec, "singles", "p50_ms")),
                    _fmt(dig(rec, "singles", "p99_ms")),
                ),
                (
                    "100-event POSTs",
                    _fmt(dig(rec, "batches", "requests_per_s")),
                    _fmt(dig(rec, "batches", "events_per_s")),
                    _fmt(dig(rec, "batches", "p50_ms")),
                    _fmt(dig(rec, "batches", "p99_ms")),
                ),
                (
                    f"1-event POSTs paced at {dig(rec, 'latency_at_half_max', 'target_rate')}/s",
                    _fmt(dig(rec, "latency_at_half_max", "achieved_rate")),
                    "—",
                    _fmt(dig(rec, "latency_at_half_max", "p50_ms")),
                    _fmt(dig(rec, "latency_at_half_max", "p99_ms")),
                ),
            ],
            ("phase", "requests/s", "events/s", "p50 ms", "p99 ms"),
        )
        lines.append("")
    lines += ["## Calls per edit", "", f"![calls per edit]({images['calls']})", ""]
    if wrk:
        lines += [
            f"Worker bench: ingest {_fmt(dig(wrk, 'ingest', 'events_per_second'))} events/s in "
            f"one process in 100-event messages ({_fmt(dig(wrk, 'ingest', 'us_per_event'))} "
            f"µs/event; loaded: {_fmt(dig(wrk, 'ingest_loaded', 'events_per_second'))}); "
            f"{_fmt(dig(wrk, 'calls_per_burst', 'calls'))} PATCHes for "
            f"{_fmt(dig(wrk, 'calls_per_burst', 'edits'))} edits "
            f"(naive: {_fmt(dig(wrk, 'calls_per_burst', 'naive_calls'))}, saving x "
            f"{_fmt(dig(wrk, 'calls_per_burst', 'saving_ratio'))}); peak RSS of a Celery worker "
            f"{_fmt(dig(wrk, 'worker_rss', 'peak_rss_mb'))} MB.",
            "",
        ]
    lines += ["## Budget", "", f"![budget]({images['budget']})", ""]
    if bud:
        s = bud.get("setup", {})
        o = bud.get("leadlex_sync", {})
        n = bud.get("naive_celery", {})
        lines += [
            f"The simulator allows {s.get('per_window')} calls per {s.get('window_seconds')} s "
            f"window (standing in for Starter's 10 a minute); {s.get('contacts')} contacts x "
            f"{s.get('edits_per_contact')} edits arrive as signed HubSpot webhooks in waves "
            f"{s.get('wave_gap_seconds')} s apart. Utilization = calls ÷ what a perfectly paced "
            "client could have made while the backlog waited. Our budget counts each call "
            "until the latest moment it can have reached LeadLex (its measured flight time) "
            f"plus a {s.get('budget_safety_seconds')} s margin, so its ceiling at this window "
            f"is about {s.get('utilization_ceiling')}; `utilization_of_enforced_budget` "
            "measures against window + margin. The two leadlex-sync worker processes run as "
            f"two hosts ({', '.join(o.get('worker_hosts') or [])}) on one Redis.",
            "",
        ]
        keys = [
            "calls",
            "status_429",
            "calls_per_edit",
            "utilization",
            "utilization_of_enforced_budget",
            "accepted_calls",
            "max_accepted_calls_in_any_window",
            "max_arrivals_in_any_window",
            "max_patches_per_contact_in_any_window",
            "busy_seconds",
        ]
        lines += _table(
            [(k, _fmt(o.get(k)), _fmt(n.get(k))) for k in keys],
            ("", "leadlex-sync", "naive Celery"),
        )
        lines.append("")
        if not series_drawn:
            lines += [
                "Utilization over time is not drawn: `bench/budget.py` does not print per-window "
                "call counts or the simulator's call timestamps yet (e.g. `calls_per_window`: "
                '`[{"t": s, "calls": n, "status_429": m}, ...]` per phase, or '
                '`request_log`: `[{"ts": ..., "status": ...}]`; `bench/report.py` draws '
                "either). The left panel shows the time each took to apply every edit instead.",
                "",
            ]
    lines += ["## Chaos run", "", f"![chaos]({images['chaos']})", ""]
    if results.get("chaos") is None:
        lines += ["`bench/chaos.py` was not present when this page was generated.", ""]
    elif not cha:
        lines += [f"The chaos run did not produce JSON: {dig(results, 'chaos', 'status')}.", ""]
    else:
        cfg = cha.get("config", {})
        faults = cha.get("faults")
        checks = Counter(
            str(v.get("check")) for v in cha.get("violations") or [] if isinstance(v, dict)
        )
        kinds = Counter(
            str(f.get("fault", f.get("kind", f.get("what", "?"))))
            for f in (faults if isinstance(faults, list) else [])
            if isinstance(f, dict)
        )
        lines += [
            f"Profile `{cha.get('profile')}`, seed {cha.get('seed')}: "
            f"{_fmt(dig(cha, 'events', 'sent'))} CRM events "
            f"({_fmt(dig(cha, 'events', 'acked'))} acknowledged) for {cfg.get('contacts')} "
            f"contacts over {cfg.get('seconds')} s, {cfg.get('rate_per_window')} calls per "
            f"{cfg.get('window_s')} s window. Faults injected: "
            + (", ".join(f"{k} x{n}" for k, n in kinds.most_common()) or "see the raw JSON")
            + f". LeadLex calls: {_fmt(dig(cha, 'calls', 'total'))} for "
            f"{_fmt(dig(cha, 'calls', 'min_possible'))} changed contacts "
            f"(x{dig(cha, 'calls', 'ratio')}, 5xx answers and dropped answers included). "
            f"Violations: **{cha.get('violation_count')}**"
            + (
                " (" + ", ".join(f"`{k}` x{n}" for k, n in checks.most_common()) + ")"
                if checks
                else ""
            )
            + ". The chaos script exits 1 when it finds a violation.",
            "",
        ]
    lines += ["## Raw JSON", ""]
    for name in ("receiver", "worker", "budget", "budget60", "chaos"):
        entry = results.get(name)
        if entry is None:
            continue
        lines += [
            f"### {name}",
            "",
            f"`{' '.join(entry.get('argv', []))}` → {entry.get('status')}",
            "",
            "```json",
            json.dumps(entry.get("result"), indent=2),
            "```",
            "",
        ]
        if entry.get("stderr_tail") and entry.get("status") != "ok":
            lines += ["stderr (tail):", "", "```", entry["stderr_tail"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], doc: Path = DOC, img: Path = IMG) -> list[Path]:
    """Draw the four charts and write the markdown; returns the files written."""
    meta = results.get("meta", {})
    rel = Path("img")
    files = {
        "receiver": img / "bench-receiver.png",
        "calls": img / "bench-calls-per-edit.png",
        "budget": img / "bench-budget.png",
        "chaos": img / "bench-chaos.png",
    }
    chart_receiver(dig(results, "receiver", "result"), meta, files["receiver"])
    chart_calls(
        dig(results, "worker", "result"), dig(results, "budget", "result"), meta, files["calls"]
    )
    drawn = chart_budget(dig(results, "budget", "result"), meta, files["budget"])
    chart_chaos(dig(results, "chaos", "result"), meta, files["chaos"])
    images = {k: (rel / p.name).as_posix() for k, p in files.items()}
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render_markdown(results, images, drawn), encoding="utf-8")
    return [doc, *files.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="JSON written by run_all.py --save")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--img", type=Path, default=IMG)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    for path in write_report(results, args.doc, args.img):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

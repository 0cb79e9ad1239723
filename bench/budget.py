"""Benchmark: how much of LeadLex's call budget leadlex-sync uses, against a naive Celery setup.

Everything runs on loopback: the LeadLex simulator in this process, a private redis-server
(unless --redis-url is given; its database is flushed), Celery worker subprocesses. The
simulator allows `--per-window` calls in any sliding `--window` seconds (10 per 6 s stands in
for the Starter plan's 10 a minute) and the backlog is larger than that: `--contacts`
contacts each edited `--edits` times, one edit per contact per wave, waves `--wave-gap`
seconds apart, as signed HubSpot webhooks.

Phase 1, leadlex-sync: the receiver app, two `celery -A worker worker` processes (one with
beat) sharing the Redis budget with LEADLEX_RATE_WINDOW_SECONDS = --window.
Phase 2, naive baseline (defined below): one Celery task per event, each a PATCH of that one
field; Celery's per-worker `rate_limit` set to the plan's rate scaled to the window;
`autoretry_for` httpx errors and 429 with a fixed retry countdown; two worker processes.

Measures, from the simulator's request log:
- calls, 429s, calls per edit;
- utilization = accepted calls / (per_window * (busy + window) / window), where busy is the
  time from the first to the last accepted call (the backlog is checked to be non-empty all
  along): the share of the calls a perfectly paced client could have made in that time.
  Our Budget counts each call until the latest moment it can have reached LeadLex (its
  measured flight time) plus a margin (LEADLEX_RATE_MARGIN_SECONDS, 0.1 s), so its ceiling
  is about window / (window + 0.1 s + flight): 0.98 at a 6 s window, 0.998 at LeadLex's
  real 60 s; `utilization_of_enforced_budget` measures against window + margin instead;
- `calls_per_window`: per phase, the calls answered (and 429s) in the trailing window,
  sampled every window/12 seconds (bench/report.py draws it);
- the two leadlex-sync workers run as two "hosts" (Celery node names on different host
  names, separate processes, one Redis): calls stay within the window and each contact
  gets at most one PATCH in any window (`max_patches_per_contact_in_any_window`);
- for the baseline also how many final field values are older than the newest edit
  (its retries reorder PATCHes).

Prints one JSON document. Stops by itself: every wait has a deadline (about 5 minutes in all).

    .venv/bin/python bench/budget.py [--contacts 60] [--edits 3] [--per-window 10] [--window 6]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
# `python bench/budget.py` puts bench/ first on the path, where bench/worker.py would shadow
# the `worker` package: the project root goes in front.
sys.path.insert(0, str(ROOT))

from cli.devmode import venv_bin  # noqa: E402
from worker.celery_app import QUEUES  # noqa: E402

API_KEY = "wbk_bench_budget_0123456789abcdef"
HUBSPOT_SECRET = "bench-hubspot-secret"
PUBLIC_BASE = "https://sync.bench.test"
PORTAL = 4242
SAFETY_SECONDS = 0.1  # LEADLEX_RATE_MARGIN_SECONDS (the default), passed to the workers
NAIVE_QUEUE = "naive"
HOSTS = ("bench-host-a", "bench-host-b")  # the two leadlex-sync worker "hosts"

# ---- the naive baseline: a tiny Celery app (imported by its worker processes) ---------------
naive_app = Celery("leadlex_naive_bench")
naive_app.conf.update(
    # Set by this benchmark for its naive workers; importing the module connects nowhere.
    broker_url=os.environ.get("NAIVE_BROKER_URL", "memory://"),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=NAIVE_QUEUE,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


class NaiveRateLimitedError(Exception):
    """LeadLex answered 429."""


@naive_app.task(
    name="naive.patch",
    rate_limit=os.environ.get("NAIVE_RATE_LIMIT", "10/m"),
    autoretry_for=(httpx.HTTPError, NaiveRateLimitedError),
    retry_backoff=False,
    retry_kwargs={"max_retries": 100, "countdown": float(os.environ.get("NAIVE_COUNTDOWN", "3"))},
)
def naive_patch(contact_id: str, body: dict[str, str]) -> int:
    """PATCH one event's field; 429 and transport/HTTP errors retry after a fixed countdown."""
    resp = httpx.patch(
        f"{os.environ['NAIVE_BASE_URL']}/v1/contacts/{contact_id}",
        json=body,
        headers={"Authorization": f"Bearer {os.environ['NAIVE_API_KEY']}"},
        timeout=10,
    )
    if resp.status_code == 429:
        raise NaiveRateLimitedError(resp.headers.get("retry-after", ""))
    resp.raise_for_status()
    return resp.status_code


# ---- helpers ---------------------------------------------------------------------------------
def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LEADLEX_", "CELERY"))}


class Workers:
    """Celery worker subprocesses, logs in a temporary directory; all stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        app: str,
        queues: str,
        name: str,
        env: dict[str, str],
        beat: bool,
        host: str = "%h",
    ) -> None:
        log_path = self.log_dir / f"{name}.log"
        argv = [
            venv_bin("celery"), "-A", app, "worker", "-Q", queues, "-P", "threads", "-c", "4",
            "-n", f"{name}@{host}", "-l", "INFO", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if beat:
            argv += ["-B", "-s", str(self.log_dir / f"{name}-beat")]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=log)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
            if b"ready." in log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready: {log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()


class Simulator:
    """Control-side handle on the in-process simulator."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self) -> None:
        self.http.post("/_sandbox/reset", json={"keep_config": True}).raise_for_status()

    def seed(self, n: int) -> list[str]:
        resp = self.http.post(
            "/_sandbox/contacts", json={"contacts": [{"full_name": f"Bench {i}"} for i in range(n)]}
        )
        resp.raise_for_status()
        return [str(row["id"]) for row in resp.json()["data"]]

    def requests(self) -> list[dict[str, Any]]:
        resp = self.http.get("/_sandbox/requests")
        resp.raise_for_status()
        return list(resp.json()["data"])

    def contacts(self) -> dict[str, dict[str, Any]]:
        resp = self.http.get("/_sandbox/contacts")
        resp.raise_for_status()
        return {str(c["id"]): c for c in resp.json()["data"]}


def _edits(n_edits: int) -> list[tuple[str, str, Callable[[int], str]]]:
    """Per wave: (HubSpot property, LeadLex field, value for contact i). Later waves win."""
    plan: list[tuple[str, str, Callable[[int], str]]] = [
        ("jobtitle", "job_title", lambda i: f"Associate {i}"),
        ("company", "company_name", lambda i: f"Firm {i}"),
        ("jobtitle", "job_title", lambda i: f"Partner {i}"),
        ("phone", "phone", lambda i: f"+1 202 555 {i:04d}"),
    ]
    return [plan[w % len(plan)] for w in range(n_edits)]


def _expected(n_contacts: int, n_edits: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{} for _ in range(n_contacts)]
    for _prop, field, value in _edits(n_edits):
        for i in range(n_contacts):
            text = value(i)
            out[i][field] = "+1202555" + text[-4:] if field == "phone" else text
    return out


def _busiest(times: list[float], window: float) -> int:
    ts = sorted(times)
    best = start = 0
    for end, t in enumerate(ts):
        while ts[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def calls_per_window(reqs: list[dict[str, Any]], window: float) -> list[dict[str, float]]:
    """Calls answered (not 429) and 429s in the trailing `window`, every window/12 seconds
    from the first call (seconds relative to it)."""
    stamps = sorted((float(r["ts"]), int(r["status"])) for r in reqs)
    if not stamps:
        return []
    t0, end = stamps[0][0], stamps[-1][0]
    step = window / 12
    out: list[dict[str, float]] = []
    t = t0
    while t <= end + step:
        inside = [st for ts, st in stamps if t - window < ts <= t]
        out.append(
            {
                "t": round(t - t0, 2),
                "calls": float(sum(st != 429 for st in inside)),
                "status_429": float(sum(st == 429 for st in inside)),
            }
        )
        t += step
    return out


def max_patches_per_contact_in_any_window(reqs: list[dict[str, Any]], window: float) -> int:
    """The most PATCHes one contact got within any `window` seconds."""
    by_contact: dict[str, list[float]] = {}
    for r in reqs:
        if r["method"] == "PATCH" and r["status"] != 429:
            by_contact.setdefault(str(r.get("contact_id")), []).append(float(r["ts"]))
    return max((_busiest(ts, window) for ts in by_contact.values()), default=0)


def _rate_metrics(
    reqs: list[dict[str, Any]],
    per_window: int,
    window: float,
    edits: int,
    enforced_span: float | None = None,
) -> dict[str, Any]:
    """Counts from the simulator's log; utilization counts the calls LeadLex accepted (not 429)."""
    times = sorted(r["ts"] for r in reqs)
    accepted = sorted(r["ts"] for r in reqs if r["status"] != 429)
    busy = accepted[-1] - accepted[0] if accepted else 0.0
    allowed = per_window * (busy + window) / window
    out: dict[str, Any] = {
        "calls": len(reqs),
        "status_429": sum(r["status"] == 429 for r in reqs),
        "accepted_calls": len(accepted),
        "patches": sum(r["method"] == "PATCH" for r in reqs),
        "gets": sum(r["method"] == "GET" for r in reqs),
        "edits": edits,
        "calls_per_edit": round(len(reqs) / edits, 3),
        "busy_seconds": round(busy, 2),
        "calls_allowed_in_busy_period": round(allowed, 1),
        "utilization": round(len(accepted) / allowed, 3) if accepted else None,
        "max_accepted_calls_in_any_window": _busiest(accepted, window),
        "max_arrivals_in_any_window": _busiest(times, window),
        "max_patches_per_contact_in_any_window": max_patches_per_contact_in_any_window(
            reqs, window
        ),
        "calls_per_window": calls_per_window(reqs, window),
    }
    if enforced_span is not None and accepted:
        # Against the window our Budget enforces (window + safety margin), i.e. how much of
        # its own allowance the pump/flush machinery turns into calls.
        out["utilization_of_enforced_budget"] = round(
            len(accepted) / (per_window * (busy + enforced_span) / enforced_span), 3
        )
    return out


def _hubspot_headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    message = f"POST{PUBLIC_BASE}/webhooks/hubspot".encode() + body + ts.encode()
    digest = hmac.new(HUBSPOT_SECRET.encode(), message, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": ts,
    }


def _waves(n_edits: int, gap: float, send_wave: Callable[[int], None]) -> float:
    """Send wave 0..n_edits-1 at t0, t0 + gap, ...; returns t0 (epoch seconds)."""
    t0 = time.time()
    for w in range(n_edits):
        time.sleep(max(0.0, t0 + w * gap - time.time()))
        send_wave(w)
    return t0


def _wait(predicate: Callable[[], bool], deadline: float, interval: float = 0.5) -> bool:
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- phase 1: leadlex-sync ---------------------------------------------------------------------
def run_ours(
    args: argparse.Namespace, redis_url: str, sim: Simulator, base_url: str, log_dir: Path
) -> dict[str, Any]:
    import redis

    from webhook_app import create_app
    from worker.settings import load_settings
    from worker.state import State

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    sim.reset()
    ids = sim.seed(args.contacts)
    State(client).set_links([("hubspot", "", str(100_000 + i), cid) for i, cid in enumerate(ids)])
    env = {
        **_base_env(),
        "REDIS_URL": redis_url,
        "LEADLEX_API_KEY": API_KEY,
        "LEADLEX_BASE_URL": base_url,
        "LEADLEX_RATE_PER_MINUTE": str(args.per_window),
        "LEADLEX_DAILY_LIMIT": "100000",
        "LEADLEX_RATE_WINDOW_SECONDS": str(args.window),
        "LEADLEX_RATE_MARGIN_SECONDS": str(SAFETY_SECONDS),
        "COALESCE_SECONDS": "1",
        "FLUSH_LEASE_SECONDS": "10",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    receiver = create_app(
        load_settings(
            {
                "REDIS_URL": redis_url,
                "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
                "PUBLIC_BASE_URL": PUBLIC_BASE,
            },
            require_leadlex=False,
            env_file=None,
        )
    ).test_client()
    workers = Workers(log_dir)
    backlog: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            backlog.append((time.time(), int(client.zcard("lls:due"))))
            time.sleep(0.1)

    edits = _edits(args.edits)
    event_ids = iter(range(1, 10**9))

    def send_wave(w: int) -> None:
        prop, _field, value = edits[w]
        occurred = int(time.time() * 1000)
        events = [
            {
                "eventId": next(event_ids),
                "subscriptionId": 1,
                "portalId": PORTAL,
                "appId": 1,
                "occurredAt": occurred,
                "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0,
                "objectId": 100_000 + i,
                "propertyName": prop,
                "propertyValue": value(i),
                "changeSource": "CRM_UI",
            }
            for i in range(args.contacts)
        ]
        for k in range(0, len(events), 100):
            body = json.dumps(events[k : k + 100]).encode()
            resp = receiver.post("/webhooks/hubspot", data=body, headers=_hubspot_headers(body))
            if resp.status_code != 200:
                raise RuntimeError(f"receiver answered {resp.status_code}")

    try:
        # Two "hosts": separate processes whose Celery node names carry different host
        # names, sharing one Redis (the scale-out path, docs/operations.md "Scaling out").
        workers.start("worker", ",".join(QUEUES), "ours1", env, beat=True, host=HOSTS[0])
        workers.start("worker", ",".join(QUEUES), "ours2", env, beat=False, host=HOSTS[1])
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = _waves(args.edits, args.wave_gap, send_wave)
        expected = dict(zip(ids, _expected(args.contacts, args.edits), strict=True))

        def done() -> bool:
            now = sim.contacts()
            applied = all(
                all(now[cid].get(k) == v for k, v in want.items()) for cid, want in expected.items()
            )
            return applied and client.zcard("lls:due") == 0

        finished = _wait(done, time.time() + args.phase_timeout)
        drained_at = time.time()
        stop.set()
        watcher.join(timeout=2)
    finally:
        stop.set()
        workers.stop()
    reqs = sim.requests()
    if os.environ.get("LLS_BENCH_DUMP_REQUESTS"):
        Path(os.environ["LLS_BENCH_DUMP_REQUESTS"]).write_text(json.dumps(reqs))
    metrics = _rate_metrics(
        reqs,
        args.per_window,
        args.window,
        args.contacts * args.edits,
        enforced_span=args.window + SAFETY_SECONDS,
    )
    if reqs:
        first, last = reqs[0]["ts"], max(r["ts"] for r in reqs)
        during = [n for t, n in backlog if first <= t < last]
        metrics["backlog_nonempty_while_calling"] = bool(during) and min(during) > 0
    per_contact: dict[str, int] = {}
    for r in reqs:
        if r["method"] == "PATCH":
            per_contact[str(r["contact_id"])] = per_contact.get(str(r["contact_id"]), 0) + 1
    metrics.update(
        {
            "all_applied": finished,
            "patches_per_contact": {
                "min": min(per_contact.values(), default=0),
                "max": max(per_contact.values(), default=0),
            },
            "drained_seconds_after_first_wave": round(drained_at - t0, 1),
            "worker_processes": 2,
            "worker_hosts": list(HOSTS),
        }
    )
    client.close()
    return metrics


# ---- phase 2: naive baseline --------------------------------------------------------------------
def run_naive(
    args: argparse.Namespace, redis_url: str, sim: Simulator, base_url: str, log_dir: Path
) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    sim.reset()
    ids = sim.seed(args.contacts)
    per_minute = args.per_window * 60 / args.window  # the plan's rate, scaled to the window
    rate_limit = f"{per_minute:g}/m"
    env = {
        **_base_env(),
        "NAIVE_BROKER_URL": redis_url,
        "NAIVE_BASE_URL": base_url,
        "NAIVE_API_KEY": API_KEY,
        "NAIVE_RATE_LIMIT": rate_limit,
        "NAIVE_COUNTDOWN": str(args.naive_countdown),
        "PYTHONUNBUFFERED": "1",
    }
    naive_app.conf.broker_url = redis_url
    workers = Workers(log_dir)
    edits = _edits(args.edits)
    n_events = args.contacts * args.edits

    def send_wave(w: int) -> None:
        _prop, field, value = edits[w]
        for i, cid in enumerate(ids):
            text = value(i)
            if field == "phone":
                text = "+1202555" + text[-4:]
            naive_patch.apply_async(args=[cid, {field: text}], queue=NAIVE_QUEUE)

    try:
        workers.start("bench.budget:naive_app", NAIVE_QUEUE, "naive1", env, beat=False)
        workers.start("bench.budget:naive_app", NAIVE_QUEUE, "naive2", env, beat=False)
        t0 = _waves(args.edits, args.wave_gap, send_wave)
        finished = _wait(
            lambda: sum(r["status"] == 200 for r in sim.requests()) >= n_events,
            time.time() + args.phase_timeout,
        )
        ended = time.time()
    finally:
        workers.stop()
        naive_app.close()
    reqs = sim.requests()
    metrics = _rate_metrics(reqs, args.per_window, args.window, n_events)
    final = sim.contacts()
    expected = dict(zip(ids, _expected(args.contacts, args.edits), strict=True))
    stale = sum(
        1 for cid, want in expected.items() for k, v in want.items() if final[cid].get(k) != v
    )
    metrics.update(
        {
            "all_events_applied": finished,
            "status_200": sum(r["status"] == 200 for r in reqs),
            "stale_final_values": stale,
            "finished_seconds_after_first_wave": round(ended - t0, 1),
            "celery_rate_limit_per_worker": rate_limit,
            "retry_countdown_seconds": args.naive_countdown,
            "worker_processes": 2,
        }
    )
    client.close()
    return metrics


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--contacts", type=int, default=60)
    parser.add_argument("--edits", type=int, default=3, help="edits per contact (one per wave)")
    parser.add_argument("--wave-gap", type=float, default=5.0, help="seconds between waves")
    parser.add_argument("--per-window", type=int, default=10)
    parser.add_argument("--window", type=float, default=6.0, help="seconds ('minute' window)")
    parser.add_argument("--naive-countdown", type=float, default=3.0)
    parser.add_argument("--phase-timeout", type=float, default=150.0)
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args(argv)

    from leadlex_sandbox import SandboxConfig, SandboxServer
    from worker.embedded_redis import RedisServer

    started = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="lls-bench-budget-"))
    embedded = None
    redis_url = args.redis_url
    if redis_url is None:
        embedded = RedisServer(appendonly=False).start()
        redis_url = embedded.url
    server = SandboxServer(
        SandboxConfig(
            api_keys={API_KEY: frozenset({"read", "write"})},
            per_minute=args.per_window,
            minute_window_seconds=args.window,
            daily=100_000,
        )
    ).start()
    sim = Simulator(server.url)
    result: dict[str, Any] = {
        "setup": {
            "per_window": args.per_window,
            "window_seconds": args.window,
            "contacts": args.contacts,
            "edits_per_contact": args.edits,
            "edits": args.contacts * args.edits,
            "wave_gap_seconds": args.wave_gap,
            "budget_safety_seconds": SAFETY_SECONDS,
            "utilization_ceiling": round(args.window / (args.window + SAFETY_SECONDS), 3),
        }
    }
    try:
        ours = run_ours(args, redis_url, sim, server.base_url, log_dir)
        result["leadlex_sync"] = ours
        if not args.skip_naive:
            result["naive_celery"] = run_naive(args, redis_url, sim, server.base_url, log_dir)
    finally:
        server.stop()
        if embedded is not None:
            embedded.cleanup()
    result["targets"] = {
        "utilization_at_least_0.95": (ours.get("utilization") or 0) >= 0.95,
        "no_429": ours["status_429"] == 0,
        "never_over_the_window": ours["max_accepted_calls_in_any_window"] <= args.per_window,
        "one_patch_per_contact_per_window": ours["max_patches_per_contact_in_any_window"] <= 1,
    }
    result["bench_seconds"] = round(time.time() - started, 1)
    if os.environ.get("LLS_KEEP_BENCH_LOGS"):
        result["logs"] = str(log_dir)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Chaos run: the whole system on loopback under crashes and LeadLex faults, then a reconcile.

A Jepsen-style check of DESIGN.md's invariants 1 (nothing acknowledged is lost), 3 (many
deliveries = one), 4 (never older), 5 (a note exactly once, or surfaced), 6 (the global
budget on one clock) and 9 (fenced flushes) on real parts, all on 127.0.0.1, started and
stopped by this script:

- Redis: a private redis-server on a spare port with AOF and `appendfsync always` (as
  shipped; docs/operations.md);
- the LeadLex simulator (`python -m leadlex_sandbox`, `expose_notes` off, so notes are
  write-only as in LeadLex's docs and the product cannot cheat; Idempotency-Key ignored
  unless --honor-idempotency-key);
- the receiver under gunicorn (2 workers, deploy/gunicorn.conf.py);
- two Celery workers (`-P threads -c 4`) and one beat, each in its own process group:
  worker 1 stalls one flush in N past its lease right before the PATCH (the test seam
  tests/seams/stalling_worker.py), worker 2's wall clock runs 3 s ahead (tests/seams).

HubSpot's Webhooks Journal takes part too: the HubSpot simulator (`hubspot_sandbox`, in
this process) records a share of the HubSpot requests (`--journal-share`, default 0.25;
as many again go both ways), and the product's journal poller (a beat task running on
the workers, so worker kills kill it mid-batch) reads them; an event recorded in the
journal counts as acknowledged.

With `--salesforce-source cdc`, Salesforce edits leave as Change Data Capture events
instead of SOAP outbound messages (bench/chaos_cdc.py): the Pub/Sub simulator
(`salesforce_sandbox`, in this process) stores each as an UPDATE carrying only the changed
fields, and `leadlex-sync salesforce subscribe` (a child process, SIGKILLed twice and its
stream broken once) reads them; an event Salesforce stored counts as acknowledged.

A steady stream of signed HubSpot (v3) and Salesforce (SOAP) webhooks for `--contacts`
LeadLex contacts (each linked to a HubSpot record, every other one also to a Salesforce
record, via `leadlex-sync links import`: both CRMs edit the same contacts) carries
`--events` CRM events over `--seconds`: duplicates, whole batches re-sent, HubSpot
deliveries out of timestamp order (some late by up to 20 s), notes that grow by one
uniquely tagged line at a time, and a few invalid phone numbers. Only what the receiver
acknowledged (2xx / SOAP Ack) counts; a 503 or a lost answer is retried later, as a CRM
would. A third party edits the same contacts directly in LeadLex with another key (notes
lines, linkedin_url, mapped fields of contacts at rest).

Meanwhile: SIGKILL a random worker (its whole process group) and start a new one; kill -9
Redis once and restart it from its AOF on the same port; the simulator answers 20 % 5xx
and drops 5 % of applied writes' answers, applies a few writes late (after the client gave
up), sends one burst of 429s with Retry-After, and for a while allows only a quarter of
the per-minute limit (the simulator only: the workers keep their configured limit and
must cope through 429 handling).

Then faults stop, the backlog drains (bounded wait) and the run reconciles LeadLex's final
state against the ground truth the generator kept (bench/chaos_truth.py: its own record
of every CRM and third-party write with its real time and a second, simple
implementation of the field mapping; nothing of the product's state or mapping decides):

- each LeadLex field holds the newest write among the CRM and third-party writes, or that
  value sits in the dead-letter store;
- each notes line appears exactly once in the contact's notes, or sits in the dead-letter
  store as `notes_uncertain`; none twice, none unknown;
- in no window of LEADLEX_RATE_WINDOW_SECONDS did the simulator see more of our requests
  than the configured per-minute limit; no self-caused 429; after the Retry-After burst
  nobody called until the pause ended;
- the acknowledged write made to Redis just before its kill -9 survived the restart;
- the system drained (no due contacts, queues, intents or staged fields left).

It prints one JSON summary (events, faults with times, calls vs the minimum, dead
letters by reason, violations, durations) and exits 1 on any violation, 2 when the
harness itself failed. Every wait has a deadline and a SIGALRM bounds the whole run;
every process it started is stopped (process groups) on success, failure or Ctrl-C.

    .venv/bin/python bench/chaos.py [--events 5000 --contacts 300 --seconds 180 --seed S]
    .venv/bin/python bench/chaos.py --short      # CI: ~400 events, one kill, ~2 minutes
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import heapq
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
# `python bench/chaos.py` puts bench/ first, where bench/worker.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.chaos_cdc import CdcSide  # noqa: E402
from bench.chaos_truth import (  # noqa: E402
    THIRD_PARTY_PREFIX,
    ThirdPartyWrite,
    Truth,
    normalize_phone,
    third_party_outcomes,
)
from bench.chaos_truth import reconcile as reconcile_truth  # noqa: E402
from cli.devmode import venv_bin  # noqa: E402
from hubspot_sandbox import HubSpotSandboxConfig, HubSpotSandboxServer  # noqa: E402
from hubspot_sandbox.model import Change  # noqa: E402
from tests.seams import clock_offset_env  # noqa: E402
from worker.celery_app import QUEUE_FLUSH, QUEUE_INGEST, QUEUES  # noqa: E402
from worker.crm_events.hubspot import change_fingerprint as hubspot_change_fingerprint  # noqa: E402
from worker.embedded_redis import free_port, redis_answers, redis_argv  # noqa: E402
from worker.events import fingerprint  # noqa: E402

API_KEY = "wbk_chaos_run_0123456789abcdef"
THIRD_PARTY_KEY = "wbk_chaos_third_party_0123456789"  # another LeadLex user of the workspace
HUBSPOT_SECRET = "chaos-hubspot-client-secret"
PORTAL = 77001
SF_ORG = "00D5g000004ChAoEAK"  # 18 characters, checksum included
SF_TOKEN = "chaos-sf-token-Vb7Qx2Lm9Rt4Kp8Wz3Nc"
SUBSCRIPTION_ID = 3101
LEADLEX_FIELDS = ("full_name", "email", "phone", "job_title", "company_name")
HS_PROPS = ("firstname", "lastname", "email", "phone", "jobtitle", "company", "leadlex_notes")
HS_WEIGHTS = (3, 3, 2, 2, 3, 2, 4)
SF_FIELDS = ("FirstName", "LastName", "Email", "Phone", "Title", "Description")
SF_WEIGHTS = (3, 3, 2, 2, 3, 4)
SAFETY_SECONDS = 1.0  # worker.ratelimit.Budget's margin on every window
THIRD_PARTY_PER_WINDOW = 2  # third-party calls in any rate window (added to the simulator's)
THIRD_PARTY_FIELDS = ("job_title", "company_name", "phone")  # mapped fields it edits at rest
# With CDC, this share of Salesforce edits that set Title is one transaction of two changes
# at the same commitTimestamp: first a draft Title that is byte-greater than the final one
# (so the value tie rule alone would keep it), then the final Title (sequenceNumber 2).
CDC_DRAFT_SHARE = 0.3
SF_EDIT_GAP_SECONDS = 10.0  # a Salesforce record is edited again only this long after its
# previous message was acknowledged (see World.edit)
QUIET_SECONDS = 25.0  # a contact is at rest this long after its last CRM edit (> max delay)
SKEW_SECONDS = 3.0  # the wall clock of worker 2 (tests/seams: clock offset)
MAX_VIOLATIONS_SHOWN = 60


class HarnessError(Exception):
    """The harness itself could not do its job (exit code 2)."""


class RunTimeout(HarnessError):
    """The whole run exceeded its hard time bound (SIGALRM)."""


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


# ==============================================================================================
# profiles
# ==============================================================================================
@dataclass
class Profile:
    events: int
    contacts: int
    seconds: float
    seed: int
    short: bool
    rate: int  # LEADLEX_RATE_PER_MINUTE of the workers = the simulator's normal limit
    window: float  # LEADLEX_RATE_WINDOW_SECONDS = the simulator's minute_window_seconds
    worker_kills: int
    sender_grace: float  # after the stream: time for late/duplicate/retried deliveries
    drain_seconds: float  # bound on waiting for the backlog to drain
    coalesce: float = 1.0
    visibility: int = 20
    lease: float = 6.0
    journal_share: float = 0.25  # HubSpot requests sent via the journal only (as many: both)
    timeout: float = 3.0  # LEADLEX_TIMEOUT_SECONDS of the workers
    honor_idempotency_key: bool = False  # the simulator's knob (LeadLex's behaviour unknown)
    stall_every: int = 25  # worker 1 stalls one flush in this many before its PATCH
    late_applies: int = 6  # writes the simulator applies late (after the client gave up)
    settle_delay: float = 6.0  # NOTES_SETTLE_DELAY_SECONDS: > late apply (timeout + 2 s) - timeout
    salesforce: str = "outbound"  # or "cdc": Salesforce edits as Pub/Sub change events

    @property
    def stall_seconds(self) -> float:
        """Longer than a flush's lock (3 x timeout + 5 s) and its lease: it is overtaken."""
        return max(self.timeout * 3 + 5, self.lease) + 2

    @property
    def hard_bound(self) -> int:
        """Seconds after which SIGALRM stops the whole run."""
        return int(90 + self.seconds + self.sender_grace + self.drain_seconds + 60)


def make_profile(args: argparse.Namespace) -> Profile:
    if args.short:
        base = Profile(
            events=400,
            contacts=40,
            seconds=40,
            seed=1,
            short=True,
            rate=30,
            window=10,
            worker_kills=1,
            sender_grace=45,
            drain_seconds=110,
            stall_every=10,
            late_applies=3,
        )
    else:
        base = Profile(
            events=5000,
            contacts=300,
            seconds=180,
            seed=1,
            short=False,
            rate=60,
            window=10,
            worker_kills=4,
            sender_grace=60,
            drain_seconds=300,
        )
    for name in (
        "events",
        "contacts",
        "seconds",
        "rate",
        "window",
        "worker_kills",
        "journal_share",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(base, name, value)
    base.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    base.honor_idempotency_key = bool(args.honor_idempotency_key)
    base.salesforce = getattr(args, "salesforce_source", None) or "outbound"
    if base.events < 10 or base.contacts < 2 or base.seconds < 10:
        raise SystemExit("chaos: need --events >= 10, --contacts >= 2, --seconds >= 10")
    return base


# ==============================================================================================
# processes: each in its own process group (session), stopped as a group
# ==============================================================================================
def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without settings, Celery and proxy variables, plus `extra`."""
    drop_prefixes = ("LEADLEX_", "CELERY", "HUBSPOT_", "SALESFORCE_", "GENERIC_WEBHOOK")
    drop = {
        "REDIS_URL",
        "PUBLIC_BASE_URL",
        "MAPPING_FILE",
        "COALESCE_SECONDS",
        "WEB_CONCURRENCY",
        "PORT",
        "VISIBILITY_TIMEOUT_SECONDS",
        "FLUSH_LEASE_SECONDS",
        "CIRCUIT_PROBE_SECONDS",
        "MAX_RETRY_AGE_SECONDS",
        "DEDUPE_TTL_SECONDS",
        "RESOLVE_BY_EMAIL",
        "CREATE_ON_CREATION",
        "DELETION_POLICY",
        "NOTES_SETTLE_DELAY_SECONDS",
        "MAX_CLOCK_SKEW_SECONDS",
        "DEFAULT_PHONE_REGION",
        "LOG_FORMAT",
        "LOG_LEVEL",
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop_prefixes) and k not in drop and "proxy" not in k.lower()
    }
    env.update({"NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Proc:
    """One child process in its own session; its log goes to a file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.group_gone = False  # the whole group was SIGKILLed and the leader reaped
        with log_path.open("ab") as fh:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=fh,
                stderr=fh,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        # Once the group was SIGKILLed and its leader reaped, its id may be reused: leave it.
        if self.group_gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a crash at whatever line it is on)."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
            self.group_gone = True

    def stop(self, timeout: float = 12.0) -> None:
        """SIGTERM the group, then SIGKILL whatever of it is left."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill()  # the group may outlive its leader

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


class Procs:
    """Every process the run started, for one cleanup that cannot be skipped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.all: list[Proc] = []
        self.lock = threading.Lock()
        self.closing = False

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        with self.lock:  # never a new process once stop_all has begun (supervisor, chaos)
            if self.closing:
                raise HarnessError(f"not starting {name}: the run is stopping")
            proc = Proc(name, argv, env, self.workdir / f"{name}.log", self.workdir)
            self.all.append(proc)
        return proc

    def stop_all(self) -> None:
        with self.lock:
            self.closing = True
            procs = list(reversed(self.all))
        for proc in procs:  # SIGTERM all first so they stop in parallel
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs:
            proc.kill()


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise HarnessError(f"{what}: not within {timeout:.0f} s")


# ==============================================================================================
# Redis with appendfsync always, restartable on the same port from its AOF
# ==============================================================================================
class ChaosRedis:
    """redis-server on 127.0.0.1 with AOF + `appendfsync always`, in its own process group."""

    def __init__(self, procs: Procs, data_dir: Path) -> None:
        self.procs = procs
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Every write is on disk before its reply: a kill -9 loses nothing acknowledged.
        argv = redis_argv(self.port, self.data_dir, appendfsync="always")
        self.starts += 1
        self.proc = self.procs.start(f"redis-{self.starts}", argv, child_env({}))
        wait_until(lambda: redis_answers(self.url, 0.3) or self._dead(), 30, "redis start")
        if self.proc is not None and not self.proc.alive():
            raise HarnessError(f"redis-server exited: {self.proc.tail()}")
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:  # AOF loaded (a restart answers LOADING until then)
            wait_until(lambda: self._loaded(client), 60, "redis AOF load", 0.1)
        finally:
            client.close()

    def _dead(self) -> bool:
        return self.proc is not None and not self.proc.alive()

    @staticmethod
    def _loaded(client: redis.Redis) -> bool:
        try:
            return str(client.info("persistence").get("loading", 1)) == "0"
        except redis.RedisError:
            return False

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()


# ==============================================================================================
# the LeadLex simulator (its own process: its GIL is not ours)
# ==============================================================================================
class Simulator:
    def __init__(self, procs: Procs, prof: Profile) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/functions/v1/api-gateway"
        self.prof = prof
        self.proc = procs.start(
            "simulator",
            [
                sys.executable,
                "-m",
                "leadlex_sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--api-key",
                API_KEY,
                "--plan",
                "org",
            ],
            child_env({}),
        )
        self.http = httpx.Client(base_url=self.root, timeout=30, trust_env=False)

    def ready(self) -> None:
        def up() -> bool:
            if not self.proc.alive():
                raise HarnessError(f"simulator exited: {self.proc.tail()}")
            try:
                return self.http.get("/_sandbox/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "simulator start", 0.2)
        self.config(
            # the workers' limit plus what the third party may spend in any window
            per_minute=self.prof.rate + THIRD_PARTY_PER_WINDOW,
            daily=1_000_000,
            minute_window_seconds=self.prof.window,
            expose_notes=False,
            retry_after=False,
            seed=self.prof.seed,
            api_keys={API_KEY: ["read", "write"], THIRD_PARTY_KEY: ["read", "write"]},
            honor_idempotency_key=self.prof.honor_idempotency_key,
        )

    def config(self, **knobs: Any) -> dict[str, Any]:
        resp = self.http.post("/_sandbox/config", json=knobs)
        resp.raise_for_status()
        return dict(resp.json()["data"])

    def faults(self, **knobs: Any) -> None:
        self.http.post("/_sandbox/faults", json=knobs).raise_for_status()

    def seed(self, count: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, count, 100):
            rows = [
                {"full_name": f"Seed Contact {i}", "email": f"seed{i}@chaos.example.org"}
                for i in range(start, min(count, start + 100))
            ]
            resp = self.http.post("/_sandbox/contacts", json={"contacts": rows})
            resp.raise_for_status()
            ids += [str(r["id"]) for r in resp.json()["data"]]
        return ids

    def contact(self, contact_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/_sandbox/contacts/{contact_id}")
        resp.raise_for_status()
        return dict(resp.json()["data"])

    def contacts(self) -> dict[str, dict[str, Any]]:
        resp = self.http.get("/_sandbox/contacts")
        resp.raise_for_status()
        return {str(c["id"]): c for c in resp.json()["data"]}

    def requests(self) -> list[dict[str, Any]]:
        resp = self.http.get("/_sandbox/requests")
        resp.raise_for_status()
        return list(resp.json()["data"])


# ==============================================================================================
# the CRM side: records, events, and the stream generator
# ==============================================================================================
@dataclass
class Record:
    idx: int
    source: str  # "hubspot" | "salesforce"
    object_id: str
    contact: int  # index into the seeded contacts
    tag: str  # short, unique: prefixes every notes line of this record
    values: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    version: int = 0
    last_event: int | None = None  # key of this record's newest event


@dataclass
class Event:
    key: int
    source: str
    record: int
    ts: int  # CRM time, epoch ms (unique across the whole run)
    fields: dict[str, str | None]  # CRM field -> value this event carries
    fp: str  # the product's dedupe fingerprint of this event
    payload: Any  # HubSpot event dict, or the Salesforce <Notification> XML text
    acked: bool = False
    acked_at: float = 0.0  # when the receiver first acknowledged it (epoch s)
    delivered: int = 0  # deliveries put on the wire (duplicates and resends included)


def iso_ms(ts: int) -> str:
    moment = datetime.fromtimestamp(ts / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}Z"


class World:
    """Generates CRM edits: per record strictly increasing, globally unique CRM times, and
    keeps the ground truth of what each edit wrote (`truth`, bench/chaos_truth.py).

    Salesforce sends the whole record with each message, so which fields an edit changed
    is knowable only from the previous message the product saw (DESIGN invariant 4: "from
    what actually changed"). For the truth to be exact, each Salesforce record sends one
    message with its initial values before the stream (`baseline`), and a record is edited
    again only once its previous message was acknowledged `SF_EDIT_GAP_SECONDS` ago (its
    messages are not delayed on purpose): a record's messages reach the product in order.
    HubSpot events carry one property each with its own time and arrive in any order.

    `cdc`: Salesforce edits become CDC change events carrying only the changed fields (the
    first one per record: every field it has), published to the Pub/Sub simulator, each
    transaction with its own commitNumber; some edits of Title are a two-change transaction
    whose first change (a draft Title) is no write of the truth: it is superseded, at the
    same time, by the second (`CDC_DRAFT_SHARE`)."""

    def __init__(self, rng: random.Random, contacts: int, cdc: bool = False) -> None:
        self.rng = rng
        self.cdc = cdc
        self.commits = 0  # CDC commitNumber: one per transaction, increasing
        self.cdc_drafts = 0
        self.records: list[Record] = []
        for c in range(contacts):
            self._add(Record(len(self.records), "hubspot", str(500_000 + c), c, f"h{c}"))
            if c % 2 == 0:
                sf = Record(len(self.records), "salesforce", f"0035g0000{c:06d}AAA", c, f"s{c}")
                sf.values = {
                    "FirstName": f"Sf{c}",
                    "LastName": f"Rec{c}",
                    "Email": f"c{c}.s0@chaos.example.org",
                    "Phone": "+44 20 7946 0000",
                    "Title": f"Title s{c}-0",
                    "Description": None,
                }
                self._add(sf)
        self.events: list[Event] = []
        self.ts = 0
        self.event_ids = 0
        self.notifications = 0
        self.invalid_phones = 0
        self.truth = Truth()
        self.last_edit: dict[int, float] = {}  # contact -> epoch s of its last CRM edit

    def _add(self, record: Record) -> None:
        self.records.append(record)

    def next_ts(self) -> int:
        self.ts = max(self.ts + 1, now_ms())
        return self.ts

    def _value(self, rec: Record, name: str) -> str:
        c, k, rng = rec.contact, rec.version, self.rng
        low = name.lower()
        if low in ("firstname",):
            return f"Fn{c}x{k}"
        if low in ("lastname",):
            return f"Ln{c}x{k}"
        if low == "email":
            return f"c{c}.{rec.tag}v{k}@chaos.example.org"
        if low == "phone":
            if rng.random() < 0.03:
                self.invalid_phones += 1
                return f"ask for {rec.tag} {k}"  # no digits: the mapping rejects it
            return f"+44 20 7946 {rng.randrange(10_000):04d}"
        if low in ("jobtitle", "title"):
            return f"Title {rec.tag}-{k}"
        if low == "company":
            return f"Company {rec.tag}-{k}"
        raise ValueError(name)

    def _grow_notes(self, rec: Record) -> str:
        rec.notes.append(f"{rec.tag}-n{len(rec.notes):03d}-{self.rng.randrange(16**4):04x}")
        return "\n".join(rec.notes)

    def sf_ready(self, rec: Record, now: float) -> bool:
        """May this Salesforce record be edited now (its last message acknowledged a while
        ago, so the product has taken it in before the next one)?"""
        if rec.last_event is None:
            return True
        last = self.events[rec.last_event]
        return last.acked and now - last.acked_at >= SF_EDIT_GAP_SECONDS

    def baseline(self) -> list[Event]:
        """One message per Salesforce record with its initial values (sent before the stream)."""
        out = []
        for rec in self.records:
            if rec.source != "salesforce":
                continue
            ts = self.next_ts()
            out.append(self._sf_event(rec, ts, [k for k, v in rec.values.items() if v]))
        return out

    def _cdc_event(
        self, rec: Record, ts: int, values: dict[str, str | None], sequence: int = 1
    ) -> Event:
        """One CDC change event; sequence 1 starts a new transaction (commitNumber)."""
        self.notifications += 1
        if sequence == 1:
            self.commits += 1
        uuid = f"chaos-cdc-{self.notifications:08d}"
        payload = {
            "uuid": uuid,
            "object_id": rec.object_id,
            "values": values,
            "transaction_key": f"chaos-tx-{self.commits:08d}",
            "sequence_number": sequence,
            "commit_number": self.commits,
        }
        fp = fingerprint("salesforce", SF_ORG, "cdc", uuid, rec.object_id)
        return self._event(rec, ts, values, fp, payload)

    def _sf_event(self, rec: Record, ts: int, changed: list[str], sequence: int = 1) -> Event:
        fields = dict(rec.values)
        if self.cdc:  # a change event carries only what changed
            values = {name: fields[name] for name in changed}
            event = self._cdc_event(rec, ts, values, sequence)
        else:
            self.notifications += 1
            nid = f"04l{self.notifications:012d}CHS"
            event = self._event(
                rec,
                ts,
                fields,
                fingerprint("salesforce", SF_ORG, nid),
                sf_notification(nid, rec.object_id, fields, ts),
            )
        self.truth.record_crm(event.key, "salesforce", rec.contact, rec.tag, fields, changed, ts)
        return event

    def edit(self, budget: int) -> list[Event]:
        """One CRM edit of a random record: 1..3 events (HubSpot) or 1 (Salesforce)."""
        rec = self.rng.choice(self.records)
        now = time.time()
        for _ in range(20):  # a Salesforce record edited moments ago: pick another
            if rec.source == "hubspot" or self.sf_ready(rec, now):
                break
            rec = self.rng.choice(self.records)
        else:
            rec = self.rng.choice([r for r in self.records if r.source == "hubspot"])
        rec.version += 1
        self.last_edit[rec.contact] = now
        ts = self.next_ts()
        if rec.source == "hubspot":
            n = min(budget, self.rng.choices((1, 2, 3), (5, 3, 2))[0])
            props: list[str] = []
            while len(props) < n:
                prop = self.rng.choices(HS_PROPS, HS_WEIGHTS)[0]
                if prop not in props:
                    props.append(prop)
            out = []
            for prop in props:
                value = self._grow_notes(rec) if prop == "leadlex_notes" else self._value(rec, prop)
                rec.values[prop] = value
                self.event_ids += 1
                payload = {
                    "eventId": self.event_ids,
                    "subscriptionId": SUBSCRIPTION_ID,
                    "portalId": PORTAL,
                    "appId": 909091,
                    "occurredAt": ts,
                    "subscriptionType": "contact.propertyChange",
                    "attemptNumber": 0,
                    "objectId": int(rec.object_id),
                    "propertyName": prop,
                    "propertyValue": value,
                    "changeSource": "CRM_UI",
                }
                fp = hubspot_change_fingerprint(
                    str(PORTAL), "contact", "update", rec.object_id, ts, {prop: value}
                )
                out.append(self._event(rec, ts, {prop: value}, fp, payload))
            after = dict(rec.values)  # full_name is composed from both parts after the edit
            for event, prop in zip(out, props, strict=True):
                self.truth.record_crm(event.key, "hubspot", rec.contact, rec.tag, after, [prop], ts)
            return out
        names: list[str] = []
        for _ in range(self.rng.choice((1, 2, 3))):
            name = self.rng.choices(SF_FIELDS, SF_WEIGHTS)[0]
            if name not in names:
                names.append(name)
        for name in names:
            rec.values[name] = (
                self._grow_notes(rec) if name == "Description" else self._value(rec, name)
            )
        changed = [n for n in names if rec.values.get(n) is not None]
        if self.cdc and "Title" in changed and self.rng.random() < CDC_DRAFT_SHARE:
            self.cdc_drafts += 1
            draft = self._cdc_event(rec, ts, {"Title": f"{rec.values['Title']} draft"})
            return [draft, self._sf_event(rec, ts, changed, sequence=2)]
        return [self._sf_event(rec, ts, changed)]

    def _event(
        self, rec: Record, ts: int, fields: dict[str, str | None], fp: str, payload: Any
    ) -> Event:
        event = Event(len(self.events), rec.source, rec.idx, ts, fields, fp, payload)
        self.events.append(event)
        rec.last_event = event.key
        return event


def sf_notification(nid: str, object_id: str, fields: dict[str, str | None], ts: int) -> str:
    parts = [f"<sf:Id>{object_id}</sf:Id>"]
    for name, value in sorted(fields.items()):
        if value is None:
            parts.append(f'<sf:{name} xsi:nil="true"/>')
        else:
            parts.append(f"<sf:{name}>{escape(value)}</sf:{name}>")
    stamp = iso_ms(ts)
    parts.append(f"<sf:LastModifiedDate>{stamp}</sf:LastModifiedDate>")
    parts.append(f"<sf:SystemModstamp>{stamp}</sf:SystemModstamp>")
    return (
        f"<Notification><Id>{nid}</Id>"
        '<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(parts)
        + "</sObject></Notification>"
    )


def sf_envelope(notifications: list[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{SF_ORG}</OrganizationId>"
        "<ActionId>04k5g000000ChAoSAA</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://chaos.example.invalid/services/Soap/c/61.0</EnterpriseUrl>"
        "<PartnerUrl>https://chaos.example.invalid/services/Soap/u/61.0</PartnerUrl>"
        + "".join(notifications)
        + "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


# ==============================================================================================
# delivery: signed requests from a few sender threads, retried like a CRM retries
# ==============================================================================================
@dataclass
class Req:
    id: int
    source: str
    body: bytes
    events: list[int]
    kind: str  # "new" | "duplicate" | "resend"
    attempts: int = 0


class Sender:
    """Posts requests to the receiver; records what it acknowledged; retries the rest."""

    RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
    MAX_ATTEMPTS = 60

    def __init__(
        self,
        world: World,
        receiver_url: str,
        public_base: str,
        rng: random.Random,
        threads: int = 4,
    ) -> None:
        self.world = world
        self.url = receiver_url
        self.public_base = public_base
        self.rng = rng
        self.http = httpx.Client(timeout=httpx.Timeout(15, connect=3), trust_env=False)
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, Req]] = []
        self.seq = 0
        self.inflight = 0
        self.stopping = False
        self.give_up_at = float("inf")
        self.stats: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.rejections: list[dict[str, Any]] = []
        self.threads = [
            threading.Thread(target=self._loop, name=f"sender-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    # ---- queue ---------------------------------------------------------------------------
    def submit(self, req: Req, at: float | None = None) -> None:
        with self.cond:
            self.seq += 1
            heapq.heappush(self.heap, (at or time.time(), self.seq, req))
            self.cond.notify()

    def next_id(self) -> int:
        with self.cond:
            self.seq += 1
            return self.seq

    def idle(self) -> bool:
        with self.cond:
            return not self.heap and self.inflight == 0

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout=20)
        self.http.close()

    def _take(self) -> Req | None:
        with self.cond:
            while not self.stopping:
                now = time.time()
                if self.heap and self.heap[0][0] <= now:
                    self.inflight += 1
                    return heapq.heappop(self.heap)[2]
                wait = min(0.2, self.heap[0][0] - now) if self.heap else 0.2
                self.cond.wait(timeout=max(0.005, wait))
            return None

    def _loop(self) -> None:
        while True:
            req = self._take()
            if req is None:
                return
            try:
                self._deliver(req)
            except Exception as exc:  # a harness bug must not silently stop a sender
                self.stats["sender_errors"] += 1
                self.rejections.append({"request": req.id, "error": repr(exc)})
            finally:
                with self.cond:
                    self.inflight -= 1

    # ---- one delivery --------------------------------------------------------------------
    def _headers(self, req: Req) -> tuple[str, dict[str, str]]:
        if req.source == "hubspot":
            path = "/webhooks/hubspot"
            stamp = str(now_ms())
            message = b"POST" + (self.public_base + path).encode() + req.body + stamp.encode()
            digest = hmac.new(HUBSPOT_SECRET.encode(), message, hashlib.sha256).digest()
            return path, {
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
                "X-HubSpot-Request-Timestamp": stamp,
            }
        return f"/webhooks/salesforce?token={SF_TOKEN}", {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '""',
        }

    def _deliver(self, req: Req) -> None:
        req.attempts += 1
        self.stats["requests"] += 1
        path, headers = self._headers(req)
        try:
            resp = self.http.post(self.url + path, content=req.body, headers=headers)
            status = resp.status_code
            acked = 200 <= status < 300 and (
                req.source != "salesforce" or b"<Ack>true</Ack>" in resp.content
            )
            self.statuses[str(status)] += 1
        except httpx.HTTPError as exc:
            status, acked = 0, False
            self.statuses[type(exc).__name__] += 1
        if acked:
            self.stats["requests_acked"] += 1
            first = False
            with self.cond:
                for key in req.events:
                    event = self.world.events[key]
                    first = first or not event.acked
                    if not event.acked:
                        event.acked_at = time.time()
                    event.acked = True
            if req.kind == "new" and self.rng.random() < 0.03:
                # The CRM did not see our 200 (or just resends): the same body again later.
                self.stats["batches_resent"] += 1
                again = Req(self.next_id(), req.source, req.body, req.events, "resend")
                self.submit(again, time.time() + self.rng.uniform(1, 10))
            return
        if status == 0 or status in self.RETRY_STATUSES:
            if req.attempts >= self.MAX_ATTEMPTS or time.time() > self.give_up_at:
                self.stats["requests_given_up"] += 1
                return
            self.stats["requests_retried"] += 1
            delay = min(5.0, 0.25 * 2 ** min(req.attempts, 6)) * self.rng.uniform(0.5, 1.0)
            self.submit(req, time.time() + delay)
            return
        self.stats["requests_rejected"] += 1
        self.rejections.append(
            {"request": req.id, "source": req.source, "status": status, "answer": resp.text[:300]}
        )


class Journal:
    """HubSpot's Webhooks Journal for the run: the HubSpot simulator (in this process, as
    the CRM is), read by the product's poller (a beat task on the workers, so worker kills
    kill it mid-batch). An event recorded in the journal counts as acknowledged: HubSpot
    holds it, and the product must read it from there."""

    CLIENT_ID = "chaos-journal-client"

    def __init__(self, world: World) -> None:
        self.world = world
        self.server = HubSpotSandboxServer(
            HubSpotSandboxConfig(
                client_id=self.CLIENT_ID, client_secret=HUBSPOT_SECRET, portal_id=PORTAL
            )
        ).start()
        self.state = self.server.state
        self.events = 0
        for sub_type, actions in (
            ("OBJECT", ["CREATE", "UPDATE", "DELETE", "MERGE", "RESTORE"]),
            ("GDPR_PRIVACY_DELETION", ["GDPR_DELETE"]),
        ):
            self.state.upsert_subscription(
                {"subscriptionType": sub_type, "objectTypeId": "0-1", "actions": actions}
            )

    def env(self) -> dict[str, str]:
        return {
            "HUBSPOT_JOURNAL": "on",
            "HUBSPOT_CLIENT_ID": self.CLIENT_ID,
            "HUBSPOT_API_BASE_URL": self.server.url,
            "HUBSPOT_JOURNAL_POLL_SECONDS": "1",
            "HUBSPOT_JOURNAL_START": "earliest",
            "HUBSPOT_JOURNAL_BATCH_SIZE": "10",
        }

    def record(self, keys: list[int], sender: Sender) -> None:
        changes = []
        for key in keys:
            event = self.world.events[key]
            rec = self.world.records[event.record]
            changes.append(
                Change(PORTAL, int(rec.object_id), "UPDATE", event.ts, dict(event.fields))
            )
        self.state.record(changes)
        self.events += len(keys)
        with sender.cond:
            for key in keys:
                self.world.events[key].delivered += 1
                self.world.events[key].acked = True

    def caught_up(self, url: str) -> bool:
        """The poller's stored offset is the newest journal entry."""
        with self.state.lock:
            newest = self.state.entries[-1].offset if self.state.entries else None
        if newest is None:
            return True
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            stored = client.hget("lls:journal:hubspot:global", "offset")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return stored is not None and stored.decode() == newest

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            stats = dict(self.state.stats)
        return {
            "events_recorded": self.events,
            "entries": stats.get("journal_entries", 0),
            "downloads": stats.get("downloads", 0),
            "tokens_issued": stats.get("tokens_issued", 0),
        }

    def stop(self) -> None:
        self.server.stop()


class Stream:
    """Releases generated events into requests at a steady rate, out of order, with dups."""

    def __init__(
        self,
        world: World,
        sender: Sender,
        rng: random.Random,
        prof: Profile,
        journal: Journal | None = None,
        cdc: CdcSide | None = None,
    ) -> None:
        self.world = world
        self.sender = sender
        self.rng = rng
        self.prof = prof
        self.journal = journal
        self.cdc = cdc  # Salesforce edits go out as CDC events (stored = acknowledged)
        self.pending: list[tuple[float, int, int, int]] = []  # (release_at, seq, key, attempt)
        self.seq = 0
        self.stats: Counter[str] = Counter()

    def _schedule(self, key: int, at: float, attempt: int) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (at, self.seq, key, attempt))

    def generate(self, elapsed: float) -> None:
        target = min(self.prof.events, int(self.prof.events * elapsed / self.prof.seconds))
        now = time.time()
        while len(self.world.events) < target:
            for event in self.world.edit(self.prof.events - len(self.world.events)):
                if self.cdc is not None and event.source == "salesforce":
                    self.publish([event])
                    continue
                roll = self.rng.random()
                if event.source == "salesforce":  # in order per record (see World)
                    delay = 0.0
                elif roll < 0.06:  # late: an older value arrives well after newer ones
                    delay = self.rng.uniform(8, 20)
                    self.stats["late"] += 1
                elif roll < 0.20:
                    delay = self.rng.uniform(2, 6)
                else:
                    delay = self.rng.uniform(0, 1.5)
                self._schedule(event.key, now + delay, 0)

    def publish(self, events: list[Event]) -> None:
        """Salesforce stores CDC events in commit order: each counts as acknowledged once
        stored (the subscriber must bring it in, whatever happens to it)."""
        assert self.cdc is not None
        for event in events:
            p = dict(event.payload)
            self.cdc.emit(p.pop("uuid"), p.pop("object_id"), p.pop("values"), event.ts, **p)
            with self.sender.cond:
                event.acked, event.acked_at, event.delivered = True, time.time(), 1

    def release(self) -> None:
        now = time.time()
        ready: dict[str, list[tuple[int, int]]] = defaultdict(list)
        while self.pending and self.pending[0][0] <= now:
            _, _, key, attempt = heapq.heappop(self.pending)
            ready[self.world.events[key].source].append((key, attempt))
            if attempt == 0 and self.rng.random() < 0.05:  # delivered twice
                self.stats["duplicates"] += 1
                self._schedule(key, now + self.rng.uniform(0.5, 8), attempt + 1)
        for source, items in ready.items():
            self.rng.shuffle(items)
            size = 50 if source == "hubspot" else 5
            for i in range(0, len(items), size):
                self._request(source, items[i : i + size])

    def _request(self, source: str, items: list[tuple[int, int]]) -> None:
        events = self.world.events
        if source == "hubspot" and self.journal is not None:
            roll = self.rng.random()
            if roll < 2 * self.prof.journal_share:  # recorded in HubSpot's journal
                self.journal.record([k for k, _ in items], self.sender)
                self.stats["journal_requests"] += 1
                if roll < self.prof.journal_share:  # ... and not pushed as a webhook
                    self.stats["journal_only_requests"] += 1
                    return
        if source == "hubspot":
            body = json.dumps(
                [dict(events[k].payload, attemptNumber=a) for k, a in items],
                separators=(",", ":"),
            ).encode()
        else:
            body = sf_envelope([events[k].payload for k, _ in items])
        for key, _ in items:
            events[key].delivered += 1
        kind = "duplicate" if any(a for _, a in items) else "new"
        self.stats["requests_built"] += 1
        self.sender.submit(Req(self.sender.next_id(), source, body, [k for k, _ in items], kind))

    def done(self) -> bool:
        return len(self.world.events) >= self.prof.events and not self.pending


# ==============================================================================================
# a third party: another LeadLex user editing the same contacts through the API
# ==============================================================================================
class ThirdParty(threading.Thread):
    """Edits contacts directly in LeadLex with another key, like a colleague in LeadLex's UI.

    At most THIRD_PARTY_PER_WINDOW calls in any rate window (the simulator's limit is raised
    by as much, so the workers' budget is theirs). Each write carries a unique
    Idempotency-Key "tp-..." by which the simulator's log tells whether and when it was
    applied. Writes: a notes line appended (any contact, any time: the product must neither
    lose its own notes nor append them twice around it), `linkedin_url` (no CRM maps it
    here: the product must leave it alone), and a mapped field (`THIRD_PARTY_FIELDS`) of a
    contact at rest: no CRM edit of it for QUIET_SECONDS, every event of it acknowledged,
    and LeadLex already holding what the CRMs wrote. A later CRM edit of that field must
    win; nothing older may overwrite it.
    """

    def __init__(
        self, world: World, sim: Simulator, contact_ids: list[str], prof: Profile, seed: int
    ) -> None:
        super().__init__(name="third-party", daemon=True)
        self.world = world
        self.sim = sim
        self.contact_ids = contact_ids
        self.prof = prof
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        self.http = httpx.Client(
            base_url=sim.base_url,
            timeout=httpx.Timeout(30, connect=3),  # > late_apply_seconds: it waits
            trust_env=False,
            headers={"Authorization": f"Bearer {THIRD_PARTY_KEY}"},
        )
        self.stats: Counter[str] = Counter()
        self.n = 0

    def run(self) -> None:
        interval = self.prof.window / THIRD_PARTY_PER_WINDOW + 0.5
        while not self.stop_event.wait(interval):
            try:
                self.write_once()
            except Exception as exc:  # a harness problem is counted, never fatal
                self.stats[f"error:{type(exc).__name__}"] += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)
        self.http.close()

    def write_once(self) -> None:
        self.n += 1
        c = self.rng.randrange(len(self.contact_ids))
        roll = self.rng.random()
        if roll < 0.45:
            body = {"notes": f"{THIRD_PARTY_PREFIX}c{c}-n{self.n}-{self.rng.randrange(16**4):04x}"}
        elif roll < 0.65:
            body = {"linkedin_url": f"https://www.linkedin.com/in/chaos-c{c}-{self.n}"}
        else:
            picked = self._at_rest()
            if picked is None:
                self.stats["no_contact_at_rest"] += 1
                return
            c, name = picked
            body = {name: self._value(c, name)}
        key = f"{THIRD_PARTY_PREFIX}{self.n}-{self.rng.randrange(16**8):08x}"
        self.world.truth.record_third_party(ThirdPartyWrite(key, c, body, time.time()))
        try:
            resp = self.http.patch(
                f"/v1/contacts/{self.contact_ids[c]}", json=body, headers={"Idempotency-Key": key}
            )
            self.stats[f"status:{resp.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.stats[f"status:{type(exc).__name__}"] += 1
        self.stats["writes"] += 1

    def _value(self, c: int, name: str) -> str:
        if name == "phone":
            return str(normalize_phone(f"+44 20 7946 {9000 + self.n % 1000:04d}"))
        return f"Third party {name} c{c}-{self.n}"

    def _at_rest(self) -> tuple[int, str] | None:
        """A (contact, field) no CRM touches right now and LeadLex holds as the CRMs wrote."""
        now = time.time()
        events = self.world.events
        for _ in range(10):
            c = self.rng.randrange(len(self.contact_ids))
            if now - self.world.last_edit.get(c, 0.0) < QUIET_SECONDS:
                continue
            mine = [e for e in events if self.world.records[e.record].contact == c]
            if any(not e.acked for e in mine):
                continue
            name = self.rng.choice(THIRD_PARTY_FIELDS)
            writes = [
                w
                for e in mine
                for w in self.world.truth.crm.get(e.key, [])
                if w.field == name and w.valid
            ]
            if not writes:
                continue
            want = max(writes, key=lambda w: w.ts).value
            if self.sim.contact(self.contact_ids[c]).get(name) == want:
                return c, name
        return None


# ==============================================================================================
# the chaos: worker kills, a Redis restart, simulator faults
# ==============================================================================================
class Workers:
    """Two Celery workers (threads pool) and one beat, restartable, with a supervisor.

    The supervisor does what docker-compose's `restart: unless-stopped` (or a Procfile
    platform) does in production: a worker or beat that exits by itself is started again.
    Such exits are recorded (`exits`) and reported apart from the invariant violations."""

    def __init__(self, procs: Procs, env: dict[str, str], workdir: Path) -> None:
        self.procs = procs
        self.env = env
        self.workdir = workdir
        self.slots: list[Proc | None] = [None, None]
        self.incarnations = [0, 0]
        self.beat: Proc | None = None
        self.beats = 0
        self.lock = threading.Lock()  # one start / kill sequence at a time
        self.exits: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.stall_every = 0
        self.stall_seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, slot: int) -> Proc:
        """Worker 1 runs the stalling app (tests/seams/stalling_worker.py: one flush in
        `stall_every` sleeps past its lease before the PATCH); worker 2's wall clock runs
        SKEW_SECONDS ahead (tests/seams: clock offset). Both keep their role on restart."""
        self.incarnations[slot] += 1
        name = f"worker{slot + 1}-{self.incarnations[slot]}"
        env = dict(self.env)
        app = "worker"
        if slot == 0:
            app = "tests.seams.stalling_worker"
            path = env.get("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
            env["LLS_TEST_STALL_EVERY"] = str(self.stall_every)
            env["LLS_TEST_STALL_SECONDS"] = f"{self.stall_seconds:g}"
        else:
            env.update(clock_offset_env(SKEW_SECONDS, env))
        argv = [
            venv_bin("celery"),
            "-A",
            app,
            "worker",
            "-Q",
            ",".join(QUEUES),
            "-P",
            "threads",
            "-c",
            "4",
            "-n",
            f"chaos-{name}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        proc = self.procs.start(name, argv, env)
        self.slots[slot] = proc

        def ready() -> bool:
            if not proc.alive():
                raise HarnessError(f"{name} exited: {proc.tail()}")
            return b"ready." in proc.log_path.read_bytes()

        wait_until(ready, 90, f"{name} ready", 0.2)
        return proc

    def start_beat(self) -> None:
        self.beats += 1
        argv = [
            venv_bin("celery"),
            "-A",
            "worker",
            "beat",
            "-l",
            "WARNING",
            "-s",
            str(self.workdir / "celerybeat-schedule"),
        ]
        self.beat = self.procs.start(f"beat-{self.beats}", argv, self.env)

    def crash(self, slot: int, down_s: float) -> tuple[str, str]:
        """SIGKILL a worker's process group, wait `down_s`, start a new one: (old, new) names."""
        with self.lock:
            proc = self.slots[slot]
            name = proc.name if proc else "?"
            if proc is not None:
                proc.kill()
            time.sleep(down_s)
            return name, self.start(slot).name

    # ---- the supervisor ------------------------------------------------------------------
    def supervise_in_background(self) -> None:
        self._thread = threading.Thread(target=self._supervise_loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop_supervising(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _supervise_loop(self) -> None:
        while not self._stop.wait(0.5) and not self.procs.closing:
            try:
                self.supervise()
            except HarnessError as exc:
                self.exits.append({"process": "supervisor", "error": str(exc)})

    def supervise(self) -> None:
        if not self.lock.acquire(blocking=False):
            return  # the chaos is killing / restarting one right now
        try:
            for slot, proc in enumerate(self.slots):
                if proc is not None and not proc.alive():
                    self._record_exit(proc)
                    self.start(slot)
            if self.beat is not None and not self.beat.alive():
                self._record_exit(self.beat)
                self.start_beat()
        finally:
            self.lock.release()

    def _record_exit(self, proc: Proc) -> None:
        cause = ""
        with contextlib.suppress(OSError):
            for line in proc.log_path.read_text(errors="replace").splitlines():
                if '"level":"critical"' in line or "Unrecoverable error" in line:
                    with contextlib.suppress(ValueError):
                        line = str(json.loads(line).get("msg", line))
                    cause = line[:300]
        entry: dict[str, Any] = {
            "process": proc.name,
            "t": round(time.time() - self.t0, 2),
            "exit_code": proc.popen.returncode,
            "cause": cause or proc.tail(300),
            "restarted": True,
        }
        self.exits.append(entry)
        log(f"{proc.name} exited by itself ({entry['cause'][:120]}); restarting it")


class Chaos(threading.Thread):
    """Runs the fault schedule (times relative to the start of the stream)."""

    def __init__(
        self,
        prof: Profile,
        rng: random.Random,
        sim: Simulator,
        rds: ChaosRedis,
        workers: Workers,
        t0: float,
        cdc: CdcSide | None = None,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.cdc = cdc
        self.prof = prof
        self.rng = rng
        self.sim = sim
        self.rds = rds
        self.workers = workers
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.windows: dict[str, tuple[float, float]] = {}  # name -> (start, end) epoch s
        self.marks: dict[str, float] = {}
        self.sentinel_ok: bool | None = None
        self.resume_after_redis: list[float | None] = []  # seconds per Redis restart
        self.cancel = threading.Event()
        s = prof.seconds
        plan: list[tuple[float, str, Callable[[], dict[str, Any]]]] = [
            (0.08 * s, "simulator 5xx 20% + drop-after-apply 5% on", self.faults_on),
            (0.25 * s, "429 burst with Retry-After", self.burst_429),
            (0.45 * s, "redis kill -9 + restart from AOF", self.restart_redis),
            (0.60 * s, "simulator per-minute limit lowered", self.lower_limit),
            (
                0.60 * s + max(prof.window * 1.2, 0.12 * s),
                "simulator limit restored",
                self.restore_limit,
            ),
            (0.78 * s, "simulator 5xx + drop off", self.faults_off),
            (0.15 * s, "simulator applies writes late (after the client gave up)", self.late),
            (0.70 * s, "simulator applies writes late, answering 503 at once", self.late_503),
        ]
        kills = (
            [0.3]
            if prof.worker_kills == 1
            else [0.12 + 0.7 * i / max(1, prof.worker_kills - 1) for i in range(prof.worker_kills)]
        )
        for frac in kills:
            at = max(1.0, (frac + rng.uniform(-0.03, 0.03)) * s)
            plan.append((at, "worker SIGKILL + restart", self.kill_worker))
        if cdc is not None:
            plan.append((0.2 * s, "cdc stream broken (fail_after_events=3)", cdc.break_stream))
            for frac in (0.35, 0.7):
                at = (frac + rng.uniform(-0.03, 0.03)) * s
                plan.append((at, "cdc subscriber SIGKILL + restart", self.kill_subscriber))
        self.plan = sorted(plan, key=lambda p: p[0])

    def rel(self, moment: float | None = None) -> float:
        return round((moment or time.time()) - self.t0, 2)

    def run(self) -> None:
        for at, name, action in self.plan:
            while not self.cancel.is_set() and time.time() < self.t0 + at:
                self.cancel.wait(0.1)
            if self.cancel.is_set():
                return
            started = time.time()
            try:
                detail = action()
            except Exception as exc:
                self.errors.append(f"{name}: {exc!r}")
                detail = {"error": repr(exc)}
            self.log.append(
                {
                    "t": self.rel(started),
                    "fault": name,
                    "took_s": round(time.time() - started, 2),
                    **detail,
                }
            )
            log(f"fault at +{self.rel(started):.1f}s: {name} {detail}")

    # ---- actions -------------------------------------------------------------------------
    def faults_on(self) -> dict[str, Any]:
        self.sim.faults(error_rate_5xx=0.2, drop_after_apply_rate=0.05)
        self.marks["faults_on"] = time.time()
        return {"error_rate_5xx": 0.2, "drop_after_apply_rate": 0.05}

    def faults_off(self) -> dict[str, Any]:
        self.sim.faults(error_rate_5xx=0.0, drop_after_apply_rate=0.0)
        self.marks["faults_off"] = time.time()
        return {}

    def late(self) -> dict[str, Any]:
        # Longer than LEADLEX_TIMEOUT_SECONDS: the worker gives up, then LeadLex applies it.
        wait = self.prof.timeout + 2
        n = self.prof.late_applies
        self.sim.faults(late_apply_seconds=wait, late_apply_answer="timeout", late_apply_writes=n)
        return {"late_apply_seconds": wait, "answer": "timeout", "writes": n}

    def late_503(self) -> dict[str, Any]:
        wait = self.prof.timeout + 2
        n = self.prof.late_applies
        self.sim.faults(late_apply_seconds=wait, late_apply_answer="error", late_apply_writes=n)
        return {"late_apply_seconds": wait, "answer": "error", "writes": n}

    def burst_429(self) -> dict[str, Any]:
        n, wait = 6, 3
        self.marks["burst_429"] = time.time()
        self.sim.faults(force_429=n, force_429_retry_after_seconds=wait)
        return {"force_429": n, "retry_after_s": wait}

    def lower_limit(self) -> dict[str, Any]:
        low = max(1, self.prof.rate // 4)
        # Marked before the call: the first 429s may come before the call returns.
        self.windows["lowered_limit"] = (time.time(), float("inf"))
        self.sim.config(per_minute=low)
        return {"per_minute": low, "workers_per_minute": self.prof.rate}

    def restore_limit(self) -> dict[str, Any]:
        self.sim.config(per_minute=self.prof.rate + THIRD_PARTY_PER_WINDOW)
        start = self.windows.get("lowered_limit", (time.time(), 0.0))[0]
        self.windows["lowered_limit"] = (start, time.time())
        return {"per_minute": self.prof.rate + THIRD_PARTY_PER_WINDOW}

    def kill_worker(self) -> dict[str, Any]:
        slot = self.rng.randrange(2)
        down = self.rng.uniform(1, 3)
        old, new = self.workers.crash(slot, down)
        return {"killed": old, "down_s": round(down, 1), "restarted_as": new}

    def kill_subscriber(self) -> dict[str, Any]:
        assert self.cdc is not None
        return self.cdc.crash(self.rng.uniform(1, 3))

    def restart_redis(self) -> dict[str, Any]:
        client = redis.Redis.from_url(self.rds.url, socket_timeout=5)
        token = f"{time.time():.6f}"
        try:  # an acknowledged write just before the crash must survive it
            client.set("chaos:sentinel", token)
        finally:
            client.close()
        killed_at = time.time()
        self.rds.kill9()
        time.sleep(1.0)
        self.rds.start()
        client = redis.Redis.from_url(self.rds.url, socket_timeout=5)
        try:
            got = client.get("chaos:sentinel")
        finally:
            client.close()
        self.sentinel_ok = got is not None and got.decode() == token
        self.windows["redis_down"] = (killed_at, time.time())
        restarted_at = time.time()
        resume = consumption_resumes(self.rds.url, RESUME_BOUND_SECONDS)
        self.resume_after_redis.append(resume)
        return {
            "down_s": round(restarted_at - killed_at, 2),
            "acked_write_survived": self.sentinel_ok,
            "consumption_resumed_s": None if resume is None else round(resume, 2),
        }


# A worker consumes again within this long after Redis answers again (issue 14): the
# consumer retries every 2 s; the rest is a loaded machine's slack.
RESUME_BOUND_SECONDS = 30.0


def consumption_resumes(url: str, bound: float) -> float | None:
    """Seconds until a worker takes and acks a probe message sent right after Redis came
    back, or None past `bound`. The probe is an ingest message naming no event (it does
    nothing) on the lightly used control queue, so a backlog on the others does not hide
    that the workers consume."""
    from celery import Celery

    from worker.celery_app import QUEUE_CONTROL

    sender = Celery(broker=url)
    client = redis.Redis.from_url(url, socket_timeout=5)
    start = time.monotonic()
    try:
        task_id = sender.send_task("leadlex_sync.ingest_batch", args=[[]], queue=QUEUE_CONTROL).id
        gone_since: float | None = None
        while time.monotonic() - start < bound:
            try:
                queued = any(task_id.encode() in m for m in client.lrange(QUEUE_CONTROL, 0, -1))
                held = any(task_id.encode() in m for m in client.hvals("unacked"))
            except redis.RedisError:
                queued = held = True
            if queued or held:
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since >= 0.3:  # not merely between pop and unacked
                return gone_since - start
            time.sleep(0.1)
        return None
    finally:
        client.close()
        sender.close()


# ==============================================================================================
# drain and reconcile
# ==============================================================================================
def backlog(client: redis.Redis) -> dict[str, int]:
    """What is still to do in the product's state and the broker."""
    unacked = client.hvals("unacked")
    return {
        "due": int(client.zcard("lls:due")),
        "ingest_queue": int(client.llen(QUEUE_INGEST)),
        "flush_queue": int(client.llen(QUEUE_FLUSH)),
        "unacked_ingest": sum(1 for m in unacked if b"leadlex_sync.ingest_batch" in m),
        "intents": sum(1 for _ in client.scan_iter(match="lls:intent:*", count=1000)),
        "staged": sum(1 for _ in client.scan_iter(match="lls:stage:*", count=1000)),
        "unlinked": sum(1 for _ in client.scan_iter(match="lls:unlinked:*", count=1000)),
        # acknowledged events the product has not yet confirmed as taken in (worker.state)
        "inbox": int(client.zcard("lls:inbox:at")),
    }


def drain(url: str, bound: float) -> tuple[bool, dict[str, int], float]:
    """Wait until the backlog is empty three checks in a row (at most `bound` seconds)."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    start = time.time()
    calm = 0
    last: dict[str, int] = {}
    try:
        while time.time() - start < bound:
            try:
                last = backlog(client)
            except redis.RedisError:
                calm = 0
                time.sleep(1)
                continue
            calm = calm + 1 if not any(last.values()) else 0
            if calm >= 3:
                return True, last, time.time() - start
            time.sleep(1)
        return False, last, time.time() - start
    finally:
        client.close()


def max_in_window(times: list[float], window: float) -> tuple[int, float]:
    """Most timestamps in any half-open interval [t, t + window), and where it starts."""
    best, at, j = 0, 0.0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        if j - i > best:
            best, at = j - i, start
    return best, at


def dead_letters(env: dict[str, str], workdir: Path) -> list[dict[str, Any]]:
    """The dead-letter store as an operator sees it: `leadlex-sync dlq list --json`."""
    done = subprocess.run(
        [venv_bin("leadlex-sync"), "dlq", "list", "--json"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"dlq list failed: {done.stderr[-1000:]}")
    return list(json.loads(done.stdout or "[]"))


def reconcile(
    prof: Profile,
    world: World,
    contact_ids: list[str],
    sim: Simulator,
    redis_url: str,
    chaos: Chaos,
    env: dict[str, str],
    workdir: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The verdict, from the generator's own truth and what LeadLex (the simulator) holds;
    the product's Redis is read only to report, never to decide (bench/chaos_truth.py)."""
    violations: list[dict[str, Any]] = []
    contacts = sim.contacts()
    log_entries = sim.requests()
    letters = dead_letters(env, workdir)
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    try:
        acked = [e for e in world.events if e.acked]
        unacked = [e for e in world.events if not e.acked]
        # Reported only: acknowledged events the product's dedupe ledger does not know.
        pipe = client.pipeline(transaction=False)
        for event in acked:
            pipe.exists(f"lls:seen:{event.fp}")
        not_in_ledger = sum(1 for seen in pipe.execute() if not seen)
        state = backlog(client)
        counters = {k.decode(): int(v) for k, v in client.hgetall("lls:metrics:counters").items()}
    finally:
        client.close()

    # 1. fields and notes against the truth
    truth_report, truth_violations = reconcile_truth(
        world.truth,
        {e.key for e in acked},
        {e.key for e in unacked},
        contact_ids,
        contacts,
        log_entries,
        letters,
        (*LEADLEX_FIELDS, "linkedin_url"),
    )
    violations += truth_violations

    # 2. calls and the rate limit, from the simulator's log without the third party's calls
    _tp_writes, _tp_lines, tp_entries = third_party_outcomes(world.truth, log_entries)
    tp_seqs = {e["seq"] for e in tp_entries}
    api = sorted((e for e in log_entries if e["seq"] not in tp_seqs), key=lambda e: e["ts"])
    times = [float(e["ts"]) for e in api]
    peak, peak_at = max_in_window(times, prof.window)
    counted = [float(e["ts"]) for e in api if e["status"] != 429]
    peak_counted, _ = max_in_window(counted, prof.window)
    if peak > prof.rate:
        violations.append(
            {
                "check": "rate_limit_exceeded",
                "window_s": prof.window,
                "limit": prof.rate,
                "requests": peak,
                "at": chaos.rel(peak_at),
            }
        )
    low_start, low_end = chaos.windows.get("lowered_limit", (0.0, 0.0))
    in_lowered = [
        e
        for e in api
        if e["status"] == 429 and low_start <= e["ts"] <= low_end + prof.window + SAFETY_SECONDS + 1
    ]
    n429 = sum(1 for e in api if e["status"] == 429)
    forced = 6 if "burst_429" in chaos.marks else 0
    other_429 = n429 - len(in_lowered)
    if other_429 > forced:
        violations.append({"check": "unexpected_429", "count": other_429 - forced})
    pause_ignored = 0
    burst = chaos.marks.get("burst_429")
    if burst is not None:
        first = next((e for e in api if e["status"] == 429 and e["ts"] >= burst), None)
        if first is not None:
            t1 = float(first["ts"])
            pause_ignored = sum(1 for e in api if t1 + 0.5 < e["ts"] < t1 + 3 - 0.1)
            if pause_ignored:
                violations.append(
                    {"check": "retry_after_not_honoured", "requests_during_pause": pause_ignored}
                )
    changed_contacts = {world.records[e.record].contact for e in acked}
    by_method = Counter(f"{e['method']} {e['status']}" for e in api)

    # 3. the Redis restart lost nothing acknowledged; the system drained
    if chaos.sentinel_ok is False:
        violations.append({"check": "redis_lost_acknowledged_write"})
    for resume in chaos.resume_after_redis:
        if resume is None:
            violations.append({"check": "resume_after_redis", "bound_s": RESUME_BOUND_SECONDS})
    leftovers = {k: v for k, v in state.items() if v}
    if leftovers:
        violations.append({"check": "not_drained", **leftovers})
    if unacked:
        # Not a product violation by itself, but the run could not prove much about them.
        violations.append({"check": "events_never_acknowledged", "count": len(unacked)})

    dl_reasons = Counter(str(d.get("reason")) for d in letters)
    report = {
        "calls": {
            "total": len(api),
            "min_possible": len(changed_contacts),
            "ratio": round(len(api) / max(1, len(changed_contacts)), 2),
            "patches": sum(1 for e in api if e["method"] == "PATCH"),
            "patches_applied": sum(1 for e in api if e["method"] == "PATCH" and e["applied"]),
            "applied_late": sum(1 for e in api if e.get("late")),
            "gets": sum(1 for e in api if e["method"] == "GET"),
            "answers_dropped": sum(1 for e in api if e["dropped"]),
            "by_method_status": dict(sorted(by_method.items())),
            "third_party_calls": len(tp_entries),
            "429": {
                "total": n429,
                "forced_burst": min(forced, other_429),
                "during_lowered_limit": len(in_lowered),
                "requests_during_retry_after_pause": pause_ignored,
            },
        },
        "rate": {
            "limit_per_window": prof.rate,
            "window_s": prof.window,
            "max_requests_in_any_window": peak,
            "max_counted_non_429_in_any_window": peak_counted,
        },
        "dead_letters": dict(sorted(dl_reasons.items())),
        "checked": {
            "acked_events": len(acked),
            "contacts": len(contact_ids),
            "invalid_phones_generated": world.invalid_phones,
            **truth_report,
        },
        "product_state_after_drain": state,
        # reported, not judged: the verdict comes from LeadLex's state and the truth
        "product_diagnostics": {
            "acked_events_not_in_dedupe_ledger": not_in_ledger,
            # events the product's inbox sweep had to enqueue again (lost by the broker)
            "events_recovered": sum(
                v for k, v in counters.items() if k.startswith('["events_recovered"')
            ),
            # the promises at work: fenced-off flush steps, surfaced notes, lapsed grants
            **{
                name: sum(v for k, v in counters.items() if k.startswith(f'["{name}"'))
                for name in ("flushes_fenced", "notes_uncertain", "budget_grants_lapsed")
            },
        },
    }
    return report, violations


# ==============================================================================================
# the run
# ==============================================================================================
def link_contacts(world: World, contact_ids: list[str], env: dict[str, str], workdir: Path) -> None:
    path = workdir / "links.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "account", "object_id", "leadlex_id"])
        for rec in world.records:
            writer.writerow([rec.source, "", rec.object_id, contact_ids[rec.contact]])
    done = subprocess.run(
        [venv_bin("leadlex-sync"), "links", "import", str(path)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise HarnessError(f"links import failed: {done.stderr[-1000:]}")


def run(prof: Profile, workdir: Path, procs: Procs) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t_start = time.time()
    rds = ChaosRedis(procs, workdir / "redis")
    rds.start()
    sim = Simulator(procs, prof)
    sim.ready()
    contact_ids = sim.seed(prof.contacts)
    world = World(random.Random(prof.seed + 1), prof.contacts, cdc=prof.salesforce == "cdc")
    journal = Journal(world) if prof.journal_share > 0 else None

    web_port = free_port()
    public_base = f"http://127.0.0.1:{web_port}"
    common = {
        "REDIS_URL": rds.url,
        "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        "PUBLIC_BASE_URL": public_base,
        "SALESFORCE_ORG_IDS": SF_ORG,
        "SALESFORCE_TOKEN": SF_TOKEN,
        "VISIBILITY_TIMEOUT_SECONDS": str(prof.visibility),
        "LOG_FORMAT": "json",
    }
    worker_env = child_env(
        {
            **common,
            "LEADLEX_API_KEY": API_KEY,
            "LEADLEX_BASE_URL": sim.base_url,
            "LEADLEX_RATE_PER_MINUTE": str(prof.rate),
            "LEADLEX_DAILY_LIMIT": "1000000",
            "LEADLEX_RATE_WINDOW_SECONDS": str(prof.window),
            "LEADLEX_TIMEOUT_SECONDS": f"{prof.timeout:g}",
            # The simulator's late applies land late_apply_seconds (timeout + 2 s) after
            # arrival: a write of unknown outcome is settled once that has passed.
            "NOTES_SETTLE_DELAY_SECONDS": f"{prof.settle_delay:g}",
            "LEADLEX_PATCH_IDEMPOTENCY": "honored" if prof.honor_idempotency_key else "unknown",
            "COALESCE_SECONDS": str(prof.coalesce),
            "FLUSH_LEASE_SECONDS": str(prof.lease),
            "CIRCUIT_PROBE_SECONDS": "2",
            "LOG_LEVEL": "INFO",
            **(journal.env() if journal is not None else {}),
        }
    )
    link_contacts(world, contact_ids, child_env(common), workdir)
    web = procs.start(
        "receiver",
        [
            venv_bin("gunicorn"),
            "-c",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{web_port}",
            "-w",
            "2",
            "webhook_app:create_app()",
        ],
        child_env({**common, "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING"}),
    )
    health = httpx.Client(timeout=2, trust_env=False)

    def web_up() -> bool:
        if not web.alive():
            raise HarnessError(f"receiver exited: {web.tail()}")
        try:
            return health.get(f"{public_base}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(web_up, 60, "receiver start", 0.2)
    health.close()
    workers = Workers(procs, worker_env, workdir)
    workers.stall_every = prof.stall_every
    workers.stall_seconds = prof.stall_seconds
    workers.start(0)
    workers.start(1)
    workers.start_beat()
    workers.supervise_in_background()
    cdc = None
    if prof.salesforce == "cdc":
        cdc = CdcSide(
            procs.start,
            [venv_bin("leadlex-sync"), "salesforce", "subscribe"],
            child_env({**common, "LOG_LEVEL": "INFO"}),
            SF_ORG,
        )
        cdc.start_subscriber()
    timings["startup_s"] = time.time() - t_start
    log(
        f"started in {timings['startup_s']:.1f}s: redis {rds.url}, simulator {sim.root}, "
        f"receiver {public_base}, logs in {workdir}"
    )

    # ---- Salesforce's first message per record, before the stream (see World) ---------------
    sender = Sender(world, public_base, public_base, random.Random(prof.seed + 2))
    stream = Stream(world, sender, random.Random(prof.seed + 3), prof, journal, cdc)
    t_base = time.time()
    base = world.baseline()
    if cdc is not None:
        stream.publish(base)
        wait_until(lambda: cdc.caught_up(rds.url), 60, "baseline read by the subscriber", 0.2)
    else:
        for i in range(0, len(base), 5):
            stream._request("salesforce", [(e.key, 0) for e in base[i : i + 5]])
    wait_until(lambda: all(e.acked for e in base), 60, "baseline acknowledged", 0.2)
    check = redis.Redis.from_url(rds.url, socket_timeout=10)
    try:
        wait_until(
            lambda: not any(backlog(check)[k] for k in ("ingest_queue", "unacked_ingest")),
            60,
            "baseline ingested",
            0.2,
        )
    finally:
        check.close()
    timings["baseline_s"] = time.time() - t_base

    # ---- the stream, with the chaos and a third party alongside -----------------------------
    t0 = workers.t0 = time.time()
    sender.give_up_at = t0 + prof.seconds + prof.sender_grace
    chaos = Chaos(prof, random.Random(prof.seed + 4), sim, rds, workers, t0, cdc)
    chaos.start()
    third = ThirdParty(world, sim, contact_ids, prof, prof.seed + 5)
    third.start()
    next_report = t0 + 15
    try:
        while time.time() < t0 + prof.seconds + prof.sender_grace:
            stream.generate(time.time() - t0)
            stream.release()
            if stream.done() and sender.idle() and not chaos.is_alive():
                break
            if time.time() >= next_report:
                acked = sum(1 for e in world.events if e.acked)
                log(
                    f"+{time.time() - t0:.0f}s events {len(world.events)} acked {acked} "
                    f"requests {sender.stats['requests']} retried "
                    f"{sender.stats['requests_retried']}"
                )
                next_report += 15
            time.sleep(0.05)
    finally:
        chaos.cancel.set()
        chaos.join(timeout=30)  # a restart in progress finishes; Procs refuses new ones later
        third.stop()
        sender.stop()
    timings["stream_s"] = time.time() - t0
    # Workers and beat are supervised; the receiver and the simulator must not die at all.
    unexpected_deaths = [p.name for p in (web, sim.proc) if not p.alive()]
    # Faults off (whatever the schedule got to), then let the system drain.
    sim.faults(error_rate_5xx=0.0, drop_after_apply_rate=0.0, force_429=0, late_apply_seconds=0)
    sim.config(per_minute=prof.rate + THIRD_PARTY_PER_WINDOW)
    log(
        f"stream done: {len(world.events)} events, "
        f"{sum(1 for e in world.events if e.acked)} acked; draining"
    )
    t_drain = time.time()
    if cdc is not None:  # the subscriber first reads everything Salesforce stored
        if not cdc.alive():
            unexpected_deaths.append("cdc-subscriber")
        with contextlib.suppress(HarnessError):  # else: acknowledged events not taken in
            wait_until(lambda: cdc.caught_up(rds.url), prof.drain_seconds / 2, "cdc", 0.5)
    if journal is not None:  # the poller must have read every entry before the drain counts
        # Not caught up in time: reported below as acknowledged events not taken in.
        with contextlib.suppress(HarnessError):
            wait_until(lambda: journal.caught_up(rds.url), prof.drain_seconds, "journal", 0.5)
    drained, left, _ = drain(rds.url, prof.drain_seconds)
    timings["drain_s"] = time.time() - t_drain
    workers.stop_supervising()
    log(f"drained={drained} in {timings['drain_s']:.1f}s {left}; reconciling")
    t_rec = time.time()
    report, violations = reconcile(
        prof, world, contact_ids, sim, rds.url, chaos, child_env(common), workdir
    )
    timings["reconcile_s"] = time.time() - t_rec
    if journal is not None:
        journal.stop()
    if cdc is not None:
        cdc.stop()
    for error in chaos.errors:
        violations.append({"check": "fault_injection_failed", "error": error})
    for rejection in sender.rejections:
        violations.append({"check": "request_rejected_by_receiver", **rejection})
    for name in unexpected_deaths:
        violations.append({"check": "process_died", "process": name})
    if not drained:
        violations.append({"check": "drain_timeout", "seconds": prof.drain_seconds, **left})
    timings["total_s"] = time.time() - t_start
    stalls = 0
    for proc in procs.all:
        if proc.name.startswith("worker1"):
            with contextlib.suppress(OSError):
                stalls += proc.log_path.read_text(errors="replace").count("stalls before its PATCH")
    report["product_diagnostics"]["flushes_stalled_by_the_seam"] = stalls
    deliveries = sum(e.delivered for e in world.events)
    return {
        "ok": not violations,
        "profile": "short" if prof.short else "full",
        "seed": prof.seed,
        "config": {
            "events": prof.events,
            "contacts": prof.contacts,
            "seconds": prof.seconds,
            "records": len(world.records),
            "rate_per_window": prof.rate,
            "window_s": prof.window,
            "coalesce_s": prof.coalesce,
            "visibility_timeout_s": prof.visibility,
            "flush_lease_s": prof.lease,
            "redis_appendfsync": "always",
            "simulator_expose_notes": False,
            "simulator_honor_idempotency_key": prof.honor_idempotency_key,
            "worker1_stalls_one_flush_in": prof.stall_every,
            "worker1_stall_s": prof.stall_seconds,
            "worker2_clock_offset_s": SKEW_SECONDS,
            "salesforce_source": prof.salesforce,
        },
        **(
            {"salesforce_cdc": {**cdc.stats(), "two_change_transactions": world.cdc_drafts}}
            if cdc is not None
            else {}
        ),
        "events": {
            "sent": len(world.events),
            "acked": sum(1 for e in world.events if e.acked),
            "unacked": sum(1 for e in world.events if not e.acked),
            "hubspot": sum(1 for e in world.events if e.source == "hubspot"),
            "salesforce": sum(1 for e in world.events if e.source == "salesforce"),
            "deliveries": deliveries,
            "duplicates": stream.stats["duplicates"],
            "late": stream.stats["late"],
            "requests": sender.stats["requests"],
            "requests_acked": sender.stats["requests_acked"],
            "requests_retried": sender.stats["requests_retried"],
            "batches_resent": sender.stats["batches_resent"],
            "answers": dict(sorted(sender.statuses.items())),
        },
        "journal": (
            {
                **journal.stats(),
                "requests": stream.stats["journal_requests"],
                "journal_only_requests": stream.stats["journal_only_requests"],
                "share": prof.journal_share,
            }
            if journal is not None
            else None
        ),
        "faults": chaos.log,
        "third_party": dict(sorted(third.stats.items())),
        # Exits nobody caused (restarted like a supervisor would): findings, not violations.
        "process_exits": workers.exits,
        "redis_resume_s": chaos.resume_after_redis,
        **report,
        "violation_count": len(violations),
        "violations": violations[:MAX_VIOLATIONS_SHOWN],
        "durations": {k: round(v, 1) for k, v in timings.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/chaos.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, help="CRM events to send (default 5000; short 400)")
    parser.add_argument("--contacts", type=int, help="LeadLex contacts (default 300; short 40)")
    parser.add_argument("--seconds", type=float, help="length of the stream (default 180; 40)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    parser.add_argument("--short", action="store_true", help="the CI version (~2 minutes)")
    parser.add_argument("--rate", type=int, help="per-window call limit (default 60; short 30)")
    parser.add_argument("--window", type=float, help="rate window in seconds (default 10)")
    parser.add_argument("--worker-kills", type=int, help="worker SIGKILLs (default 4; short 1)")
    parser.add_argument(
        "--journal-share",
        type=float,
        help="share of HubSpot requests sent via the Webhooks Journal only (as many more go "
        "both ways; default 0.25, 0 = webhooks only)",
    )
    parser.add_argument("--workdir", type=Path, help="where logs and Redis data go")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even on success")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    parser.add_argument(
        "--salesforce-source",
        choices=("outbound", "cdc"),
        default="outbound",
        help="Salesforce edits as SOAP outbound messages (default) or as CDC change events "
        "on the Pub/Sub simulator, read by `leadlex-sync salesforce subscribe`",
    )
    parser.add_argument(
        "--honor-idempotency-key",
        action="store_true",
        help="the simulator honours Idempotency-Key on PATCH/POST (default: ignores it)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prof = make_profile(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lls-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = Procs(workdir)

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGALRM:
            raise RunTimeout(f"the run exceeded its bound of {prof.hard_bound} s")
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C must stop it.
    signal.signal(signal.SIGINT, on_signal)
    signal.alarm(prof.hard_bound)
    log(
        f"seed {prof.seed}; {prof.events} events, {prof.contacts} contacts, "
        f"{prof.seconds:.0f}s stream; hard bound {prof.hard_bound}s; workdir {workdir}"
    )
    summary: dict[str, Any]
    code = 0
    try:
        summary = run(prof, workdir, procs)
        code = 0 if summary["ok"] else 1
    except KeyboardInterrupt:
        summary = {
            "ok": False,
            "seed": prof.seed,
            "error": "interrupted",
            "violations": [{"check": "interrupted"}],
        }
        code = 130
    except Exception as exc:
        summary = {
            "ok": False,
            "seed": prof.seed,
            "error": repr(exc),
            "violations": [{"check": "harness_error", "error": repr(exc)}],
        }
        code = 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup must finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
    keep = args.keep or code != 0
    summary["workdir"] = str(workdir) if keep else None
    text = json.dumps(summary, indent=2, default=str)
    if keep:
        (workdir / "summary.json").write_text(text)
    if args.out:
        args.out.write_text(text)
    if not keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(text, flush=True)
    log(
        f"{'PASS' if code == 0 else 'FAIL'} (exit {code})"
        + (f"; logs kept in {workdir}" if keep else "")
    )
    return code


if __name__ == "__main__":
    sys.exit(main())

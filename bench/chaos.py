"""Chaos run: the whole system on loopback under crashes and LeadLex faults, then a reconcile.

A Jepsen-style check of DESIGN.md's invariants 1 (nothing acknowledged is lost), 3 (many
deliveries = one), 4 (never older), 5 (a note at most once) and 6 (the global budget)
on real parts, all on 127.0.0.1, started and stopped by this script:

- Redis: a private redis-server on a spare port with AOF and `appendfsync always` (see
  docs/chaos.md: with `everysec` a kill -9 may lose the last second of acknowledged
  writes, which would be a harness-made loss, not the product's);
- the LeadLex simulator (`python -m leadlex_sandbox`, `expose_notes` off, so notes are
  write-only as in LeadLex's docs and the product cannot cheat);
- the receiver under gunicorn (2 workers, deploy/gunicorn.conf.py);
- two Celery workers (`-P threads -c 4`) and one beat, each in its own process group.

A steady stream of signed HubSpot (v3) and Salesforce (SOAP) webhooks for `--contacts`
LeadLex contacts (each linked to a HubSpot record, every other one also to a Salesforce
record, via `leadlex-sync links import`) carries `--events` CRM events over `--seconds`:
duplicates, whole batches re-sent, deliveries out of timestamp order (some late by up to
20 s), notes that grow by one uniquely tagged line at a time, and a few invalid phone
numbers. Only what the receiver acknowledged (2xx / SOAP Ack) counts; a 503 or a lost
answer is retried later, as a CRM would.

Meanwhile: SIGKILL a random worker (its whole process group) and start a new one; kill -9
Redis once and restart it from its AOF on the same port; the simulator answers 20 % 5xx
and drops 5 % of applied writes' answers, sends one burst of 429s with Retry-After, and
for a while allows only a quarter of the per-minute limit (the simulator only: the
workers keep their configured limit and must cope through 429 handling).

Then faults stop, the backlog drains (bounded wait) and the run reconciles the
simulator's contacts, its request log and Redis against what was acknowledged:

- every acknowledged event was taken in (its fingerprint is in the dedupe ledger);
- each mapped LeadLex field holds the newest acknowledged CRM value (computed with the
  product's own mapping, `worker.mapping.map_record`, over the newest value per CRM
  field of each record; across the records of one contact the newest CRM time wins),
  or that value sits in the dead-letter store with its reason;
- every line of the newest acknowledged notes text is in the contact's notes exactly
  once (no note text appears twice, none is missing);
- in no window of LEADLEX_RATE_WINDOW_SECONDS did the simulator see more of our requests
  than the configured per-minute limit; no 429 outside the deliberate ones; after the
  Retry-After burst nobody called until the pause ended;
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

from cli.devmode import venv_bin  # noqa: E402
from worker.deadletter import DeadLetters  # noqa: E402
from worker.embedded_redis import free_port, redis_answers, redis_argv  # noqa: E402
from worker.events import fingerprint  # noqa: E402
from worker.mapping import load_mapping, map_record  # noqa: E402

API_KEY = "wbk_chaos_run_0123456789abcdef"
HUBSPOT_SECRET = "chaos-hubspot-client-secret"
PORTAL = 77001
SF_ORG = "00D5g000004ChAoSEA"
SUBSCRIPTION_ID = 3101
NOTES_PREFIXES = ("[HubSpot] ", "[Salesforce] ")
LEADLEX_FIELDS = ("full_name", "email", "phone", "job_title", "company_name")
HS_PROPS = ("firstname", "lastname", "email", "phone", "jobtitle", "company", "leadlex_notes")
HS_WEIGHTS = (3, 3, 2, 2, 3, 2, 4)
SF_FIELDS = ("FirstName", "LastName", "Email", "Phone", "Title", "Description")
SF_WEIGHTS = (3, 3, 2, 2, 3, 4)
NOTES_FIELDS = {"hubspot": "leadlex_notes", "salesforce": "Description"}
SAFETY_SECONDS = 1.0  # worker.ratelimit.Budget's margin on every window
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
    salesforce: str = "outbound"  # or "cdc": Salesforce edits as Pub/Sub change events

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
    for name in ("events", "contacts", "seconds", "rate", "window", "worker_kills"):
        value = getattr(args, name)
        if value is not None:
            setattr(base, name, value)
    base.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
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
            per_minute=self.prof.rate,
            daily=1_000_000,
            minute_window_seconds=self.prof.window,
            expose_notes=False,
            retry_after=False,
            seed=self.prof.seed,
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
    delivered: int = 0  # deliveries put on the wire (duplicates and resends included)


def iso_ms(ts: int) -> str:
    moment = datetime.fromtimestamp(ts / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}Z"


class World:
    """Generates CRM edits: per record strictly increasing, globally unique CRM times."""

    def __init__(self, rng: random.Random, contacts: int, cdc: bool = False) -> None:
        self.rng = rng
        self.cdc = cdc  # Salesforce edits as CDC events (changed fields only)
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

    def edit(self, budget: int) -> list[Event]:
        """One CRM edit of a random record: 1..3 events (HubSpot) or 1 (Salesforce)."""
        rec = self.rng.choice(self.records)
        rec.version += 1
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
                fp = fingerprint(
                    "hubspot",
                    str(PORTAL),
                    str(SUBSCRIPTION_ID),
                    str(self.event_ids),
                    ts,
                    "contact.propertyChange",
                    rec.object_id,
                    prop,
                )
                out.append(self._event(rec, ts, {prop: value}, fp, payload))
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
        self.notifications += 1
        if self.cdc:  # a change event carries only what changed
            uuid = f"chaos-cdc-{self.notifications:08d}"
            changed = {name: rec.values[name] for name in names}
            payload = {"uuid": uuid, "object_id": rec.object_id, "values": changed}
            fp = fingerprint("salesforce", SF_ORG, "cdc", uuid, rec.object_id)
            return [self._event(rec, ts, changed, fp, payload)]
        nid = f"04l{self.notifications:012d}CHS"
        fields = dict(rec.values)
        return [
            self._event(
                rec,
                ts,
                fields,
                fingerprint("salesforce", SF_ORG, nid),
                sf_notification(nid, rec.object_id, fields, ts),
            )
        ]

    def _event(
        self, rec: Record, ts: int, fields: dict[str, str | None], fp: str, payload: Any
    ) -> Event:
        event = Event(len(self.events), rec.source, rec.idx, ts, fields, fp, payload)
        self.events.append(event)
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
        return "/webhooks/salesforce", {
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


class Stream:
    """Releases generated events into requests at a steady rate, out of order, with dups."""

    def __init__(
        self, world: World, sender: Sender, rng: random.Random, prof: Profile, cdc: Any = None
    ) -> None:
        self.cdc = cdc  # bench.chaos_cdc.CdcSide when Salesforce edits go out as CDC events
        self.world = world
        self.sender = sender
        self.rng = rng
        self.prof = prof
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
                    p = event.payload  # stored by Salesforce = acknowledged, in commit order
                    self.cdc.emit(p["uuid"], p["object_id"], p["values"], event.ts)
                    event.acked, event.delivered = True, 1
                    continue
                roll = self.rng.random()
                if roll < 0.06:  # late: an older value arrives well after newer ones
                    delay = self.rng.uniform(8, 20)
                    self.stats["late"] += 1
                elif roll < 0.20:
                    delay = self.rng.uniform(2, 6)
                else:
                    delay = self.rng.uniform(0, 1.5)
                self._schedule(event.key, now + delay, 0)

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, slot: int) -> Proc:
        self.incarnations[slot] += 1
        name = f"worker{slot + 1}-{self.incarnations[slot]}"
        argv = [
            venv_bin("celery"),
            "-A",
            "worker",
            "worker",
            "-Q",
            "ingest,flush,control",
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
        proc = self.procs.start(name, argv, self.env)
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
        cdc: Any = None,
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
        self.sim.config(per_minute=self.prof.rate)
        start = self.windows.get("lowered_limit", (time.time(), 0.0))[0]
        self.windows["lowered_limit"] = (start, time.time())
        return {"per_minute": self.prof.rate}

    def kill_worker(self) -> dict[str, Any]:
        slot = self.rng.randrange(2)
        down = self.rng.uniform(1, 3)
        old, new = self.workers.crash(slot, down)
        return {"killed": old, "down_s": round(down, 1), "restarted_as": new}

    def kill_subscriber(self) -> dict[str, Any]:
        return dict(self.cdc.crash(self.rng.uniform(1, 3)))

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
        return {
            "down_s": round(time.time() - killed_at, 2),
            "acked_write_survived": self.sentinel_ok,
        }


# ==============================================================================================
# drain and reconcile
# ==============================================================================================
def backlog(client: redis.Redis) -> dict[str, int]:
    """What is still to do in the product's state and the broker."""
    unacked = client.hvals("unacked")
    return {
        "due": int(client.zcard("lls:due")),
        "ingest_queue": int(client.llen("ingest")),
        "flush_queue": int(client.llen("flush")),
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


def notes_tokens(text: str) -> list[str]:
    out = []
    for line in (text or "").split("\n"):
        line = line.strip()
        for prefix in NOTES_PREFIXES:
            if line.startswith(prefix):
                line = line[len(prefix) :]
        if line:
            out.append(line)
    return out


def expected_fields(
    world: World, events: list[Event], mapping: Any
) -> dict[int, dict[str, tuple[int, str, Any, int]]]:
    """Per contact index: LeadLex field -> (ts, "ok" | reason, value, record idx), newest wins.

    "notes" -> (ts, "notes", full CRM text, record idx) per record, under key notes|idx."""
    snaps: dict[int, dict[str, tuple[str | None, int]]] = defaultdict(dict)
    for event in events:
        snap = snaps[event.record]
        for name, value in event.fields.items():
            if name not in snap or snap[name][1] < event.ts:
                snap[name] = (value, event.ts)
    out: dict[int, dict[str, tuple[int, str, Any, int]]] = defaultdict(dict)
    for idx, snap in snaps.items():
        rec = world.records[idx]
        result = map_record(mapping, rec.source, "contact", snap, list(snap))
        cands: list[tuple[str, int, str, Any]] = [
            (name, fv.ts_ms, "ok", fv.value) for name, fv in result.fields.items()
        ]
        for rej in result.rejected:
            ts = max((snap[p][1] for p in rej.crm_field.split("+") if p in snap), default=0)
            cands.append((rej.leadlex_field, ts, rej.reason, rej.value))
        per = out[rec.contact]
        for name, ts, kind, value in cands:
            if name == "notes":
                continue
            if name not in per or per[name][0] < ts:
                per[name] = (ts, kind, value, idx)
        notes_value = snap.get(NOTES_FIELDS[rec.source])
        if notes_value and notes_value[0]:
            per[f"notes|{idx}"] = (notes_value[1], "notes", notes_value[0], idx)
    return out


def reconcile(
    prof: Profile,
    world: World,
    contact_ids: list[str],
    sim: Simulator,
    redis_url: str,
    chaos: Chaos,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    violations: list[dict[str, Any]] = []
    mapping = load_mapping(None, "US")
    contacts = sim.contacts()
    log_entries = sim.requests()
    client = redis.Redis.from_url(redis_url, socket_timeout=30)
    try:
        acked = [e for e in world.events if e.acked]
        unacked = [e for e in world.events if not e.acked]
        # 1. every acknowledged event was taken in (dedupe ledger)
        pipe = client.pipeline(transaction=False)
        for event in acked:
            pipe.exists(f"lls:seen:{event.fp}")
        missing = [e for e, seen in zip(acked, pipe.execute(), strict=True) if not seen]
        for event in missing[:20]:
            violations.append(
                {
                    "check": "acked_event_not_ingested",
                    "event": event.key,
                    "source": event.source,
                    "record": event.record,
                    "ts": event.ts,
                }
            )
        if len(missing) > 20:
            violations.append({"check": "acked_event_not_ingested", "more": len(missing) - 20})
        dead = list(DeadLetters(client).iter())
        state = backlog(client)
        counters = {k.decode(): int(v) for k, v in client.hgetall("lls:metrics:counters").items()}
    finally:
        client.close()

    # 2. fields and notes against the newest acknowledged CRM values
    expected = expected_fields(world, acked, mapping)
    # Events sent but never acknowledged may or may not have been taken in: either is fine.
    maybe = expected_fields(world, world.events, mapping) if unacked else expected
    by_contact: dict[str, list[Any]] = defaultdict(list)
    for letter in dead:
        by_contact[letter.contact].append(letter)
    all_tokens = {line for rec in world.records for line in rec.notes}
    checked_fields = 0
    checked_notes = 0
    for c, per in expected.items():
        cid = contact_ids[c]
        have = contacts.get(cid)
        if have is None:
            violations.append({"check": "contact_missing", "contact": cid})
            continue
        for name, (ts, kind, value, idx) in per.items():
            if name.startswith("notes|"):
                continue
            checked_fields += 1
            alt = maybe.get(c, {}).get(name)
            if kind == "ok":
                if have.get(name) == value or (alt and alt[1] == "ok" and have.get(name) == alt[2]):
                    continue
                if _dead_lettered(by_contact[cid], name, value, None):
                    continue
                violations.append(
                    {
                        "check": "field_not_newest",
                        "contact": cid,
                        "field": name,
                        "expected": value,
                        "actual": have.get(name),
                        "crm_ts": ts,
                        "record": world.records[idx].tag,
                    }
                )
            elif not _dead_lettered(by_contact[cid], name, value, kind):
                violations.append(
                    {
                        "check": "rejected_value_not_dead_lettered",
                        "contact": cid,
                        "field": name,
                        "reason": kind,
                        "value": value,
                        "record": world.records[idx].tag,
                    }
                )
        # notes: every line of each record's newest text exactly once; no line twice
        counts = Counter(notes_tokens(str(have.get("notes") or "")))
        for name, (_ts, _kind, text, idx) in per.items():
            if not name.startswith("notes|"):
                continue
            checked_notes += 1
            for token in notes_tokens(text):
                if counts.get(token, 0) == 0:
                    violations.append(
                        {
                            "check": "note_missing",
                            "contact": cid,
                            "record": world.records[idx].tag,
                            "line": token,
                        }
                    )
        for token, n in counts.items():
            if n > 1:
                violations.append(
                    {"check": "note_appended_twice", "contact": cid, "line": token, "times": n}
                )
            elif token not in all_tokens:
                violations.append({"check": "note_unknown", "contact": cid, "line": token})

    # 3. calls and the rate limit, from the simulator's request log
    api = sorted(log_entries, key=lambda e: e["ts"])
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

    # 4. the Redis restart lost nothing acknowledged; the system drained
    if chaos.sentinel_ok is False:
        violations.append({"check": "redis_lost_acknowledged_write"})
    leftovers = {k: v for k, v in state.items() if v}
    if leftovers:
        violations.append({"check": "not_drained", **leftovers})
    if unacked:
        # Not a product violation by itself, but the run could not prove much about them.
        violations.append({"check": "events_never_acknowledged", "count": len(unacked)})

    dl_reasons = Counter(d.reason for d in dead)
    report = {
        "calls": {
            "total": len(api),
            "min_possible": len(changed_contacts),
            "ratio": round(len(api) / max(1, len(changed_contacts)), 2),
            "patches": sum(1 for e in api if e["method"] == "PATCH"),
            "patches_applied": sum(1 for e in api if e["method"] == "PATCH" and e["applied"]),
            "gets": sum(1 for e in api if e["method"] == "GET"),
            "answers_dropped": sum(1 for e in api if e["dropped"]),
            "by_method_status": dict(sorted(by_method.items())),
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
            "contacts": len(expected),
            "fields": checked_fields,
            "notes_texts": checked_notes,
            "invalid_phones_generated": world.invalid_phones,
        },
        "product_state_after_drain": state,
        # events the product's inbox sweep had to enqueue again (lost by the broker)
        "events_recovered": sum(
            v for k, v in counters.items() if k.startswith('["events_recovered"')
        ),
    }
    return report, violations


def _dead_lettered(letters: list[Any], field_name: str, value: Any, reason: str | None) -> bool:
    """Is `value` of `field_name` in the dead-letter store (with `reason`, if given)?"""
    for letter in letters:
        details = letter.details or {}
        payload = letter.payload if isinstance(letter.payload, dict) else {}
        named = details.get("field") == field_name or payload.get("leadlex_field") == field_name
        if not named or (reason is not None and letter.reason != reason):
            continue
        changes = payload.get("changes") or {}
        if payload.get("leadlex_value") == value or value in changes.values():
            return True
    return False


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

    web_port = free_port()
    public_base = f"http://127.0.0.1:{web_port}"
    common = {
        "REDIS_URL": rds.url,
        "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        "PUBLIC_BASE_URL": public_base,
        "SALESFORCE_ORG_IDS": SF_ORG,
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
            "LEADLEX_TIMEOUT_SECONDS": "3",
            "COALESCE_SECONDS": str(prof.coalesce),
            "FLUSH_LEASE_SECONDS": str(prof.lease),
            "CIRCUIT_PROBE_SECONDS": "2",
            "LOG_LEVEL": "INFO",
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
    workers.start(0)
    workers.start(1)
    workers.start_beat()
    workers.supervise_in_background()
    cdc = None
    if prof.salesforce == "cdc":
        from bench.chaos_cdc import CdcSide

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

    # ---- the stream, with the chaos alongside ------------------------------------------------
    t0 = workers.t0 = time.time()
    sender = Sender(world, public_base, public_base, random.Random(prof.seed + 2))
    sender.give_up_at = t0 + prof.seconds + prof.sender_grace
    stream = Stream(world, sender, random.Random(prof.seed + 3), prof, cdc)
    chaos = Chaos(prof, random.Random(prof.seed + 4), sim, rds, workers, t0, cdc)
    chaos.start()
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
        sender.stop()
    timings["stream_s"] = time.time() - t0
    # Workers and beat are supervised; the receiver and the simulator must not die at all.
    unexpected_deaths = [p.name for p in (web, sim.proc) if not p.alive()]
    # Faults off (whatever the schedule got to), then let the system drain.
    sim.faults(error_rate_5xx=0.0, drop_after_apply_rate=0.0, force_429=0)
    sim.config(per_minute=prof.rate)
    log(
        f"stream done: {len(world.events)} events, "
        f"{sum(1 for e in world.events if e.acked)} acked; draining"
    )
    t_drain = time.time()
    if cdc is not None:  # the subscriber first reads everything Salesforce stored
        if not cdc.alive():
            unexpected_deaths.append("cdc-subscriber")
        deadline = time.time() + prof.drain_seconds / 2
        while not cdc.caught_up(rds.url) and time.time() < deadline:
            time.sleep(0.5)
    drained, left, _ = drain(rds.url, prof.drain_seconds)
    timings["drain_s"] = time.time() - t_drain
    workers.stop_supervising()
    log(f"drained={drained} in {timings['drain_s']:.1f}s {left}; reconciling")
    t_rec = time.time()
    report, violations = reconcile(prof, world, contact_ids, sim, rds.url, chaos)
    timings["reconcile_s"] = time.time() - t_rec
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
            "salesforce_source": prof.salesforce,
        },
        **({"salesforce_cdc": cdc.stats()} if cdc is not None else {}),
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
        "faults": chaos.log,
        # Exits nobody caused (restarted like a supervisor would): findings, not violations.
        "process_exits": workers.exits,
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

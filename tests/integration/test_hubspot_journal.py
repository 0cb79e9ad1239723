"""HubSpot end to end on real parts: the HubSpot simulator, a real receiver over HTTP, real
Celery workers with beat (the journal poller), the LeadLex simulator, a private Redis.

Modes: `journal` (no webhooks at all), `both` (webhooks and the journal), and the outage
test: receiver and workers down while HubSpot records 500 changes over six simulated
hours and its push retries give up; `both` delivers every change once after restart,
`webhooks` shows the loss (README and docs/operations.md state it)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from werkzeug.serving import BaseWSGIServer, make_server

from cli import main
from hubspot_sandbox import HubSpotSandboxConfig, HubSpotSandboxServer
from tests.integration.conftest import Sandbox, WorkerProcess
from tests.integration.support import HUBSPOT_SECRET, PORTAL, link, wait_for
from worker.embedded_redis import free_port
from worker.metrics import Metrics
from worker.state import DUE, INBOX

CLIENT_ID = "journal-it-client"


class HubSpot:
    """Test-side handle on the HubSpot simulator."""

    def __init__(self, server: HubSpotSandboxServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=60)

    def record(self, *changes: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/_hubspot/changes", json={"changes": list(changes)})
        resp.raise_for_status()
        return dict(resp.json())

    def configure(self, **knobs: Any) -> None:
        self.http.post("/_hubspot/config", json=knobs).raise_for_status()

    def clock(self, **body: Any) -> dict[str, Any]:
        resp = self.http.post("/_hubspot/clock", json=body)
        resp.raise_for_status()
        return dict(resp.json())

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/_hubspot/stats").json())


@pytest.fixture
def hubspot() -> Iterator[HubSpot]:
    """A fresh HubSpot simulator whose app secret is the one the workers and receiver use."""
    config = HubSpotSandboxConfig(
        client_id=CLIENT_ID, client_secret=HUBSPOT_SECRET, portal_id=PORTAL, seed=7
    )
    server = HubSpotSandboxServer(config).start()
    hs = HubSpot(server)
    yield hs
    hs.http.close()
    server.stop()


class Receiver:
    """The real receiver app served over HTTP on a loopback port (start/stop at will)."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        self.redis_url = redis_url
        self.server: BaseWSGIServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/hubspot"

    def start(self) -> Receiver:
        from webhook_app import create_app
        from worker.settings import load_settings

        settings = load_settings(
            {
                "REDIS_URL": self.redis_url,
                "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            },
            require_leadlex=False,
            env_file=None,
        )
        self.server = make_server("127.0.0.1", self.port, create_app(settings), threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver_http(redis_url: str) -> Iterator[Receiver]:
    """A receiver (not started yet); stopped after the test."""
    rec = Receiver(redis_url)
    yield rec
    rec.stop()


def journal_env(hubspot: HubSpot, mode: str) -> dict[str, str]:
    if mode == "webhooks":
        return {"HUBSPOT_JOURNAL": "off"}
    return {
        "HUBSPOT_JOURNAL": "on",
        "HUBSPOT_CLIENT_ID": CLIENT_ID,
        "HUBSPOT_API_BASE_URL": hubspot.server.url,
        "HUBSPOT_JOURNAL_POLL_SECONDS": "1",
        "HUBSPOT_JOURNAL_START": "earliest",
        "HUBSPOT_JOURNAL_BATCH_SIZE": "20",
    }


def subscribe(hubspot: HubSpot, env: dict[str, str]) -> None:
    """`leadlex-sync hubspot subscribe`, as an operator runs it."""
    result = CliRunner().invoke(
        main, ["hubspot", "subscribe"], env={**env, "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET}
    )
    assert result.exit_code == 0, result.output
    assert "OBJECT 0-1 CREATE,UPDATE,DELETE,MERGE,RESTORE" in result.output


def seed_linked(sandbox: Sandbox, redis_url: str, count: int, first_id: int) -> dict[int, str]:
    """`count` LeadLex contacts linked to HubSpot records first_id, first_id + 1, ..."""
    linked = {}
    for i in range(count):
        contact = sandbox.seed(full_name=f"Person {i}", email=f"p{first_id + i}@example.org")
        link(redis_url, "hubspot", str(first_id + i), contact)
        linked[first_id + i] = contact
    return linked


def test_journal_mode_syncs_without_any_inbound_url(
    hubspot: HubSpot,
    sandbox: Sandbox,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    """With HUBSPOT_JOURNAL=on and no receiver at all, journal changes reach LeadLex once."""
    env = journal_env(hubspot, "journal")
    subscribe(hubspot, env)
    contacts = seed_linked(sandbox, redis_url, 2, 501)
    workers(**env)
    hubspot.record(
        {"objectId": 501, "properties": {"jobtitle": "Chief Counsel"}},
        {"objectId": 502, "properties": {"firstname": "Ada", "lastname": "Byron"}},
    )
    wait_for(lambda: sandbox.contact(contacts[501])["job_title"] == "Chief Counsel", 60)
    wait_for(lambda: sandbox.contact(contacts[502])["full_name"] == "Ada Byron", 60)
    assert len(sandbox.patches(contacts[501])) == 1
    assert len(sandbox.patches(contacts[502])) == 1
    assert Metrics(redis_client).value("journal_entries_read") == 1
    assert Metrics(redis_client).value("webhooks_received", source="hubspot") == 0


def test_both_mode_applies_a_change_seen_twice_once(
    hubspot: HubSpot,
    sandbox: Sandbox,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
    receiver_http: Receiver,
    redis_client: redis.Redis,
) -> None:
    """The same changes pushed as webhooks and read from the journal cost one PATCH each,
    and a growing notes property is appended exactly once."""
    env = journal_env(hubspot, "both")
    subscribe(hubspot, env)
    sandbox.configure(expose_notes=True)
    contacts = seed_linked(sandbox, redis_url, 3, 601)
    receiver_http.start()
    hubspot.configure(webhook_url=receiver_http.url)
    workers(**env)
    answer = hubspot.record(
        *[
            {"objectId": oid, "properties": {"jobtitle": f"Title {oid}", "leadlex_notes": "met"}}
            for oid in contacts
        ]
    )
    assert answer["deliveries"] == {"delivered": 1}
    for oid, contact in contacts.items():
        wait_for(lambda c=contact, o=oid: sandbox.contact(c)["job_title"] == f"Title {o}", 60)
    wait_for(lambda: Metrics(redis_client).value("journal_entries_read") == 1, 60)
    wait_for(lambda: redis_client.hlen(INBOX) == 0, 60)  # both copies taken in
    wait_for(lambda: redis_client.zcard(DUE) == 0, 60)  # and flushed
    # Usually the second copy is dropped by the fingerprint ledger; should both copies be
    # ingested at the same instant, the flush's no-op check still sends nothing twice.
    for contact in contacts.values():
        assert len(sandbox.patches(contact)) == 1
        assert sandbox.contact(contact)["notes"].count("met") == 1


OUTAGE_CONTACTS = 25
OUTAGE_CHANGES = 500
SIX_HOURS = 6 * 3600


def outage_changes(step: int) -> list[dict[str, Any]]:
    """Batch `step` of 50 (10 changes): a new job title and one more notes line per record."""
    out = []
    for k in range(10):
        n = step * 10 + k  # 0..499
        oid = 701 + n % OUTAGE_CONTACTS
        version = n // OUTAGE_CONTACTS  # 0..19 per record
        lines = "\n".join(f"line {oid}-{v}" for v in range(version // 2 + 1))
        props = {"jobtitle": f"T{oid}-{version}"} if version % 2 else {"leadlex_notes": lines}
        out.append({"objectId": oid, "properties": props})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["both", "webhooks"])
def test_outage_longer_than_push_retries(
    mode: str,
    hubspot: HubSpot,
    sandbox: Sandbox,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
    receiver_http: Receiver,
    redis_client: redis.Redis,
) -> None:
    """Down for 6 h of changes + a day of failed pushes: `both` delivers all 500 changes once,
    `webhooks` loses them (HubSpot gave up)."""
    env = journal_env(hubspot, mode)
    if mode == "both":
        subscribe(hubspot, env)
    sandbox.configure(expose_notes=True)
    contacts = seed_linked(sandbox, redis_url, OUTAGE_CONTACTS, 701)
    # The simulated clock starts 40 h in the past, so CRM times stay before real time.
    hubspot.clock(offset=-40 * 3600, deliver=False)
    receiver_http.start()
    hubspot.configure(webhook_url=receiver_http.url)
    worker = workers(**env)
    hubspot.record({"objectId": 701, "properties": {"jobtitle": "warm-up"}})
    wait_for(lambda: sandbox.contact(contacts[701])["job_title"] == "warm-up", 60)
    if mode == "both":
        wait_for(lambda: Metrics(redis_client).value("journal_entries_read") == 1, 60)

    # Outage: receiver and workers down; HubSpot records 500 changes over six hours.
    worker.stop()
    receiver_http.stop()
    for step in range(OUTAGE_CHANGES // 10):
        hubspot.record(*outage_changes(step))
        hubspot.clock(advance=SIX_HOURS / (OUTAGE_CHANGES // 10))
    for _ in range(30 * 6):  # 30 more hours in 10-minute steps: every push retry fails
        hubspot.clock(advance=600)
    stats = hubspot.stats()
    assert stats["pending_deliveries"] == 0
    assert stats["webhook_events_given_up"] == OUTAGE_CHANGES
    patches_before = {c: len(sandbox.patches(c)) for c in contacts.values()}

    receiver_http.start()
    workers(beat=True, **env)
    final_title = {oid: f"T{oid}-19" for oid in contacts}
    if mode == "webhooks":
        # Nothing can bring the changes back: HubSpot gave up and no journal is read.
        hubspot.record({"objectId": 702, "properties": {"jobtitle": "after"}})
        wait_for(lambda: sandbox.contact(contacts[702])["job_title"] == "after", 60)
        lost = [o for o, c in contacts.items() if sandbox.contact(c)["job_title"] != final_title[o]]
        assert len(lost) == OUTAGE_CONTACTS
        assert all(
            len(sandbox.patches(c)) == patches_before[c] for o, c in contacts.items() if o != 702
        )
        return

    def all_arrived() -> bool:
        return all(sandbox.contact(c)["job_title"] == final_title[o] for o, c in contacts.items())

    wait_for(all_arrived, 180, interval=1.0)
    for oid, contact in contacts.items():
        notes = sandbox.contact(contact)["notes"] or ""
        for v in range(10):  # every notes line appended exactly once
            assert notes.count(f"line {oid}-{v}") == 1, (oid, v, notes)
    status = Metrics(redis_client)
    assert status.value("journal_gaps") == 0
    assert status.value("dead_lettered", reason="invalid_event") == 0


def test_poller_killed_mid_batch_loses_and_repeats_nothing(
    hubspot: HubSpot,
    sandbox: Sandbox,
    redis_url: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    """SIGKILL the worker running the poller (beat included) while it downloads a batch,
    three times: every change still reaches LeadLex, no notes line twice, no value twice."""
    env = {**journal_env(hubspot, "journal"), "HUBSPOT_JOURNAL_BATCH_SIZE": "10"}
    subscribe(hubspot, env)
    sandbox.configure(expose_notes=True)
    contacts = seed_linked(sandbox, redis_url, 10, 801)
    hubspot.configure(download_delay_ms=150)  # a batch of 10 entries takes ~1.5 s
    for step in range(60):  # 60 entries, 120 changes: 6 notes lines + 6 titles per record
        out = []
        for k in range(2):
            n = step * 2 + k
            oid = 801 + n % 10
            version = n // 10  # 0..11
            lines = "\n".join(f"line {oid}-{v}" for v in range(version // 2 + 1))
            props = {"jobtitle": f"T{oid}-{version}"} if version % 2 else {"leadlex_notes": lines}
            out.append({"objectId": oid, "properties": props})
        hubspot.record(*out)
    rng = random.Random(12)
    worker = workers(beat=True, **env)
    for _ in range(3):
        seen = hubspot.stats().get("downloads", 0)
        wait_for(lambda s=seen: hubspot.stats().get("downloads", 0) > s, 60)  # this poller reads
        time.sleep(rng.uniform(0.2, 0.8))  # mid-batch: downloads are in flight
        worker.kill()
        worker = workers(beat=True, **env)

    def arrived() -> bool:
        return all(sandbox.contact(c)["job_title"] == f"T{o}-11" for o, c in contacts.items())

    wait_for(arrived, 180, interval=1.0)
    assert hubspot.stats()["downloads"] > 60  # some entries were read again after a kill
    for oid, contact in contacts.items():
        notes = sandbox.contact(contact)["notes"] or ""
        for v in range(6):
            assert notes.count(f"line {oid}-{v}") == 1, (oid, v, notes)
        titles = [p["body"].get("job_title") for p in sandbox.patches(contact)]
        titles = [t for t in titles if t]
        assert len(titles) == len(set(titles)), titles


def test_dev_mode_with_the_hubspot_simulator_in_both_modes(tmp_path: Path) -> None:
    """`leadlex-sync dev --hubspot both`: a change made in the HubSpot simulator reaches the
    LeadLex simulator (webhook and journal), and Ctrl-C stops everything cleanly."""
    port, sandbox_port, hs_port = free_port(), free_port(), free_port()
    # No REDIS_URL: dev mode starts its own embedded Redis under .run/ of its directory.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEADLEX_", "HUBSPOT_")) and k != "REDIS_URL"
    }
    env.update(
        SANDBOX_PORT=str(sandbox_port),
        HUBSPOT_SANDBOX_PORT=str(hs_port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        LOG_FORMAT="json",
    )
    cli = str(Path(sys.executable).with_name("leadlex-sync"))
    out_path = tmp_path / "dev.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [cli, "dev", "--port", str(port), "--no-flower", "--hubspot", "both"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: b"leadlex-sync is running" in out_path.read_bytes(), 90)
            text = out_path.read_text()
            assert f"HubSpot simulator   http://127.0.0.1:{hs_port}  (mode: both)" in text
            match = re.search(r"hubspot 101\s+-> (\S+)", text)
            assert match, text
            answer = httpx.post(
                f"http://127.0.0.1:{hs_port}/_hubspot/changes",
                json={"changes": [{"objectId": 101, "properties": {"jobtitle": "Dev Counsel"}}]},
                timeout=30,
            ).json()
            assert answer["deliveries"] == {"delivered": 1}
            assert answer["offset"]
            contact = f"http://127.0.0.1:{sandbox_port}/_sandbox/contacts/{match.group(1)}"
            wait_for(
                lambda: httpx.get(contact, timeout=5).json()["data"]["job_title"] == "Dev Counsel",
                60,
            )
            stats = f"http://127.0.0.1:{hs_port}/_hubspot/stats"
            wait_for(lambda: httpx.get(stats, timeout=5).json().get("downloads", 0) >= 1, 60)
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
    assert code == 0

"""End to end: Salesforce Pub/Sub simulator -> `leadlex-sync salesforce subscribe` -> Redis ->
Celery workers -> LeadLex simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cli.devmode import venv_bin
from pull_sources.salesforce_cdc.replay_store import ReplayStore
from salesforce_sandbox.server import SalesforceSandbox, SandboxConfig
from tests.integration.conftest import Sandbox, worker_env
from tests.integration.support import link, now_ms, wait_for
from worker.deadletter import DeadLetters
from worker.metrics import Metrics

pytestmark = pytest.mark.integration
CONTACTS = "/data/ContactChangeEvent"


class SubscriberProcess:
    """`leadlex-sync salesforce subscribe` as a subprocess in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SubscriberProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [venv_bin("leadlex-sync"), "salesforce", "subscribe"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def salesforce() -> Iterator[SalesforceSandbox]:
    """The Pub/Sub simulator on free loopback ports."""
    sandbox = SalesforceSandbox(SandboxConfig(keepalive_seconds=2.0)).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def cdc_subscriber(
    redis_url: str, sandbox: Sandbox, salesforce: SalesforceSandbox
) -> Iterator[Callable[[], SubscriberProcess]]:
    """Factory: start subscriber processes on the simulators; all stopped after the test."""
    started: list[SubscriberProcess] = []
    log_dir = Path(tempfile.mkdtemp(prefix="lls-cdc-"))
    env = worker_env(
        redis_url,
        sandbox,
        SALESFORCE_INSTANCE_URL=salesforce.instance_url,
        SALESFORCE_CLIENT_ID=salesforce.config.client_id,
        SALESFORCE_CLIENT_SECRET=salesforce.config.client_secret,
        SALESFORCE_PUBSUB_ENDPOINT=salesforce.pubsub_endpoint,
        SALESFORCE_PUBSUB_TLS="false",
        SALESFORCE_CDC_INITIAL_REPLAY="earliest",
        SALESFORCE_CDC_BATCH_SIZE="2",  # small steps, so a kill lands mid-stream
    )

    def start() -> SubscriberProcess:
        proc = SubscriberProcess(env, log_dir / "subscriber.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _emit(sf: SalesforceSandbox, change_type: str, ids: list[str], t: int, **kw: Any) -> bytes:
    return sf.emit("Contact", change_type, ids, commit_timestamp=t, **kw)


def test_cdc_changes_reach_leadlex_with_exact_semantics(
    sandbox: Sandbox,
    salesforce: SalesforceSandbox,
    workers: Any,
    cdc_subscriber: Callable[[], SubscriberProcess],
    redis_url: str,
) -> None:
    """Create, update with changed and nulled fields, same-millisecond edits ordered by
    sequenceNumber (not by value), a multi-record event, a gap, a delete that parks older
    edits and keeps the link, and an undelete after which edits sync, end to end."""
    a = sandbox.seed(full_name="Ada Byron", email="ada@example.org", phone="+44 20 7946 0000")
    b = sandbox.seed(full_name="Bea Byron", email="bea@example.org")
    c = sandbox.seed(full_name="Cy Byron", email="cy@example.org")
    for record, contact in (("003A", a), ("003B", b), ("003C", c)):
        link(redis_url, "salesforce", record, contact)
    t = now_ms() - 60_000
    _emit(
        salesforce,
        "CREATE",
        ["003A"],
        t,
        values={"FirstName": "Ada", "LastName": "Lovelace", "Title": "Analyst"},
    )
    _emit(
        salesforce,
        "UPDATE",
        ["003A"],
        t + 10,
        values={"Title": "VP"},
        nulled=["Phone"],
        transaction_key="tx-1",
        sequence_number=1,
    )
    _emit(
        salesforce,
        "UPDATE",
        ["003A"],
        t + 10,
        values={"Title": "CEO"},
        transaction_key="tx-1",
        sequence_number=2,
    )
    _emit(salesforce, "UPDATE", ["003B", "003C"], t + 20, values={"Title": "Engineer"})
    _emit(salesforce, "GAP_UPDATE", ["003C"], t + 30)
    workers()
    cdc_subscriber()
    contact_a = wait_for(
        lambda: (x := sandbox.contact(a))["job_title"] == "CEO"
        and x["full_name"] == "Ada Lovelace" and x, timeout=60,
    )  # fmt: skip
    assert contact_a["phone"] == "+44 20 7946 0000"  # a nulled field is never sent (skip policy)
    wait_for(lambda: sandbox.contact(b)["job_title"] == "Engineer", timeout=60)
    wait_for(lambda: sandbox.contact(c)["job_title"] == "Engineer", timeout=60)
    client = redis.Redis.from_url(redis_url)
    (gap,) = [d.details for d in DeadLetters(client).iter("salesforce_gap")]
    assert (gap["change_type"], gap["record_ids"]) == ("GAP_UPDATE", ["003C"])

    # DELETE 003B (deletion policy unlink): the record's lifecycle says deleted, its link is
    # kept, and an edit dated before the deletion (delivered after it) is parked, not synced.
    org = salesforce.config.org_id
    metrics = Metrics(client)
    deleted_at = now_ms()
    _emit(salesforce, "DELETE", ["003B"], deleted_at)
    wait_for(lambda: metrics.value("lifecycle_events", kind="delete", outcome="applied"), 60)
    assert client.hget("lls:life", f"salesforce:{org}:003B") == f"deleted:{deleted_at}".encode()
    assert client.hget("lls:links", "salesforce::003B") == b.encode()
    _emit(salesforce, "UPDATE", ["003B"], deleted_at - 5, values={"Title": "Before deletion"})
    wait_for(lambda: metrics.value("events_parked", reason="deleted") >= 1, timeout=60)
    assert sandbox.contact(b)["job_title"] == "Engineer"

    # UNDELETE: syncing resumes through the kept link; the parked edit (newer than what
    # LeadLex holds) is replayed, and a later edit syncs.
    _emit(salesforce, "UNDELETE", ["003B"], deleted_at + 1)
    wait_for(lambda: sandbox.contact(b)["job_title"] == "Before deletion", timeout=60)
    _emit(salesforce, "UPDATE", ["003B"], deleted_at + 10, values={"Title": "Restored"})
    wait_for(lambda: sandbox.contact(b)["job_title"] == "Restored", timeout=60)
    assert client.hget("lls:life", f"salesforce:{org}:003B") == f"active:{deleted_at + 1}".encode()
    client.close()


def test_killed_subscriber_restarts_without_loss_or_double_apply(
    sandbox: Sandbox,
    salesforce: SalesforceSandbox,
    workers: Any,
    cdc_subscriber: Callable[[], SubscriberProcess],
    redis_url: str,
) -> None:
    """SIGKILL mid-stream, then restart: every change arrives and every note is appended once."""
    sandbox.configure(expose_notes=True)
    contacts = [sandbox.seed(full_name=f"Person {i}", email=f"p{i}@example.org") for i in range(5)]
    for i, contact in enumerate(contacts):
        link(redis_url, "salesforce", f"003P{i}", contact)
    t = now_ms() - 120_000
    rounds = 8

    def emit_round(r: int) -> None:
        for i in range(len(contacts)):
            lines = "\n".join(f"note {k}" for k in range(r + 1))
            _emit(salesforce, "UPDATE", [f"003P{i}"], t + r * 100 + i,
                  values={"Title": f"title {r}", "Description": lines})  # fmt: skip

    for r in range(rounds // 2):
        emit_round(r)
    workers()
    first = cdc_subscriber()
    client = redis.Redis.from_url(redis_url)
    metrics = Metrics(client)
    wait_for(lambda: metrics.value("cdc_events_received", topic=CONTACTS) >= 3, timeout=60)
    first.kill()
    for r in range(rounds // 2, rounds):
        emit_round(r)
    time.sleep(0.5)
    cdc_subscriber()
    last = f"title {rounds - 1}"
    for contact in contacts:
        wait_for(lambda c=contact: sandbox.contact(c)["job_title"] == last, timeout=90)
    for contact in contacts:
        wait_for(lambda c=contact: sandbox.contact(c)["notes"].count("note") >= rounds, timeout=60)
        lines = sandbox.contact(contact)["notes"].split("\n")
        assert [line.removeprefix("[Salesforce] ") for line in lines] == [
            f"note {k}" for k in range(rounds)
        ]
    position = ReplayStore(client, salesforce.config.org_id).get(CONTACTS)
    assert position is not None
    client.close()

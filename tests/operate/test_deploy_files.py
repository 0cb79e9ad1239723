"""Procfile, docker-compose.yml, Dockerfile and .env.example agree with the code they run."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from tests.operate.conftest import ROOT
from worker.settings import SECRET_VARS, Settings, load_settings

# Variables the processes read besides Settings (documented in README and .env.example).
PROCESS_VARS = {
    "FLOWER_BASIC_AUTH",
    "FLOWER_PORT",
    "WEB_CONCURRENCY",
    "WORKER_CONCURRENCY",
    "PORT",
    "BEAT_SCHEDULE",
}
# Set by the container runtime itself, never by us (the worker healthcheck's node name).
CONTAINER_VARS = {"HOSTNAME"}
APP_SERVICES = ("web", "worker", "beat", "flower")
QUEUES = {"lls.ingest", "lls.flush", "lls.control"}


def aliases() -> set[str]:
    return {f.alias for f in Settings.model_fields.values() if f.alias}


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        assert name not in entries, f"duplicate Procfile entry {name}"
        entries[name.strip()] = command.strip()
    return entries


def argv_of(command: str | list[str]) -> list[str]:
    """The program's argv, unwrapping `sh -c "exec ..."` and compose's `$$` escape."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].replace("$$", "$"))
    if argv and argv[0] == "exec":
        argv = argv[1:]
    return argv


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def assert_real_entry_point(argv: list[str]) -> None:
    """gunicorn / celery -A worker / leadlex-sync, each pointing at code that exists."""
    program = argv[0]
    if program == "gunicorn":
        conf = option(argv, "-c", "--config")
        assert conf is not None
        assert (ROOT / conf).is_file()
        spec = argv[-1]
        assert spec == "webhook_app:create_app()"
        if importlib.util.find_spec("webhook_app") is not None:
            module = importlib.import_module("webhook_app")
            assert callable(module.create_app)
    elif program == "celery":
        assert option(argv, "-A", "--app") == "worker"
        from celery import Celery

        worker = importlib.import_module("worker")
        assert isinstance(worker.app, Celery)
        sub = next(a for a in argv[3:] if not a.startswith("-"))
        assert sub in {"worker", "beat", "flower"}
        if sub == "flower":
            conf = option(argv, "--conf")
            assert conf is not None
            assert (ROOT / conf).is_file()
        if sub == "worker":
            queues = option(argv, "-Q", "--queues")
            assert queues is not None
            assert set(queues.split(",")) == QUEUES
    elif program == "leadlex-sync":
        from cli import main

        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts["leadlex-sync"] == "cli:main"
        assert argv[1] in main.commands
    else:
        pytest.fail(f"unknown program {program!r}")


def env_example() -> dict[str, str]:
    values = dotenv_values(ROOT / ".env.example")
    return {k: v or "" for k, v in values.items()}


# ---- docker-compose.yml -----------------------------------------------------------------------
def test_compose_has_every_service_and_sandbox_behind_a_profile() -> None:
    """Compose defines proxy, redis, web, worker, beat, flower, and the simulator only under
    `sandbox`."""
    services = compose()["services"]
    assert set(services) == {"proxy", "redis", *APP_SERVICES, "cdc", "sandbox"}
    assert services["sandbox"]["profiles"] == ["sandbox"]
    for name in ("redis", *APP_SERVICES):
        assert "profiles" not in services[name], name
    assert argv_of(services["sandbox"]["command"]) == [
        "leadlex-sync", "sandbox", "--host", "0.0.0.0", "--port", "8787",
    ]


def test_compose_redis_is_persistent_noeviction_and_health_checked() -> None:
    """Redis runs with AOF fsynced on every write (appendfsync always) and noeviction, on a
    named volume, with a ping healthcheck."""
    data = compose()
    redis = data["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(argv_of(redis["command"]))
    assert "--appendonly yes" in command
    assert "--appendfsync always" in command
    assert "--maxmemory-policy noeviction" in command
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data"
    assert volume[0] in data["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_compose_app_services_share_one_image_env_file_and_wait_for_redis() -> None:
    """Each app service builds the one image, reads .env and starts after Redis is healthy."""
    services = compose()["services"]
    for name in APP_SERVICES:
        svc = services[name]
        assert svc["build"] == ".", name
        assert svc["env_file"] in (".env", [".env"]), name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert svc["environment"]["REDIS_URL"] == "redis://redis:6379/0", name
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
    assert option(argv_of(services["flower"]["command"]), "--conf") == "deploy/flowerconfig.py"
    # Flower's /metrics and /healthcheck skip auth: publish it on loopback only.
    assert all(p.startswith("127.0.0.1:") for p in services["flower"]["ports"])


@pytest.mark.parametrize("service", [*APP_SERVICES, "cdc", "sandbox"])
def test_compose_commands_name_real_entry_points(service: str) -> None:
    """Every compose command runs gunicorn, `celery -A worker` or a real `leadlex-sync` command."""
    assert_real_entry_point(argv_of(compose()["services"][service]["command"]))


def test_compose_commands_match_the_procfile() -> None:
    """web, worker, beat and flower run the same argv under compose as under the Procfile."""
    services = compose()["services"]
    entries = procfile()
    for name in (*APP_SERVICES, "cdc"):
        assert argv_of(services[name]["command"]) == argv_of(entries[name]), name


def test_compose_variables_are_settings_or_documented_process_variables() -> None:
    """Every ${VAR} and environment key in the compose file is known to the project."""
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\$?\{?([A-Za-z_][A-Za-z0-9_]*)", text))
    for svc in compose()["services"].values():
        env = svc.get("environment") or {}
        used |= set(env if isinstance(env, dict) else (e.split("=", 1)[0] for e in env))
    assert used, "expected some variables"
    unknown = used - aliases() - PROCESS_VARS - CONTAINER_VARS
    assert not unknown, f"undocumented variables in docker-compose.yml: {sorted(unknown)}"


def test_compose_publishes_only_the_buffering_proxy_in_front_of_the_receiver() -> None:
    """Caddy is the only service published on all interfaces; gunicorn is reached through it,
    and the Caddyfile buffers whole requests with read timeouts and forwards no /metrics."""
    services = compose()["services"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:2")
    assert sorted(proxy["ports"]) == ["443:443", "80:80"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert "ports" not in services["web"]
    for name, svc in services.items():
        if name != "proxy":
            assert all(str(p).startswith("127.0.0.1:") for p in svc.get("ports", [])), name
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "{$PUBLIC_BASE_URL}" in caddyfile
    assert "request_buffers 1MB" in caddyfile
    assert "reverse_proxy web:{$PORT:8000}" in caddyfile
    for timeout in ("read_header 10s", "read_body 10s"):
        assert timeout in caddyfile
    forwarded = next(line for line in caddyfile.splitlines() if "@receiver path" in line)
    assert "/metrics" not in forwarded


# ---- .env.example -------------------------------------------------------------------------
def test_env_example_lists_exactly_the_settings_and_process_variables() -> None:
    """.env.example names every Settings alias and process variable, and nothing else."""
    names = set(env_example())
    assert names - aliases() - PROCESS_VARS == set()
    assert aliases() - names == set(), "Settings aliases missing from .env.example"
    assert PROCESS_VARS - names == set(), "process variables missing from .env.example"


def test_env_example_has_a_comment_per_variable_and_no_secret_values() -> None:
    """Each variable has a comment line right above it and every secret is left blank."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = lines[i - 1] if i > 0 else ""
            assert above.startswith("# "), f"no comment above {line}"
    values = env_example()
    for var in SECRET_VARS:
        assert values.get(var) == "", f"{var} must not carry a value in .env.example"


def test_env_example_values_are_valid_settings() -> None:
    """A copy of .env.example passes settings validation (everything but the LeadLex key)."""
    values = {k: v for k, v in env_example().items() if k not in PROCESS_VARS}
    settings = load_settings(values, require_leadlex=False)
    assert settings.leadlex_plan == "starter"
    assert settings.log_format == "auto"


# ---- Procfile -----------------------------------------------------------------------------
def test_procfile_has_the_four_processes_and_each_parses() -> None:
    """The Procfile has web, worker, beat and flower lines, each a valid shell command."""
    entries = procfile()
    assert set(entries) == {*APP_SERVICES, "cdc"}
    for name, command in entries.items():
        argv = argv_of(command)
        assert argv, name
        assert_real_entry_point(argv)
    worker = argv_of(entries["worker"])
    assert option(worker, "--concurrency", "-c") == "${WORKER_CONCURRENCY:-2}"
    assert option(worker, "-n", "--hostname") == "worker.%h"
    schedule = option(argv_of(entries["beat"]), "--schedule", "-s") or ""
    assert schedule.startswith("${BEAT_SCHEDULE:-/tmp/")
    flower = argv_of(entries["flower"])
    assert option(flower, "--conf") == "deploy/flowerconfig.py"
    # The password comes from the environment through the config file, never from argv.
    assert option(flower, "--basic-auth") is None


def test_procfile_passes_honcho_check() -> None:
    """`honcho check` accepts the Procfile."""
    honcho = Path(sys.executable).with_name("honcho")
    assert honcho.exists(), "honcho is part of the test extra"
    proc = subprocess.run(
        [str(honcho), "check", "-f", "Procfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Valid procfile detected (web, worker, beat, flower, cdc)" in proc.stdout + proc.stderr


# ---- Dockerfile ---------------------------------------------------------------------------
def test_dockerfile_installs_without_dev_extras_and_runs_unprivileged() -> None:
    """The image is python:3.11-slim (what CI tests), installs without extras, runs as non-root."""
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM python:(\S+)", text, re.M)
    assert froms
    assert all(v == "3.11-slim" for v in froms)
    assert "pip wheel --wheel-dir /wheels ." in text
    assert "[test]" not in text
    assert "[bench]" not in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".venv" in ignored

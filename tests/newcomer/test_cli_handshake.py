"""The CLI beside dev mode: it finds dev mode's Redis through `.run/dev.env`, says which Redis
it talks to, sends samples where dev mode listens, fails on a refused sample, and reports
rate figures from one source."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from cli import main
from cli.samples import sample_target
from worker import presence
from worker.embedded_redis import free_port
from worker.ratelimit import DAY_KEY, utc_day
from worker.settings import TEST_DEFAULT_REDIS_VAR, Settings, load_settings


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new terminal in an empty directory: no product setting in the environment."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.delenv(TEST_DEFAULT_REDIS_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_dev_env(cwd: Path, **values: str) -> None:
    run = cwd / ".run"
    run.mkdir(exist_ok=True)
    (run / "dev.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_cli_without_redis_url_talks_to_the_running_dev_modes_redis(
    shell: Path, redis_url: str
) -> None:
    """With REDIS_URL unset, `status` uses `.run/dev.env`'s Redis and says so."""
    write_dev_env(shell, REDIS_URL=redis_url, PID=str(os.getpid()))
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert f"redis      {redis_url} (dev mode's Redis, from .run/dev.env)" in result.stdout
    assert f"Redis: {redis_url} (dev mode's Redis, from .run/dev.env)" in result.stderr


def test_an_explicit_redis_url_wins_over_dev_mode(shell: Path, redis_url: str) -> None:
    """REDIS_URL, when set, is the Redis the CLI uses, whatever dev.env says."""
    write_dev_env(shell, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PID=str(os.getpid()))
    result = CliRunner().invoke(main, ["status", "--json"], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["redis"] == {"url": redis_url, "from": "REDIS_URL"}


def test_a_stale_dev_env_is_ignored_and_a_missing_redis_is_one_line(
    shell: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dev.env of a dead dev mode is ignored; no Redis at the default is one line with the fix."""
    write_dev_env(shell, REDIS_URL="redis://127.0.0.1:1/0", PID=str(dead_pid()))
    port = free_port()
    monkeypatch.setenv(TEST_DEFAULT_REDIS_VAR, f"127.0.0.1:{port}")
    result = CliRunner().invoke(main, ["dlq", "list"])
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        f"leadlex-sync: Redis does not answer at redis://127.0.0.1:{port}/0 (the default: "
        "REDIS_URL is not set and no dev mode runs here); set REDIS_URL, or run "
        "`leadlex-sync dev` in this directory"
    ]


def test_send_sample_targets_dev_mode_and_signs_for_its_public_base_url() -> None:
    """Without --url a sample goes to dev mode's receiver, signed for the URL it checks."""
    settings = load_settings({"PUBLIC_BASE_URL": "https://sync.example.com"}, env_file=None,
                             require_leadlex=False)  # fmt: skip
    dev = {"RECEIVER_URL": "http://127.0.0.1:9", "PUBLIC_BASE_URL": "https://tunnel.example"}
    assert sample_target(None, settings, dev) == (
        "http://127.0.0.1:9", "https://tunnel.example", "dev mode",
    )  # fmt: skip
    assert sample_target(None, settings, {}) == (
        "http://127.0.0.1:8000", "https://sync.example.com", "default",
    )  # fmt: skip


class _Refuse(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error":{"code":"invalid_signature","message":"signature does not match"}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def refusing_receiver() -> Iterator[str]:
    """A real HTTP server on loopback that answers every POST with 401."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_send_sample_refused_is_an_error_with_non_zero_exit(
    shell: Path, refusing_receiver: str
) -> None:
    """A 401 answer makes send-sample exit 1 with one line, and never print "sent"."""
    result = CliRunner().invoke(main, ["send-sample", "hubspot", "--url", refusing_receiver])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"leadlex-sync: hubspot sample refused by {refusing_receiver}")
    assert "HTTP 401" in lines[0]
    assert "PUBLIC_BASE_URL" in lines[0]
    assert "sent" not in result.stdout


def test_status_takes_rate_figures_from_the_workers_and_leadlex_not_this_shell(
    shell: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    """Per-minute comes from the workers' reported config, the daily limit from LeadLex's
    headers; this shell's LEADLEX_PLAN is used only when no worker reported."""
    env = {"REDIS_URL": redis_url, "LEADLEX_PLAN": "starter"}
    alone = json.loads(CliRunner().invoke(main, ["status", "--json"], env=env).stdout)
    assert alone["budget"]["per_minute"] == 10
    assert alone["budget"]["per_minute_from"].startswith("this shell's configuration")

    presence.record_limits(redis_client, 50, 1000, "LEADLEX_PLAN=pro")
    reported = json.loads(CliRunner().invoke(main, ["status", "--json"], env=env).stdout)
    assert (reported["budget"]["per_minute"], reported["budget"]["daily_limit"]) == (50, 1000)
    assert reported["budget"]["per_minute_from"] == "the workers' configuration (LEADLEX_PLAN=pro)"

    redis_client.hset(DAY_KEY.format(day=utc_day(time.time())), mapping={"limit": 1200})
    headers = json.loads(CliRunner().invoke(main, ["status", "--json"], env=env).stdout)
    assert headers["budget"]["daily_limit"] == 1200
    assert headers["budget"]["daily_limit_from"].startswith("LeadLex's rate headers")
    assert headers["budget"]["per_minute"] == 50

"""Every process (web, worker, beat, Flower, CLI) checks the same settings at start and
fails with the same single line naming the variable; `config check` catches it first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.newcomer.support import ROOT, clean_env
from worker.settings import Settings

BIN = Path(sys.executable).parent
BAD_PORT_LINE = "leadlex-sync: REDIS_URL: the port must be a number from 1 to 65535"
PROCESSES = {
    "web": [str(BIN / "gunicorn"), "-c", str(ROOT / "deploy/gunicorn.conf.py"),
            "webhook_app:create_app()"],
    "worker": [str(BIN / "celery"), "-A", "worker", "worker"],
    "beat": [str(BIN / "celery"), "-A", "worker", "beat"],
    "flower": [str(BIN / "celery"), "-A", "worker", "flower",
               f"--conf={ROOT / 'deploy/flowerconfig.py'}"],
    "flower-plain": [str(BIN / "celery"), "-A", "worker", "flower", "--port=0"],
    "cli": [str(BIN / "leadlex-sync"), "status"],
    "config-check": [str(BIN / "leadlex-sync"), "config", "check"],
}  # fmt: skip


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=clean_env(PYTHONPATH=str(ROOT), **env),
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("leadlex-sync:")]


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_a_malformed_redis_url_is_one_line_naming_it_in_every_process(
    process: str, tmp_path: Path
) -> None:
    """REDIS_URL=redis://127.0.0.1:63x9/0 stops each process with the same line, no traceback."""
    proc = run(
        PROCESSES[process],
        tmp_path,
        REDIS_URL="redis://127.0.0.1:63x9/0",
        LEADLEX_API_KEY="wbk_test_key",
        FLOWER_BASIC_AUTH="admin:secret",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert our_lines(proc.stderr) == [BAD_PORT_LINE]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "63x9" not in proc.stderr  # the URL (maybe with a password) is never echoed


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"MAPPING_FILE": "missing-mapping.toml"}, "leadlex-sync: MAPPING_FILE: "),
        ({"LEADLEX_PLAN": "gold"}, "leadlex-sync: LEADLEX_PLAN: "),
        ({"LEADLEX_API_KEY": ""}, "leadlex-sync: LEADLEX_API_KEY: missing"),
    ],
)
def test_beat_validates_the_settings_like_the_worker(
    env: dict[str, str], line: str, tmp_path: Path
) -> None:
    """`celery -A worker beat` with a missing mapping, a plan typo or no key exits with one line."""
    settings = {"LEADLEX_API_KEY": "wbk_test_key", "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    proc = run(PROCESSES["beat"], tmp_path, **settings)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = our_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(line)
    assert "Traceback" not in proc.stderr


def test_config_check_warns_when_no_source_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config check` passes a config without sources but warns that every webhook is refused."""
    monkeypatch.chdir(tmp_path)
    for name in [
        *(f.alias for f in Settings.model_fields.values() if f.alias),
        "FLOWER_BASIC_AUTH",
    ]:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["config", "check"], env={"LEADLEX_API_KEY": "wbk_test_key"})
    assert result.exit_code == 0, result.output
    assert "leadlex-sync: warning: no source configured" in result.stderr
    assert "leadlex-sync: warning: FLOWER_BASIC_AUTH" in result.stderr


@pytest.mark.parametrize("command", [["dlq", "show", "nope"], ["dlq", "replay", "nope"]])
def test_dlq_with_an_invalid_id_is_one_line(command: list[str], tmp_path: Path) -> None:
    """`dlq show nope` / `dlq replay nope` exit 1 with one line instead of a traceback."""
    proc = run([str(BIN / "leadlex-sync"), *command], tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert proc.returncode == 1
    assert our_lines(proc.stderr) == [
        "leadlex-sync: no dead letter 'nope': ids look like 1732612345678-0 (see `dlq list`)"
    ]
    assert "Traceback" not in proc.stderr


def test_bare_gunicorn_without_the_config_file_is_one_line_too(tmp_path: Path) -> None:
    """`gunicorn "webhook_app:create_app()"` without `-c` (so no start-up check before the
    fork): the worker prints the same one line, gunicorn stops (app failed to load, status
    4) instead of respawning, and no traceback is printed."""
    argv = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "1",
            "webhook_app:create_app()"]  # fmt: skip
    proc = run(argv, tmp_path, REDIS_URL="redis://127.0.0.1:63x9/0")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert our_lines(proc.stderr) == [BAD_PORT_LINE]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "63x9" not in proc.stderr

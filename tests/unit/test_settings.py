"""Settings: typed, validated at start-up, one line naming the variable, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_missing_api_key_names_the_variable() -> None:
    """Outside dev mode a missing LEADLEX_API_KEY stops start-up naming the variable."""
    with pytest.raises(SettingsError, match=r"^LEADLEX_API_KEY: missing"):
        load_settings({}, env_file=None)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LEADLEX_PLAN": "gold"}, "LEADLEX_PLAN"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"COALESCE_SECONDS": "soon"}, "COALESCE_SECONDS"),
        ({"SALESFORCE_ORG_IDS": "00D123"}, "SALESFORCE_ORG_IDS"),
        ({"GENERIC_WEBHOOK_SECRET": "plain-secret"}, "GENERIC_WEBHOOK_SECRET"),
        ({"PUBLIC_BASE_URL": "sync.example.com"}, "PUBLIC_BASE_URL"),
        ({"HUBSPOT_SIGNATURE_VERSIONS": "v3,v9"}, "HUBSPOT_SIGNATURE_VERSIONS"),
    ],
)
def test_malformed_value_is_one_line_naming_it(env: dict[str, str], variable: str) -> None:
    """Each malformed variable gives a single-line error that starts with its name."""
    with pytest.raises(SettingsError) as info:
        load_settings({"LEADLEX_API_KEY": "wbk_x", **env}, env_file=None)
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_secret_values_never_appear_in_errors_or_repr() -> None:
    """A bad secret is reported by name only, and repr/masked() hide every secret."""
    with pytest.raises(SettingsError) as info:
        load_settings({"GENERIC_WEBHOOK_SECRET": "s3cr3t-value"}, env_file=None)
    assert "s3cr3t-value" not in str(info.value)
    settings = load_settings(
        {"LEADLEX_API_KEY": "wbk_topsecret", "HUBSPOT_CLIENT_SECRET": "hs-topsecret"},
        env_file=None,
    )
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in str(settings.masked())
    assert settings.masked()["LEADLEX_API_KEY"] == "***"


def test_plan_and_explicit_limits() -> None:
    """The plan sets both limits; explicit limits win; no plan means Starter's (safest)."""
    base = {"LEADLEX_API_KEY": "k"}
    assert (
        load_settings(base, env_file=None).rate_per_minute,
        load_settings(base, env_file=None).daily_limit,
    ) == (10, 100)
    pro = load_settings({**base, "LEADLEX_PLAN": "Pro"}, env_file=None)
    assert (pro.rate_per_minute, pro.daily_limit) == (50, 1000)
    custom = load_settings(
        {**base, "LEADLEX_PLAN": "org", "LEADLEX_RATE_PER_MINUTE": "7"}, env_file=None
    )
    assert (custom.rate_per_minute, custom.daily_limit) == (7, 10_000)


def test_countdown_must_fit_the_visibility_timeout() -> None:
    """COALESCE_SECONDS (the only Celery countdown) must stay under the visibility timeout."""
    with pytest.raises(SettingsError, match="VISIBILITY_TIMEOUT_SECONDS"):
        load_settings(
            {"LEADLEX_API_KEY": "k", "COALESCE_SECONDS": "30", "VISIBILITY_TIMEOUT_SECONDS": "40"},
            env_file=None,
        )


def test_env_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env file supplies settings; a real environment variable overrides it."""
    env_file = tmp_path / ".env"
    env_file.write_text("LEADLEX_API_KEY=wbk_from_file\nLEADLEX_PLAN=pro\n")
    monkeypatch.setenv("LEADLEX_PLAN", "org")
    settings = load_settings(env_file=env_file)
    assert settings.leadlex_api_key is not None
    assert settings.leadlex_api_key.get_secret_value() == "wbk_from_file"
    assert settings.leadlex_plan == "org"


def test_worker_start_without_api_key_fails_with_one_line(tmp_path: Path) -> None:
    """`celery -A worker worker` without LEADLEX_API_KEY exits non-zero with one clear line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEX_")}
    env["REDIS_URL"] = "redis://127.0.0.1:6399/0"  # never reached: settings fail first
    celery = str(Path(sys.executable).with_name("celery"))
    proc = subprocess.run(
        [celery, "-A", "worker", "worker", "--pool", "solo"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    ours = [line for line in proc.stderr.splitlines() if line.startswith("leadlex-sync:")]
    assert ours == ["leadlex-sync: LEADLEX_API_KEY: missing (required to call LeadLex; see README)"]
    assert "Traceback" not in proc.stderr  # (Celery's own root-user warning may precede it)

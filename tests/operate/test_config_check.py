"""`leadlex-sync config check`: one line naming a bad variable, secrets masked, never printed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from worker.settings import Settings

SECRETS = {
    "LEADLEX_API_KEY": "wbk_live_checkme0123456789",
    "HUBSPOT_CLIENT_SECRET": "hs-secret-checkme-42",
    "SALESFORCE_TOKEN": "sf-token-checkme-42-Xq7vB2nL9wR4tY6u",
    "GENERIC_WEBHOOK_SECRET": "whsec_Y2hlY2ttZS1nZW5lcmljLXNlY3JldA==",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


def run_check(env: dict[str, str]) -> Any:
    return CliRunner().invoke(main, ["config", "check"], env=env)


@pytest.mark.usefixtures("clean_env")
def test_bad_plan_exits_non_zero_with_one_line_naming_it() -> None:
    """LEADLEX_PLAN=gold fails with exactly one line that names LEADLEX_PLAN."""
    result = run_check({"LEADLEX_PLAN": "gold", **SECRETS})
    assert result.exit_code != 0
    stderr_lines = result.stderr.strip().splitlines()
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("leadlex-sync: LEADLEX_PLAN")
    assert result.stdout == ""


@pytest.mark.usefixtures("clean_env")
def test_missing_api_key_exits_non_zero_naming_it() -> None:
    """Without LEADLEX_API_KEY the check fails with one line naming it."""
    env = {k: v for k, v in SECRETS.items() if k != "LEADLEX_API_KEY"}
    result = run_check(env)
    assert result.exit_code != 0
    stderr_lines = result.stderr.strip().splitlines()
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("leadlex-sync: LEADLEX_API_KEY")


@pytest.mark.usefixtures("clean_env")
def test_bad_secret_value_is_named_but_not_echoed() -> None:
    """A malformed secret is reported by name without its value."""
    bad = "not-a-whsec-value-1234"
    result = run_check({**SECRETS, "GENERIC_WEBHOOK_SECRET": bad})
    assert result.exit_code != 0
    assert "GENERIC_WEBHOOK_SECRET" in result.stderr
    assert bad not in result.output


@pytest.mark.usefixtures("clean_env")
def test_valid_config_prints_masked_secrets_and_never_their_values() -> None:
    """A valid configuration prints JSON with *** for every secret and a masked Redis password."""
    env = {
        **SECRETS,
        "LEADLEX_PLAN": "pro",
        "REDIS_URL": "redis://:redis-pw-checkme@127.0.0.1:6379/0",
        "SALESFORCE_ORG_IDS": "00D000000000DEVEA2",
    }
    result = run_check(env)
    assert result.exit_code == 0, result.output
    effective = json.loads(result.stdout)
    for var in SECRETS:
        assert effective[var] == "***"
    assert effective["LEADLEX_PLAN"] == "pro"
    assert effective["effective_rate_per_minute"] == 50
    assert "redis-pw-checkme" not in result.output
    for value in SECRETS.values():
        assert value not in result.output

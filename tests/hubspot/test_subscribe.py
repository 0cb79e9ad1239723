"""`leadlex-sync hubspot subscribe`: the journal subscriptions the active mapping needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.hubspot.conftest import CLIENT_ID, CLIENT_SECRET, HubSpot
from worker.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_dry_run_lists_contacts_with_the_mapped_properties_and_privacy_deletion() -> None:
    """--dry-run prints an OBJECT subscription with the mapping's properties and a GDPR one."""
    result = CliRunner().invoke(main, ["hubspot", "subscribe", "--dry-run"], env={})
    assert result.exit_code == 0, result.output
    objects, gdpr = json.loads(result.stdout)
    assert objects["actions"] == ["CREATE", "UPDATE", "DELETE", "MERGE", "RESTORE"]
    assert "jobtitle" in objects["properties"]
    assert "leadlex_notes" in objects["properties"]
    assert gdpr["subscriptionType"] == "GDPR_PRIVACY_DELETION"


@pytest.mark.usefixtures("clean_env")
def test_without_credentials_it_fails_naming_them() -> None:
    """No client id: exit 2 with one line naming HUBSPOT_CLIENT_ID."""
    result = CliRunner().invoke(main, ["hubspot", "subscribe"], env={})
    assert result.exit_code == 2
    assert "HUBSPOT_CLIENT_ID" in result.stderr


@pytest.mark.usefixtures("clean_env")
def test_running_again_after_a_mapping_change_updates_not_duplicates(
    hubspot: HubSpot, tmp_path: Path
) -> None:
    """A second run after mapping mobilephone upserts the same two subscriptions."""
    mapping = tmp_path / "mapping.toml"
    mapping.write_text("[hubspot.contact.fields]\n")
    env = {
        "HUBSPOT_CLIENT_ID": CLIENT_ID,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": hubspot.url,
        "MAPPING_FILE": str(mapping),
    }
    assert CliRunner().invoke(main, ["hubspot", "subscribe"], env=env).exit_code == 0
    mapping.write_text('[hubspot.contact.fields]\nmobilephone = "phone"\n')
    result = CliRunner().invoke(main, ["hubspot", "subscribe"], env=env)
    assert result.exit_code == 0, result.output
    with hubspot.server.state.lock:
        subs = list(hubspot.server.state.subscriptions.values())
    assert len(subs) == 2
    assert "mobilephone" in subs[0].properties
    assert CLIENT_SECRET not in result.output

"""`leadlex-sync hubspot project DIR`: a 2026 developer-platform project from the active mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from worker.settings import Settings

BASE = "https://sync.example.com"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


def run(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(main, ["hubspot", "project", *args], env=env)


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def property_subscriptions(project: Path) -> list[str]:
    meta = read(project / "src/app/webhooks/webhooks-hsmeta.json")
    return [
        s["propertyName"]
        for s in meta["config"]["subscriptions"]["crmObjects"]
        if s["subscriptionType"] == "object.propertyChange"
    ]


@pytest.mark.usefixtures("clean_env")
def test_project_has_the_three_files_with_the_default_mappings_properties(tmp_path: Path) -> None:
    """The default mapping gives hsproject.json, a static private app and every subscription."""
    out = tmp_path / "proj"
    result = run([str(out)], {"PUBLIC_BASE_URL": BASE})
    assert result.exit_code == 0, result.output
    assert read(out / "hsproject.json") == {
        "name": "leadlex-sync",
        "srcDir": "src",
        "platformVersion": "2026.03",
    }
    app = read(out / "src/app/app-hsmeta.json")
    assert app["type"] == "app"
    assert app["config"]["distribution"] == "private"
    assert app["config"]["auth"] == {
        "type": "static",
        "requiredScopes": ["crm.objects.contacts.read"],
    }
    hooks = read(out / "src/app/webhooks/webhooks-hsmeta.json")
    assert hooks["type"] == "webhooks"
    assert hooks["config"]["settings"] == {
        "targetUrl": f"{BASE}/webhooks/hubspot",
        "maxConcurrentRequests": 10,
    }
    crm = hooks["config"]["subscriptions"]["crmObjects"]
    actions = [s["subscriptionType"] for s in crm if "propertyName" not in s]
    assert actions == ["object.creation", "object.deletion", "object.merge", "object.restore"]
    assert all(s["objectType"] == "contact" and s["active"] for s in crm)
    assert property_subscriptions(out) == sorted(
        [
            "firstname",
            "lastname",
            "email",
            "phone",
            "jobtitle",
            "company",
            "hs_linkedin_url",
            "leadlex_notes",
            "leadlex_contact_id",
        ]
    )
    assert hooks["config"]["subscriptions"]["hubEvents"] == [
        {"subscriptionType": "contact.privacyDeletion", "active": True}
    ]


@pytest.mark.usefixtures("clean_env")
def test_rerun_after_a_mapping_change_updates_the_subscriptions(tmp_path: Path) -> None:
    """Mapping mobilephone and dropping hs_linkedin_url adds and removes those subscriptions."""
    out = tmp_path / "proj"
    mapping = tmp_path / "mapping.toml"
    env = {"PUBLIC_BASE_URL": BASE, "MAPPING_FILE": str(mapping)}
    mapping.write_text("[hubspot.contact.fields]\n")
    assert run([str(out)], env).exit_code == 0
    assert "mobilephone" not in property_subscriptions(out)
    mapping.write_text(
        '[hubspot.contact.fields]\nmobilephone = "phone"\nhs_linkedin_url = false\n'
        '[hubspot.notes]\nfield = "sync_notes"\n'
    )
    result = run([str(out)], env)
    assert result.exit_code == 0, result.output
    props = property_subscriptions(out)
    assert "mobilephone" in props
    assert "sync_notes" in props
    assert "hs_linkedin_url" not in props
    assert "leadlex_notes" not in props
    assert "+mobilephone" in result.output
    assert "-hs_linkedin_url" in result.output


@pytest.mark.usefixtures("clean_env")
def test_journal_mode_needs_no_public_url_and_writes_no_webhooks(tmp_path: Path) -> None:
    """--mode journal writes no webhooks component and removes one left by an earlier run."""
    out = tmp_path / "proj"
    assert run([str(out)], {"PUBLIC_BASE_URL": BASE}).exit_code == 0
    result = run([str(out), "--mode", "journal"], {})
    assert result.exit_code == 0, result.output
    assert not (out / "src/app/webhooks/webhooks-hsmeta.json").exists()
    assert (out / "src/app/app-hsmeta.json").is_file()


@pytest.mark.usefixtures("clean_env")
def test_oauth_app_lists_the_redirect_url_and_the_oauth_scope(tmp_path: Path) -> None:
    """--auth oauth gives an OAuth private app with its redirect URL and the oauth scope."""
    out = tmp_path / "proj"
    result = run(
        [str(out), "--auth", "oauth", "--redirect-url", f"{BASE}/oauth"],
        {"PUBLIC_BASE_URL": BASE},
    )
    assert result.exit_code == 0, result.output
    auth = read(out / "src/app/app-hsmeta.json")["config"]["auth"]
    assert auth["type"] == "oauth"
    assert auth["redirectUrls"] == [f"{BASE}/oauth"]
    assert auth["requiredScopes"] == ["oauth", "crm.objects.contacts.read"]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ([], {}, "PUBLIC_BASE_URL"),
        ([], {"PUBLIC_BASE_URL": "http://sync.example.com"}, "PUBLIC_BASE_URL"),
        (["--auth", "oauth"], {"PUBLIC_BASE_URL": BASE}, "--redirect-url"),
        (["--max-concurrent-requests", "5"], {"PUBLIC_BASE_URL": BASE}, "--max-concurrent"),
    ],
)
def test_bad_input_fails_with_one_line_naming_it(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    """A missing/insecure target URL or a bad option exits 2 with one line naming it."""
    result = run([str(tmp_path / "proj"), *args], env)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert named in result.stderr
    assert not (tmp_path / "proj").exists()

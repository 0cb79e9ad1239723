"""`leadlex-sync links match`: 5,000 CRM rows against LeadLex's contacts for at most 2 calls."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from cli import main
from leadlex_sandbox import SandboxServer
from leadlex_sandbox.population import crm_export_csv, population
from worker.events import ChangeEvent, fingerprint
from worker.settings import Settings
from worker.state import State


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def leadlex() -> Iterator[SandboxServer]:
    """A LeadLex simulator on a free loopback port (Starter limits)."""
    with SandboxServer() as server:
        yield server


def cli_env(redis_url: str, leadlex: SandboxServer) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "LEADLEX_BASE_URL": leadlex.base_url,
        "LEADLEX_API_KEY": leadlex.api_key,
        "LEADLEX_PLAN": "starter",
    }


def api_calls(leadlex: SandboxServer) -> list[str]:
    with leadlex.state.lock:
        return [f"{e.method} {e.path}" for e in leadlex.state.log.entries(0, None)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("source", ["hubspot", "salesforce"])
def test_5000_rows_link_correctly_for_one_export_call(
    source: str, leadlex: SandboxServer, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Every row reaches its expected outcome (traps included), ambiguous rows stay unlinked,
    and the whole run spends one LeadLex call."""
    pop = population(5000, seed=11, source=source)
    leadlex.seed(pop.leadlex)
    export = tmp_path / "crm.csv"
    export.write_text(crm_export_csv(pop, source), encoding="utf-8")
    env = cli_env(redis_url, leadlex)

    dry = CliRunner().invoke(main, ["links", "match", str(export), "--source", source], env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    assert State(redis_client).count_links() == 0
    applied = CliRunner().invoke(
        main, ["links", "match", str(export), "--source", source, "--apply"], env=env
    )
    assert applied.exit_code == 0, applied.output

    state = State(redis_client)
    for object_id, want in pop.expected.items():
        got = state.resolve_link(source, "", object_id)
        if want in ("ambiguous", "unmatched"):
            assert got is None, (object_id, want, got)
        else:
            assert got == want, (object_id, want, got)
    ambiguous = {r["object_id"] for r in read_csv(tmp_path / "crm.ambiguous.csv")}
    unmatched = {r["object_id"] for r in read_csv(tmp_path / "crm.unmatched.csv")}
    assert ambiguous == {k for k, v in pop.expected.items() if v == "ambiguous"}
    assert unmatched == {k for k, v in pop.expected.items() if v == "unmatched"}
    assert api_calls(leadlex) == ["GET /v1/contacts/export"] * 2  # one per run
    rerun = CliRunner().invoke(main, ["links", "match", str(export), "--source", source], env=env)
    matched = sum(1 for v in pop.expected.values() if v not in ("ambiguous", "unmatched"))
    assert re.search(rf"already_linked\s+{matched}\n", rerun.output), rerun.output


@pytest.mark.usefixtures("clean_env")
def test_refused_export_falls_back_to_the_paged_list_after_showing_its_cost(
    leadlex: SandboxServer, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """With the export refused, the cost of the list is printed before it is fetched; without
    consent nothing more is spent; with --allow-list the list links the same records."""
    pop = population(250, seed=5)
    leadlex.seed(pop.leadlex)
    leadlex.state.configure({"export_per_hour": 0, "per_minute": 100})
    export = tmp_path / "crm.csv"
    export.write_text(crm_export_csv(pop), encoding="utf-8")
    env = cli_env(redis_url, leadlex) | {
        "LEADLEX_RATE_PER_MINUTE": "100",
        "LEADLEX_DAILY_LIMIT": "100",
    }
    env.pop("LEADLEX_PLAN")
    asked = CliRunner().invoke(
        main, ["links", "match", str(export), "--source", "hubspot"], env=env, input="n\n"
    )
    assert asked.exit_code == 1
    total = len(pop.leadlex)
    assert f"the paged list costs 3 LeadLex calls for {total} contacts" in asked.output
    assert api_calls(leadlex) == ["GET /v1/contacts/export", "GET /v1/contacts"]
    waiting = next(k for k, v in pop.expected.items() if v not in ("ambiguous", "unmatched"))
    parked = ChangeEvent(
        source="hubspot",
        account="62515",
        object_type="contact",
        object_id=waiting,
        kind="update",
        occurred_at_ms=1_780_000_000_000,
        fingerprint=fingerprint("parked", waiting),
        changes={"jobtitle": "Partner"},
    )
    assert State(redis_client).park(parked.to_dict(), check_link=True) is None
    done = CliRunner().invoke(
        main,
        ["links", "match", str(export), "--source", "hubspot", "--allow-list", "--apply"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert api_calls(leadlex)[2:] == ["GET /v1/contacts/export"] + ["GET /v1/contacts"] * 3
    state = State(redis_client)
    for object_id, want in pop.expected.items():
        if want not in ("ambiguous", "unmatched"):
            assert state.resolve_link("hubspot", "", object_id) == want
    assert "1 parked events replayed" in done.output  # through link_records
    assert redis_client.hexists("lls:inbox", parked.fingerprint)


@pytest.mark.usefixtures("clean_env")
def test_more_contacts_than_one_export_are_all_matched_and_the_calls_reported(
    leadlex: SandboxServer,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the export's maximum lowered to 50 and rows in any order, every row of a directory
    over twice that size reaches its expected outcome and the output names the export calls."""
    from datetime import UTC, datetime, timedelta

    from worker.onboarding import directory

    monkeypatch.setattr(directory, "EXPORT_LIMIT", 50)
    pop = population(110, seed=5)
    start = datetime.now(UTC) - timedelta(days=10)
    leadlex.seed(
        [
            c | {"created_date": (start + timedelta(minutes=7 * (i // 3))).isoformat()}
            for i, c in enumerate(pop.leadlex)
        ]
    )
    leadlex.state.configure({"export_per_hour": 1000, "export_order": "shuffled"})
    export = tmp_path / "crm.csv"
    export.write_text(crm_export_csv(pop), encoding="utf-8")
    done = CliRunner().invoke(
        main,
        ["links", "match", str(export), "--source", "hubspot", "--apply"],
        env=cli_env(redis_url, leadlex) | {"LEADLEX_PLAN": "org"},
    )
    assert done.exit_code == 0, done.output
    calls = len(api_calls(leadlex))
    assert set(api_calls(leadlex)) == {"GET /v1/contacts/export"}
    assert calls > 1
    assert f"in {calls} export calls" in done.output
    assert f"LeadLex contacts: {len(pop.leadlex)} via export, {calls} LeadLex call(s)" in (
        done.output
    )
    state = State(redis_client)
    for object_id, want in pop.expected.items():
        if want not in ("ambiguous", "unmatched"):
            assert state.resolve_link("hubspot", "", object_id) == want, object_id
        else:
            assert state.resolve_link("hubspot", "", object_id) is None, object_id

"""`backfill` and `reconcile` read the whole directory: created_at windows past the export's
maximum, the paged list (after its cost) when the export is refused, the daily task only
within its share of the day's calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from cli import main
from cli.status import onboarding_report
from leadlex_sandbox import SandboxServer
from tests.onboarding.conftest import API_KEY, flush_all
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.metrics import Metrics
from worker.onboarding import directory, reconcile
from worker.ratelimit import DAY_PREFIX, MINUTE_KEY
from worker.settings import Settings
from worker.state import State

ACCOUNT = "62515"
NOW_MS = 1_780_000_000_000
LINKED = 40
FILLER = 180  # unlinked contacts: 220 in all, 3 list pages of 100


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


def api_calls(leadlex: SandboxServer) -> list[str]:
    with leadlex.state.lock:
        return [f"{e.method} {e.path}" for e in leadlex.state.log.entries(0, None)]


def seed(leadlex: SandboxServer, title: str = "Old") -> list[str]:
    """LINKED contacts (p0..) then FILLER others, created a few minutes apart."""
    start = datetime.now(UTC) - timedelta(days=3)
    records = [
        {"full_name": f"First{i} Last{i}", "email": f"p{i}@example.com", "job_title": title}
        for i in range(LINKED)
    ] + [{"full_name": f"Other {i}", "email": f"o{i}@example.com"} for i in range(FILLER)]
    for i, record in enumerate(records):
        record["created_date"] = (start + timedelta(minutes=3 * i)).isoformat()
    return [c["id"] for c in leadlex.seed(records)]


def synced(rt: pipeline.Runtime, ids: list[str]) -> None:
    """Link p0.. to their contacts and sync the CRM's values (equal to LeadLex's)."""
    pipeline.link_records(rt, [("hubspot", ACCOUNT, str(i), ids[i]) for i in range(LINKED)])
    for i in range(LINKED):
        changes: dict[str, str | None] = {
            "firstname": f"First{i}",
            "lastname": f"Last{i}",
            "email": f"p{i}@example.com",
            "jobtitle": "Old",
        }
        pipeline.ingest(
            rt,
            ChangeEvent(
                source="hubspot",
                account=ACCOUNT,
                object_type="contact",
                object_id=str(i),
                kind="update",
                occurred_at_ms=NOW_MS + i,
                fingerprint=fingerprint("t", i),
                changes=changes,
            ),
        )
    flush_all(rt)


def edit_in_leadlex(leadlex: SandboxServer, ids: list[str], which: range) -> None:
    with leadlex.state.lock:
        for i in which:
            leadlex.state.store.get(ids[i]).job_title = "Edited"  # type: ignore[union-attr]


def test_reconcile_reads_past_the_export_maximum_instead_of_reporting_contacts_missing(
    make_runtime: Callable[..., pipeline.Runtime],
    leadlex: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the export's maximum at 100 and 220 contacts, every linked contact is compared (none
    reported missing), the drift on the last ones is found, and the calls are kept."""
    monkeypatch.setattr(directory, "EXPORT_LIMIT", 100)
    leadlex.state.configure({"export_per_hour": 1000, "export_order": "shuffled"})
    ids = seed(leadlex)
    rt = make_runtime()
    synced(rt, ids)
    edit_in_leadlex(leadlex, ids, range(30, 40))
    before = len(api_calls(leadlex))
    report = reconcile.run(rt)
    made = api_calls(leadlex)[before:]
    assert set(made) == {"GET /v1/contacts/export"}
    assert (report.compared, report.missing) == (LINKED, [])
    assert {d.contact for d in report.drifts} == {ids[i] for i in range(30, 40)}
    assert report.calls == len(made) > 1
    assert reconcile.latest(rt.redis)["calls"] == len(made)


def test_daily_reconcile_uses_the_list_only_within_its_share_else_skips_with_a_reason(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """Export refused: on 10,000 calls a day the 3-page list is used (1 + 3 calls); on 20 a day
    (share 0.1 -> 2 calls; a fresh day) it stops after the first page, and `status` and a
    metric say why."""
    ids = seed(leadlex)
    rt = make_runtime()
    synced(rt, ids)
    edit_in_leadlex(leadlex, ids, range(5))
    leadlex.state.configure({"export_per_hour": 0})

    before = len(api_calls(leadlex))
    report = reconcile.run_daily(rt)
    assert api_calls(leadlex)[before:] == ["GET /v1/contacts/export"] + ["GET /v1/contacts"] * 3
    assert (report.via, report.calls, report.compared) == ("list", 4, LINKED)
    assert {d.contact for d in report.drifts} == {ids[i] for i in range(5)}
    assert onboarding_report(rt.redis)["reconcile_skipped"] is None

    small = make_runtime(env={"LEADLEX_RATE_PER_MINUTE": "200", "LEADLEX_DAILY_LIMIT": "20"})
    small.redis.delete(reconcile.DRIFT_KEY, MINUTE_KEY, *small.redis.keys(f"{DAY_PREFIX}*"))
    before = len(api_calls(leadlex))
    with pytest.raises(reconcile.ReconcileSkipped, match=r"would cost 3 calls, more than 0.1"):
        reconcile.run_daily(small)
    assert api_calls(leadlex)[before:] == ["GET /v1/contacts/export", "GET /v1/contacts"]
    shown = onboarding_report(small.redis)["reconcile_skipped"]
    assert "export refused: 429" in shown["reason"]
    assert reconcile.latest(small.redis) == {}  # no drift recorded from a partial read
    assert Metrics(small.redis).value("reconcile_skipped") == 1


@pytest.mark.usefixtures("clean_env")
def test_reconcile_command_shows_the_list_cost_first_and_uses_it_when_allowed(
    leadlex: SandboxServer, redis_url: str, redis_client: redis.Redis, make_runtime: Callable
) -> None:
    """Export refused: without consent only the list's first page is spent; --allow-list reads
    the list and reports the calls and the drift."""
    ids = seed(leadlex)
    synced(make_runtime(), ids)
    edit_in_leadlex(leadlex, ids, range(3))
    leadlex.state.configure({"export_per_hour": 0})
    env = {
        "REDIS_URL": redis_url,
        "LEADLEX_BASE_URL": leadlex.base_url,
        "LEADLEX_API_KEY": API_KEY,
        "LEADLEX_PLAN": "org",
    }
    before = len(api_calls(leadlex))
    asked = CliRunner().invoke(main, ["reconcile"], env=env, input="n\n")
    assert asked.exit_code == 1
    assert "the paged list costs 3 LeadLex calls for 220 contacts" in asked.output
    assert api_calls(leadlex)[before:] == ["GET /v1/contacts/export", "GET /v1/contacts"]
    done = CliRunner().invoke(main, ["reconcile", "--allow-list"], env=env)
    assert done.exit_code == 0, done.output
    assert f"compared {LINKED} linked records (4 LeadLex call(s), via list)" in done.output
    assert "3 fields differ on 3 contacts" in done.output
    assert api_calls(leadlex)[before + 2 :] == ["GET /v1/contacts/export"] + (
        ["GET /v1/contacts"] * 3
    )


@pytest.mark.usefixtures("clean_env")
def test_backfill_command_falls_back_to_the_list_after_showing_its_cost(
    leadlex: SandboxServer, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Export refused: declining the list spends one page and queues nothing; --allow-list
    plans from the list (same plan as from the export) and queues it."""
    ids = seed(leadlex)
    State(redis_client).set_links([("hubspot", "", str(i), ids[i]) for i in range(LINKED)])
    export = tmp_path / "crm.csv"
    lines = ["Record ID,First Name,Last Name,Email,Job Title"]
    lines += [
        f"{i},First{i},Last{i},p{i}@example.com,{'New' if i < 25 else 'Old'}" for i in range(LINKED)
    ]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    leadlex.state.configure({"export_per_hour": 0})
    env = {
        "REDIS_URL": redis_url,
        "LEADLEX_BASE_URL": leadlex.base_url,
        "LEADLEX_API_KEY": API_KEY,
        "LEADLEX_PLAN": "org",
    }
    args = ["backfill", str(export), "--source", "hubspot", "--yes"]
    asked = CliRunner().invoke(main, args, env=env, input="n\n")
    assert asked.exit_code == 1
    assert "the paged list costs 3 LeadLex calls for 220 contacts" in asked.output
    assert "contacts differ" not in asked.output
    assert api_calls(leadlex) == ["GET /v1/contacts/export", "GET /v1/contacts"]
    assert redis_client.llen("lls:backfill:queue") == 0
    done = CliRunner().invoke(main, [*args, "--allow-list"], env=env)
    assert done.exit_code == 0, done.output
    assert f"LeadLex contacts: {LINKED + FILLER} via list, 4 LeadLex call(s)" in done.output
    assert "25 contacts differ (25 fields): 25 LeadLex calls" in done.output
    assert "15 linked records already equal" in done.output
    assert "0 linked to contacts missing in LeadLex" in done.output
    assert "queued 25 records" in done.output
    assert api_calls(leadlex)[2:] == ["GET /v1/contacts/export"] + ["GET /v1/contacts"] * 3

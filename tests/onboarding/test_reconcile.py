"""`reconcile`: one export, every seeded drift found with its reason, nothing else; --repair."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cli.status import onboarding_report
from leadlex_sandbox import SandboxServer
from tests.onboarding.conftest import flush_all
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.onboarding import reconcile
from worker.onboarding.drift import Evidence, explain

ACCOUNT = "62515"
NOW_MS = 1_780_000_000_000


def update(object_id: str, changes: dict[str, str | None], ts: int) -> ChangeEvent:
    return ChangeEvent(
        source="hubspot",
        account=ACCOUNT,
        object_type="contact",
        object_id=object_id,
        kind="update",
        occurred_at_ms=ts,
        fingerprint=fingerprint("t", object_id, ts, sorted(changes.items())),
        changes=changes,
    )


def person(i: int) -> dict[str, str]:
    return {
        "firstname": f"First{i}",
        "lastname": f"Last{i}",
        "email": f"p{i}@example.com",
        "phone": f"+1 415 200 {i:04d}",
        "jobtitle": "Partner",
        "company": "Acme Legal",
    }


def test_reconcile_finds_every_seeded_drift_and_nothing_else(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """After a sync, LeadLex edits, a relink, a pending change and a dead letter are each
    reported once with their reason; contacts that agree (other spellings) are not."""
    rt = make_runtime()
    seeded = leadlex.seed(
        [
            {
                "full_name": f"First{i} Last{i}",
                "email": f"P{i}@EXAMPLE.com",  # another spelling of the same address
                "phone": f"(415) 200-{i:04d}",  # no country code
                "job_title": "Intern",
                "company_name": "Acme Legal",
            }
            for i in range(40)
        ]
    )
    ids = [c["id"] for c in seeded]
    pipeline.link_records(rt, [("hubspot", ACCOUNT, str(i), ids[i]) for i in range(40)])
    for i in range(40):
        pipeline.ingest(rt, update(str(i), person(i), NOW_MS + i))
    flush_all(rt)
    assert reconcile.run(rt).drifts == []  # synced: every field agrees

    # edited in LeadLex after our write (3)
    with leadlex.state.lock:
        for i in (0, 1, 2):
            leadlex.state.store.get(ids[i]).job_title = "Edited by hand"  # type: ignore[union-attr]
    # relinked to another contact that never got the value (1)
    [other] = leadlex.seed(
        [
            {
                "full_name": "First10 Last10",
                "email": "p10@example.com",
                "phone": "+14152000010",
                "job_title": "Old title",
                "company_name": "Acme Legal",
            }
        ]
    )
    rt.state.remove_links_for_record("hubspot", ACCOUNT, "10")
    pipeline.link_records(rt, [("hubspot", ACCOUNT, "10", other["id"])])
    # staged, not flushed yet (1)
    pipeline.ingest(rt, update("20", {"jobtitle": "Counsel"}, NOW_MS + 10_000))
    # refused by LeadLex -> dead letter (1)
    leadlex.state.configure({"max_field_length": 20})
    pipeline.ingest(rt, update("30", {"jobtitle": "A title far too long for it"}, NOW_MS + 10_000))
    pipeline.flush(rt, ids[30])
    leadlex.state.configure({"max_field_length": 255})
    assert rt.dlq.count() == 1

    calls_before = len(leadlex.state.log.entries(0, None))
    report = reconcile.run(rt)
    assert len(leadlex.state.log.entries(0, None)) == calls_before + 1
    found = {(d.contact, d.field, d.reason) for d in report.drifts}
    assert found == {
        (ids[0], "job_title", "edited_in_leadlex"),
        (ids[1], "job_title", "edited_in_leadlex"),
        (ids[2], "job_title", "edited_in_leadlex"),
        (other["id"], "job_title", "never_arrived"),
        (ids[20], "job_title", "pending"),
        (ids[30], "job_title", "dead_letter"),
    }
    assert report.compared == 40
    assert reconcile.latest(rt.redis)["fields"] == 6
    shown = onboarding_report(rt.redis)["drift"]
    assert (shown["fields"], shown["reasons"]["edited_in_leadlex"]) == (6, 3)  # `status`

    staged = reconcile.repair(rt, report)
    assert staged == 4  # edited (3) and never arrived (1); pending and dead letter left alone
    flush_all(rt)
    after = reconcile.run(rt)
    assert {(d.contact, d.reason) for d in after.drifts} == {
        (ids[30], "dead_letter"),
    }
    assert leadlex.state.store.get(ids[0]).job_title == "Partner"  # type: ignore[union-attr]


def test_explain_orders_the_reasons() -> None:
    """Parked beats a dead letter beats pending beats our own write beats never arrived."""
    assert (
        explain("job_title", "A", Evidence(parked=True, staged_fields={"job_title"}), "US")
        == "parked"
    )
    assert explain("email", "a@x.test", Evidence(dead_letter_fields={"*"}), "US") == "dead_letter"
    assert explain("job_title", "A", Evidence(staged_fields={"job_title"}), "US") == "pending"
    assert (
        explain("phone", "+1 415 200 0001", Evidence(applied={"phone": "+14152000001"}), "US")
        == "edited_in_leadlex"
    )
    assert (
        explain("phone", "+1 415 200 0001", Evidence(applied={"phone": "+14152000002"}), "US")
        == "never_arrived"
    )


def test_daily_reconcile_is_opt_in_and_scheduled_at_the_given_utc_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No beat entry by default; RECONCILE_DAILY_AT=03:15 schedules it then; a bad value names
    the variable."""
    from celery.schedules import crontab

    from worker.celery_app import _reconcile_schedule
    from worker.settings import SettingsError, load_settings

    monkeypatch.delenv("RECONCILE_DAILY_AT", raising=False)
    assert _reconcile_schedule() == {}
    monkeypatch.setenv("RECONCILE_DAILY_AT", "03:15")
    entry = _reconcile_schedule()["reconcile"]
    assert entry["task"] == "leadlex_sync.reconcile"
    assert entry["schedule"] == crontab(hour=3, minute=15)
    with pytest.raises(SettingsError, match="RECONCILE_DAILY_AT"):
        load_settings({"RECONCILE_DAILY_AT": "25:00"}, env_file=None)

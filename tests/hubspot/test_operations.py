"""Operations: each source's lag and the journal position in `status` and /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from cli import main
from pull_sources.hubspot_journal.poller import PollRuntime, poll_once
from tests.hubspot.conftest import CLIENT_ID, CLIENT_SECRET, HubSpot
from tests.receiver.conftest import close_app
from tests.receiver.senders import make_settings
from webhook_app import create_app
from worker.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Settings variable from the outer environment and no .env file in the cwd."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    monkeypatch.chdir(tmp_path)


def status_json(redis_url: str) -> dict[str, object]:
    env = {
        "REDIS_URL": redis_url,
        "HUBSPOT_JOURNAL": "on",
        "HUBSPOT_CLIENT_ID": CLIENT_ID,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
    }
    text = CliRunner().invoke(main, ["status"], env=env)
    assert text.exit_code == 0, text.output
    assert "journal    hubspot (global): offset" in text.stdout
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.mark.usefixtures("clean_env")
def test_status_shows_journal_offset_lag_and_the_gap_alert(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_url: str
) -> None:
    """After a poll, status names the offset and lag; an expired offset adds an ALERT line."""
    poll_runtime.wall = hubspot.server.state.clock.now  # the poller lives on HubSpot's time
    offset = hubspot.record({"objectId": 1, "properties": {"jobtitle": "A"}})["offset"]
    poll_once(poll_runtime)
    report = status_json(redis_url)
    [journal] = report["hubspot_journal"]  # type: ignore[misc]
    assert journal["offset"] == offset
    assert journal["entries"] == 1
    assert journal["lag_seconds"] is not None
    assert "hubspot_journal" in report["sources"]  # type: ignore[operator]
    assert report["alerts"] == []

    hubspot.record({"objectId": 1, "properties": {"jobtitle": "missed"}})
    hubspot.advance(3 * 86_400 + 10)
    poll_once(poll_runtime)
    alerts = status_json(redis_url)["alerts"]
    assert len(alerts) == 1  # type: ignore[arg-type]
    assert "offset expired" in alerts[0]  # type: ignore[index]


def test_metrics_export_source_lag_and_journal_gauges(
    hubspot: HubSpot, poll_runtime: PollRuntime, redis_url: str, redis_client: redis.Redis
) -> None:
    """/metrics has the per-source age gauge and the journal's lag and last-poll gauges."""
    hubspot.record({"objectId": 1, "properties": {"jobtitle": "A"}})
    poll_once(poll_runtime)
    app = create_app(make_settings(redis_url))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'leadlex_sync_source_newest_event_age_seconds{source="hubspot_journal"}' in text
    assert 'leadlex_sync_hubspot_journal_lag_seconds{scope="global"}' in text
    assert 'leadlex_sync_hubspot_journal_last_poll_timestamp_seconds{scope="global"}' in text
    assert "leadlex_sync_journal_entries_read_total 1.0" in text
    close_app(app)

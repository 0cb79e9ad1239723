"""Issue 11's pure parts: org-id checksums, Salesforce token rules, HubSpot default, metric
labels and the dead-letter caps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from worker.deadletter import INVALID_PREFIX, INVALID_STREAM, STREAM, DeadLetters
from worker.handoff import load_events, record_events
from worker.metrics import COUNTERS_KEY, Metrics, label_value
from worker.salesforce_ids import SalesforceIdError, checksum, to_18
from worker.settings import SettingsError, load_settings

TOKEN = "unit-Tk4vB8xQ2mLw9ZrC5nYd7HeJ6sGa1Pf3"


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, require_leadlex=False, env_file=None)


# ---- Salesforce ids ---------------------------------------------------------------------------
def test_checksum_of_a_known_salesforce_id() -> None:
    """The suffix is computed as Salesforce does (a published id and its 18-char form)."""
    assert checksum("001D000000IRFma") == "IAH"
    assert to_18("001D000000IRFma") == "001D000000IRFmaIAH"


def test_eighteen_char_ids_are_checked_and_normalized() -> None:
    """A right suffix (any case) is accepted and normalized; a wrong one is refused."""
    assert to_18("00D5g000004XmPqEAK") == "00D5g000004XmPqEAK"
    assert to_18("00D5g000004XmPqeak") == "00D5g000004XmPqEAK"
    for bad in ("00D5g000004XmPqXYZ", "00D5g000004XmP!EA", "short", "00D5g000004XmPqEAKX"):
        with pytest.raises(SalesforceIdError):
            to_18(bad)


def test_allow_list_is_stored_in_the_18_char_form() -> None:
    """SALESFORCE_ORG_IDS given as 15 characters is kept as the 18-character id."""
    s = settings(SALESFORCE_ORG_IDS="00D5g000004XmPq", SALESFORCE_TOKEN=TOKEN)
    assert s.salesforce_org_ids == ["00D5g000004XmPqEAK"]


# ---- Salesforce token -------------------------------------------------------------------------
def test_org_ids_without_a_token_do_not_start() -> None:
    """Org ids without SALESFORCE_TOKEN stop start-up naming the token and how to make one."""
    with pytest.raises(SettingsError, match=r"^SALESFORCE_TOKEN: missing.*token_urlsafe"):
        settings(SALESFORCE_ORG_IDS="00D5g000004XmPqEAK")


@pytest.mark.parametrize(
    "token", ["short-token", "a" * 40, "sf token with spaces 0123456789abcdef"]
)
def test_weak_tokens_are_refused_without_echoing_them(token: str) -> None:
    """A token under 32 characters, of too few distinct characters or not URL-safe is refused."""
    with pytest.raises(SettingsError) as info:
        settings(SALESFORCE_ORG_IDS="00D5g000004XmPqEAK", SALESFORCE_TOKEN=token)
    assert str(info.value).startswith("SALESFORCE_TOKEN: must be at least 32")
    assert token not in str(info.value)


def test_unauthenticated_salesforce_only_when_asked() -> None:
    """SALESFORCE_ALLOW_UNAUTHENTICATED=true lets org ids start without a token."""
    s = settings(SALESFORCE_ORG_IDS="00D5g000004XmPqEAK", SALESFORCE_ALLOW_UNAUTHENTICATED="true")
    assert s.salesforce_token is None


def test_hubspot_accepts_only_v3_by_default() -> None:
    """HUBSPOT_SIGNATURE_VERSIONS defaults to v3 alone."""
    assert settings().hubspot_signature_versions == ["v3"]


# ---- metric labels ----------------------------------------------------------------------------
def test_label_values_come_from_fixed_sets() -> None:
    """Sender-chosen values become `other`; known values and our own codes pass."""
    assert label_value("kind", "Evil42__c") == "other"
    assert label_value("kind", "Account") == "Account"
    assert label_value("source", "hubspot") == "hubspot"
    assert label_value("source", "mallory") == "other"
    assert label_value("status", "429") == "429"
    assert label_value("reason", "invalid_event") == "invalid_event"
    assert label_value("reason", "Invalid Event <script>") == "other"
    # a CDC channel from SALESFORCE_CDC_TOPICS (configuration, not a sender) keeps its name
    assert label_value("topic", "/data/ContactChangeEvent") == "/data/ContactChangeEvent"
    assert label_value("topic", "/data/x y") == "other"
    assert Metrics.field("events_ignored", source="x", kind="y" * 500) == (
        '["events_ignored","other","other"]'
    )


# ---- dead letters -----------------------------------------------------------------------------
def test_invalid_letters_are_truncated_and_marked(redis_client: redis.Redis) -> None:
    """An invalid-input letter over the size cap keeps its head, marked truncated."""
    dlq = DeadLetters(redis_client, max_letter_bytes=2048)
    entry = dlq.add("invalid_event", source="hubspot", payload={"blob": "x" * 100_000})
    assert entry.startswith(INVALID_PREFIX)
    letter = dlq.get(entry)
    assert letter is not None
    assert letter.truncated
    assert letter.payload["truncated"] is True
    assert letter.payload["bytes"] > 100_000
    assert len(json.dumps(letter.payload)) <= 2048 + 100


def test_invalid_stream_is_trimmed_and_counted_promised_letters_never(
    redis_client: redis.Redis,
) -> None:
    """Past its maxlen the invalid stream drops its oldest letters and counts them; letters
    of other reasons (data we promised not to lose) are all kept."""
    dlq = DeadLetters(redis_client, invalid_maxlen=100)
    for i in range(130):
        dlq.add("invalid_event", source="hubspot", payload={"i": i})
        dlq.add("validation_error", source="hubspot", payload={"i": i})
    assert redis_client.xlen(INVALID_STREAM) == 100
    assert redis_client.xlen(STREAM) == 130
    assert (
        int(
            redis_client.hget(
                COUNTERS_KEY, Metrics.field("dead_letters_trimmed", reason="invalid_event")
            )
        )
        == 30
    )
    assert dlq.count() == 230
    letters = list(dlq.iter())
    assert [lt.created_ms for lt in letters] == sorted(lt.created_ms for lt in letters)
    invalid = list(dlq.iter("invalid_event"))
    assert invalid[0].payload == {"i": 30}
    assert dlq.delete(invalid[0].id, letters[0].id) == 2
    assert dlq.count() == 228


def test_oversized_promised_letters_are_kept_whole(redis_client: redis.Redis) -> None:
    """A letter of another reason is never truncated, whatever its size."""
    dlq = DeadLetters(redis_client, max_letter_bytes=1024)
    entry = dlq.add("validation_error", source="hubspot", payload={"v": "y" * 10_000})
    letter = dlq.get(entry)
    assert letter is not None
    assert not letter.truncated
    assert letter.payload == {"v": "y" * 10_000}


# ---- references -------------------------------------------------------------------------------
def test_load_events_reads_refs_and_keeps_old_dicts(redis_client: redis.Redis) -> None:
    """Refs are read from the inbox, dicts pass through, a ref without a record is None."""
    event = {"fingerprint": "f" * 32, "source": "hubspot", "changes": {"email": "a@b.c"}}
    pipe = redis_client.pipeline()
    refs = record_events(pipe, [event], 0.0)
    pipe.execute()
    assert refs == ["f" * 32]
    old = {"fingerprint": "e" * 32}
    assert load_events(redis_client, ["f" * 32, old, "0" * 32]) == [event, old, None]


def test_status_reports_invalid_letters_trimmed_and_unauthenticated_salesforce(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """`leadlex-sync status` shows the invalid-input letters, how many were trimmed, and a
    warning while Salesforce runs unauthenticated."""
    from cli.status import status_report

    dlq = DeadLetters(redis_client, invalid_maxlen=100)
    for i in range(105):
        dlq.add("invalid_event", source="hubspot", payload={"i": i})
    s = settings(
        REDIS_URL=redis_url,
        SALESFORCE_ORG_IDS="00D5g000004XmPqEAK",
        SALESFORCE_ALLOW_UNAUTHENTICATED="true",
    )
    report = status_report(s, redis_client)
    assert report["dead_letters_invalid"] == 100
    assert report["dead_letters_trimmed"] == 5
    assert report["dead_letters"] == 100
    assert any("unauthenticated" in w for w in report["warnings"])


def test_links_import_stores_salesforce_accounts_in_the_18_char_form(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 15-char org id in links.csv is stored as the 18-char id events carry; a forged
    checksum is refused before anything is written."""
    from click.testing import CliRunner

    from cli import main
    from worker.state import State

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    good = tmp_path / "links.csv"
    good.write_text(
        "source,account,object_id,leadlex_id\n"
        "salesforce,00D5g000004XmPq,003A,11111111-1111-4111-8111-111111111111\n"
    )
    result = CliRunner().invoke(main, ["links", "import", str(good)])
    assert result.exit_code == 0, result.output
    state = State(redis_client)
    assert state.resolve_link("salesforce", "00D5g000004XmPqEAK", "003A") is not None
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "source,account,object_id,leadlex_id\n"
        "salesforce,00D5g000004XmPqXYZ,003B,11111111-1111-4111-8111-111111111111\n"
    )
    result = CliRunner().invoke(main, ["links", "import", str(bad)])
    assert result.exit_code != 0
    assert "checksum" in result.output
    assert state.resolve_link("salesforce", "00D5g000004XmPqEAK", "003B") is None


def test_redispatch_refreshes_the_inbox_time(redis_client: redis.Redis) -> None:
    """A re-dispatch moves the inbox record's time to now (the sweep must not forget it while
    the worker has yet to read it); a receiver resend keeps the first time."""
    from worker.state import INBOX_AT

    event = {"fingerprint": "a" * 32, "source": "hubspot", "object_id": "1"}
    for now, refresh in ((10.0, False), (20.0, False), (30.0, True)):
        pipe = redis_client.pipeline()
        record_events(pipe, [event], now, refresh=refresh)
        pipe.execute()
        expected = 10.0 if not refresh else 30.0
        assert redis_client.zscore(INBOX_AT, "a" * 32) == expected

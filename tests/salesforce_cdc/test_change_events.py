"""Mapping decoded CDC events to ChangeEvents, gaps and filtered changes (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from pull_sources.salesforce_cdc.bitmap import RecordShape
from pull_sources.salesforce_cdc.change_events import (
    Header,
    OriginFilter,
    Translation,
    commit_order,
    translate,
    within_time_seq,
)
from salesforce_sandbox.changes import body
from salesforce_sandbox.schemas import SCHEMAS
from worker.batch import InvalidEvent

ORG = "00D000000000001AAA"
T = 1_767_000_000_123


def _translate(event: dict[str, Any], entity: str = "Contact", **kw: Any) -> Translation:
    return translate(
        event,
        RecordShape.of(SCHEMAS[entity]),
        org=ORG,
        event_uuid="uuid-1",
        received_ms=T + 5,
        **kw,
    )


def test_update_carries_only_changed_fields_and_nulled_ones_as_clearings() -> None:
    """An UPDATE yields the changed fields (Name.LastName as LastName) and nulled fields as None."""
    event = body(
        "Contact", "UPDATE", ["003A"], {"LastName": "Nyx", "Email": "n@x.io"},
        nulled=["Phone", "MailingCity"], commit_timestamp=T,
    )  # fmt: skip
    (change,) = _translate(event).events
    assert change.kind == "update"
    assert change.changes == {
        "LastName": "Nyx",
        "Email": "n@x.io",
        "LastModifiedDate": str(T),
        "Phone": None,
        "MailingCity": None,
    }
    assert (change.object_type, change.object_id, change.account) == ("contact", "003A", ORG)
    assert change.occurred_at_ms == T
    assert change.received_at_ms == T + 5


def test_create_carries_every_non_null_value_flattened() -> None:
    """A CREATE yields every non-null field, compound components under their field names."""
    event = body(
        "Lead", "CREATE", ["00QA"],
        {"FirstName": "Ada", "LastName": "Byron", "Company": "Engines", "City": "London",
         "HasOptedOutOfEmail": False},
        commit_timestamp=T,
    )  # fmt: skip
    (change,) = _translate(event, "Lead").events
    assert change.kind == "create"
    assert change.object_type == "lead"
    assert change.changes == {
        "FirstName": "Ada",
        "LastName": "Byron",
        "Company": "Engines",
        "City": "London",
        "HasOptedOutOfEmail": "false",
    }


@pytest.mark.parametrize(("change_type", "kind"), [("DELETE", "delete"), ("UNDELETE", "restore")])
def test_delete_and_undelete_map_to_kinds_without_values(change_type: str, kind: str) -> None:
    """DELETE becomes a delete and UNDELETE a restore, neither carrying field values."""
    (change,) = _translate(body("Contact", change_type, ["003A"], commit_timestamp=T)).events
    assert (change.kind, change.changes) == (kind, {})


def test_several_record_ids_fan_out_with_distinct_fingerprints() -> None:
    """One event naming three records becomes three ChangeEvents with the same changes."""
    event = body(
        "Contact", "UPDATE", ["003A", "003B", "003C"], {"Title": "CTO"}, commit_timestamp=T
    )
    events = _translate(event).events
    assert [e.object_id for e in events] == ["003A", "003B", "003C"]
    assert {e.changes["Title"] for e in events} == {"CTO"}
    assert len({e.fingerprint for e in events}) == 3


def test_the_same_event_redelivered_has_the_same_fingerprints() -> None:
    """A redelivered event (same uuid) gets the same fingerprints, so the ledger absorbs it."""
    event = body("Contact", "UPDATE", ["003A"], {"Title": "CTO"}, commit_timestamp=T)
    assert _translate(event).events[0].fingerprint == _translate(event).events[0].fingerprint


@pytest.mark.parametrize("change_type", ["GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"])
def test_gap_events_become_gaps_with_their_record_ids(change_type: str) -> None:
    """GAP_* events carry no values: they become a Gap naming the records, and no ChangeEvent."""
    result = _translate(body("Contact", change_type, ["003A", "003B"], commit_timestamp=T))
    assert result.events == []
    (gap,) = result.gaps
    assert (gap.cause, gap.change_type, gap.record_ids) == ("gap", change_type, ("003A", "003B"))
    assert gap.details()["entity"] == "Contact"


def test_gap_overflow_becomes_an_entity_wide_gap() -> None:
    """GAP_OVERFLOW has no record ids: a Gap of cause overflow for the whole entity."""
    result = _translate(body("Lead", "GAP_OVERFLOW", ["x"], commit_timestamp=T), "Lead")
    (gap,) = result.gaps
    assert (gap.cause, gap.entity, gap.record_ids) == ("overflow", "Lead", ())


def test_diff_fields_are_left_out_and_reported_as_a_gap() -> None:
    """A long text sent as a diff is not applied; the other fields still sync and a Gap names it."""
    event = body(
        "Contact", "UPDATE", ["003A"], {"Description": "--- \n+++ abc\n@@", "Title": "VP"},
        diff=["Description"], commit_timestamp=T,
    )  # fmt: skip
    result = _translate(event)
    assert "Description" not in result.events[0].changes
    assert result.events[0].changes["Title"] == "VP"
    (gap,) = result.gaps
    assert (gap.cause, gap.fields) == ("diff_fields", ("Description",))


def test_wildcard_record_ids_become_a_gap() -> None:
    """A wildcard id such as `003*` (field conversion) cannot be applied: it becomes a Gap."""
    result = _translate(body("Contact", "UPDATE", ["003*"], {"Title": "VP"}, commit_timestamp=T))
    assert result.events == []
    assert result.gaps[0].cause == "wildcard_ids"


def test_other_entities_are_ignored() -> None:
    """An entity we do not sync (e.g. Account) is reported as ignored, not as an error."""
    event = body("Contact", "UPDATE", ["001A"], {"Title": "x"}, commit_timestamp=T)
    event["ChangeEventHeader"]["entityName"] = "Account"
    result = _translate(event)
    assert (result.events, result.ignored) == ([], "Account")


def test_origin_filter_skips_changes_by_user_or_client() -> None:
    """commitUser (compared on 15 chars) and changeOrigin substrings filter changes out."""
    by_user = body("Contact", "UPDATE", ["003A"], {"Title": "x"}, commit_timestamp=T)
    by_user["ChangeEventHeader"]["commitUser"] = "005000000000009ZZZ"
    users = OriginFilter.of(["005000000000009"], [])
    assert _translate(by_user, origin_filter=users).filtered
    by_client = body(
        "Contact", "UPDATE", ["003A"], {"Title": "x"}, commit_timestamp=T,
        change_origin="com/salesforce/api/rest/62.0;client=etl-job",
    )  # fmt: skip
    origins = OriginFilter.of([], ["client=etl-job"])
    assert _translate(by_client, origin_filter=origins).filtered
    assert not _translate(by_client, origin_filter=users).filtered


def test_malformed_header_raises_naming_the_field() -> None:
    """A header without commitTimestamp or with an unknown change type is an InvalidEvent."""
    event = body("Contact", "UPDATE", ["003A"], {"Title": "x"}, commit_timestamp=T)
    event["ChangeEventHeader"]["commitTimestamp"] = None
    with pytest.raises(InvalidEvent, match="commitTimestamp"):
        _translate(event)
    event = body("Contact", "UPDATE", ["003A"], {"Title": "x"}, commit_timestamp=T)
    event["ChangeEventHeader"]["changeType"] = "MERGE"
    with pytest.raises(InvalidEvent, match="changeType"):
        _translate(event)


def test_commit_order_orders_a_transaction_by_sequence_number() -> None:
    """Events of one transaction are ordered by sequenceNumber; transactions keep arrival order."""
    headers = [
        Header.of(body("Contact", "UPDATE", ["003A"], {"Title": t}, commit_timestamp=T,
                       transaction_key=k, sequence_number=n))
        for t, k, n in [("b", "tx1", 2), ("a", "tx1", 1), ("c", "tx2", 1), ("d", "tx1", 3)]
    ]  # fmt: skip
    assert commit_order(headers) == [1, 0, 3, 2]


def test_events_of_one_time_carry_their_commit_order_as_seq() -> None:
    """seq orders by commitNumber, then sequenceNumber; a missing commitNumber leaves the
    sequenceNumber alone, and every record of a multi-record event gets the same seq."""

    def seq(commit: int | None, sequence: int) -> int:
        event = body("Contact", "UPDATE", ["003A", "003B"], {"Title": "x"}, commit_timestamp=T,
                     sequence_number=sequence, commit_number=commit or 1)  # fmt: skip
        if commit is None:
            del event["ChangeEventHeader"]["commitNumber"]
        changes = _translate(event).events
        assert {c.seq for c in changes} == {within_time_seq(Header.of(event))}
        return changes[0].seq

    assert seq(7, 1) < seq(7, 2) < seq(8, 1) < seq(8, 5)
    assert seq(None, 3) == 3
    assert seq(10**15, 4) == 4  # too large to carry: sequenceNumber alone

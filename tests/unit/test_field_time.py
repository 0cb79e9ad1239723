"""Field times and record lifecycle in a real Redis: whole-record stamps, the tie rule,
the future clamp and lifecycle ordering (worker.events, worker.state)."""

from __future__ import annotations

import json

import redis

from worker.events import ChangeEvent, clamp_future
from worker.metrics import Metrics
from worker.state import Life, State, applied_key


def _event(occurred: int, received: int) -> ChangeEvent:
    return ChangeEvent(
        source="hubspot",
        account="1",
        object_type="contact",
        object_id="9",
        kind="update",
        occurred_at_ms=occurred,
        fingerprint="fp",
        received_at_ms=received,
    )


def test_clamp_future_bounds_the_time_by_the_receive_time() -> None:
    """A time past receive time + skew becomes that bound; others and the bound stay."""
    assert clamp_future(_event(1_000, 900), 5_000, 100) == (_event(1_000, 900), 0)
    clamped, original = clamp_future(_event(9_999_999, 900), 5_000, 100)
    assert (clamped.occurred_at_ms, original) == (1_000, 9_999_999)
    no_receipt, _ = clamp_future(_event(9_999_999, 0), 5_000, 100)
    assert no_receipt.occurred_at_ms == 5_100


def test_whole_record_event_keeps_the_time_of_unchanged_fields(redis_client: redis.Redis) -> None:
    """A whole-record event stamps only the fields whose value changed."""
    st = State(redis_client)
    st.prelude("a", "salesforce:o:1", 100, {"Title": "Buyer", "Phone": "1"}, whole_record=True)
    _, _, _, snap = st.prelude(
        "b", "salesforce:o:1", 200, {"Title": "Buyer", "Phone": "2"}, whole_record=True
    )
    assert snap == {"Title": ("Buyer", 100), "Phone": ("2", 200)}


def test_snapshot_ties_go_to_the_greater_value_in_any_order(redis_client: redis.Redis) -> None:
    """Two values of one field with the same time end as the greater one, either order."""
    st = State(redis_client)
    st.prelude("a1", "hubspot:1:1", 100, {"jobtitle": "Analyst"})
    st.prelude("b1", "hubspot:1:1", 100, {"jobtitle": "Director"})
    st.prelude("b2", "hubspot:1:2", 100, {"jobtitle": "Director"})
    st.prelude("a2", "hubspot:1:2", 100, {"jobtitle": "Analyst"})
    assert (
        st.snapshot("hubspot:1:1") == st.snapshot("hubspot:1:2") == {"jobtitle": ("Director", 100)}
    )


def test_staging_ties_converge_and_are_counted(redis_client: redis.Redis) -> None:
    """Staging applies the tie rule against staged and applied values and counts the tie."""
    st = State(redis_client)
    origin = {"r": "hubspot:1:1"}
    st.stage("c1", [("job_title", "B", 5, origin)], due_at=1, fp="e1", seen_ttl=60)
    st.stage("c1", [("job_title", "A", 5, origin)], due_at=1, fp="e2", seen_ttl=60)
    st.stage("c2", [("job_title", "A", 5, origin)], due_at=1, fp="e3", seen_ttl=60)
    token = st.acquire("c2", 5)  # a flush's fenced lease (promises-notes)
    assert token is not None
    st.commit("c2", [(s, "f") for s in st.read_stage("c2")], token=token)
    st.stage("c2", [("job_title", "B", 5, origin)], due_at=1, fp="e4", seen_ttl=60)
    assert [s.value for s in st.read_stage("c1")] == ["B"]
    assert [s.value for s in st.read_stage("c2")] == ["B"]
    assert Metrics(redis_client).value("field_time_ties") == 2


def test_a_restage_from_the_snapshot_replaces_a_value_as_new(redis_client: redis.Redis) -> None:
    """The flush's re-mapping from the record snapshot (no event) is not subject to the tie
    rule: a half-composed name is replaced by the whole one of the same time."""
    st = State(redis_client)
    origin = {"r": "hubspot:1:1"}
    st.stage("c1", [("full_name", "Zed", 5, origin)], due_at=1, fp="e1", seen_ttl=60)
    st.stage("c1", [("full_name", "Amy Zed", 5, origin)], due_at=1, fp=None, seen_ttl=1)
    assert [s.value for s in st.read_stage("c1")] == ["Amy Zed"]


def _commit_all(st: State, contact: str) -> None:
    token = st.acquire(contact, 5)
    assert token is not None
    st.commit(contact, [(s, "f") for s in st.read_stage(contact)], token=token)
    st.release(contact, token)


def test_a_composed_name_replaces_the_same_records_half_name_of_its_time(
    redis_client: redis.Redis,
) -> None:
    """Issue 14: a name composed from the parts (origin `p`) is not tied by value with a
    composition of the same record and time, staged or already applied: the later one is
    staged (the flush re-maps it from the snapshot); the half name was no write of its own."""
    st = State(redis_client)
    parts = {"r": "hubspot:1:1", "p": 1}
    st.stage("c1", [("full_name", "Zed", 5, parts)], due_at=1, fp="e1", seen_ttl=60)
    _, staged, _ = st.stage(
        "c1", [("full_name", "Amy Zed", 5, parts)], due_at=1, fp="e2", seen_ttl=60
    )
    assert staged == 1
    assert [s.value for s in st.read_stage("c1")] == ["Amy Zed"]
    st.stage("c2", [("full_name", "Zed", 5, parts)], due_at=1, fp="e3", seen_ttl=60)
    _commit_all(st, "c2")
    assert json.loads(redis_client.hget(applied_key("c2"), "full_name")) == [
        "Zed",
        5,
        "",
        "hubspot:1:1",
    ]
    assert st.applied("c2")["full_name"] == ("Zed", 5)
    _, staged, _ = st.stage(
        "c2", [("full_name", "Amy Zed", 5, parts)], due_at=1, fp="e4", seen_ttl=60
    )
    assert staged == 1
    assert [s.value for s in st.read_stage("c2")] == ["Amy Zed"]
    assert Metrics(redis_client).value("field_time_ties") == 0


def test_composed_names_of_two_records_at_one_time_keep_the_tie_rule(
    redis_client: redis.Redis,
) -> None:
    """Compositions of two different records (HubSpot and Salesforce) at one time are two
    writes: the greater one wins whatever the order, staged or applied, as before."""
    st = State(redis_client)
    hs = {"r": "hubspot:1:1", "p": 1}
    sf = {"r": "salesforce:o:003A", "p": 1}
    st.stage("c1", [("full_name", "Bob Zed", 5, sf)], due_at=1, fp="e1", seen_ttl=60)
    st.stage("c1", [("full_name", "Amy Zed", 5, hs)], due_at=1, fp="e2", seen_ttl=60)
    assert [s.value for s in st.read_stage("c1")] == ["Bob Zed"]
    st.stage("c2", [("full_name", "Bob Zed", 5, sf)], due_at=1, fp="e3", seen_ttl=60)
    _commit_all(st, "c2")
    _, staged, stale = st.stage(
        "c2", [("full_name", "Amy Zed", 5, hs)], due_at=1, fp="e4", seen_ttl=60
    )
    assert (staged, stale) == (0, 1)
    st.stage("c3", [("full_name", "Amy Zed", 5, hs)], due_at=1, fp="e5", seen_ttl=60)
    _commit_all(st, "c3")
    st.stage("c3", [("full_name", "Bob Zed", 5, sf)], due_at=1, fp="e6", seen_ttl=60)
    assert [s.value for s in st.read_stage("c3")] == ["Bob Zed"]
    assert Metrics(redis_client).value("field_time_ties") == 3


def test_lifecycle_is_ordered_by_time_and_a_deletion_wins_a_tie(
    redis_client: redis.Redis,
) -> None:
    """Older lifecycle events are stale; a restore needs a strictly newer time than the
    deletion, whichever arrives first."""
    st = State(redis_client)
    assert st.lifecycle("d1", "hubspot:1:1", "delete", 100, 60)[0] == "applied"
    assert st.lifecycle("r1", "hubspot:1:1", "restore", 100, 60)[0] == "stale"
    assert st.lifecycle("r2", "hubspot:1:2", "restore", 100, 60)[0] == "applied"
    assert st.lifecycle("d2", "hubspot:1:2", "delete", 100, 60)[0] == "applied"
    assert st.life("hubspot:1:1") == st.life("hubspot:1:2") == Life("deleted", 100)
    assert st.lifecycle("d2", "hubspot:1:2", "delete", 100, 60)[0] == "duplicate"
    assert st.lifecycle("r3", "hubspot:1:2", "restore", 50, 60)[0] == "stale"
    assert st.lifecycle("p", "hubspot:1:2", "privacy_delete", 10, 60)[0] == "applied"
    assert st.lifecycle("r4", "hubspot:1:2", "restore", 500, 60)[0] == "final"
    assert st.life("hubspot:1:2") == Life("erased", 100)


def test_parking_for_a_deletion_sees_a_restore_that_came_in_between(
    redis_client: redis.Redis,
) -> None:
    """An event found blocked by a deletion is not parked once a restore has been applied
    meanwhile (that restore's replay already ran), so it cannot wait forever."""
    st = State(redis_client)
    event = {"source": "hubspot", "account": "1", "object_id": "3", "fingerprint": "e"}
    assert st.lifecycle("d", "hubspot:1:3", "delete", 100, 60)[0] == "applied"
    assert st.park({**event, "occurred_at_ms": 50}, check_link=False) is None
    assert st.lifecycle("r", "hubspot:1:3", "restore", 200, 60)[0] == "applied"
    assert st.park({**event, "occurred_at_ms": 60}, check_link=False) == "reopened"
    assert st.has_parked("hubspot", "3")  # the first one, for the restore's replay

"""Order within one CRM time in a real Redis: ChangeEvent.seq orders the snapshot merge,
staging (against staged and applied values) and the commit before the value tie rule, and
entries stored without a sequence read as sequence 0 (worker.events, worker.state)."""

from __future__ import annotations

import json

import redis

from worker.events import ChangeEvent
from worker.metrics import Metrics
from worker.state import Staged, State, applied_key, snap_key, stage_key

RECORD = "salesforce:org:003A"
ORIGIN = {"r": RECORD}


def _commit_all(st: State, contact: str) -> None:
    token = st.acquire(contact, 5)
    assert token is not None
    st.commit(contact, [(s, "f") for s in st.read_stage(contact)], token=token)
    st.release(contact, token)


def test_change_event_carries_seq_and_old_messages_read_as_zero() -> None:
    """`seq` survives to_dict/from_dict, and a message without it (older sender) gets 0."""
    event = ChangeEvent("salesforce", "org", "contact", "003A", "update", 5, "fp", seq=7)
    assert ChangeEvent.from_dict(event.to_dict()) == event
    old = event.to_dict()
    del old["seq"]
    assert ChangeEvent.from_dict(old).seq == 0


def test_snapshot_takes_the_later_sequence_of_one_time_in_any_order(
    redis_client: redis.Redis,
) -> None:
    """At one time the higher seq wins the snapshot even when it is the smaller value and
    arrives first; the losing event's field is reported with the winner's seq."""
    st = State(redis_client)
    st.prelude_seq("b", RECORD, 100, {"Title": "CEO"}, seq=2)
    _, _, _, snap, seqs = st.prelude_seq("a", RECORD, 100, {"Title": "VP"}, seq=1)
    assert (snap, seqs) == ({"Title": ("CEO", 100)}, {"Title": 2})
    st.prelude_seq("c", "salesforce:org:003B", 100, {"Title": "VP"}, seq=1)
    _, _, _, snap, _ = st.prelude_seq("d", "salesforce:org:003B", 100, {"Title": "CEO"}, seq=2)
    assert snap == {"Title": ("CEO", 100)}
    _, _, _, snap, _ = st.prelude_seq("e", RECORD, 101, {"Title": "Analyst"})
    assert snap == {"Title": ("Analyst", 101)}  # a later time beats any seq


def test_snapshot_entries_without_a_sequence_read_as_zero(redis_client: redis.Redis) -> None:
    """A snapshot entry stored before seq existed ([value, ts]) counts as seq 0: a seq-1
    change of the same time wins over it, a seq-0 change ties by value."""
    st = State(redis_client)
    redis_client.hset(snap_key(RECORD), "Title", json.dumps(["Zed", 100]))
    _, _, _, snap, _ = st.prelude_seq("a", RECORD, 100, {"Title": "Abe"})
    assert snap == {"Title": ("Zed", 100)}  # tie: the greater value stays
    _, _, _, snap, seqs = st.prelude_seq("b", RECORD, 100, {"Title": "Abe"}, seq=1)
    assert (snap, seqs) == ({"Title": ("Abe", 100)}, {"Title": 1})


def test_staging_orders_by_sequence_before_the_tie_rule(redis_client: redis.Redis) -> None:
    """A staged value of a higher seq is kept over a greater value of a lower seq (not
    counted as a tie); a lower seq arriving later is stale."""
    st = State(redis_client)
    st.stage(
        "c1",
        [("job_title", "VP", 5, ORIGIN)],
        due_at=1,
        fp="e1",
        seen_ttl=60,
        seqs={"job_title": 1},
    )
    st.stage(
        "c1",
        [("job_title", "CEO", 5, ORIGIN)],
        due_at=1,
        fp="e2",
        seen_ttl=60,
        seqs={"job_title": 2},
    )
    _, staged, stale = st.stage(
        "c1",
        [("job_title", "VP", 5, ORIGIN)],
        due_at=1,
        fp="e3",
        seen_ttl=60,
        seqs={"job_title": 1},
    )
    assert (staged, stale) == (0, 1)
    (entry,) = st.read_stage("c1")
    assert (entry.value, entry.ts_ms, entry.seq) == ("CEO", 5, 2)
    assert Metrics(redis_client).value("field_time_ties") == 0


def test_applied_sequence_orders_later_staging_and_commits(redis_client: redis.Redis) -> None:
    """After CEO (seq 2) is applied, VP (seq 1) of the same time is stale, a seq-3 value
    is staged and committed, and a commit of an older seq cannot lower the applied one."""
    st = State(redis_client)
    st.stage(
        "c1",
        [("job_title", "CEO", 5, ORIGIN)],
        due_at=1,
        fp="e1",
        seen_ttl=60,
        seqs={"job_title": 2},
    )
    old = st.read_stage("c1")
    _commit_all(st, "c1")
    assert json.loads(redis_client.hget(applied_key("c1"), "job_title")) == ["CEO", 5, f"{2:020d}"]
    _, staged, _ = st.stage(
        "c1",
        [("job_title", "VP", 5, ORIGIN)],
        due_at=1,
        fp="e2",
        seen_ttl=60,
        seqs={"job_title": 1},
    )
    assert staged == 0
    _, staged, _ = st.stage(
        "c1",
        [("job_title", "Chair", 5, ORIGIN)],
        due_at=1,
        fp="e3",
        seen_ttl=60,
        seqs={"job_title": 3},
    )
    assert staged == 1
    _commit_all(st, "c1")
    assert st.applied("c1")["job_title"] == ("Chair", 5)
    token = st.acquire("c1", 5)
    assert token is not None
    st.commit("c1", [(s, "f") for s in old], token=token)  # a late commit of the seq-2 write
    assert st.applied("c1")["job_title"] == ("Chair", 5)


def test_stage_and_applied_entries_without_a_sequence_read_as_zero(
    redis_client: redis.Redis,
) -> None:
    """Stage entries stored as [value, ts, origin] and applied entries as [value, ts] parse
    with seq 0, and any seq of the same time is newer than them."""
    st = State(redis_client)
    redis_client.hset(stage_key("c1"), "job_title", json.dumps(["Zed", 5, ORIGIN]))
    redis_client.hset(applied_key("c1"), "phone", json.dumps(["+2", 5]))
    (entry,) = st.read_stage("c1")
    assert entry == Staged("job_title", "Zed", 5, ORIGIN, json.dumps(["Zed", 5, ORIGIN]), 0)
    _, staged, _ = st.stage(
        "c1",
        [("job_title", "Abe", 5, ORIGIN), ("phone", "+1", 5, ORIGIN)],
        due_at=1,
        fp="e1",
        seen_ttl=60,
        seqs={"job_title": 1, "phone": 1},
    )
    assert staged == 2
    assert {s.field: s.value for s in st.read_stage("c1")} == {"job_title": "Abe", "phone": "+1"}

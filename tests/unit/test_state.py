"""Sync state in a real Redis: snapshots, staging order, commits, links, due leases."""

from __future__ import annotations

import time

import redis

from worker.state import Life, State


def test_snapshot_keeps_the_newest_value_per_field(redis_client: redis.Redis) -> None:
    """An older change to a field does not replace a newer one; other fields still merge."""
    st = State(redis_client)
    st.prelude("fp1", "hubspot:1:9", 300, {"jobtitle": "new", "company": "Acme"})
    seen, gone, link, snap = st.prelude(
        "fp2", "hubspot:1:9", 100, {"jobtitle": "old", "email": "a@b.co"}
    )
    assert (seen, gone, link) == (False, None, None)
    assert snap == {"jobtitle": ("new", 300), "company": ("Acme", 300), "email": ("a@b.co", 100)}


def test_prelude_reports_seen_deleted_and_linked_records(redis_client: redis.Redis) -> None:
    """One round trip tells whether an event was seen, its record deleted, and its link."""
    st = State(redis_client)
    st.set_links([("hubspot", "", "9", "contact-9")])
    assert st.lifecycle("fp-del", "hubspot:1:9", "delete", 500, 60)[0] == "applied"
    seen, life, link, snap = st.prelude("fp3", "hubspot:1:9", 400, {"email": "x@y.co"})
    assert (seen, life, link) == (False, Life("deleted", 500), "contact-9")
    assert snap == {}  # a deleted record's older change is not merged
    st.mark_seen("fp3", 60)
    assert st.prelude("fp3", "hubspot:1:9", 400, {"email": "x@y.co"})[0] is True


def test_staging_refuses_values_older_than_staged_or_applied(redis_client: redis.Redis) -> None:
    """Stage keeps the newest value per field and never goes below what was applied."""
    st = State(redis_client)
    origin = {"r": "hubspot:1:9"}
    due, staged, stale = st.stage(
        "c1", [("job_title", "t3", 3, origin)], due_at=10, fp="f3", seen_ttl=60
    )
    assert (due, staged, stale) == (True, 1, 0)
    due, staged, stale = st.stage(
        "c1", [("job_title", "t1", 1, origin)], due_at=11, fp="f1", seen_ttl=60
    )
    assert (due, staged, stale) == (False, 0, 1)
    assert [s.value for s in st.read_stage("c1")] == ["t3"]
    assert st.seen("f1")
    assert st.seen("f3")
    token = st.acquire("c1", 5)
    assert token is not None
    st.commit(
        "c1",
        [(s, "f") for s in st.read_stage("c1")],
        token=token,
        updated_date="2026-01-01T00:00:00Z",
    )
    assert st.read_stage("c1") == []
    assert st.due_count() == 0
    _, staged, stale = st.stage(
        "c1", [("job_title", "t2", 2, origin)], due_at=12, fp="f2", seen_ttl=60
    )
    assert (staged, stale) == (0, 1)
    assert st.applied("c1")["job_title"] == ("t3", 3)


def test_commit_keeps_a_value_restaged_during_the_flush(redis_client: redis.Redis) -> None:
    """A newer value staged while a PATCH was in flight survives that PATCH's commit."""
    st = State(redis_client)
    st.stage("c2", [("phone", "+1", 1, {})], due_at=5, fp=None, seen_ttl=60)
    sent = st.read_stage("c2")
    st.stage("c2", [("phone", "+2", 2, {})], due_at=6, fp=None, seen_ttl=60)
    remaining = st.commit("c2", [(s, "f") for s in sent], token=_token(st, "c2"), next_due=7)
    assert remaining == 1
    assert [s.value for s in st.read_stage("c2")] == ["+2"]
    assert st.applied("c2")["phone"] == ("+1", 1)
    assert st.due_count() == 1


def test_notes_commit_records_the_crm_text_per_record(redis_client: redis.Redis) -> None:
    """Committing a staged notes entry records that record's CRM text as appended."""
    st = State(redis_client)
    st.stage("c3", [("notes|hubspot:1:9", "Met at ILTACON", 5, {})], due_at=1, fp=None, seen_ttl=60)
    st.commit("c3", [(s, "n") for s in st.read_stage("c3")], token=_token(st, "c3"))
    assert st.notes_appended("c3") == {"hubspot:1:9": "Met at ILTACON"}


def test_links_exact_account_wins_over_any_account(redis_client: redis.Redis) -> None:
    """A link for the record's own account wins; an empty-account link serves any account."""
    st = State(redis_client)
    st.set_links([("hubspot", "", "42", "any-acct"), ("hubspot", "777", "42", "exact")])
    assert st.resolve_link("hubspot", "777", "42") == "exact"
    assert st.resolve_link("hubspot", "888", "42") == "any-acct"
    assert st.remove_links_to("exact") == ["hubspot:777:42"]
    assert st.resolve_link("hubspot", "777", "42") == "any-acct"


def test_claim_due_serves_oldest_first_and_respects_leases(redis_client: redis.Redis) -> None:
    """The pump claims due contacts oldest first, skipping leased ones, up to the limit."""
    st = State(redis_client)
    for name, due in (("late", 30.0), ("early", 10.0), ("mid", 20.0), ("future", 99.0)):
        # a newly due contact is leased by staging itself; keep that lease short here
        st.stage(
            name,
            [("email", "a@b.co", 1, {})],
            due_at=due,
            fp=None,
            seen_ttl=60,
            lease_seconds=0.001,
        )
    time.sleep(0.01)
    st.lease("mid", 60)
    assert st.claim_due(now=50, lease_seconds=60, limit=5) == ["early", "late"]
    assert st.claim_due(now=50, lease_seconds=60, limit=5) == []


def _token(st: State, contact: str) -> int:
    token = st.acquire(contact, 5)
    assert token is not None
    return token


def test_lease_is_exclusive_and_tokens_increase(redis_client: redis.Redis) -> None:
    """One flush at a time per contact; each new holder gets a larger token; only the
    holder releases."""
    st = State(redis_client)
    first = st.acquire("c4", 5)
    assert first is not None
    assert st.acquire("c4", 5) is None
    st.release("c4", first + 100)
    assert st.acquire("c4", 5) is None
    st.release("c4", first)
    second = st.acquire("c4", 5)
    assert second is not None
    assert second > first
    assert st.holds("c4", second)
    assert not st.holds("c4", first)


def test_stale_token_cannot_arm_or_commit(redis_client: redis.Redis) -> None:
    """After a lease lapses and a newer flush takes over, the old token can neither arm a
    write nor commit; the newer one can."""
    st = State(redis_client)
    st.stage("c5", [("phone", "+1", 1, {})], due_at=1, fp=None, seen_ttl=60)
    old = st.acquire("c5", 0.05)
    assert old is not None
    time.sleep(0.1)
    new = st.acquire("c5", 5)
    assert new is not None
    items = [(s, "f") for s in st.read_stage("c5")]
    assert st.arm("c5", old, {"key": "k-old"}, 5) is False
    assert st.commit("c5", items, token=old) is None
    assert st.read_stage("c5") != []
    assert st.arm("c5", new, {"key": "k-new"}, 5) is True
    assert st.commit("c5", items, token=new, intent_key="k-new") == 0
    assert st.read_intent("c5") is None


def test_commit_by_intent_key_settles_exactly_once(redis_client: redis.Redis) -> None:
    """The outcome of a write commits while its intent still carries its key, even from a
    lapsed token; once the intent is settled, the same commit is refused."""
    st = State(redis_client)
    old = _token(st, "c6")
    assert st.arm("c6", old, {"key": "k1"}, 0.05)
    time.sleep(0.1)
    new = st.acquire("c6", 5)
    assert new is not None
    assert st.commit("c6", [], token=old, intent_key="k1") == 0
    assert st.read_intent("c6") is None
    assert st.commit("c6", [], token=old, intent_key="k1") is None


def test_a_failed_attempts_resolution_keeps_the_failure_count(redis_client: redis.Redis) -> None:
    """Resolving a write that did not land keeps the failure count (MAX_RETRY_AGE still
    counts from the first failure); a successful commit resets it."""
    st = State(redis_client)
    token = _token(st, "c7")
    st.record_failure("c7", 100.0)
    assert st.arm("c7", token, {"key": "k7"}, 5)
    st.commit("c7", [], token=token, intent_key="k7", reset_attempts=False)
    assert st.attempts("c7") == (1, 100.0)
    st.commit("c7", [], token=token)
    assert st.attempts("c7") == (0, 0.0)

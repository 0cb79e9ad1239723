"""Contact resolution and record lifecycle, through the real pipeline, Redis and simulator.

These drive worker.pipeline directly (no Celery: dispatches are recorded), so each
scenario is short; the Celery path is covered by test_sync_core.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Sandbox
from tests.integration.support import now_ms, runtime_factory
from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.state import State


@pytest.fixture
def make_runtime(redis_url: str, sandbox: Sandbox) -> Iterator[Any]:
    """Build a pipeline Runtime against the simulator with extra settings."""
    with runtime_factory(redis_url, sandbox.base_url) as build:
        yield lambda **env: build(env)


def _event(
    object_id: str,
    changes: dict[str, str | None],
    *,
    kind: str = "update",
    ts: int | None = None,
    merged: tuple[str, ...] = (),
) -> ChangeEvent:
    ts = ts or now_ms()
    return ChangeEvent(
        source="hubspot",
        account="62515",
        object_type="contact",
        object_id=object_id,
        kind=kind,  # type: ignore[arg-type]
        occurred_at_ms=ts,
        fingerprint=fingerprint("t", object_id, kind, ts, sorted(changes)),
        changes=changes,
        merged_ids=merged,
    )


def _flush_all(rt: pipeline.Runtime) -> None:
    """Flush every contact with staged changes now (what the dispatched tasks would do)."""
    for contact in rt.redis.zrange("lls:due", 0, -1):
        pipeline.flush(rt, contact.decode())


def test_resolve_by_email_links_a_single_exact_match(make_runtime: Any, sandbox: Sandbox) -> None:
    """With RESOLVE_BY_EMAIL an unlinked record is linked by one exact email match."""
    cid = sandbox.seed(full_name="Ada Byron", email="ada@example.org")
    sandbox.seed(full_name="Ada Other", email="ada.other@example.org")  # partial match only
    rt = make_runtime(RESOLVE_BY_EMAIL="true")
    out = pipeline.ingest(rt, _event("11", {"email": "ADA@example.org", "jobtitle": "Countess"}))
    assert out == "staged"
    assert rt.state.resolve_link("hubspot", "62515", "11") == cid
    _flush_all(rt)
    assert sandbox.contact(cid)["job_title"] == "Countess"
    assert [r["method"] for r in sandbox.requests()] == ["GET", "PATCH"]


def test_ambiguous_or_missing_email_parks_the_event(make_runtime: Any, sandbox: Sandbox) -> None:
    """No single exact email match: the event is parked as unlinked, nothing is written."""
    sandbox.seed(full_name="Nobody Here", email="someone@example.org")
    rt = make_runtime(RESOLVE_BY_EMAIL="true")
    assert pipeline.ingest(rt, _event("12", {"email": "ghost@example.org"})) == "unlinked"
    assert rt.redis.exists("lls:unlinked:hubspot:12")
    assert sandbox.patches() == []


def test_email_lookup_is_off_by_default(make_runtime: Any, sandbox: Sandbox) -> None:
    """Without RESOLVE_BY_EMAIL no budget is spent on lookups: the event just parks."""
    sandbox.seed(full_name="Ada Byron", email="ada@example.org")
    rt = make_runtime()
    assert pipeline.ingest(rt, _event("13", {"email": "ada@example.org"})) == "unlinked"
    assert sandbox.requests() == []


def test_create_on_creation_creates_and_links(make_runtime: Any, sandbox: Sandbox) -> None:
    """With CREATE_ON_CREATION a creation event with values creates the LeadLex contact."""
    rt = make_runtime(CREATE_ON_CREATION="true")
    out = pipeline.ingest(
        rt,
        _event(
            "14", {"firstname": "Grace", "lastname": "Hopper", "company": "Navy"}, kind="create"
        ),
    )
    assert out == "staged"
    cid = rt.state.resolve_link("hubspot", "62515", "14")
    assert cid is not None
    created = sandbox.contact(cid)
    assert created["full_name"] == "Grace Hopper"
    assert created["company_name"] == "Navy"
    assert [r["method"] for r in sandbox.requests()][:1] == ["POST"]


def test_leadlex_id_property_links_the_record(make_runtime: Any, sandbox: Sandbox) -> None:
    """A CRM property holding the LeadLex id links the record without any lookup."""
    cid = sandbox.seed(full_name="Alan Turing")
    rt = make_runtime()
    out = pipeline.ingest(
        rt, _event("15", {"leadlex_contact_id": cid, "jobtitle": "Mathematician"})
    )
    assert out == "staged"
    assert rt.state.resolve_link("hubspot", "62515", "15") == cid
    _flush_all(rt)
    assert sandbox.contact(cid)["job_title"] == "Mathematician"


def test_merge_moves_the_link_to_the_surviving_record(make_runtime: Any, sandbox: Sandbox) -> None:
    """After a HubSpot merge the surviving record syncs to the merged record's contact."""
    cid = sandbox.seed(full_name="Merged Person")
    rt = make_runtime()
    State(rt.redis).set_links([("hubspot", "62515", "16", cid)])
    assert pipeline.ingest(rt, _event("17", {}, kind="merge", merged=("16",))) == "merged"
    assert rt.state.resolve_link("hubspot", "62515", "17") == cid
    assert rt.state.resolve_link("hubspot", "62515", "16") is None
    pipeline.ingest(rt, _event("17", {"jobtitle": "Survivor"}))
    _flush_all(rt)
    assert sandbox.contact(cid)["job_title"] == "Survivor"


def test_deleted_record_stops_syncing_until_restored(make_runtime: Any, sandbox: Sandbox) -> None:
    """Default deletion policy: older changes stop syncing (parked for a restore, the link
    kept for it); LeadLex is left untouched."""
    cid = sandbox.seed(full_name="Gone Person", email="gone@example.org")
    rt = make_runtime()
    State(rt.redis).set_links([("hubspot", "62515", "18", cid)])
    t = now_ms()
    assert pipeline.ingest(rt, _event("18", {}, kind="delete", ts=t)) == "deleted"
    assert pipeline.ingest(rt, _event("18", {"jobtitle": "Late"}, ts=t - 1000)) == "gone"
    assert rt.redis.hlen("lls:unlinked:hubspot:18") == 1
    assert rt.redis.zcard("lls:due") == 0
    assert sandbox.requests() == []
    assert sandbox.contact(cid)["email"] == "gone@example.org"


def test_full_name_is_recomposed_from_the_snapshot_before_sending(
    make_runtime: Any, sandbox: Sandbox
) -> None:
    """A full_name staged from a half-merged snapshot (a race between two threads) is sent
    composed from the record's complete snapshot."""
    cid = sandbox.seed(full_name="Old Name")
    rt = make_runtime()
    State(rt.redis).set_links([("hubspot", "62515", "19", cid)])
    t = now_ms()
    # What the race leaves behind: the snapshot has both parts, the stage only one.
    rt.state.prelude("fp-a", "hubspot:62515:19", t, {"firstname": "Mary"})
    rt.state.prelude("fp-b", "hubspot:62515:19", t + 1, {"lastname": "Jackson"})
    origin = {"r": "hubspot:62515:19", "t": "contact", "c": {"lastname": "Jackson"}, "o": t + 1}
    rt.state.stage(cid, [("full_name", "Jackson", t + 1, origin)], due_at=0, fp=None, seen_ttl=60)
    pipeline.flush(rt, cid)
    assert [p["body"] for p in sandbox.patches(cid)] == [{"full_name": "Mary Jackson"}]
    assert rt.state.applied(cid)["full_name"] == ("Mary Jackson", t + 1)

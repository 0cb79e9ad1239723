"""`export_contacts` beyond one export: created_at windows read every contact exactly once."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from leadlex_sandbox import SandboxServer
from worker import pipeline
from worker.onboarding import directory

LIMIT = 50


def export_calls(leadlex: SandboxServer) -> list[str]:
    with leadlex.state.lock:
        return [e.query for e in leadlex.state.log.entries(0, None) if e.path.endswith("/export")]


def seed_directory(
    leadlex: SandboxServer, n_single: int, groups: list[int], *, by_time: bool = False
) -> set[str]:
    """`n_single` contacts at distinct times plus groups sharing one created_at each, inserted
    in a shuffled order (so insertion order is not created_at order) or `by_time`."""
    base = datetime.now(UTC) - timedelta(days=30)
    rng = random.Random(7)
    times = [base + timedelta(seconds=rng.uniform(0, 20 * 86_400)) for _ in range(n_single)]
    for size in groups:
        shared = base + timedelta(seconds=rng.uniform(0, 20 * 86_400))
        times += [shared] * size
    rng.shuffle(times)
    if by_time:
        times.sort()
    seeded = leadlex.seed(
        [
            {
                "full_name": f"Person {i}",
                "email": f"p{i}@example.com",
                "created_date": t.isoformat(timespec="milliseconds"),
            }
            for i, t in enumerate(times)
        ]
    )
    return {c["id"] for c in seeded}


@pytest.mark.parametrize("order", ["insertion", "oldest_first", "shuffled"])
@pytest.mark.parametrize("inclusive", [False, True])
def test_full_exports_are_split_by_time_and_every_contact_is_read_once(
    make_runtime: Callable[..., pipeline.Runtime],
    leadlex: SandboxServer,
    order: str,
    inclusive: bool,
) -> None:
    """180 contacts (groups sharing one created_at) with limit 50, in any row order and either
    bound inclusivity: every id is read exactly once and the reported calls are the calls made."""
    leadlex.state.configure(
        {
            "export_per_hour": 1000,
            "export_order": "shuffled" if order == "shuffled" else "insertion",
            "export_bounds_inclusive": inclusive,
        }
    )
    ids = seed_directory(leadlex, 120, [25, 20, 15], by_time=order == "oldest_first")
    got = directory.export_contacts(make_runtime(), limit=LIMIT, max_calls=60)
    assert len(got) == len({c.id for c in got}) == 180
    assert {c.id for c in got} == ids
    made = export_calls(leadlex)
    assert got.calls == len(made)
    assert 4 <= got.calls <= 20, got.calls  # at least ceil(180 / 50) + a split; bounded
    assert "created_after" not in made[0]
    assert "created_before" not in made[0]
    assert all("created_after" in q or "created_before" in q for q in made[1:])


def test_a_directory_below_the_limit_costs_one_call_and_a_full_one_is_split(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """49 contacts: one call; 50 (exactly the limit): the split confirms nothing was left."""
    leadlex.state.configure({"export_per_hour": 1000, "export_order": "shuffled"})
    ids = seed_directory(leadlex, 49, [])
    one = directory.export_contacts(make_runtime(), limit=LIMIT)
    assert (one.calls, {c.id for c in one}) == (1, ids)
    ids |= seed_directory(leadlex, 1, [])
    full = directory.export_contacts(make_runtime(), limit=LIMIT)
    assert {c.id for c in full} == ids
    assert full.calls == 3 == len(export_calls(leadlex)) - 1


def test_beyond_max_calls_or_a_dense_instant_raises_with_what_was_read(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """A bound on calls says how many contacts were read; more contacts than `limit` created
    at one instant cannot be split and say so (both are ExportRefused, so callers fall back)."""
    leadlex.state.configure({"export_per_hour": 1000})
    seed_directory(leadlex, 180, [])
    with pytest.raises(directory.ExportIncomplete, match=r"more than 2 export calls: \d+ contacts"):
        directory.export_contacts(make_runtime(), limit=LIMIT, max_calls=2)
    assert len(export_calls(leadlex)) == 2
    seed_directory(leadlex, 0, [LIMIT + 5])
    with pytest.raises(directory.ExportRefused, match="cannot be split further"):
        directory.export_contacts(make_runtime(), limit=LIMIT, max_calls=60)


def test_a_refusal_in_the_middle_says_how_far_it_got(
    make_runtime: Callable[..., pipeline.Runtime], leadlex: SandboxServer
) -> None:
    """The export's hourly limit refusing the second window is an ExportRefused counting both
    calls, so the caller can offer the paged list."""
    leadlex.state.configure({"export_per_hour": 1})
    seed_directory(leadlex, 120, [])
    with pytest.raises(directory.ExportRefused) as refused:
        directory.export_contacts(make_runtime(), limit=LIMIT)
    assert (refused.value.calls, refused.value.read) == (2, LIMIT)
    assert "export call 2; 50 contacts read before it" in refused.value.reason

"""Issue 14 (fast ingest): a message's events are taken in as one batch (a few round trips
for the whole message) with exactly the effect of taking them in one by one, and a worker
dying in the middle of a batch loses nothing.

Each test runs the pipeline against the suite's private Redis; dispatched ingests and
flushes are recorded instead of queued, so the two paths can be compared exactly.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from worker import pipeline
from worker.events import ChangeEvent, fingerprint
from worker.handoff import record_events
from worker.mapping import default_mapping
from worker.settings import load_settings
from worker.state import State
from worker.tasks import ingest_message

PORTAL = "62515"
ORG = "00D5g000004XmPqEAK"
A, B = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
S = "00000000-0000-4000-8000-00000000000c"
# The module (worker.pipeline re-exports its function `ingest` under the same name).
ingest_module = importlib.import_module("worker.pipeline.ingest")


class Recorder:
    """A Runtime on the test Redis whose dispatches are recorded (no Celery, no LeadLex)."""

    def __init__(self, url: str) -> None:
        settings = load_settings(
            {"REDIS_URL": url, "LEADLEX_API_KEY": "wbk_test", "LEADLEX_PLAN": "org",
             "COALESCE_SECONDS": "0"},
            env_file=None,
        )  # fmt: skip
        self.flushes: list[str] = []
        self.ingests: list[dict[str, Any]] = []

        def no_calls() -> Any:
            raise AssertionError("ingest of these events makes no LeadLex call")

        self.rt = pipeline.Runtime(
            settings=settings,
            redis=redis.Redis.from_url(url),
            mapping=default_mapping(),
            client_factory=no_calls,
            dispatch_flush=lambda contact, _countdown: self.flushes.append(contact),
            dispatch_ingest=self.ingests.extend,
        )


@pytest.fixture
def recorder(redis_url: str) -> Iterator[Recorder]:
    """A fresh Recorder on the emptied test database, with three records linked."""
    rec = Recorder(redis_url)
    State(rec.rt.redis).set_links(
        [("hubspot", "", "1", A), ("hubspot", "", "2", B), ("salesforce", ORG, "003S", S)]
    )
    yield rec
    rec.rt.redis.close()


def _hs(
    object_id: str, ts: int, kind: str = "update", tag: str = "", received: int = 0, **changes: Any
) -> ChangeEvent:
    return ChangeEvent(
        source="hubspot",
        account=PORTAL,
        object_type="contact",
        object_id=object_id,
        kind=kind,  # type: ignore[arg-type]
        occurred_at_ms=ts,
        fingerprint=fingerprint("t", object_id, kind, ts, tag, sorted(changes.items())),
        changes=changes,
        received_at_ms=received or ts + 10,
    )


def _sf(
    ts: int, fp: str, changes: dict[str, str | None], seq: int = 0, whole: bool = False
) -> ChangeEvent:
    return ChangeEvent(
        source="salesforce",
        account=ORG,
        object_type="contact",
        object_id="003S",
        kind="update",
        occurred_at_ms=ts,
        fingerprint=fp,
        changes=changes,
        received_at_ms=ts + 10,
        whole_record=whole,
        seq=seq,
    )


def _mixed_batch(t: int) -> list[ChangeEvent]:
    """Every kind of case one message can hold, in an order that makes them interact."""
    newer = _hs("1", t + 2000, jobtitle="Director")
    return [
        newer,
        _hs("1", t + 1000, jobtitle="Intern"),  # older after newer: stale
        newer,  # a duplicate inside the batch
        _hs("1", t + 1500, company="Acme", firstname="Ada", lastname="Lovelace"),
        _hs("2", t + 100, phone="+1 202 555 0100"),
        _hs("2", t + 200, kind="delete"),
        _hs("2", t + 150, jobtitle="Parked while deleted"),  # dated before the deletion
        _hs("2", t + 300, kind="restore"),  # replays the parked event
        _hs("2", t + 400, jobtitle="Back"),
        _hs("2", t + 100, phone="+1 202 555 0100"),  # a duplicate after a lifecycle event
        _hs("3", t + 100, jobtitle="Nobody links me"),  # unlinked: parked
        _hs("1", t + 5000, kind="association", tag="x"),  # nothing to sync: ignored
        _hs(
            "1", t + 10**9, tag="future", received=t + 20, email="ada@example.org"
        ),  # clamped to receive+skew
        _hs("1", t + 2000, tag="tie", jobtitle="Dean"),  # tie with "Director": value rule
        # CDC: two changes of one commit, the later sequence first, then a whole record
        _sf(t, "cdc-b", {"Title": "VP"}, seq=7),
        _sf(t, "cdc-a", {"Title": "CTO"}, seq=3),
        _sf(t + 50, "sf-whole", {"Title": "VP", "Phone": "+44 20 7946 0018"}, whole=True),
    ]


def _dump(client: redis.Redis) -> dict[str, Any]:
    """Every key's content (zsets without scores: due times follow the clock)."""
    out: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key).decode()
        if kind == "hash":
            out[key.decode()] = client.hgetall(key)
        elif kind == "string":
            out[key.decode()] = client.get(key)
        elif kind == "set":
            out[key.decode()] = client.smembers(key)
        elif kind == "zset":
            out[key.decode()] = sorted(client.zrange(key, 0, -1))
        else:
            out[key.decode()] = [fields for _id, fields in client.xrange(key)]
    return out


@pytest.mark.parametrize("run_max", [100, 3])
def test_a_batch_has_the_effect_of_its_events_one_by_one(
    recorder: Recorder, redis_url: str, run_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates inside a batch, an older value after a newer one, a delete and a restore
    with events around them, an unlinked record, a clamped time, a tie and CDC sequences:
    the batch path leaves the same state, outcomes, counters and dispatches as ingest()
    called per event, however the batch is cut into runs."""
    monkeypatch.setattr(ingest_module, "RUN_MAX", run_max)
    t = int(time.time() * 1000) - 60_000
    events = _mixed_batch(t)
    one_by_one = [pipeline.ingest(recorder.rt, e) for e in events]
    expected = _dump(recorder.rt.redis)
    flushes, ingests = list(recorder.flushes), list(recorder.ingests)

    recorder.rt.redis.flushdb()
    batched = Recorder(redis_url)
    State(batched.rt.redis).set_links(
        [("hubspot", "", "1", A), ("hubspot", "", "2", B), ("salesforce", ORG, "003S", S)]
    )
    outcomes = pipeline.ingest_batch(batched.rt, events)

    assert outcomes == one_by_one
    assert outcomes == [
        "staged", "stale", "duplicate", "staged", "staged", "deleted", "gone", "restored",
        "staged", "duplicate", "unlinked", "ignored", "staged", "stale", "staged", "stale",
        "staged",
    ]  # fmt: skip
    assert _dump(batched.rt.redis) == expected
    assert (batched.flushes, batched.ingests) == (flushes, ingests)
    assert [e["fingerprint"] for e in ingests] == [events[6].fingerprint]  # the parked one
    stage = {s.field: s.value for s in State(batched.rt.redis).read_stage(A)}
    assert stage["job_title"] == "Director"  # neither the older "Intern" nor the tied "Dean"
    assert stage["full_name"] == "Ada Lovelace"
    assert {s.field: s.value for s in State(batched.rt.redis).read_stage(S)}["job_title"] == "VP"
    batched.rt.redis.close()


def test_the_ingest_task_dead_letters_one_failing_event_and_takes_in_the_rest(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event whose ingest raises is dead-lettered (`ingest_error`) and leaves the inbox;
    the others of its message are staged; a ref whose inbox record is gone counts as a
    duplicate."""
    t = int(time.time() * 1000) - 60_000
    events = [_hs("1", t, jobtitle="Engineer"), _hs("2", t, jobtitle="Boom"),
              _hs("2", t + 1, company="Fine")]  # fmt: skip
    client = recorder.rt.redis
    pipe = client.pipeline(transaction=True)
    refs: list[str | dict[str, Any]] = list(
        record_events(pipe, [e.to_dict() for e in events], time.time())
    )
    pipe.execute()
    real = ingest_module.map_record

    def exploding(cfg: Any, source: str, object_type: str, view: Any, current: Any) -> Any:
        if view.get("jobtitle", (None,))[0] == "Boom" and "jobtitle" in current:
            raise ValueError("mapping bug")
        return real(cfg, source, object_type, view, current)

    monkeypatch.setattr(ingest_module, "map_record", exploding)
    outcomes = ingest_message(recorder.rt, [*refs, "f" * 32])

    assert outcomes == {"staged": 2, "ingest_error": 1, "duplicate": 1}
    assert [f[b"reason"] for _id, f in client.xrange("lls:dlq")] == [b"ingest_error"]
    assert not client.hexists("lls:inbox", events[1].fingerprint)
    assert {s.field for s in State(client).read_stage(B)} == {"company_name"}
    assert {s.field for s in State(client).read_stage(A)} == {"job_title"}


def test_a_worker_dying_mid_batch_loses_nothing(
    recorder: Recorder, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after a batch's snapshot merges and before its staging step: no
    event is marked seen, so every one is still in the inbox for the sweep, and the
    redelivered message stages them all, ending in the state of an uninterrupted run."""
    t = int(time.time() * 1000) - 60_000
    events = [e for e in _mixed_batch(t) if e.kind not in ("delete", "restore")]
    client = recorder.rt.redis
    pipe = client.pipeline(transaction=True)
    refs: list[str | dict[str, Any]] = list(
        record_events(pipe, [e.to_dict() for e in events], time.time())
    )
    pipe.execute()

    class Killed(BaseException):
        """The worker process dying (not an error the task would handle)."""

    def die(*_args: Any) -> int:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(State, "stages_on", die)
        with pytest.raises(Killed):
            ingest_message(recorder.rt, refs)
    assert client.keys("lls:seen:*") == []  # nothing taken in: the sweep finds them all
    assert client.hlen("lls:inbox") == len({e.fingerprint for e in events})
    assert client.exists("lls:snap:hubspot:62515:1")  # the merges ran
    now = time.time()

    outcomes = ingest_message(recorder.rt, refs)  # the message comes back
    assert outcomes.get("staged", 0) >= 8
    assert "ingest_error" not in outcomes
    after_crash = _dump(client)

    client.flushdb()
    clean = Recorder(redis_url)
    State(clean.rt.redis).set_links(
        [("hubspot", "", "1", A), ("hubspot", "", "2", B), ("salesforce", ORG, "003S", S)]
    )
    pipe = client.pipeline(transaction=True)
    record_events(pipe, [e.to_dict() for e in events], now)
    pipe.execute()
    assert ingest_message(clean.rt, refs) == outcomes
    clean_dump = _dump(client)
    for key in ("lls:inbox", "lls:inbox:at"):  # inbox times differ between the two runs
        after_crash.pop(key), clean_dump.pop(key)
    assert after_crash == clean_dump
    clean.rt.redis.close()


def test_a_batch_runs_after_redis_forgot_the_scripts(recorder: Recorder) -> None:
    """Redis restarted or flushed its script cache: the batch's script calls fail with
    NOSCRIPT (running nothing), the scripts are loaded and those calls sent again, once."""
    t = int(time.time() * 1000) - 60_000
    client = recorder.rt.redis
    events = [_hs("1", t, jobtitle="Engineer"), _hs("2", t, jobtitle="Pilot")]
    assert pipeline.ingest_batch(recorder.rt, events[:1]) == ["staged"]
    client.script_flush()
    assert pipeline.ingest_batch(recorder.rt, events) == ["duplicate", "staged"]
    assert recorder.rt.metrics.value("events_deduped", source="hubspot") == 1
    assert recorder.rt.metrics.value("fields_staged", source="hubspot") == 2
    assert {s.field: s.value for s in State(client).read_stage(B)} == {"job_title": "Pilot"}

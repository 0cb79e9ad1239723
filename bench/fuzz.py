"""A longer fuzz session: the three webhook endpoints and the mapping functions. Prints JSON.

    .venv/bin/python bench/fuzz.py [--seconds 300] [--redis-url URL]

Hypothesis drives every target, run in chunks of `--chunk` examples with a new seed
each, until the target's share of `--seconds` is spent (stops by itself; a chunk that
found a bug is allowed to finish shrinking it). Targets:

- hubspot, salesforce, generic: the receiver app (Flask test client) against a real
  Redis database (`--redis-url`; it must be empty, or pass --flush; it is emptied at the
  end). Strategies and assertions are those of tests/receiver/test_fuzz.py (never a 5xx,
  the JSON / SOAP contract, /healthz still 200); on top, every event of an accepted
  request must be a valid ChangeEvent that `worker.pipeline.ingest` takes without raising
  (no LeadLex calls: nothing is flushed).
- map_record: tests/mapping/test_properties.py's records and LeadLex-validity checks.
- normalize: normalize_phone / _email / _linkedin_url / _leadlex_id, clean_text,
  clean_notes on arbitrary and near-valid text: only ValueError, valid output, idempotent.
- notes_delta: the property tests of tests/mapping/test_properties.py, plus any input.
- load_mapping: generated mapping files (TOML and YAML, mostly schema-shaped, sometimes
  not) and byte-mutated copies of docs/mapping.example.toml: a MappingConfig or a one-line
  MappingError, never another exception; a loaded mapping then maps records validly.

Output: cases tried per target and every distinct failure with its minimal example
(Hypothesis's shrunk input). Exit status 1 when a failure was found. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# `python bench/fuzz.py` puts bench/ first, where bench/worker.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import HypothesisException  # noqa: E402

from tests.mapping import test_properties as mp  # noqa: E402
from tests.receiver import test_fuzz as rf  # noqa: E402
from tests.receiver.senders import hubspot_event, ingest_batches, make_settings  # noqa: E402
from webhook_app import create_app  # noqa: E402
from webhook_app.intake import EXTENSION  # noqa: E402
from worker import pipeline  # noqa: E402
from worker.celery_app import QUEUE_INGEST  # noqa: E402
from worker.events import KINDS, ChangeEvent  # noqa: E402
from worker.mapping import (  # noqa: E402
    LEADLEX_FIELDS,
    MappingConfig,
    MappingError,
    load_mapping,
    map_record,
    normalize_email,
    normalize_leadlex_id,
    normalize_linkedin_url,
    normalize_phone,
    notes_delta,
)
from worker.mapping.normalize import clean_notes, clean_text  # noqa: E402

try:  # a shrink that takes minutes would overrun --seconds; Hypothesis's cap is 5 minutes
    from hypothesis.internal.conjecture import engine as _engine

    _engine.MAX_SHRINKING_SECONDS = min(getattr(_engine, "MAX_SHRINKING_SECONDS", 60), 60)
except ImportError:  # pragma: no cover - internal module moved: keep Hypothesis's own cap
    pass
from worker.settings import load_settings  # noqa: E402
from worker.state import State  # noqa: E402

EXAMPLE_MAPPING = ROOT / "docs" / "mapping.example.toml"


# ---- the runner ------------------------------------------------------------------------------
@dataclass
class Failure:
    kind: str  # "crash" (5xx, unexpected exception) or "property" (a contract assertion)
    error: str
    location: str
    example: str
    detail: str = ""
    hits: int = 1

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.error.split("\n")[0][:120], self.location)


@dataclass
class Stats:
    cases: int = 0
    shrink_calls: int = 0
    chunks: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)


class Crash(AssertionError):
    """The system under test crashed (5xx / unexpected exception): carries the detail."""


def _where(tb: Any) -> str:
    """file:line of the innermost frame in the project (not in hypothesis or this file)."""
    frames = traceback.extract_tb(tb)
    here = str(ROOT) + "/"
    project = [
        f
        for f in frames
        if f.filename.startswith(here)
        and "/.venv/" not in f.filename
        and not f.filename.endswith("bench/fuzz.py")
    ]
    if not (project or frames):
        return "?"
    frame = (project or frames)[-1]
    name = frame.filename.removeprefix(here)
    return f"{name}:{frame.lineno} ({frame.name})"


def _short(value: Any, limit: int = 1500) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def run_target(
    name: str,
    strategy: st.SearchStrategy[Any],
    body: Callable[[Any], None],
    seconds: float,
    chunk: int,
    base_seed: int,
    max_failures: int,
) -> Stats:
    """Fuzz `body` with `strategy` for about `seconds`; distinct failures are shrunk and kept."""
    stats = Stats()
    started = time.monotonic()
    deadline = started + seconds
    state: dict[str, Any] = {"failing": False, "last": None}

    def wrapped(case: Any) -> None:
        if state["failing"]:
            stats.shrink_calls += 1
        elif time.monotonic() > deadline:
            return  # out of time: let the chunk end quickly, without counting
        else:
            stats.cases += 1
        try:
            body(case)
        except Exception as exc:
            state["failing"] = True
            state["last"] = (case, exc, exc.__traceback__)
            raise

    known: dict[tuple[str, str, str], Failure] = {}
    n = 0
    while time.monotonic() < deadline and len(known) < max_failures:
        test = seed(base_seed + n)(
            settings(
                max_examples=chunk,
                deadline=None,
                database=None,
                phases=(Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck),
                print_blob=False,
                report_multiple_bugs=False,
            )(given(strategy)(wrapped))
        )
        n += 1
        stats.chunks += 1
        state["failing"] = False
        state["last"] = None
        try:
            test()
        except Exception as exc:
            harness = isinstance(exc, HypothesisException)  # Flaky, Unsatisfiable...
            if harness and state["last"] is None:
                stats.harness_errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                if len(stats.harness_errors) > 5:
                    break
                continue
            case, last_exc, tb = state["last"] or (None, exc, exc.__traceback__)
            crash = not isinstance(last_exc, AssertionError) or isinstance(last_exc, Crash)
            kind = "crash" if crash else "property"
            failure = Failure(
                kind=f"{kind} (did not reproduce: {type(exc).__name__})" if harness else kind,
                error=f"{type(last_exc).__name__}: {str(last_exc)[:500]}",
                location=getattr(last_exc, "where", "")
                or _where(getattr(last_exc.__cause__, "__traceback__", None) or tb),
                example=_short(case),
                detail=str(getattr(last_exc, "detail", ""))[:3000],
            )
            if failure.key() in known:
                known[failure.key()].hits += 1
                if known[failure.key()].hits >= 3:
                    break  # rediscovering the same bug: spend the time elsewhere
            else:
                known[failure.key()] = failure
    stats.failures = list(known.values())
    stats.seconds = round(time.monotonic() - started, 1)
    return stats


# ---- endpoint targets ------------------------------------------------------------------------
class _LogTrap(logging.Handler):
    """Keeps the last exception the receiver logged (its 503 internal_error path)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str = ""
        self.where: str = ""

    def clear(self) -> None:
        self.last = self.where = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = "".join(traceback.format_exception(*record.exc_info))[-3000:]
            self.where = _where(record.exc_info[2])


class _Client:
    """The Flask test client, counting statuses and turning a 5xx into a Crash."""

    def __init__(self, client: Any, trap: _LogTrap, stats: Counter[str]) -> None:
        self.client = client
        self.trap = trap
        self.stats = stats

    def post(self, *args: Any, **kwargs: Any) -> Any:
        self.trap.clear()
        try:
            response = self.client.post(*args, **kwargs)
        except Exception as exc:  # the test client re-raises only when the app is broken
            raise Crash(f"the test client raised {type(exc).__name__}: {exc}") from exc
        self.stats[f"HTTP {response.status_code}"] += 1
        if response.status_code >= 500:
            err = Crash(f"HTTP {response.status_code}: {response.data[:300]!r}")
            err.detail = self.trap.last  # type: ignore[attr-defined]
            err.where = self.trap.where  # type: ignore[attr-defined]
            raise err
        return response

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.get(*args, **kwargs)


class Endpoints:
    """One receiver app and one pipeline runtime on the fuzz Redis database."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.app = create_app(make_settings(redis_url))
        self.trap = _LogTrap()
        logging.getLogger("leadlex_sync").addHandler(self.trap)
        self.outcomes: Counter[str] = Counter()
        self.client = _Client(self.app.test_client(), self.trap, self.outcomes)
        settings = load_settings(
            {"REDIS_URL": redis_url, "LEADLEX_API_KEY": "wbk_fuzz_key", "COALESCE_SECONDS": "1"},
            env_file=None,
        )
        self.rt = pipeline.Runtime(
            settings=settings,
            redis=redis.Redis.from_url(redis_url),
            mapping=mp.CFG,
            client_factory=self._no_calls,
        )
        self.link()

    def link(self) -> None:
        """Link the record ids the strategies use most, so accepted events reach staging."""
        State(self.redis).set_links(
            (source, "", object_id, LINKED_CONTACT) for source, object_id in LINKED_RECORDS
        )

    @staticmethod
    def _no_calls() -> Any:
        raise RuntimeError("the fuzz session makes no LeadLex calls")

    def close(self) -> None:
        logging.getLogger("leadlex_sync").removeHandler(self.trap)
        self.app.extensions[EXTENSION].redis.close()
        self.rt.redis.close()
        self.redis.flushdb()
        self.redis.close()

    def reset(self) -> None:
        """Each example starts from an empty database with the usual links (no cross-talk)."""
        self.redis.flushdb()
        self.link()

    def after_request(self) -> None:
        """Accepted events are valid ChangeEvents that ingest takes; the queue is emptied."""
        if not self.redis.llen(QUEUE_INGEST):
            return
        batches = ingest_batches(self.redis)
        self.redis.delete(QUEUE_INGEST)
        for batch in batches:
            for raw in batch:
                event = ChangeEvent.from_dict(raw)
                assert event.source in ("hubspot", "salesforce", "generic"), event.source
                assert event.kind in KINDS, event.kind
                assert isinstance(event.occurred_at_ms, int), event.occurred_at_ms
                assert event.fingerprint, "empty fingerprint"
                assert isinstance(event.object_id, str), event.object_id
                assert event.object_id, "empty object_id"
                for k, v in event.changes.items():
                    assert isinstance(k, str), k
                    assert v is None or isinstance(v, str), (k, v)
                json.dumps(event.to_dict())  # the wire format stays JSON
                try:
                    outcome = pipeline.ingest(self.rt, event)
                except Exception as exc:
                    err = Crash(f"pipeline.ingest raised {type(exc).__name__}: {exc}")
                    err.detail = f"event: {_short(raw, 1500)}"  # type: ignore[attr-defined]
                    raise err from exc
                self.outcomes[f"ingest {outcome}"] += 1


LINKED_CONTACT = "0b9e5c1a-1111-4222-8333-123456789abc"
SF_IDS = ["0035g00000XyZ12AAB", "0035g00000XyZ34AAD"]
LINKED_RECORDS = [
    ("hubspot", "51001"),
    ("hubspot", "51002"),
    *(("salesforce", i) for i in SF_IDS),
    *(("generic", i) for i in SF_IDS),
    ("generic", "C-42"),
]
HUBSPOT_PROPS = [
    "firstname", "lastname", "email", "phone", "jobtitle", "company", "hs_linkedin_url",
    "leadlex_notes", "leadlex_contact_id", "mobilephone", "Email", "PHONE", "unmapped",
]  # fmt: skip
HUBSPOT_TYPES = [
    "contact.propertyChange", "contact.propertyChange", "contact.creation", "contact.deletion",
    "contact.privacyDeletion", "contact.merge", "contact.restore", "contact.associationChange",
    "object.propertyChange", "object.creation",
]  # fmt: skip
# Mostly plausible CRM times; one in ten anywhere (out-of-range times are refused with a 400).
occurred_ms = st.tuples(
    st.integers(0, 9), st.integers(1_700_000_000_000, 1_800_000_000_000), st.integers(0, 2**45)
).map(lambda t: t[2] if t[0] == 0 else t[1])


@st.composite
def mostly_valid_hubspot(draw: st.DrawFn) -> bytes:
    """1-5 valid HubSpot events on linked records with fuzzed values, one field perhaps replaced."""
    events = []
    for _ in range(draw(st.integers(1, 5))):
        event = hubspot_event(
            eventId=draw(st.integers(0, 2**53)),
            objectId=draw(st.sampled_from([51001, 51002]) | st.integers(0, 2**53)),
            occurredAt=draw(occurred_ms),
            subscriptionType=draw(st.sampled_from(HUBSPOT_TYPES)),
            propertyName=draw(st.sampled_from(HUBSPOT_PROPS) | st.text(max_size=20)),
            propertyValue=draw(mp.values | rf.json_values),
        )
        extra = draw(rf.hubspot_events)
        if extra and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(extra)))
            event[key] = extra[key]
        events.append(event)
    return json.dumps(events).encode()


GENERIC_NAMES = [
    "full_name", "first_name", "last_name", "email", "phone", "job_title", "company_name",
    "linkedin_url", "notes", "leadlex_id", "title", "x",
]  # fmt: skip


@st.composite
def valid_generic(draw: st.DrawFn) -> bytes:
    """A generic message of 1-5 well-formed changes to linked records with fuzzed values."""
    changes = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["update", "update", "create", "delete", "restore", "merge"]))
        change: dict[str, Any] = {
            "account": draw(st.sampled_from(["acme", "a"]) | st.text(min_size=1, max_size=8)),
            "object_type": draw(st.sampled_from(["contact", "lead"])),
            "object_id": draw(
                st.sampled_from([*SF_IDS, "C-42"]) | st.text(min_size=1, max_size=20)
            ),
            "occurred_at": draw(
                occurred_ms | st.sampled_from(["2025-10-09T08:55:00Z", "2025-10-09T08:55:00+14:00"])
            ),
            "kind": kind,
            "changes": draw(st.dictionaries(st.sampled_from(GENERIC_NAMES), mp.values, max_size=5)),
        }
        if kind == "merge":
            change["merged_ids"] = draw(st.lists(st.text(min_size=1, max_size=20), min_size=1))
        changes.append(change)
    return json.dumps({"changes": changes}).encode()


def endpoint_targets(
    ep: Endpoints,
) -> dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    hubspot = st.fixed_dictionaries(
        {
            "body": rf.hubspot_bodies | mostly_valid_hubspot(),
            "mode": st.sampled_from(["v3", "v3", "v1", "garbage"]),
            "headers": st.dictionaries(
                st.sampled_from(
                    [
                        "X-HubSpot-Signature",
                        "X-HubSpot-Signature-Version",
                        "X-HubSpot-Signature-v3",
                        "X-HubSpot-Request-Timestamp",
                        "Content-Type",
                        "Content-Encoding",
                    ]
                ),
                rf.header_text,
                max_size=6,
            ),
            "query": st.text(alphabet="abc=&%3A2F?;/", max_size=20),
        }
    )
    salesforce = st.fixed_dictionaries(
        {
            "body": rf.salesforce_bodies(),
            "content_type": st.sampled_from(
                ["text/xml; charset=utf-8"] * 6 + ["application/xml", "text/plain", ""]
            ),
            "query": st.text(alphabet="token=abc&%", max_size=12),
        }
    )
    generic = st.fixed_dictionaries(
        {
            "body": rf.generic_bodies | valid_generic(),
            "signed": st.booleans() | st.just(True),
            "msg_id": st.text(
                alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
            ),
            "headers": st.dictionaries(
                st.sampled_from(
                    ["webhook-id", "webhook-timestamp", "webhook-signature", "Content-Type"]
                ),
                rf.header_text,
                max_size=4,
            ),
        }
    )

    def run(test: Any) -> Callable[[Any], None]:
        inner = test.hypothesis.inner_test  # the test's own body: its assertions, not a copy

        def body(case: dict[str, Any]) -> None:
            ep.reset()
            inner(ep.client, **case)
            ep.after_request()

        return body

    return {
        "hubspot": (hubspot, run(rf.test_fuzz_hubspot)),
        "salesforce": (salesforce, run(rf.test_fuzz_salesforce)),
        "generic": (generic, run(rf.test_fuzz_generic)),
    }


# ---- mapping targets -------------------------------------------------------------------------
def _map_record_body(record: Any) -> None:
    mp.test_map_record_never_raises_and_output_is_valid.hypothesis.inner_test(record)


phone_like = st.lists(
    st.sampled_from([*"0123456789+-() .x#*/", "ext", "ext.", "\u00a0", "\uff11", "\u0663"]),
    max_size=30,
).map("".join)
email_like = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=0, max_size=70),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=70)
    | st.sampled_from(["example", "bücher", "xn--bcher-kva", "a..b", "-a", "EXAMPLE"]),
    st.sampled_from(["com", "org", "de", "x", "123", "xn--p1ai", "COM", "", "ελ"]),
)
url_like = st.builds(
    lambda scheme, host, kind, rest, tail: f"{scheme}{host}/{kind}/{rest}{tail}",
    st.sampled_from(["https://", "http://", "", "HTTPS://", "ftp://", "//", "https:/"]),
    st.sampled_from(
        [
            "www.linkedin.com",
            "linkedin.com",
            "uk.linkedin.com",
            "linkedin.com.",
            "evil.com",
            "user:pw@linkedin.com",
            "linkedin.com:443",
            "LinkedIn.COM",
            "[::1]",
            "linkedin.com:x",
        ]
    ),
    st.sampled_from(["in", "pub", "company", "IN", "school", ""]),
    st.text(max_size=40),
    st.sampled_from(["", "/", "?x=1", "#frag", "/details/experience", "%2F..", "/%E9"]),
)
NORMALIZERS: dict[str, Callable[..., str]] = {
    "phone": normalize_phone,
    "email": normalize_email,
    "linkedin_url": normalize_linkedin_url,
    "leadlex_id": normalize_leadlex_id,
    "clean_text": clean_text,
    "clean_notes": clean_notes,
}
UUID_LOWER = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

normalize_cases = st.fixed_dictionaries(
    {
        "fn": st.sampled_from(sorted(NORMALIZERS)),
        "value": st.one_of(
            mp.values.filter(lambda v: v is not None),
            phone_like,
            email_like,
            url_like,
            st.uuids().map(str),
            st.uuids().map(lambda u: f" {str(u).upper()} "),
        ),
        "region": st.sampled_from(["US", "GB", "DE", "us", "", "ZZ", "001", "XK"]),
    }
)


def _normalize_body(case: dict[str, Any]) -> None:
    fn, value, region = NORMALIZERS[case["fn"]], case["value"], case["region"]
    call = (lambda v: fn(v, region)) if case["fn"] == "phone" else fn
    try:
        out = call(value)
    except ValueError as exc:
        message = str(exc)
        assert message, "ValueError without a message"
        return
    assert isinstance(out, str)
    name = case["fn"]
    if name == "phone":
        assert mp.PHONE.match(out), out
    elif name == "email":
        assert mp.EMAIL.match(out), out
        assert len(out) <= 254, out
    elif name == "linkedin_url":
        assert mp.LINKEDIN.match(out), out
    elif name == "leadlex_id":
        assert UUID_LOWER.match(out), out
    elif name == "clean_text":
        assert not CONTROL.search(out), out
        assert out == out.strip(), out
        assert "  " not in out, out
        assert "\n" not in out, out
    elif name == "clean_notes":
        assert not CONTROL.search(out), out
        assert "\r" not in out, out
    again = call(out)  # a canonical form is a fixed point
    assert again == out, f"not idempotent: {out!r} -> {again!r}"


notes_cases = st.one_of(
    st.fixed_dictionaries(
        {
            "test": st.just("growth"),
            "last": st.text(),
            "growth": st.text(),
            "prefix": st.sampled_from(["", "[HubSpot] ", "[SF] "]),
        }
    ),
    st.fixed_dictionaries(
        {
            "test": st.just("same"),
            "text": st.text(min_size=1),
            "prefix": st.sampled_from(["", "[HubSpot] "]),
        }
    ),
    st.fixed_dictionaries(
        {"test": st.just("suffix"), "last": st.text(min_size=1), "current": st.text()}
    ),
    st.fixed_dictionaries(
        {
            "test": st.just("any"),
            "last": st.none() | st.text(),
            "current": st.none() | st.text(),
            "prefix": st.text(max_size=12),
        }
    ),
)


def _notes_body(case: dict[str, Any]) -> None:
    args = {k: v for k, v in case.items() if k != "test"}
    tests = {
        "growth": mp.test_notes_delta_after_growth_is_only_the_new_text,
        "same": mp.test_notes_delta_same_text_is_none,
        "suffix": mp.test_notes_delta_is_suffix_or_whole,
    }
    if case["test"] in tests:
        tests[case["test"]].hypothesis.inner_test(**args)
        return
    out = notes_delta(args["last"], args["current"], args["prefix"])
    assert out is None or (isinstance(out, str) and out.startswith(args["prefix"])), out


# Mapping files: mostly the documented schema, with wrong types and unknown keys mixed in.
CRM_NAMES = [
    "firstname", "FirstName", "FIRSTNAME", "lastname", "email", "Email", "phone", "mobilephone",
    "MobilePhone", "jobtitle", "Title", "company", "Company", "hs_linkedin_url", "LinkedIn__c",
    "leadlex_notes", "Description", "notes", "leadlex_contact_id", "LeadLex_Id__c", "leadlex_id",
    "AccountId", "Name", " phone ", "x",
]  # fmt: skip
names = st.sampled_from(CRM_NAMES) | st.text(max_size=12)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.lists(st.integers(-5, 5), max_size=2),
)
targets_ = st.sampled_from([*LEADLEX_FIELDS, "notes", "fone", "", False]) | anything
notes_table = st.fixed_dictionaries(
    {},
    optional={
        "field": names | st.just(False) | anything,
        "prefix": st.text(max_size=12) | anything,
        "enabled": st.booleans() | anything,
    },
)
id_field = names | st.just(False) | anything
object_table = st.fixed_dictionaries(
    {},
    optional={
        "fields": st.dictionaries(names, targets_, max_size=6) | anything,
        "leadlex_id_field": id_field,
        "notes": notes_table | anything,
    },
)
source_table = st.fixed_dictionaries(
    {},
    optional={
        "leadlex_id_field": id_field,
        "notes": notes_table,
        "contact": object_table,
        "lead": object_table,
        "account": object_table,
    },
)
mapping_docs = st.fixed_dictionaries(
    {},
    optional={
        "default_region": st.sampled_from(["US", "GB", "de", " fr ", "QQ", "", "UK"]) | anything,
        "clear_policy": st.sampled_from(["skip", "null", ""]) | anything,
        "max_length": st.integers(-2, 400) | anything,
        "max_notes_length": st.integers(-2, 20_000) | anything,
        "hubspot": source_table | anything,
        "salesforce": source_table,
        "generic": source_table,
        "pipedrive": source_table,
        "unknown_key": anything,
    },
)


def _toml_str(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (non-ASCII kept literal, DEL escaped)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_str(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(type(value))


def to_toml(doc: dict[str, Any]) -> str:
    """TOML text for `doc`: tables as inline tables; None values (TOML has no null) dropped."""

    def drop_none(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: drop_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [drop_none(x) for x in v if x is not None]
        return v

    return "".join(f"{_toml_str(k)} = {_toml_value(v)}\n" for k, v in drop_none(doc).items())


EXAMPLE_BYTES = EXAMPLE_MAPPING.read_bytes()


@st.composite
def mapping_files(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(suffix, file content, region argument)."""
    kind = draw(st.sampled_from(["toml", "toml", "yaml", "mutated"]))
    region = draw(st.sampled_from(["US", "GB", "us", "", "QQ"]))
    if kind == "mutated":
        at = draw(st.integers(0, len(EXAMPLE_BYTES)))
        cut = draw(st.integers(0, 60))
        raw = EXAMPLE_BYTES[:at] + draw(st.binary(max_size=30)) + EXAMPLE_BYTES[at + cut :]
        return ".toml", raw, region
    doc = draw(mapping_docs)
    if kind == "toml":
        return ".toml", to_toml(doc).encode("utf-8", "surrogatepass"), region
    return (
        draw(st.sampled_from([".yaml", ".yml"])),
        yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass"),
        region,
    )


snapshot_names = st.sampled_from([*CRM_NAMES, "unmapped", "PHONE", "Email"])
mapping_cases = st.fixed_dictionaries(
    {
        "file": mapping_files(),
        "snapshot": st.dictionaries(
            snapshot_names, st.tuples(mp.values, st.integers(0, 2**41)), max_size=8
        ),
        "changed": st.lists(snapshot_names, max_size=8),
    }
)
MAPPED = {"full_name", "email", "phone", "job_title", "company_name", "linkedin_url"}


class MappingFiles:
    """load_mapping on a generated file, then map_record with what it loaded."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lls-fuzz-mapping-")
        self.outcomes: Counter[str] = Counter()

    def body(self, case: dict[str, Any]) -> None:
        suffix, content, region = case["file"]
        path = Path(self.dir.name) / f"m{suffix}"
        path.write_bytes(content)
        text = content.decode("utf-8", "replace")[:2000]
        try:
            cfg = load_mapping(path, region)
        except MappingError as exc:
            self.outcomes["MappingError"] += 1
            message = str(exc)
            assert "\n" not in message, f"MappingError is not one line: {message!r}"
            return
        except Exception as exc:
            err = Crash(f"load_mapping raised {type(exc).__name__}: {exc}")
            err.detail = text  # type: ignore[attr-defined]
            raise err from exc
        self.outcomes["loaded"] += 1
        assert isinstance(cfg, MappingConfig)
        changed = [*case["changed"], *case["snapshot"]]
        for source, obj in sorted(cfg.objects):
            try:
                result = map_record(cfg, source, obj, case["snapshot"], changed)
            except Exception as exc:
                err = Crash(f"map_record raised {type(exc).__name__}: {exc}")
                err.detail = text  # type: ignore[attr-defined]
                raise err from exc
            for name, fv in result.fields.items():
                assert name in MAPPED, name
                assert fv.value, name
                assert len(fv.value) <= cfg.max_length, (name, fv.value)
            if result.notes is not None:
                assert 0 < len(result.notes.value) <= cfg.max_notes_length, result.notes

    def close(self) -> None:
        self.dir.cleanup()


# ---- main ------------------------------------------------------------------------------------
WEIGHTS = {
    "hubspot": 2.0,
    "salesforce": 2.0,
    "generic": 2.0,
    "map_record": 1.5,
    "normalize": 1.5,
    "notes_delta": 0.5,
    "load_mapping": 1.5,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="whole session (default 300)")
    parser.add_argument(
        "--redis-url", default=None, help="an empty database (default: a private redis-server)"
    )
    parser.add_argument("--flush", action="store_true", help="empty a non-empty database first")
    parser.add_argument("--targets", default=",".join(WEIGHTS), help="comma-separated subset")
    parser.add_argument("--chunk", type=int, default=300, help="examples per Hypothesis run")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: time)")
    parser.add_argument("--max-failures", type=int, default=5, help="distinct ones per target")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(chosen) - set(WEIGHTS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    base_seed = args.seed if args.seed is not None else int(time.time())
    logging.getLogger("leadlex_sync").setLevel(logging.ERROR)
    logging.getLogger("leadlex_sync").propagate = False  # the trap keeps what matters

    needs_redis = any(t in ("hubspot", "salesforce", "generic") for t in chosen)
    ep: Endpoints | None = None
    private = None
    if needs_redis and args.redis_url is None:
        from worker.embedded_redis import RedisServer

        private = RedisServer(appendonly=False).start()
        args.redis_url = private.url
    try:
        return _session(args, chosen, base_seed, needs_redis, ep)
    finally:
        if private is not None:
            private.cleanup()


def _session(
    args: argparse.Namespace,
    chosen: list[str],
    base_seed: int,
    needs_redis: bool,
    ep: Endpoints | None,
) -> int:
    if needs_redis:
        client = redis.Redis.from_url(args.redis_url)
        try:
            size = client.dbsize()
        except redis.RedisError as exc:
            print(f"fuzz: no Redis at {args.redis_url}: {exc}", file=sys.stderr)
            return 2
        if size and not args.flush:
            print(
                f"refusing: {args.redis_url} is not empty (pick an unused db or pass --flush)",
                file=sys.stderr,
            )
            return 2
        client.flushdb()
        client.close()
        ep = Endpoints(args.redis_url)
    files = MappingFiles()
    plan: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
        **(endpoint_targets(ep) if ep is not None else {}),
        "map_record": (mp.records(), _map_record_body),
        "normalize": (normalize_cases, _normalize_body),
        "notes_delta": (notes_cases, _notes_body),
        "load_mapping": (mapping_cases, files.body),
    }
    started = time.monotonic()
    report: dict[str, Any] = {
        "seconds_budget": args.seconds,
        "redis_url": args.redis_url if needs_redis else None,
        "seed": base_seed,
        "chunk": args.chunk,
        "targets": {},
    }
    try:
        for i, name in enumerate(chosen):
            remaining = args.seconds - (time.monotonic() - started)
            weight_left = sum(WEIGHTS[t] for t in chosen[i:])
            share = max(1.0, remaining * WEIGHTS[name] / weight_left)
            print(f"fuzz: {name} for {share:.0f} s", file=sys.stderr, flush=True)
            strategy, body = plan[name]
            stats = run_target(
                name, strategy, body, share, args.chunk, base_seed, args.max_failures
            )
            outcomes: Counter[str] = Counter()
            if ep is not None and name in ("hubspot", "salesforce", "generic"):
                outcomes, ep.outcomes = ep.outcomes, Counter()
                ep.client.stats = ep.outcomes
            if name == "load_mapping":
                outcomes = files.outcomes
            report["targets"][name] = {
                "cases": stats.cases,
                "shrink_calls": stats.shrink_calls,
                "hypothesis_runs": stats.chunks,
                "seconds": stats.seconds,
                "cases_per_second": round(stats.cases / stats.seconds, 1)
                if stats.seconds
                else None,
                "outcomes": dict(sorted(outcomes.items())),
                "failures": [f.__dict__ for f in stats.failures],
                **({"harness_errors": stats.harness_errors} if stats.harness_errors else {}),
            }
    finally:
        if ep is not None:
            ep.close()
        files.close()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["cases_total"] = sum(t["cases"] for t in report["targets"].values())
    report["failures_total"] = sum(len(t["failures"]) for t in report["targets"].values())
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 1 if report["failures_total"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Property tests: map_record survives any text, its output passes LeadLex's rules."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.mapping import (
    FieldValue,
    MappingConfig,
    default_mapping,
    map_record,
    mapping_fields_for,
    notes_delta,
)

CFG: MappingConfig = default_mapping("US")

# LeadLex-side rules, written independently of the normalizers.
EMAIL = re.compile(r"^[^\s@]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z0-9-]{2,63}$")
PHONE = re.compile(r"^\+[1-9][0-9]{1,14}$")
LINKEDIN = re.compile(r"^https://www\.linkedin\.com/(in|pub|company)/[!-~]+$")
MAX_LENGTH = 255
MAX_NOTES = 10_000

OBJECTS = [
    ("hubspot", "contact"),
    ("salesforce", "contact"),
    ("salesforce", "lead"),
    ("generic", "contact"),
]

# Any unicode (incl. controls, combining marks), plus huge repeated strings and
# near-valid values so the normalizers' success paths run too.
huge = st.tuples(st.text(min_size=1, max_size=4), st.integers(1, 40_000)).map(lambda t: t[0] * t[1])
plausible = st.sampled_from(
    [
        "jane@example.com",
        " Jane@Example.COM ",
        "(415) 555-2671",
        "+44 7700 900123",
        "linkedin.com/in/jane?x=1",
        "https://uk.linkedin.com/in/jürgen/",
        "Mara\tQuist",
        "0b9e5c1a-1111-4222-8333-123456789abc",
    ]
)
values = st.one_of(
    st.none(), st.text(), st.text(alphabet=st.characters(codec="utf-8")), huge, plausible
)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, str, dict[str, tuple[str | None, int]], list[str]]:
    """A (source, object_type, snapshot, changed) with arbitrary values for relevant fields."""
    source, obj = draw(st.sampled_from(OBJECTS))
    names = [*sorted(mapping_fields_for(CFG, source, obj)), "unmapped", "Email", "PHONE"]
    snapshot = {
        name: (draw(values), draw(st.integers(0, 2**41)))
        for name in draw(st.lists(st.sampled_from(names), unique=True))
    }
    changed = draw(st.lists(st.sampled_from(names)))
    return source, obj, snapshot, changed


def assert_leadlex_valid(field: str, fv: FieldValue) -> None:
    """One output value satisfies LeadLex's format and length rules."""
    assert isinstance(fv.value, str)
    assert fv.value, field
    assert fv.value == fv.value.strip()
    assert "\x00" not in fv.value
    assert len(fv.value) <= MAX_LENGTH
    if field == "email":
        assert EMAIL.match(fv.value), fv.value
        assert len(fv.value) <= 254
    elif field == "phone":
        assert PHONE.match(fv.value), fv.value
    elif field == "linkedin_url":
        assert LINKEDIN.match(fv.value), fv.value
    else:
        assert "\n" not in fv.value
        assert "  " not in fv.value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_map_record_never_raises_and_output_is_valid(
    record: tuple[str, str, dict[str, tuple[str | None, int]], list[str]],
) -> None:
    """Whatever the CRM sends, map_record returns values LeadLex accepts, or rejects them."""
    source, obj, snapshot, changed = record
    result = map_record(CFG, source, obj, snapshot, changed)
    allowed = {"full_name", "email", "phone", "job_title", "company_name", "linkedin_url"}
    assert set(result.fields) <= allowed
    for field, fv in result.fields.items():
        assert_leadlex_valid(field, fv)
    if result.notes is not None:
        assert 0 < len(result.notes.value) <= MAX_NOTES
        assert "\x00" not in result.notes.value
    if result.email is not None:
        assert EMAIL.match(result.email)
    for rejection in result.rejected:
        assert rejection.reason in {
            "invalid_email",
            "invalid_phone",
            "invalid_linkedin_url",
            "too_long",
        }
        assert rejection.value
    # Every changed field is accounted for: skipped, or one the mapping reads.
    assert len(result.skipped) == len(set(result.skipped))
    relevant = mapping_fields_for(CFG, source, obj)
    fold = str.lower if source == "hubspot" else str
    for name in changed:
        assert name in result.skipped or fold(name) in relevant


@given(last=st.text(), growth=st.text(), prefix=st.sampled_from(["", "[HubSpot] ", "[SF] "]))
def test_notes_delta_after_growth_is_only_the_new_text(last: str, growth: str, prefix: str) -> None:
    """When the CRM text grew from `last`, only the (stripped) new text is appended."""
    delta = notes_delta(last, last + growth, prefix)
    new = growth.strip() if last else (last + growth).strip()
    if not new:
        assert delta is None
    else:
        assert delta == prefix + new


@given(text=st.text(min_size=1), prefix=st.sampled_from(["", "[HubSpot] "]))
def test_notes_delta_same_text_is_none(text: str, prefix: str) -> None:
    """Re-delivering the text appended last appends nothing."""
    assert notes_delta(text, text, prefix) is None


@given(last=st.text(min_size=1), current=st.text())
def test_notes_delta_is_suffix_or_whole(last: str, current: str) -> None:
    """The appended text is either the new tail of `current` or all of it, never more."""
    delta = notes_delta(last, current)
    if delta is not None:
        assert delta.strip() == delta
        assert delta in current
        if current.startswith(last):
            assert len(delta) <= len(current) - len(last)

"""notes_delta: what to append to LeadLex notes when the CRM notes text changes."""

from __future__ import annotations

import pytest

from worker.mapping import notes_delta


def test_first_sync_appends_everything() -> None:
    """With nothing appended yet, the whole current text is appended."""
    assert notes_delta(None, "Met at SaaStr") == "Met at SaaStr"


def test_grow_appends_only_the_new_tail() -> None:
    """When the CRM text grew, only the new lines are appended, without the leading newline."""
    assert notes_delta("Met at SaaStr", "Met at SaaStr\n\nPromoted to CLO") == "Promoted to CLO"


def test_grow_on_the_same_line() -> None:
    """Text added at the end of the last line is appended on its own."""
    assert notes_delta("Call back", "Call back on Monday") == "on Monday"


def test_rewrite_appends_whole_text() -> None:
    """An edited (not just extended) text is appended in full."""
    assert notes_delta("Met at SaaStr", "Met at Web Summit") == "Met at Web Summit"


def test_shortened_text_counts_as_rewrite() -> None:
    """A text that lost its tail is appended in full, so LeadLex ends with the CRM's text."""
    assert notes_delta("one\ntwo", "one") == "one"


def test_same_text_appends_nothing() -> None:
    """A re-delivered or unchanged text appends nothing."""
    assert notes_delta("Met at SaaStr", "Met at SaaStr", prefix="[HubSpot] ") is None


@pytest.mark.parametrize("current", [None, ""])
def test_empty_current_appends_nothing(current: str | None) -> None:
    """A cleared notes field appends nothing."""
    assert notes_delta("old", current) is None
    assert notes_delta(None, current, prefix="[HubSpot] ") is None


@pytest.mark.parametrize("current", ["   ", "\n\t"])
def test_whitespace_only_appends_nothing(current: str) -> None:
    """Only whitespace to append means nothing to append, prefix or not."""
    assert notes_delta(None, current, prefix="[HubSpot] ") is None


def test_whitespace_only_growth_appends_nothing() -> None:
    """Trailing blank lines added to the CRM text append nothing."""
    assert notes_delta("Met at SaaStr", "Met at SaaStr\n\n  ", prefix="[SF] ") is None


def test_prefix_goes_in_front_of_the_delta() -> None:
    """The source prefix is put in front of the appended text."""
    assert notes_delta("a", "a\nb", prefix="[HubSpot] ") == "[HubSpot] b"
    assert notes_delta(None, "a", prefix="[Salesforce] ") == "[Salesforce] a"


def test_empty_last_is_like_none() -> None:
    """An empty last text behaves like never having appended."""
    assert notes_delta("", "hello") == "hello"

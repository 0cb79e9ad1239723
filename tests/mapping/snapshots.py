"""Snapshot builders shared by the mapping tests."""

from __future__ import annotations

UUID = "0b9e5c1a-1111-4222-8333-123456789abc"


def snap(ts: int = 1_000, **values: str | None) -> dict[str, tuple[str | None, int]]:
    """A snapshot where every given CRM field has the same timestamp."""
    return {name: (value, ts) for name, value in values.items()}

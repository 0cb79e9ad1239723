"""What a source parser makes of one request: events to enqueue, events refused, events ignored."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from worker.events import ChangeEvent


class InvalidEvent(ValueError):
    """One event of a batch is malformed; the rest of the batch is still good."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that goes to the dead-letter store as `invalid_event`."""

    payload: Any  # the raw event as received (JSON value, or XML text)
    field: str
    problem: str
    index: int

    def details(self) -> dict[str, Any]:
        return {"field": self.field, "problem": self.problem, "index": self.index}


@dataclass(slots=True)
class Batch:
    """The outcome of parsing one request."""

    events: list[ChangeEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)  # object type -> count
    accounts: set[str] = field(default_factory=set)

    def reject(self, payload: Any, error: InvalidEvent, index: int) -> None:
        self.rejected.append(Rejected(payload, error.field, error.problem, index))

    def ignore(self, object_type: str) -> None:
        self.ignored[object_type] += 1

    def add(self, event: ChangeEvent) -> None:
        self.events.append(event)
        self.accounts.add(event.account)

    @property
    def account(self) -> str:
        """The account(s) of the request, for the log line."""
        return ",".join(sorted(self.accounts))

    def summary(self) -> dict[str, int]:
        """Counts for the answer body and the log line."""
        return {
            "accepted": len(self.events),
            "dead_lettered": len(self.rejected),
            "ignored": sum(self.ignored.values()),
        }

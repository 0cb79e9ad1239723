"""What the simulator records: CRM changes, journal entries, journal subscriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("CREATE", "UPDATE", "DELETE", "MERGE", "RESTORE", "GDPR_DELETE")


@dataclass(frozen=True, slots=True)
class Change:
    """One contact change in the simulated HubSpot account."""

    portal_id: int
    object_id: int
    action: str
    occurred_at_ms: int
    properties: dict[str, str | None] = field(default_factory=dict)
    merged_ids: tuple[int, ...] = ()
    new_object_id: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry: the changes of one recorded batch, downloadable as one file."""

    offset: str  # a UUID
    published_at: float  # simulated epoch seconds
    portal_id: int
    changes: tuple[Change, ...]


@dataclass(slots=True)
class Subscription:
    """A Webhooks Journal subscription (upsert key: type + objectTypeId + portal, UNDOC)."""

    id: str
    subscription_type: str
    object_type_id: str
    portal_id: int | None
    actions: list[str]
    properties: list[str]
    created_at: int
    updated_at: int

    def view(self, app_id: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "appId": app_id,
            "subscriptionType": self.subscription_type,
            "objectTypeId": self.object_type_id,
            "portalId": self.portal_id,
            "actions": list(self.actions),
            "properties": list(self.properties),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

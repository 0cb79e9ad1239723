"""The journal subscriptions the sync needs, from the active mapping (pure), and applying them.

Contacts (`OBJECT`, objectTypeId `0-1`): CREATE, UPDATE, DELETE, MERGE, RESTORE with the
properties the mapping reads; and `GDPR_PRIVACY_DELETION` (GDPR_DELETE). `portalId` is
the one HUBSPOT_PORTAL_IDS names when it names exactly one, else omitted (HubSpot's
spec marks it required; the 2026-03 docs do not say what leaving it out means, so set
HUBSPOT_PORTAL_IDS when HubSpot refuses). The POST is an upsert, so running
`leadlex-sync hubspot subscribe` again after a mapping change updates the properties.
"""

from __future__ import annotations

from typing import Any

from pull_sources.hubspot_journal.api import JournalClient
from worker.mapping import MappingConfig, mapping_fields_for

CONTACT_ACTIONS = ("CREATE", "UPDATE", "DELETE", "MERGE", "RESTORE")


def wanted_subscriptions(mapping: MappingConfig, portal_id: str | None) -> list[dict[str, Any]]:
    """The subscription bodies to upsert."""
    portal: dict[str, Any] = {"portalId": int(portal_id)} if portal_id else {}
    return [
        {
            "subscriptionType": "OBJECT",
            "objectTypeId": "0-1",
            "actions": list(CONTACT_ACTIONS),
            "properties": sorted(mapping_fields_for(mapping, "hubspot", "contact")),
            "objectIds": [],
            **portal,
        },
        {
            "subscriptionType": "GDPR_PRIVACY_DELETION",
            "objectTypeId": "0-1",
            "actions": ["GDPR_DELETE"],
            "properties": [],
            "objectIds": [],
            **portal,
        },
    ]


def apply_subscriptions(
    client: JournalClient, mapping: MappingConfig, portal_id: str | None
) -> list[dict[str, Any]]:
    """Upsert every wanted subscription; returns HubSpot's answers."""
    return [client.upsert_subscription(body) for body in wanted_subscriptions(mapping, portal_id)]

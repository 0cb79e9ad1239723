"""The HubSpot developer-platform project `leadlex-sync hubspot project DIR` writes (pure).

Since 23 June 2026 new HubSpot apps are projects uploaded with the `hs` CLI
(reference crm-sources-2026.md §1): `hsproject.json`, `src/app/app-hsmeta.json` and, for
webhooks, `src/app/webhooks/webhooks-hsmeta.json`. `project_files` builds their JSON from
the ACTIVE mapping (the CRM properties it reads), so re-running the command after a
mapping change updates the subscriptions.

Choices (documented in README "Connecting HubSpot"):
- platform `2026.03`; static auth + private distribution by default (one account), or
  OAuth + private (several accounts; needs a redirect URL). Only required scopes: static
  apps may declare nothing else. The Webhooks Journal scopes are API-only and are not
  declared here (the journal token asks for them).
- Subscriptions: generic `crmObjects` `object.*` with `objectType: "contact"`: creation,
  deletion, merge, restore, and `object.propertyChange` for every property the mapping
  reads (mapped fields, the notes field and the LeadLex-id field); `hubEvents`
  `contact.privacyDeletion` (it has no generic form).
- Mode `journal` writes no webhooks component (no inbound URL at all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from worker.mapping import MappingConfig, mapping_fields_for

PLATFORM_VERSION = "2026.03"
WEBHOOK_PATH = "/webhooks/hubspot"
MAX_SUBSCRIPTIONS = 1000  # per app (reference §1 Delivery)
CONTACT_SCOPES = ("crm.objects.contacts.read",)
OBJECT_ACTIONS = ("creation", "deletion", "merge", "restore")
APP_FILE = "src/app/app-hsmeta.json"
WEBHOOKS_FILE = "src/app/webhooks/webhooks-hsmeta.json"
PROJECT_FILE = "hsproject.json"

Mode = Literal["webhooks", "journal", "both"]


class ProjectError(ValueError):
    """The project cannot be built as asked; str(self) names the setting or option."""


@dataclass(frozen=True, slots=True)
class ProjectOptions:
    """What the generated project says besides the mapping."""

    name: str = "leadlex-sync"
    mode: Mode = "both"
    auth: Literal["static", "oauth"] = "static"
    public_base_url: str | None = None
    redirect_url: str | None = None
    max_concurrent_requests: int = 10


def subscribed_properties(mapping: MappingConfig) -> list[str]:
    """The HubSpot contact properties the active mapping reads, sorted (lower case)."""
    return sorted(mapping_fields_for(mapping, "hubspot", "contact"))


def _target_url(options: ProjectOptions) -> str:
    base = options.public_base_url
    if not base:
        raise ProjectError(
            "PUBLIC_BASE_URL: missing (the https URL HubSpot calls; or use --mode journal, "
            "which needs no inbound URL)"
        )
    parts = urlsplit(base)
    if parts.scheme != "https" or not parts.netloc:
        raise ProjectError("PUBLIC_BASE_URL: HubSpot only calls public https URLs")
    return base.rstrip("/") + WEBHOOK_PATH


def app_meta(options: ProjectOptions) -> dict[str, Any]:
    """`src/app/app-hsmeta.json`."""
    auth: dict[str, Any] = {"type": options.auth, "requiredScopes": list(CONTACT_SCOPES)}
    if options.auth == "oauth":
        if not options.redirect_url:
            raise ProjectError("--redirect-url: required with --auth oauth")
        auth["requiredScopes"] = ["oauth", *CONTACT_SCOPES]
        auth["redirectUrls"] = [options.redirect_url]
        auth["optionalScopes"] = []
        auth["conditionallyRequiredScopes"] = []
    return {
        "uid": "leadlex_sync_app",
        "type": "app",
        "config": {
            "name": options.name,
            "description": "Keeps LeadLex contacts in step with HubSpot contacts.",
            "distribution": "private",
            "auth": auth,
            "permittedUrls": {"fetch": [], "iframe": [], "img": []},
        },
    }


def webhooks_meta(mapping: MappingConfig, options: ProjectOptions) -> dict[str, Any]:
    """`src/app/webhooks/webhooks-hsmeta.json`: every subscription the sync needs."""
    if options.max_concurrent_requests <= 5:
        raise ProjectError("--max-concurrent-requests: HubSpot requires a number above 5")
    crm = [
        {"subscriptionType": f"object.{action}", "objectType": "contact", "active": True}
        for action in OBJECT_ACTIONS
    ]
    crm += [
        {
            "subscriptionType": "object.propertyChange",
            "objectType": "contact",
            "propertyName": prop,
            "active": True,
        }
        for prop in subscribed_properties(mapping)
    ]
    if len(crm) + 1 > MAX_SUBSCRIPTIONS:
        raise ProjectError(f"MAPPING_FILE: more than {MAX_SUBSCRIPTIONS} HubSpot subscriptions")
    return {
        "uid": "leadlex_sync_webhooks",
        "type": "webhooks",
        "config": {
            "settings": {
                "targetUrl": _target_url(options),
                "maxConcurrentRequests": options.max_concurrent_requests,
            },
            "subscriptions": {
                "crmObjects": crm,
                "legacyCrmObjects": [],
                "hubEvents": [{"subscriptionType": "contact.privacyDeletion", "active": True}],
            },
        },
    }


def project_files(mapping: MappingConfig, options: ProjectOptions) -> dict[str, str]:
    """Relative path -> file text (JSON, 2-space indent, trailing newline).

    A file mapped to "" must be removed (the webhooks component in `journal` mode)."""
    files: dict[str, Any] = {
        PROJECT_FILE: {"name": options.name, "srcDir": "src", "platformVersion": PLATFORM_VERSION},
        APP_FILE: app_meta(options),
    }
    files[WEBHOOKS_FILE] = None if options.mode == "journal" else webhooks_meta(mapping, options)
    return {
        path: "" if data is None else json.dumps(data, indent=2) + "\n"
        for path, data in files.items()
    }


def subscription_diff(old_text: str | None, new_text: str) -> tuple[list[str], list[str]]:
    """(added, removed) property subscriptions between two webhooks-hsmeta.json texts."""

    def props(text: str | None) -> set[str]:
        if not text:
            return set()
        try:
            data = json.loads(text)
            subs = data["config"]["subscriptions"]["crmObjects"]
        except (ValueError, KeyError, TypeError):
            return set()
        return {
            str(s.get("propertyName"))
            for s in subs
            if isinstance(s, dict) and s.get("subscriptionType") == "object.propertyChange"
        }

    old, new = props(old_text), props(new_text)
    return sorted(new - old), sorted(old - new)

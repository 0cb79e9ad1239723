"""Every knob of the HubSpot simulator, with the defaults chosen where HubSpot is silent.

Reference: crm-sources-2026.md §2 and §5. UNDOC = not in HubSpot's docs; the default is
our choice (the stricter one for a client) and a knob lets tests try the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

JOURNAL_SCOPES = (
    "developer.webhooks_journal.read",
    "developer.webhooks_journal.subscriptions.read",
    "developer.webhooks_journal.subscriptions.write",
    "crm.objects.contacts.read",
)


class ConfigError(ValueError):
    """A knob name or value is wrong; str(self) names it."""


@dataclass
class HubSpotSandboxConfig:
    """Knobs of the simulator (all changeable at run time through /_hubspot/config)."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"  # noqa: S105 - a simulator's test secret
    portal_id: int = 62515
    app_id: int = 909090
    # UNDOC: the client-credentials token's TTL (only "different from 30 min").
    token_ttl_seconds: int = 1800
    # Journal retention: entries (and offsets) older than this are gone (404). Docs: 3 days.
    retention_seconds: int = 3 * 86_400
    # UNDOC: how long a download URL stays valid; expired URLs answer 403 (S3-like).
    url_ttl_seconds: int = 300
    # UNDOC: what `offset/{o}/next` answers at the tip: "204" (no content) or "no_url"
    # (200 with currentOffset and no url, as a 3P client also accepts).
    tip_response: str = "204"
    # UNDOC (2027-03-beta says 404): status for an expired or unknown offset.
    expired_offset_status: int = 404
    # UNDOC: what an empty `properties` list in a journal subscription means: "all" or "none".
    empty_properties: str = "all"
    # Webhook push (the same changes as signed webhooks); None = push off.
    webhook_url: str | None = None
    webhook_timeout_seconds: float = 5.0
    # Retries after the first attempt: 10 over about 24 h (simulated seconds), jittered.
    webhook_retry_delays: tuple[float, ...] = (
        60,
        120,
        300,
        600,
        1800,
        3600,
        7200,
        14400,
        28800,
        28800,
    )
    webhook_shuffle: bool = True  # no ordering guarantee
    webhook_duplicate_rate: float = 0.0  # chance a delivered batch is sent once more
    # Faults (off by default).
    force_429: int = 0  # the next N API calls answer 429
    retry_after_seconds: int = 1
    force_5xx: int = 0  # the next N API calls answer 502
    fail_downloads: int = 0  # the next N downloads answer 500
    download_delay_ms: int = 0  # every download sleeps this long (real time)
    seed: int | None = None  # RNG for jitter, shuffling and duplicates
    extra: dict[str, Any] = field(default_factory=dict)

    def update(self, knobs: dict[str, Any]) -> None:
        """Apply a partial {knob: value}; ConfigError names an unknown knob or bad value."""
        names = {f.name for f in dataclasses.fields(self)} - {"extra"}
        for key, value in knobs.items():
            if key not in names:
                raise ConfigError(f"{key}: unknown knob")
            current = getattr(self, key)
            if key == "webhook_retry_delays":
                value = tuple(float(v) for v in value)
            elif isinstance(current, bool) and not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false")
            elif (
                isinstance(current, int)
                and not isinstance(current, bool)
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                raise ConfigError(f"{key}: expected an integer")
            if key == "tip_response" and value not in ("204", "no_url"):
                raise ConfigError("tip_response: expected '204' or 'no_url'")
            if key == "empty_properties" and value not in ("all", "none"):
                raise ConfigError("empty_properties: expected 'all' or 'none'")
            setattr(self, key, value)

    def public(self) -> dict[str, Any]:
        """Every knob (the client secret included: it is the simulator's own test value)."""
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["webhook_retry_delays"] = list(self.webhook_retry_delays)
        return data

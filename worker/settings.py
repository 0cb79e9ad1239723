"""Typed settings, built once from a mapping (the environment by default).

Every variable is upper-case in the environment and documented in README's
configuration table and `.env.example`. A missing or malformed value raises
`SettingsError` whose message is one line naming the variable; secret values
are `SecretStr` so they never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.salesforce_ids import SalesforceIdError, to_18

DEFAULT_BASE_URL = "https://data.leadlex.com/functions/v1/api-gateway"

# ---- newcomer: the default Redis address ------------------------------------------------
# REDIS_URL's default. Tests (only tests) point it at a decoy server through
# LLS_TEST_DEFAULT_REDIS_ADDRESS=host:port, to exercise "a Redis answers at the default
# address" without touching the machine's real 127.0.0.1:6379.
DEFAULT_REDIS_ADDRESS = "127.0.0.1:6379"
TEST_DEFAULT_REDIS_VAR = "LLS_TEST_DEFAULT_REDIS_ADDRESS"


def default_redis_url() -> str:
    """REDIS_URL when it is not set: db 0 of the Redis at the default address."""
    return f"redis://{os.environ.get(TEST_DEFAULT_REDIS_VAR) or DEFAULT_REDIS_ADDRESS}/0"


# LeadLex plans (reference/leadlex-api.md §3): (per minute, per day).
PLANS: dict[str, tuple[int, int]] = {
    "starter": (10, 100),
    "pro": (50, 1_000),
    "org": (200, 10_000),
}

SECRET_VARS = (
    "LEADLEX_API_KEY",
    "HUBSPOT_CLIENT_SECRET",
    "SALESFORCE_TOKEN",
    "GENERIC_WEBHOOK_SECRET",
    "FLOWER_BASIC_AUTH",
    "SALESFORCE_CLIENT_SECRET",
)


# SALESFORCE_TOKEN (issue 11): a shared secret in the outbound message's URL.
MIN_SALESFORCE_TOKEN_LENGTH = 32
TOKEN_RECIPE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105 - a command line, not a secret
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class SettingsError(Exception):
    """A setting is missing or malformed; str(self) is one line naming it."""


def _sentinel_url(value: str) -> str:
    """A `sentinel://[:password@]host:port[,host:port...]/db` URL, checked node by node."""
    parts = urlsplit(value.strip())
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not netloc:
        raise ValueError("sentinel:// needs at least one host:port, e.g. sentinel://10.0.0.5:26379")
    for node in netloc.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("each sentinel must be host:port with a port from 1 to 65535")
    db = parts.path.strip("/")
    if db and not (db.isdigit() and int(db) < 2**31):
        raise ValueError("the database after the last / must be a number, e.g. /0")
    return value


def _csv(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).replace(" ", ",").split(",") if part.strip()]


class Settings(BaseModel):
    """Everything the receiver and the worker read from the environment."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    redis_url: str = Field(default_factory=default_redis_url, alias="REDIS_URL")
    leadlex_api_key: SecretStr | None = Field(None, alias="LEADLEX_API_KEY")
    leadlex_base_url: str = Field(DEFAULT_BASE_URL, alias="LEADLEX_BASE_URL")
    leadlex_plan: Literal["starter", "pro", "org"] | None = Field(None, alias="LEADLEX_PLAN")
    leadlex_rate_per_minute: int | None = Field(None, alias="LEADLEX_RATE_PER_MINUTE", ge=1)
    leadlex_daily_limit: int | None = Field(None, alias="LEADLEX_DAILY_LIMIT", ge=1)
    leadlex_timeout_seconds: float = Field(10.0, alias="LEADLEX_TIMEOUT_SECONDS", gt=0, le=120)
    # Length of LeadLex's per-minute window. Only tests and the chaos run change it.
    leadlex_rate_window_seconds: float = Field(
        60.0, alias="LEADLEX_RATE_WINDOW_SECONDS", gt=0, le=3600
    )
    circuit_probe_seconds: float = Field(180.0, alias="CIRCUIT_PROBE_SECONDS", ge=1, le=3600)
    flush_lease_seconds: float = Field(60.0, alias="FLUSH_LEASE_SECONDS", ge=1, le=3600)

    hubspot_client_secret: SecretStr | None = Field(None, alias="HUBSPOT_CLIENT_SECRET")
    hubspot_signature_versions: list[Literal["v1", "v2", "v3"]] = Field(
        default=["v3"], alias="HUBSPOT_SIGNATURE_VERSIONS"
    )
    hubspot_portal_ids: list[str] = Field(default_factory=list, alias="HUBSPOT_PORTAL_IDS")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")

    # ---- HubSpot Webhooks Journal (pull source, hubspot-2026) ----
    hubspot_journal: Literal["off", "on"] = Field("off", alias="HUBSPOT_JOURNAL")
    hubspot_client_id: str | None = Field(None, alias="HUBSPOT_CLIENT_ID")
    hubspot_api_base_url: str = Field("https://api.hubapi.com", alias="HUBSPOT_API_BASE_URL")
    hubspot_journal_scope: Literal["global", "local"] = Field(
        "global", alias="HUBSPOT_JOURNAL_SCOPE"
    )
    hubspot_journal_start: Literal["latest", "earliest"] = Field(
        "latest", alias="HUBSPOT_JOURNAL_START"
    )
    hubspot_journal_poll_seconds: float = Field(
        10.0, alias="HUBSPOT_JOURNAL_POLL_SECONDS", ge=0.5, le=300
    )
    hubspot_journal_batch_size: int = Field(50, alias="HUBSPOT_JOURNAL_BATCH_SIZE", ge=1, le=100)
    hubspot_journal_timeout_seconds: float = Field(
        10.0, alias="HUBSPOT_JOURNAL_TIMEOUT_SECONDS", gt=0, le=120
    )

    salesforce_org_ids: list[str] = Field(default_factory=list, alias="SALESFORCE_ORG_IDS")
    salesforce_token: SecretStr | None = Field(None, alias="SALESFORCE_TOKEN")

    # ---- Salesforce Change Data Capture over the Pub/Sub API (pull_sources/salesforce_cdc) ----
    salesforce_instance_url: str | None = Field(None, alias="SALESFORCE_INSTANCE_URL")
    salesforce_client_id: str | None = Field(None, alias="SALESFORCE_CLIENT_ID")
    salesforce_client_secret: SecretStr | None = Field(None, alias="SALESFORCE_CLIENT_SECRET")
    salesforce_username: str | None = Field(None, alias="SALESFORCE_USERNAME")
    salesforce_jwt_key_file: Path | None = Field(None, alias="SALESFORCE_JWT_KEY_FILE")
    salesforce_jwt_audience: str = Field(
        "https://login.salesforce.com", alias="SALESFORCE_JWT_AUDIENCE"
    )
    salesforce_pubsub_endpoint: str = Field(
        "api.pubsub.salesforce.com:7443", alias="SALESFORCE_PUBSUB_ENDPOINT"
    )
    salesforce_pubsub_tls: bool = Field(True, alias="SALESFORCE_PUBSUB_TLS")
    salesforce_cdc_topics: list[str] = Field(
        default=["/data/ContactChangeEvent", "/data/LeadChangeEvent"], alias="SALESFORCE_CDC_TOPICS"
    )
    salesforce_cdc_initial_replay: Literal["latest", "earliest"] = Field(
        "latest", alias="SALESFORCE_CDC_INITIAL_REPLAY"
    )
    salesforce_cdc_batch_size: int = Field(100, alias="SALESFORCE_CDC_BATCH_SIZE", ge=1, le=100)
    salesforce_cdc_skip_users: list[str] = Field(
        default_factory=list, alias="SALESFORCE_CDC_SKIP_USERS"
    )
    salesforce_cdc_skip_origins: list[str] = Field(
        default_factory=list, alias="SALESFORCE_CDC_SKIP_ORIGINS"
    )
    # Salesforce's token response carries no lifetime: renew after this many seconds
    # (15 min = the shortest session timeout an org can set).
    salesforce_token_refresh_seconds: float = Field(
        900.0, alias="SALESFORCE_TOKEN_REFRESH_SECONDS", ge=30, le=86_400
    )

    @field_validator(
        "salesforce_cdc_topics", "salesforce_cdc_skip_users", "salesforce_cdc_skip_origins",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _cdc_lists(cls, value: Any) -> list[str]:
        if value is None or value == "":
            return []
        if isinstance(value, list | tuple):
            return [str(v).strip() for v in value if str(v).strip()]
        return [part.strip() for part in str(value).split(",") if part.strip()]

    @field_validator("salesforce_cdc_topics")
    @classmethod
    def _cdc_topics(cls, value: list[str]) -> list[str]:
        for topic in value:
            if not topic.startswith("/data/") or " " in topic:
                raise ValueError("each topic must look like /data/ContactChangeEvent")
        return value

    @field_validator("salesforce_instance_url")
    @classmethod
    def _instance_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be the org's My Domain URL, https://<domain>.my.salesforce.com")
        return value.rstrip("/")

    @field_validator("salesforce_cdc_initial_replay", mode="before")
    @classmethod
    def _lower_replay(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def salesforce_cdc_problem(self) -> str | None:
        """What is missing for the CDC subscriber, as one line naming the variable; else None."""
        if not self.salesforce_instance_url:
            return "SALESFORCE_INSTANCE_URL: missing (the org's My Domain URL)"
        if not self.salesforce_client_id:
            return "SALESFORCE_CLIENT_ID: missing (the external client app's consumer key)"
        if self.salesforce_username or self.salesforce_jwt_key_file:
            if not (self.salesforce_username and self.salesforce_jwt_key_file):
                return "SALESFORCE_USERNAME and SALESFORCE_JWT_KEY_FILE: JWT bearer needs both"
            if not self.salesforce_jwt_key_file.is_file():
                return "SALESFORCE_JWT_KEY_FILE: not a readable file"
            return None
        if self.salesforce_client_secret is None:
            return (
                "SALESFORCE_CLIENT_SECRET: missing (client credentials), or set "
                "SALESFORCE_USERNAME + SALESFORCE_JWT_KEY_FILE (JWT bearer)"
            )
        return None

    # ---- end of Salesforce CDC settings ----

    generic_webhook_secret: SecretStr | None = Field(None, alias="GENERIC_WEBHOOK_SECRET")

    # ---- secure by default (issue 11): unauthenticated Salesforce, dead-letter bounds, ----
    # ---- Redis deadlines, the web server's read deadline ----------------------------------
    salesforce_allow_unauthenticated: bool = Field(False, alias="SALESFORCE_ALLOW_UNAUTHENTICATED")
    dlq_max_letter_bytes: int = Field(65_536, alias="DLQ_MAX_LETTER_BYTES", ge=1024)
    dlq_invalid_maxlen: int = Field(10_000, alias="DLQ_INVALID_MAXLEN", ge=100)
    receiver_redis_timeout_seconds: float = Field(
        0.5, alias="RECEIVER_REDIS_TIMEOUT_SECONDS", gt=0, le=5
    )
    request_read_seconds: float = Field(10.0, alias="REQUEST_READ_SECONDS", gt=0, le=120)

    # ---- onboarding (issue 13): the opt-in daily reconcile, backfill's share of the budget ----
    reconcile_daily_at: str = Field(
        "off", alias="RECONCILE_DAILY_AT", pattern=r"^(off|([01]\d|2[0-3]):[0-5]\d)$"
    )
    backfill_budget_share: float = Field(0.5, alias="BACKFILL_BUDGET_SHARE", gt=0, le=1)

    mapping_file: Path | None = Field(None, alias="MAPPING_FILE")
    coalesce_seconds: float = Field(2.0, alias="COALESCE_SECONDS", ge=0, le=300)
    max_body_bytes: int = Field(1_048_576, alias="MAX_BODY_BYTES", ge=1024)
    dedupe_ttl_seconds: int = Field(7 * 86_400, alias="DEDUPE_TTL_SECONDS", ge=86_400)
    default_phone_region: str = Field(
        "US", alias="DEFAULT_PHONE_REGION", min_length=2, max_length=2
    )
    resolve_by_email: bool = Field(False, alias="RESOLVE_BY_EMAIL")
    create_on_creation: bool = Field(False, alias="CREATE_ON_CREATION")
    deletion_policy: Literal["unlink", "ignore"] = Field("unlink", alias="DELETION_POLICY")
    max_retry_age_seconds: int = Field(86_400, alias="MAX_RETRY_AGE_SECONDS", ge=60)
    visibility_timeout_seconds: int = Field(3_600, alias="VISIBILITY_TIMEOUT_SECONDS", ge=5)
    # ---- promises: notes exactly once or surfaced, fenced flushes, create at most once
    # Whether LeadLex honours Idempotency-Key on PATCH/POST /v1/contacts (undocumented):
    # `unknown` (default) settles a write of unknown outcome by reading the contact back;
    # `honored` (only once you have verified it) re-sends it with the same key instead.
    leadlex_patch_idempotency: Literal["unknown", "honored"] = Field(
        "unknown", alias="LEADLEX_PATCH_IDEMPOTENCY"
    )
    # Seconds after the client timeout before a write LeadLex never answered is settled
    # (read back): past this point it is taken that a late apply can no longer land.
    notes_settle_delay_seconds: float = Field(
        150.0, alias="NOTES_SETTLE_DELAY_SECONDS", ge=0, le=3600
    )
    # promises-lifecycle: event times later than receive time + this are clamped to it.
    max_clock_skew_seconds: int = Field(300, alias="MAX_CLOCK_SKEW_SECONDS", ge=0, le=86_400)
    # fast (issue 14): the budget's margin beyond each call's measured flight time.
    leadlex_rate_margin_seconds: float = Field(
        0.1, alias="LEADLEX_RATE_MARGIN_SECONDS", ge=0, le=10
    )
    # fast (issue 14): the receiver writes inbox + broker message in one MULTI (false: kombu
    # publishes the message, with Flower's "sent" event, after the inbox write).
    receiver_direct_publish: bool = Field(True, alias="RECEIVER_DIRECT_PUBLISH")
    # fast (issue 14): under the shipped BufferingWorker, webhook POSTs are answered on the
    # event loop, the common hand-off awaited on the loop's own Redis connection (false: on
    # the threads).
    receiver_async_handoff: bool = Field(True, alias="RECEIVER_ASYNC_HANDOFF")
    # fast (issue 14): the master's name when REDIS_URL is sentinel://host:26379[,host:port]/db.
    redis_sentinel_master: str | None = Field(None, alias="REDIS_SENTINEL_MASTER")
    # fast (issue 14): replicas that must hold a request's events before the receiver
    # answers 2xx (Redis WAIT); 0 = the master's answer is enough.
    redis_wait_replicas: int = Field(0, alias="REDIS_WAIT_REPLICAS", ge=0, le=16)
    log_format: Literal["auto", "json", "console"] = Field("auto", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")

    @field_validator(
        "hubspot_signature_versions", "hubspot_portal_ids", "salesforce_org_ids", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: Any) -> list[str]:
        return _csv(value)

    @field_validator("leadlex_plan", "log_format", "leadlex_patch_idempotency", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sentinel_master(self) -> Settings:
        if self.redis_url.strip().lower().startswith("sentinel://") and not (
            self.redis_sentinel_master
        ):
            raise ValueError("REDIS_SENTINEL_MASTER: required when REDIS_URL is a sentinel:// URL")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        # Everything redis-py and kombu would trip on later, checked here so every process
        # stops at start with this one line (never echo the URL: it may hold a password).
        parts = urlsplit(value.strip())
        if parts.scheme == "sentinel":  # fast (issue 14): worker/redis_connect.py
            return _sentinel_url(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss://, unix:// or sentinel://")
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("unix:// needs a socket path")
            return value
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        if not parts.hostname:
            raise ValueError("needs a host, e.g. redis://127.0.0.1:6379/0")
        db = parts.path.strip("/")
        if db and not (db.isdigit() and int(db) < 2**31):
            raise ValueError("the database after the last / must be a number, e.g. /0")
        return value

    @field_validator("leadlex_base_url", "public_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("salesforce_org_ids")
    @classmethod
    def _org_ids(cls, value: list[str]) -> list[str]:
        # One normal form: the 18-character id (worker.salesforce_ids).
        try:
            return [to_18(org) for org in value]
        except SalesforceIdError as exc:
            raise ValueError(f"each id must be a 15- or 18-character org id ({exc})") from None

    @field_validator("salesforce_token")
    @classmethod
    def _sf_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if (
            len(token) < MIN_SALESFORCE_TOKEN_LENGTH
            or not set(token) <= _URL_SAFE
            or len(set(token)) < 10
        ):
            raise ValueError(
                f"must be at least {MIN_SALESFORCE_TOKEN_LENGTH} random URL-safe characters; "
                f"generate one with: {TOKEN_RECIPE}"
            )
        return value

    @field_validator("generic_webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for part in value.get_secret_value().split():
            if not part.startswith("whsec_"):
                raise ValueError("each secret must start with whsec_ (space-separated to rotate)")
            encoded = part.removeprefix("whsec_")
            try:
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("secret is not base64 after whsec_") from None
            if not key:
                raise ValueError("secret is empty after whsec_")
        return value

    @field_validator("default_phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return value.upper()

    # ---- HubSpot Webhooks Journal (hubspot-2026) ----
    @field_validator(
        "hubspot_journal", "hubspot_journal_scope", "hubspot_journal_start", mode="before"
    )
    @classmethod
    def _journal_lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("hubspot_api_base_url")
    @classmethod
    def _journal_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _journal_credentials(self) -> Settings:
        # HubSpot Webhooks Journal: the poller needs client credentials.
        if self.hubspot_journal == "on":
            if not self.hubspot_client_id:
                raise ValueError("HUBSPOT_CLIENT_ID: required when HUBSPOT_JOURNAL=on")
            if self.hubspot_client_secret is None:
                raise ValueError("HUBSPOT_CLIENT_SECRET: required when HUBSPOT_JOURNAL=on")
        return self

    @model_validator(mode="after")
    def _salesforce_authenticated(self) -> Settings:
        # Issue 11: org ids are not secret, so the org allow-list alone lets anyone write.
        if (
            self.salesforce_org_ids
            and self.salesforce_token is None
            and not self.salesforce_allow_unauthenticated
        ):
            raise ValueError(
                "SALESFORCE_TOKEN: missing; SALESFORCE_ORG_IDS is set but org ids are not "
                f"secret: generate a token with {TOKEN_RECIPE} and add ?token=<it> to the "
                "outbound message URL (SALESFORCE_ALLOW_UNAUTHENTICATED=true is for local "
                "tests only)"
            )
        return self

    @model_validator(mode="after")
    def _countdowns_fit(self) -> Settings:
        # Invariant 7: no Celery countdown may reach the broker's visibility timeout.
        if self.coalesce_seconds * 2 >= self.visibility_timeout_seconds:
            raise ValueError("COALESCE_SECONDS must be under half of VISIBILITY_TIMEOUT_SECONDS")
        return self

    # ---- derived values -------------------------------------------------------------------
    @property
    def rate_per_minute(self) -> int:
        """Per-minute call budget: explicit value, else the plan's, else Starter's (safest)."""
        if self.leadlex_rate_per_minute:
            return self.leadlex_rate_per_minute
        return PLANS[self.leadlex_plan or "starter"][0]

    @property
    def daily_limit(self) -> int:
        """Daily call budget: explicit value, else the plan's, else Starter's (safest)."""
        if self.leadlex_daily_limit:
            return self.leadlex_daily_limit
        return PLANS[self.leadlex_plan or "starter"][1]

    def masked(self) -> dict[str, Any]:
        """The effective configuration keyed by variable name, secrets shown as '***'."""
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "***"
            elif isinstance(value, Path):
                value = str(value)
            out[field.alias or name.upper()] = value
        return out


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    require_leadlex: bool = True,
    env_file: Path | None = Path(".env"),
) -> Settings:
    """Build Settings from `env` (default: `.env` overlaid by os.environ).

    `require_leadlex=False` is for processes that never call LeadLex (the receiver,
    dev mode with the simulator). Raises SettingsError with one line naming the variable.
    """
    if env is None:
        merged: dict[str, str] = _read_env_file(env_file) if env_file else {}
        merged.update(os.environ)
        env = merged
    known = {f.alias for f in Settings.model_fields.values()}
    data = {k: v for k, v in env.items() if k in known and v != ""}
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a cross-field rule; its message names the variables
            raise SettingsError(msg) from None
        field = Settings.model_fields.get(str(err["loc"][0]))
        var = field.alias if field and field.alias else str(err["loc"][0])
        # Never echo the input: it may be a secret.
        raise SettingsError(f"{var}: {msg}") from None
    if require_leadlex and settings.leadlex_api_key is None:
        raise SettingsError("LEADLEX_API_KEY: missing (required to call LeadLex; see README)")
    return settings

"""Typed settings, built once from a mapping (the environment by default).

Every variable is upper-case in the environment and documented in README's
configuration table and `.env.example`. A missing or malformed value raises
`SettingsError` whose message is one line naming the variable; secret values
are `SecretStr` so they never appear in a repr, a log line or an error.
"""

from __future__ import annotations

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

DEFAULT_BASE_URL = "https://data.leadlex.com/functions/v1/api-gateway"

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


class SettingsError(Exception):
    """A setting is missing or malformed; str(self) is one line naming it."""


def _csv(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).replace(" ", ",").split(",") if part.strip()]


class Settings(BaseModel):
    """Everything the receiver and the worker read from the environment."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="REDIS_URL")
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
        default=["v3", "v2", "v1"], alias="HUBSPOT_SIGNATURE_VERSIONS"
    )
    hubspot_portal_ids: list[str] = Field(default_factory=list, alias="HUBSPOT_PORTAL_IDS")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")

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
    log_format: Literal["auto", "json", "console"] = Field("auto", alias="LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")

    @field_validator(
        "hubspot_signature_versions", "hubspot_portal_ids", "salesforce_org_ids", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: Any) -> list[str]:
        return _csv(value)

    @field_validator("leadlex_plan", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
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
        for org in value:
            if len(org) not in (15, 18) or not org.isalnum():
                raise ValueError("each id must be 15 or 18 letters/digits")
        return value

    @field_validator("generic_webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for part in value.get_secret_value().split():
            if not part.startswith("whsec_"):
                raise ValueError("each secret must start with whsec_ (space-separated to rotate)")
        return value

    @field_validator("default_phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return value.upper()

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

"""Generic signed JSON: `POST /webhooks/generic`, Standard Webhooks headers.

For any sender that can sign (a Salesforce Apex/Flow callout, an internal tool). The
signature is Standard Webhooks v1 with any of the space-separated `whsec_` secrets in
GENERIC_WEBHOOK_SECRET (rotation). The body is one change, or `{"changes": [...]}` with
1..100 of them, as described by `webhook_app/schemas/generic-change.schema.json`; the
pydantic models below are the validator and a test keeps the two in sync. Any invalid
change refuses the whole request with 400 naming the field (`changes[2].object_id`):
the sender is ours to fix, unlike a CRM.

fingerprint("generic", webhook-id, index of the change); event_id = "<webhook-id>:<index>".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from flask import Blueprint, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from webhook_app.errors import ReceiverError
from webhook_app.intake import Receiver, Source, accepted_json, parse_json_body, receive
from webhook_app.signatures import SignatureError, verify_standard_webhook
from worker.batch import Batch
from worker.events import ChangeEvent, Kind, fingerprint
from worker.settings import Settings

MAX_CHANGES = 100
MAX_ID_LENGTH = 255
# Epoch milliseconds below this look like seconds (it is 1973-03-03): refuse them.
MIN_EPOCH_MS = 100_000_000_000
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
DEFAULT_ACCOUNT = "default"


class GenericChange(BaseModel):
    """One change to one CRM record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: str = Field(DEFAULT_ACCOUNT, min_length=1, max_length=MAX_ID_LENGTH)
    object_type: Literal["contact", "lead"] = "contact"
    object_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    occurred_at: int  # ISO 8601 with offset, or epoch ms; stored as epoch ms
    kind: Kind = "update"
    changes: dict[str, str | None] = Field(default_factory=dict, max_length=500)
    merged_ids: list[str] = Field(
        default_factory=list, max_length=MAX_CHANGES, validate_default=True
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _epoch_ms(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an ISO 8601 date-time or epoch milliseconds")
        if isinstance(value, int):
            if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:
                raise ValueError("epoch milliseconds out of range (seconds sent by mistake?)")
            return value
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
                if "T" not in value.upper() or parsed.tzinfo is None:
                    raise ValueError("naive")
                return int(parsed.astimezone(UTC).timestamp() * 1000)
            except (ValueError, OverflowError):
                raise ValueError(
                    "must be an ISO 8601 date-time with a UTC offset, e.g. 2025-10-09T08:55:00Z"
                ) from None
        raise ValueError("must be an ISO 8601 date-time or epoch milliseconds")

    @field_validator("changes")
    @classmethod
    def _field_names(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for name in value:
            if not 1 <= len(name) <= MAX_ID_LENGTH:
                raise ValueError("field names must be 1 to 255 characters")
        return value

    @field_validator("merged_ids")
    @classmethod
    def _merged_ids(cls, value: list[str], info: ValidationInfo) -> list[str]:
        kind = info.data.get("kind")
        if kind == "merge" and not value:
            raise ValueError("required (non-empty) when kind is merge")
        if kind != "merge" and value:
            raise ValueError("only allowed when kind is merge")
        for merged in value:
            if not 1 <= len(merged) <= MAX_ID_LENGTH:
                raise ValueError("ids must be 1 to 255 characters")
        return value


class GenericBatch(BaseModel):
    """Several changes in one message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    changes: list[GenericChange] = Field(min_length=1, max_length=MAX_CHANGES)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"


def validate_message(data: Any) -> list[GenericChange]:
    """The changes of a decoded body, or ReceiverError 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise ReceiverError(
            400,
            "invalid_body",
            'body must be a JSON object (one change or {"changes": [...]})',
            {"field": "$"},
        )
    model: type[GenericChange] | type[GenericBatch]
    model = GenericBatch if isinstance(data.get("changes"), list) else GenericChange
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": _field_path(e["loc"]), "problem": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        raise ReceiverError(
            400,
            "invalid_body",
            f"{first['field']}: {first['problem']}",
            {**first, "errors": errors[:10]},
        ) from None
    return list(parsed.changes) if isinstance(parsed, GenericBatch) else [parsed]


# ---- the Source ------------------------------------------------------------------------------
def _configured(settings: Settings) -> None:
    if settings.generic_webhook_secret is None:
        raise ReceiverError(
            403,
            "generic_not_configured",
            "the generic endpoint is not configured (GENERIC_WEBHOOK_SECRET)",
        )


def _authenticate(receiver: Receiver, req: Request, body: bytes) -> None:
    try:
        verify_standard_webhook(req.headers, body, receiver.generic_keys, now=receiver.clock())
    except SignatureError as exc:
        raise ReceiverError(401, exc.code, exc.message) from None


def _parse(receiver: Receiver, req: Request, body: bytes, received_ms: int) -> Batch:
    changes = validate_message(parse_json_body(body))
    msg_id = req.headers.get("webhook-id", "").strip()
    batch = Batch()
    for index, change in enumerate(changes):
        batch.add(
            ChangeEvent(
                source="generic",
                account=change.account,
                object_type=change.object_type,
                object_id=change.object_id,
                kind=change.kind,
                occurred_at_ms=change.occurred_at,
                fingerprint=fingerprint("generic", msg_id, index),
                event_id=f"{msg_id}:{index}",
                changes=dict(change.changes),
                merged_ids=tuple(change.merged_ids),
                received_at_ms=received_ms,
            )
        )
    return batch


SOURCE = Source(
    name="generic",
    media_types=frozenset({"application/json"}),
    configured=_configured,
    authenticate=_authenticate,
    parse=_parse,
    accepted=accepted_json,
    path="/webhooks/generic",
)

blueprint = Blueprint("generic", __name__)


@blueprint.post(SOURCE.path)
def generic_webhook() -> Response:
    """Receive a Standard Webhooks signed change message."""
    return receive(SOURCE)

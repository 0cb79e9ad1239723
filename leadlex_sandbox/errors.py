"""The LeadLex error envelope and the exception that carries it out of a handler.

Envelope (reference §4): `{"error": {"code", "message", "details"?}}`; `details`
only appears on validation errors, as `{"fields": {name: reason}}`.
"""

from __future__ import annotations

from typing import Any

VALIDATION_MESSAGE = "Invalid request parameters"


class ApiError(Exception):
    """An API answer other than success: HTTP status, snake_case code, message, details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after  # seconds, for a 429

    def envelope(self) -> dict[str, Any]:
        """The JSON body LeadLex sends for this error."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def validation_error(fields: dict[str, str], **extra: Any) -> ApiError:
    """400 validation_error naming each bad field and its reason."""
    return ApiError(400, "validation_error", VALIDATION_MESSAGE, {"fields": fields, **extra})


def not_found(what: str = "Contact") -> ApiError:
    """404 not_found."""
    return ApiError(404, "not_found", f"{what} not found")


def rate_limited(retry_after: float | None) -> ApiError:
    """429 rate_limited; which limit (minute or day) is deliberately not said (§12.5)."""
    return ApiError(429, "rate_limited", "Rate limit exceeded", retry_after=retry_after)


SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("internal_error", "Internal server error"),
    502: ("bad_gateway", "Bad gateway"),
    503: ("service_unavailable", "Service temporarily unavailable"),
    504: ("gateway_timeout", "Gateway timeout"),
}


def server_error(status: int) -> ApiError:
    """An injected 5xx in the standard envelope."""
    code, message = SERVER_ERRORS.get(status, ("server_error", "Server error"))
    return ApiError(status, code, message)

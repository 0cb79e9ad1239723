"""Webhook signature checks, pure (no Flask): HubSpot v1/v2/v3 and Standard Webhooks.

Every check works on the raw body bytes and takes the clock (`now_ms` / `now`) as an
argument so tests can pin it. Comparisons are constant-time; a failure raises
`SignatureError` whose `code` and message never contain a secret or a signature.

HubSpot (reference crm-webhooks.md §1.2):
- v1 = sha256_hex(secret + body)
- v2 = sha256_hex(secret + method + uri + body)
- v3 = base64(hmac_sha256(secret, method + decoded_uri + body + timestamp_ms)),
  timestamp within 5 minutes of now in either direction.
Standard Webhooks (§3): base64(hmac_sha256(key, f"{id}.{timestamp}.{body}")), `v1,` prefix,
several space-separated signatures, several keys for rotation, 5 minutes both ways.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from werkzeug.datastructures import EnvironHeaders
from werkzeug.datastructures import Headers as WerkzeugHeaders

HUBSPOT_WINDOW_MS = 300_000
STANDARD_WEBHOOKS_TOLERANCE_S = 300

# Exactly HubSpot's v3 decoding table: upper-case escapes only, nothing else.
_HUBSPOT_V3_ESCAPES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_V3_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _HUBSPOT_V3_ESCAPES))
# Characters a server leaves unescaped in a path; used only when no raw URI is available.
_PATH_SAFE = "/:@!$&'()*+,;=~"


class Headers(Protocol):
    """Anything with `.items()` of (name, value): a dict, or Werkzeug's request headers."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class SignatureError(Exception):
    """A request's signature, timestamp or signature headers do not check out."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _lower_keys(headers: Headers) -> Mapping[str, str] | EnvironHeaders | WerkzeugHeaders:
    """`headers` looked up by lower-case name: werkzeug's own (a request's) already are
    (copying a request's every header costs more than the checks, issue 14)."""
    if isinstance(headers, EnvironHeaders | WerkzeugHeaders):
        return headers
    return {k.lower(): v for k, v in headers.items()}


def _same(expected: str, received: str) -> bool:
    """Constant-time comparison that tolerates any (even non-ASCII) received text."""
    return hmac.compare_digest(
        expected.encode("utf-8"), received.strip().encode("utf-8", "replace")
    )


# ---- the request URI HubSpot signs ----------------------------------------------------------
def raw_request_target(environ: Mapping[str, Any]) -> str:
    """Path and query exactly as the client sent them (`RAW_URI`/`REQUEST_URI`).

    Falls back to the quoted `SCRIPT_NAME + PATH_INFO` plus the raw `QUERY_STRING` when the
    server gives no raw URI (the 12 characters HubSpot decodes are left unquoted, so the
    result signs the same).
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        target = str(raw)
        if target.startswith(("http://", "https://")):  # absolute-form request target
            scheme_end = target.index("//") + 2
            slash = target.find("/", scheme_end)
            target = target[slash:] if slash != -1 else "/"
    else:
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        target = quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE)
        query = str(environ.get("QUERY_STRING", ""))
        if query:
            target = f"{target}?{query}"
    try:  # WSGI strings carry raw bytes as latin-1; HubSpot signs UTF-8
        return target.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return target


def hubspot_v3_uri(uri: str) -> str:
    """Apply HubSpot's v3 decoding table (12 upper-case escapes) to a received URI."""
    return _HUBSPOT_V3_ESCAPE_RE.sub(lambda m: _HUBSPOT_V3_ESCAPES[m.group(0)], uri)


# ---- HubSpot --------------------------------------------------------------------------------
def hubspot_v1(secret: str, body: bytes) -> str:
    """v1: lower-case hex SHA-256 of client secret + raw body."""
    return hashlib.sha256(secret.encode("utf-8") + body).hexdigest()


def hubspot_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """v2: lower-case hex SHA-256 of client secret + method + full URI + raw body."""
    return hashlib.sha256((secret + method + uri).encode("utf-8") + body).hexdigest()


def hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """v3: base64 HMAC-SHA256 (key = client secret) of method + uri + body + timestamp.

    `uri` is signed as given: pass it through `hubspot_v3_uri` first when it is the URI
    as received.
    """
    message = method.encode("utf-8") + uri.encode("utf-8") + body + timestamp.encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_hubspot(
    headers: Headers,
    *,
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    versions: Collection[str],
    now_ms: int,
) -> str:
    """Check a HubSpot request; returns the version that matched or raises SignatureError.

    `uri` is the full URL as received (scheme, host, raw path and query). When a v3 header
    is present and v3 is allowed, only v3 is checked; otherwise the version named by
    `X-HubSpot-Signature-Version` is checked if it is in `versions`.
    """
    h = _lower_keys(headers)
    v3 = h.get("x-hubspot-signature-v3")
    if v3 is not None and "v3" in versions:
        stamp = h.get("x-hubspot-request-timestamp", "").strip()
        if not stamp:
            raise SignatureError(
                "timestamp_missing",
                "X-HubSpot-Request-Timestamp is required with X-HubSpot-Signature-v3",
            )
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 15):
            raise SignatureError(
                "timestamp_invalid", "X-HubSpot-Request-Timestamp must be epoch milliseconds"
            )
        if abs(now_ms - int(stamp)) > HUBSPOT_WINDOW_MS:
            raise SignatureError(
                "timestamp_out_of_window",
                "X-HubSpot-Request-Timestamp is more than 5 minutes from now",
            )
        expected = hubspot_v3(secret, method, hubspot_v3_uri(uri), body, stamp)
        if not _same(expected, v3):
            raise SignatureError("signature_mismatch", "X-HubSpot-Signature-v3 does not match")
        return "v3"

    signature = h.get("x-hubspot-signature")
    version = h.get("x-hubspot-signature-version", "").strip().lower()
    if signature is None or not version:
        if v3 is not None:
            raise SignatureError(
                "signature_version_not_allowed",
                "signature version v3 is not accepted here (HUBSPOT_SIGNATURE_VERSIONS)",
            )
        raise SignatureError(
            "signature_missing",
            "no HubSpot signature: send X-HubSpot-Signature-v3 with X-HubSpot-Request-Timestamp,"
            " or X-HubSpot-Signature with X-HubSpot-Signature-Version",
        )
    if version not in ("v1", "v2"):
        raise SignatureError(
            "signature_version_unknown", "X-HubSpot-Signature-Version must be v1 or v2"
        )
    if version not in versions:
        raise SignatureError(
            "signature_version_not_allowed",
            f"signature version {version} is not accepted here (HUBSPOT_SIGNATURE_VERSIONS)",
        )
    if version == "v1":
        expected = hubspot_v1(secret, body)
    else:
        expected = hubspot_v2(secret, method, uri, body)
    if not _same(expected, signature.lower()):
        raise SignatureError("signature_mismatch", "X-HubSpot-Signature does not match")
    return version


# ---- Standard Webhooks ----------------------------------------------------------------------
def whsec_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (padding optional); ValueError if malformed."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret is not base64 after whsec_") from None
    if not key:
        raise ValueError("secret is empty after whsec_")
    return key


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>`: one webhook-signature entry."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


MAX_WEBHOOK_ID_LENGTH = 256
MAX_SIGNATURE_HEADER_LENGTH = 4096


def verify_standard_webhook(
    headers: Headers, body: bytes, keys: Sequence[bytes], *, now: float
) -> str:
    """Check a Standard Webhooks request against any of `keys`; returns the webhook-id."""
    h = _lower_keys(headers)
    msg_id = h.get("webhook-id", "").strip()
    stamp = h.get("webhook-timestamp", "").strip()
    signatures = h.get("webhook-signature", "")
    if not msg_id or not stamp or not signatures.strip():
        raise SignatureError(
            "signature_missing",
            "webhook-id, webhook-timestamp and webhook-signature headers are required",
        )
    if len(msg_id) > MAX_WEBHOOK_ID_LENGTH or not (msg_id.isascii() and msg_id.isprintable()):
        # It becomes part of every event's id: bounded like any other id (issue 11).
        raise SignatureError(
            "webhook_id_invalid",
            f"webhook-id must be at most {MAX_WEBHOOK_ID_LENGTH} printable ASCII characters",
        )
    if len(signatures) > MAX_SIGNATURE_HEADER_LENGTH:
        raise SignatureError(
            "signature_invalid",
            f"webhook-signature is longer than {MAX_SIGNATURE_HEADER_LENGTH} characters",
        )
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise SignatureError("timestamp_invalid", "webhook-timestamp must be epoch seconds")
    if abs(now - int(stamp)) > STANDARD_WEBHOOKS_TOLERANCE_S:
        raise SignatureError(
            "timestamp_out_of_window", "webhook-timestamp is more than 5 minutes from now"
        )
    expected = [standard_webhooks_signature(k, msg_id, stamp, body) for k in keys]
    for entry in signatures.split():
        if not entry.startswith("v1,"):
            continue  # other schemes (v1a) are not configured here
        for candidate in expected:
            if _same(candidate, entry):
                return msg_id
    raise SignatureError("signature_mismatch", "no webhook-signature entry matches")

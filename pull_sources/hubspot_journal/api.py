"""HubSpot's Webhooks Journal API over httpx: token, journal reads, downloads, subscriptions.

The only HTTP code of this source (reference crm-sources-2026.md §2). Errors come in two
families, as everywhere in the project: `JournalRetryable` (network, timeouts, 5xx, 429
with its wait) and `JournalError` (permanent: bad credentials, missing scope, bad
request). `OffsetExpired` is its own case: the stored offset is older than the
journal's three days (or unknown), so the poller restarts from the earliest entry.

The token (client credentials) is cached per client and refreshed `REFRESH_MARGIN` of its
lifetime before it expires (HubSpot does not document the TTL); a 401 drops it and the
call is tried once more with a fresh one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

JOURNAL_SCOPES = (
    "developer.webhooks_journal.read",
    "developer.webhooks_journal.subscriptions.read",
    "developer.webhooks_journal.subscriptions.write",
    "crm.objects.contacts.read",
)
TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a URL path, not a secret
SUBSCRIPTIONS_PATH = "/webhooks-journal/subscriptions/2026-03"
JOURNAL_PATHS = {
    "global": "/webhooks-journal/journal/2026-03",
    "local": "/webhooks-journal/journal-local/2026-03",
}
REFRESH_MARGIN = 0.2  # refresh when less than 20% of the lifetime (and < 5 min) is left


class JournalError(Exception):
    """A permanent failure (credentials, scope, bad request); str(self) has no secret."""


class JournalRetryable(Exception):
    """Network trouble, 5xx or 429: try again later (`retry_after` seconds when known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OffsetExpired(Exception):
    """The stored offset is gone from the journal (older than its retention, or unknown)."""


class DownloadFailed(JournalRetryable):
    """An entry file could not be downloaded (its URL may have expired); read it again."""


@dataclass(frozen=True, slots=True)
class Pointer:
    """One journal entry: its offset and where to download it."""

    offset: str
    url: str


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # monotonic seconds
    lifetime: float


class JournalClient:
    """Calls HubSpot with a cached client-credentials token."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = "global",
        install_portal_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self.journal_path = JOURNAL_PATHS[scope]
        self.install_portal_id = install_portal_id if scope == "local" else None
        self.clock = clock
        self._token: _Token | None = None
        self.tokens_fetched = 0

    # ---- token -------------------------------------------------------------------------
    def token(self) -> str:
        """A valid access token, fetched or refreshed when (nearly) expired."""
        now = self.clock()
        tok = self._token
        if tok is not None:
            margin = min(300.0, tok.lifetime * REFRESH_MARGIN)
            if now < tok.expires_at - margin:
                return tok.value
        self._token = self._fetch_token(now)
        return self._token.value

    def _fetch_token(self, now: float) -> _Token:
        try:
            resp = self.http.post(
                self.base_url + TOKEN_PATH,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "scope": " ".join(JOURNAL_SCOPES),
                },
            )
        except httpx.HTTPError as exc:
            raise JournalRetryable(f"token endpoint: {type(exc).__name__}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise JournalRetryable(f"token endpoint answered {resp.status_code}")
        if resp.status_code != 200:
            raise JournalError(
                f"token endpoint refused the client credentials ({resp.status_code} "
                f"{_category(resp)}): check HUBSPOT_CLIENT_ID / HUBSPOT_CLIENT_SECRET"
            )
        body = resp.json()
        lifetime = float(body.get("expires_in") or 1800)
        self.tokens_fetched += 1
        return _Token(str(body["access_token"]), now + lifetime, lifetime)

    # ---- plumbing ----------------------------------------------------------------------
    def _call(
        self, method: str, path: str, *, json: Any = None, expect_offset: bool = False
    ) -> httpx.Response:
        params = {"installPortalId": self.install_portal_id} if self.install_portal_id else None
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}"}
            try:
                resp = self.http.request(
                    method, self.base_url + path, headers=headers, json=json, params=params
                )
            except httpx.HTTPError as exc:
                raise JournalRetryable(f"{path}: {type(exc).__name__}") from None
            if resp.status_code == 401 and attempt == 1:
                self._token = None  # expired early or revoked: one fresh token
                continue
            break
        status = resp.status_code
        if status == 429:
            raise JournalRetryable(
                "HubSpot rate limit (429)", _retry_after(resp.headers.get("Retry-After"))
            )
        if status >= 500:
            raise JournalRetryable(f"HubSpot answered {status}")
        if status in (404, 410) and expect_offset:
            raise OffsetExpired(path)
        if status >= 400:
            raise JournalError(f"{method} {path.split('/20')[0]}: {status} {_category(resp)}")
        return resp

    # ---- journal -----------------------------------------------------------------------
    def _pointers(self, resp: httpx.Response) -> list[Pointer]:
        if resp.status_code == 204 or not resp.content:
            return []
        body = resp.json()
        results = body.get("results") if "results" in body else [body]
        out = []
        for item in results or []:
            if isinstance(item, dict) and item.get("url") and item.get("currentOffset"):
                out.append(Pointer(str(item["currentOffset"]), str(item["url"])))
        return out

    def earliest(self, count: int) -> list[Pointer]:
        """The oldest `count` entries still in the journal."""
        return self._pointers(self._call("GET", f"{self.journal_path}/batch/earliest/{count}"))

    def latest(self) -> Pointer | None:
        """The newest entry, or None when the journal is empty."""
        found = self._pointers(self._call("GET", f"{self.journal_path}/latest"))
        return found[0] if found else None

    def after(self, offset: str, count: int) -> list[Pointer]:
        """Up to `count` entries after `offset` ([] at the tip); OffsetExpired when gone."""
        path = f"{self.journal_path}/batch/{offset}/next/{count}"
        return self._pointers(self._call("GET", path, expect_offset=True))

    def download(self, pointer: Pointer) -> Any:
        """The entry file's JSON (no token: the URL is pre-signed)."""
        try:
            resp = self.http.get(pointer.url)
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"download: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise DownloadFailed(f"download answered {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise DownloadFailed("download: not JSON") from None

    # ---- subscriptions -----------------------------------------------------------------
    def subscriptions(self) -> list[dict[str, Any]]:
        body = self._call("GET", SUBSCRIPTIONS_PATH).json()
        return list(body.get("results") or [])

    def upsert_subscription(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", SUBSCRIPTIONS_PATH, json=body).json())


def _category(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("category", "")) if isinstance(body, dict) else ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None

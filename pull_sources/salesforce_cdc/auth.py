"""OAuth 2.0 access tokens for the Pub/Sub API: client credentials or JWT bearer (httpx).

Both flows post to the org's My Domain, `{SALESFORCE_INSTANCE_URL}/services/oauth2/token`
(never SOAP `login()`, which Salesforce is retiring):
- client credentials: `grant_type=client_credentials`, client id + secret (the external
  client app runs as its configured "Run As" user);
- JWT bearer: an RS256 assertion {iss: client id, sub: username, aud:
  SALESFORCE_JWT_AUDIENCE, exp: now + 3 min} signed with SALESFORCE_JWT_KEY_FILE.
The answer gives `access_token`, `instance_url` and `id` (`…/id/<org id>/<user id>`): the
org id becomes the `tenantid` metadata and the events' account. Salesforce states no
lifetime for the token, so it is renewed after SALESFORCE_TOKEN_REFRESH_SECONDS (before the
shortest session timeout lapses) and at once when the Pub/Sub API says UNAUTHENTICATED.
Secrets and tokens never appear in errors or logs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 180  # Salesforce accepts assertions that expire within 3 minutes


class AuthError(Exception):
    """The token endpoint refused us or answered nonsense; str(self) is safe to log."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Session:
    access_token: str
    instance_url: str
    org_id: str
    user_id: str
    obtained_at: float

    def __repr__(self) -> str:  # never print the token
        return f"Session(org_id={self.org_id!r}, instance_url={self.instance_url!r})"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata every Pub/Sub call carries."""
        return (
            ("accesstoken", self.access_token),
            ("instanceurl", self.instance_url),
            ("tenantid", self.org_id),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    instance_url: str
    client_id: str
    client_secret: str | None = None
    username: str | None = None
    jwt_key_file: Path | None = None
    jwt_audience: str = "https://login.salesforce.com"

    @property
    def flow(self) -> str:
        return "jwt_bearer" if self.username and self.jwt_key_file else "client_credentials"

    def form(self, now: float) -> dict[str, str]:
        if self.username and self.jwt_key_file:
            key = self.jwt_key_file.read_text()
            claims = {
                "iss": self.client_id,
                "sub": self.username,
                "aud": self.jwt_audience,
                "exp": int(now) + ASSERTION_SECONDS,
            }
            return {"grant_type": JWT_GRANT, "assertion": jwt.encode(claims, key, "RS256")}
        return {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret or "",
        }


def org_and_user(identity_url: str) -> tuple[str, str]:
    """(org id, user id) from the token response's `id` URL (`…/id/<org>/<user>`)."""
    parts = identity_url.rstrip("/").split("/")
    if len(parts) < 3 or parts[-3] != "id":
        raise AuthError("token response: `id` is not an identity URL", retryable=False)
    org, user = parts[-2], parts[-1]
    if len(org) not in (15, 18) or not org.isalnum():
        raise AuthError("token response: `id` does not name an org id", retryable=False)
    return org, user


class TokenSource:
    """The current Session, renewed before it lapses; thread-safe (one per process)."""

    def __init__(
        self,
        credentials: Credentials,
        client: httpx.Client,
        refresh_seconds: float,
        clock: object = time,
    ) -> None:
        self.credentials = credentials
        self.client = client
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._session: Session | None = None
        self.renewals = 0

    def _now(self) -> float:
        return float(self._clock.time())  # type: ignore[attr-defined]

    def current(self) -> Session:
        """A session younger than the refresh interval (fetching a new one if needed)."""
        with self._lock:
            session = self._session
            if session is None or self._now() - session.obtained_at >= self.refresh_seconds:
                session = self._session = self._fetch()
            return session

    def invalidate(self, session: Session | None = None) -> None:
        """Drop the session (the API refused it); the next `current()` fetches a new one."""
        with self._lock:
            if session is None or self._session is session:
                self._session = None

    def _fetch(self) -> Session:
        url = f"{self.credentials.instance_url}/services/oauth2/token"
        now = self._now()
        try:
            response = self.client.post(url, data=self.credentials.form(now))
        except httpx.HTTPError as exc:
            raise AuthError(
                f"token endpoint unreachable: {type(exc).__name__}", retryable=True
            ) from None
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise AuthError(
                f"cannot sign the JWT assertion: {type(exc).__name__}", retryable=False
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise AuthError(f"token endpoint answered {response.status_code}", retryable=True)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise AuthError(
                f"token endpoint answered {response.status_code} without JSON", retryable=True
            )
        if response.status_code != 200:
            code = str(data.get("error", ""))[:60]
            description = str(data.get("error_description", ""))[:120]
            raise AuthError(
                f"token refused ({response.status_code} {code}: {description}); check "
                f"SALESFORCE_CLIENT_ID and the {self.credentials.flow} settings",
                retryable=False,
            )
        token, instance = data.get("access_token"), data.get("instance_url")
        if not isinstance(token, str) or not isinstance(instance, str):
            raise AuthError("token response lacks access_token or instance_url", retryable=False)
        org, user = org_and_user(str(data.get("id", "")))
        self.renewals += 1
        return Session(token, instance.rstrip("/"), org, user, now)

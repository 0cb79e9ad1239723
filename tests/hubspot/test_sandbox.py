"""The HubSpot simulator keeps HubSpot's documented rules and our documented choices."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest

from pull_sources.hubspot_journal.api import JournalClient, JournalError, OffsetExpired
from tests.hubspot.conftest import CLIENT_ID, CLIENT_SECRET, HubSpot, subscribe_all


def test_token_needs_the_right_client_and_known_scopes(hubspot: HubSpot) -> None:
    """A wrong secret or an unknown scope is a 400; good credentials get a bearer token."""
    url = f"{hubspot.url}/oauth/v1/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": "crm.objects.contacts.read",
    }
    assert httpx.post(url, data={**form, "client_secret": "wrong"}).status_code == 400
    assert (
        httpx.post(url, data={**form, "client_secret": CLIENT_SECRET, "scope": "x"}).status_code
        == 400
    )
    ok = httpx.post(url, data={**form, "client_secret": CLIENT_SECRET})
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "bearer"
    assert ok.json()["expires_in"] == 1800


def test_wrong_credentials_are_a_permanent_error_without_the_secret(hubspot: HubSpot) -> None:
    """Refused credentials are a JournalError naming the variables, never the secret."""
    with httpx.Client() as http:
        client = JournalClient(http, hubspot.url, CLIENT_ID, "not-the-secret-42")
        with pytest.raises(JournalError) as err:
            client.earliest(1)
    assert "HUBSPOT_CLIENT_SECRET" in str(err.value)
    assert "not-the-secret-42" not in str(err.value)


def test_token_is_cached_and_refreshed_after_expiry(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """Calls reuse one token; once the simulated clock passes its expiry, a 401 brings a new one."""
    subscribe_all(journal_client)
    journal_client.earliest(1)
    journal_client.earliest(1)
    assert journal_client.tokens_fetched == 1
    hubspot.advance(1801)
    assert journal_client.earliest(1) == []
    assert journal_client.tokens_fetched == 2


def test_offsets_expire_after_the_retention(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """An entry older than three days is gone: reading after its offset raises OffsetExpired."""
    subscribe_all(journal_client)
    first = hubspot.record({"objectId": 1, "properties": {"jobtitle": "A"}})["offset"]
    hubspot.record({"objectId": 1, "properties": {"jobtitle": "B"}})
    assert len(journal_client.after(first, 10)) == 1
    hubspot.advance(3 * 86_400 + 1)
    with pytest.raises(OffsetExpired):
        journal_client.after(first, 10)
    assert journal_client.earliest(10) == []


def test_tip_answers_204_on_next_and_empty_batch(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """At the tip `offset/{o}/next` answers 204 (our default) and a batch read has no results."""
    subscribe_all(journal_client)
    offset = hubspot.record({"objectId": 1, "properties": {"jobtitle": "A"}})["offset"]
    assert journal_client.after(offset, 5) == []
    token = journal_client.token()
    resp = httpx.get(
        f"{hubspot.url}/webhooks-journal/journal/2026-03/offset/{offset}/next",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 204


def test_download_url_expires(hubspot: HubSpot, journal_client: JournalClient) -> None:
    """A download URL works until its expiry and answers 403 after it (re-read gives a new one)."""
    subscribe_all(journal_client)
    hubspot.record({"objectId": 7, "properties": {"jobtitle": "A"}})
    [pointer] = journal_client.earliest(1)
    data = journal_client.download(pointer)
    assert data["journalEvents"][0]["propertyChanges"] == {"jobtitle": "A"}
    hubspot.advance(301)
    assert httpx.get(pointer.url).status_code == 403
    [fresh] = journal_client.earliest(1)
    assert journal_client.download(fresh)["offset"] == pointer.offset


def test_only_subscribed_properties_reach_the_journal(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """Only listed properties are journaled; an update of none of them is not journaled."""
    subscribe_all(journal_client, properties=["jobtitle"])
    assert hubspot.record({"objectId": 1, "properties": {"phone": "+1"}})["offset"] is None
    hubspot.record({"objectId": 1, "properties": {"phone": "+1", "jobtitle": "A"}})
    [pointer] = journal_client.earliest(5)
    assert journal_client.download(pointer)["journalEvents"][0]["propertyChanges"] == {
        "jobtitle": "A"
    }


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[tuple[dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def receiver_stub() -> Iterator[type[_Recorder]]:
    """A tiny HTTP endpoint on loopback that records webhook POSTs."""
    handler = type("Recorder", (_Recorder,), {"bodies": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}/webhooks/hubspot"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_webhooks_are_signed_v3_and_v1(hubspot: HubSpot, receiver_stub: Any) -> None:
    """Pushed batches carry a valid v3 signature over the URL called and a valid v1 one."""
    hubspot.configure(webhook_url=receiver_stub.url)
    hubspot.record({"objectId": 5, "action": "CREATE", "properties": {"email": "e@example.org"}})
    [(headers, body)] = receiver_stub.bodies
    stamp = headers["X-HubSpot-Request-Timestamp"]
    digest = hmac.new(
        CLIENT_SECRET.encode(),
        b"POST" + receiver_stub.url.encode() + body + stamp.encode(),
        hashlib.sha256,
    ).digest()
    assert headers["X-HubSpot-Signature-v3"] == base64.b64encode(digest).decode()
    assert (
        headers["X-HubSpot-Signature"] == hashlib.sha256(CLIENT_SECRET.encode() + body).hexdigest()
    )
    kinds = sorted(e["subscriptionType"] for e in json.loads(body))
    assert kinds == ["object.creation", "object.propertyChange"]


def test_failed_pushes_are_retried_ten_times_over_a_day_then_given_up(
    hubspot: HubSpot, receiver_stub: Any
) -> None:
    """A failing receiver sees 1 + 10 attempts within about 24 simulated hours, then none."""
    receiver_stub.status = 503
    hubspot.configure(webhook_url=receiver_stub.url, seed=1)
    hubspot.record({"objectId": 5, "properties": {"jobtitle": "A"}})
    for _ in range(200):  # 33 simulated hours in 10-minute steps
        hubspot.advance(600)
    assert len(receiver_stub.bodies) == 11
    assert [json.loads(b)[0]["attemptNumber"] for _h, b in receiver_stub.bodies] == list(range(11))
    stats = hubspot.stats()
    assert stats["webhook_events_given_up"] == 1
    assert stats["pending_deliveries"] == 0


def test_fault_knobs_answer_429_and_5xx(hubspot: HubSpot, journal_client: JournalClient) -> None:
    """force_429 and force_5xx make the next API calls fail retryably (with Retry-After on 429)."""
    from pull_sources.hubspot_journal.api import JournalRetryable

    subscribe_all(journal_client)
    hubspot.configure(force_429=1, force_5xx=1)
    with pytest.raises(JournalRetryable) as first:
        journal_client.earliest(1)
    assert first.value.retry_after == 1
    with pytest.raises(JournalRetryable):
        journal_client.earliest(1)
    assert journal_client.earliest(1) == []


def test_token_is_refreshed_before_it_expires(hubspot: HubSpot) -> None:
    """With 80% of its lifetime gone the client fetches a new token before using it again."""
    now = [0.0]
    with httpx.Client() as http:
        client = JournalClient(http, hubspot.url, CLIENT_ID, CLIENT_SECRET, clock=lambda: now[0])
        first = client.token()
        now[0] = 1800 * 0.7
        assert client.token() == first
        now[0] = 1800 * 0.85
        assert client.token() != first
        assert client.tokens_fetched == 2


def test_local_journal_shows_one_accounts_entries(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """The local journal with installPortalId lists only that account; the global one all."""
    subscribe_all(journal_client)
    hubspot.record({"objectId": 1, "portalId": 111, "properties": {"jobtitle": "A"}})
    hubspot.record({"objectId": 2, "portalId": 222, "properties": {"jobtitle": "B"}})
    with httpx.Client() as http:
        local = JournalClient(
            http, hubspot.url, CLIENT_ID, CLIENT_SECRET, scope="local", install_portal_id="222"
        )
        [pointer] = local.earliest(10)
        assert local.download(pointer)["journalEvents"][0]["portalId"] == 222
    assert len(journal_client.earliest(10)) == 2


def test_batch_read_answers_207_for_expired_offsets_and_400_for_bad_ones(
    hubspot: HubSpot, journal_client: JournalClient
) -> None:
    """batch/read: readable offsets in results, expired ones in errors (207); a non-UUID 400."""
    subscribe_all(journal_client)
    old = hubspot.record({"objectId": 1, "properties": {"jobtitle": "A"}})["offset"]
    hubspot.advance(3 * 86_400 + 1)
    new = hubspot.record({"objectId": 1, "properties": {"jobtitle": "B"}})["offset"]
    journal_client.earliest(1)  # the 3-day jump expired the token: this call renews it
    url = f"{hubspot.url}/webhooks-journal/journal/2026-03/batch/read"
    auth = {"Authorization": f"Bearer {journal_client.token()}"}
    resp = httpx.post(url, json={"inputs": [old, new]}, headers=auth)
    assert resp.status_code == 207
    body = resp.json()
    assert [r["currentOffset"] for r in body["results"]] == [new]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"] == {"offset": [old]}
    bad = httpx.post(url, json={"inputs": [new, "not-a-uuid"]}, headers=auth)
    assert bad.status_code == 400

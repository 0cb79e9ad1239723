"""`leadlex-sync send-sample`: a request signed exactly like the CRM would sign it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from cli.context import (
    SOURCES,
    fail,
    main,
    read_dev_env,
    settings_or_exit,
)
from worker.settings import Settings

_SF_ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000KtRsAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/61.0</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/61.0</PartnerUrl>
   <Notification>
    <Id>04l5g{nid}</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{object_id}</sf:Id>
     <sf:Title>{value}</sf:Title>
     <sf:LastModifiedDate>{modified}</sf:LastModifiedDate>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"""


def sample_request(
    source: str,
    settings: Settings,
    object_id: str,
    value: str,
    now: float,
    url: str,
    public_base_url: str | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one signed sample change, as the CRM would send it.

    HubSpot signs the URL it calls: `public_base_url` (the receiver's PUBLIC_BASE_URL)
    when given, else `url`. Secrets: the configured ones, else dev mode's defaults (the
    same rule dev mode uses, so a sample always matches a dev-mode receiver)."""
    # The CLI is the composition root: it may use the receiver's signing functions.
    from cli.devmode import DEV_GENERIC_SECRET, DEV_HUBSPOT_SECRET, DEV_SF_ORG, DEV_SF_TOKEN
    from webhook_app import signatures

    ms = int(now * 1000)
    if source == "hubspot":
        secret = (
            settings.hubspot_client_secret.get_secret_value()
            if settings.hubspot_client_secret
            else DEV_HUBSPOT_SECRET
        )
        event = {
            "eventId": ms % 1_000_000_000,
            "subscriptionId": 1,
            "portalId": 62515,
            "appId": 1,
            "occurredAt": ms,
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": int(object_id),
            "propertyName": "jobtitle",
            "propertyValue": value,
            "changeSource": "CRM_UI",
        }
        body = json.dumps([event]).encode()
        base = (public_base_url or url).rstrip("/")
        ts = str(ms)
        sig = signatures.hubspot_v3(secret, "POST", f"{base}/webhooks/hubspot", body, ts)
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": sig,
            "X-HubSpot-Request-Timestamp": ts,
        }
        return "/webhooks/hubspot", body, headers
    if source == "salesforce":
        org = settings.salesforce_org_ids[0] if settings.salesforce_org_ids else DEV_SF_ORG
        modified = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        body = _SF_ENVELOPE.format(
            org=org,
            nid=f"{ms % 10**13:013d}",
            object_id=object_id,
            value=value,
            modified=modified,
        ).encode()
        from urllib.parse import quote

        token = (
            settings.salesforce_token.get_secret_value()
            if settings.salesforce_token
            else DEV_SF_TOKEN
        )
        path = "/webhooks/salesforce?token=" + quote(token, safe="")
        return path, body, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    secret = (
        settings.generic_webhook_secret.get_secret_value().split()[0]
        if settings.generic_webhook_secret
        else DEV_GENERIC_SECRET
    )
    body = json.dumps(
        {
            "account": "default",
            "object_id": object_id,
            "occurred_at": ms,
            "kind": "update",
            "changes": {"job_title": value},
        }
    ).encode()
    msg_id, ts = f"msg_sample_{ms}", str(int(now))
    sig = signatures.standard_webhooks_signature(signatures.whsec_key(secret), msg_id, ts, body)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": sig,
    }
    return "/webhooks/generic", body, headers


_SAMPLE_IDS = {"hubspot": "101", "salesforce": "0035g00000DEM00AAA", "generic": "G-101"}


DEFAULT_RECEIVER_URL = "http://127.0.0.1:8000"


def sample_target(
    url: str | None, settings: Settings, dev: dict[str, str]
) -> tuple[str, str | None, str]:
    """(receiver URL, URL HubSpot signs, where they came from) for a sample.

    Without --url: the receiver of the dev mode running in this directory (from
    `.run/dev.env`, with the PUBLIC_BASE_URL that receiver checks), else 127.0.0.1:8000.
    With --url: that receiver, signed for PUBLIC_BASE_URL when it is configured."""
    if url is None and dev.get("RECEIVER_URL"):
        return dev["RECEIVER_URL"], dev.get("PUBLIC_BASE_URL") or None, "dev mode"
    if url is not None and dev.get("RECEIVER_URL", "").rstrip("/") == url.rstrip("/"):
        return url, dev.get("PUBLIC_BASE_URL") or None, "dev mode"
    return url or DEFAULT_RECEIVER_URL, settings.public_base_url, "--url" if url else "default"


@main.command("send-sample")
@click.argument("source", type=click.Choice(SOURCES))
@click.option(
    "--url",
    default=None,
    help="The receiver's base URL [default: the running dev mode's, else http://127.0.0.1:8000].",
)
@click.option("--object-id", default=None, help="CRM record id (default: the dev demo record).")
@click.option("--value", default=None, help="New job title (default: a timestamped one).")
def send_sample(source: str, url: str | None, object_id: str | None, value: str | None) -> None:
    """Send one signed sample change (a job title) as HubSpot, Salesforce or a generic sender.

    Exits non-zero, with one line, unless the receiver answers 2xx."""
    import httpx

    settings = settings_or_exit()
    target, signed_for, _origin = sample_target(url, settings, read_dev_env())
    now = time.time()
    value = value or f"General Counsel ({datetime.fromtimestamp(now, UTC):%H:%M:%S})"
    record = object_id or _SAMPLE_IDS[source]
    path, body, headers = sample_request(
        source, settings, record, value, now, target, public_base_url=signed_for
    )
    try:
        resp = httpx.post(target.rstrip("/") + path, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as err:
        fail(f"could not reach the receiver at {target}: {type(err).__name__}")
        raise  # unreachable
    answer = " ".join(resp.text.split())[:300]
    if not 200 <= resp.status_code < 300:
        hint = ""
        if resp.status_code == 401 and source == "hubspot":
            hint = (
                f" (signed for {signed_for or target}; the receiver's PUBLIC_BASE_URL and "
                "HUBSPOT_CLIENT_SECRET must match)"
            )
        fail(f"{source} sample refused by {target}: HTTP {resp.status_code} {answer}{hint}")
    click.echo(f"{source}: HTTP {resp.status_code} {answer}")
    click.echo(f"sent job title {value!r} for record {record} to {target}")

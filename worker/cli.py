"""`leadlex-sync` command line: dev mode, simulator, links, status, dead letters, config.

Every command has --help; bad input exits non-zero with one line saying what is wrong.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import redis

from worker.settings import Settings, SettingsError, load_settings

SOURCES = ("hubspot", "salesforce", "generic")
LINK_HEADER = ["source", "account", "object_id", "leadlex_id"]
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"leadlex-sync: {message}", err=True)
    sys.exit(code)


def _settings(require_leadlex: bool = False) -> Settings:
    try:
        return load_settings(require_leadlex=require_leadlex)
    except SettingsError as err:
        _fail(str(err), 2)
        raise  # unreachable


def _redis(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        _fail(f"Redis does not answer at REDIS_URL ({_safe_url(settings.redis_url)})", 3)
    return client


def _safe_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _runtime(settings: Settings) -> Any:
    """The workers' pipeline Runtime, for CLI work that dispatches through Celery (the CLI
    itself never calls LeadLex)."""
    from worker.celery_app import app
    from worker.mapping import MappingError
    from worker.tasks import build_runtime

    app.conf.broker_url = settings.redis_url
    try:
        return build_runtime(settings, _redis(settings))
    except MappingError as err:
        _fail(f"MAPPING_FILE: {err}", 2)
        raise  # unreachable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leadlex-sync")
def main() -> None:
    """Keep LeadLex contacts in step with HubSpot and Salesforce."""
    from worker.logs import configure_logging, options_from_env

    fmt, level, secrets = options_from_env()
    configure_logging(fmt, level, service="cli", secrets=secrets)


# ---- dev mode and simulator ------------------------------------------------------------------
@main.command()
@click.option("--port", default=8000, show_default=True, help="Receiver port on 127.0.0.1.")
@click.option("--flower/--no-flower", default=True, show_default=True, help="Start Flower.")
@click.option("--flower-port", default=5555, show_default=True)
def dev(port: int, flower: bool, flower_port: int) -> None:
    """Run everything locally: Redis (embedded if none), simulator, receiver, worker, beat."""
    from worker.devmode import run_dev

    sys.exit(run_dev(port=port, flower=flower, flower_port=flower_port))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--api-key", default="sandbox-key", show_default=True, help="Key with read+write.")
@click.option(
    "--plan", type=click.Choice(["starter", "pro", "org"]), default="pro", show_default=True
)
@click.option("--seed-demo/--no-seed-demo", default=True, show_default=True)
def sandbox(host: str, port: int, api_key: str, plan: str, seed_demo: bool) -> None:
    """Run the local LeadLex simulator (a faithful LeadLex API for dev and tests)."""
    from leadlex_sandbox.__main__ import main as sandbox_main

    argv = ["--host", host, "--port", str(port), "--api-key", api_key, "--plan", plan]
    if seed_demo:
        argv.append("--seed-demo")
    sys.exit(sandbox_main(argv))


# ---- samples ---------------------------------------------------------------------------------
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
    source: str, settings: Settings, object_id: str, value: str, now: float, url: str
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of one signed sample change, as the CRM would send it."""
    # The CLI is the composition root: it may use the receiver's signing functions.
    from webhook_app import signatures
    from worker.devmode import DEV_GENERIC_SECRET, DEV_HUBSPOT_SECRET, DEV_SF_ORG

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
        # HubSpot signs the URL it calls: the public one when configured, else --url.
        base = settings.public_base_url or url.rstrip("/")
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
        path = "/webhooks/salesforce"
        if settings.salesforce_token:
            from urllib.parse import quote

            path += "?token=" + quote(settings.salesforce_token.get_secret_value(), safe="")
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


@main.command("send-sample")
@click.argument("source", type=click.Choice(SOURCES))
@click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, help="The receiver's base URL."
)
@click.option("--object-id", default=None, help="CRM record id (default: the dev demo record).")
@click.option("--value", default=None, help="New job title (default: a timestamped one).")
def send_sample(source: str, url: str, object_id: str | None, value: str | None) -> None:
    """Send one signed sample change (a job title) as HubSpot, Salesforce or a generic sender."""
    import httpx

    settings = _settings()
    now = time.time()
    value = value or f"General Counsel ({datetime.fromtimestamp(now, UTC):%H:%M:%S})"
    path, body, headers = sample_request(
        source, settings, object_id or _SAMPLE_IDS[source], value, now, url
    )
    try:
        resp = httpx.post(url.rstrip("/") + path, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as err:
        _fail(f"could not reach the receiver at {url}: {type(err).__name__}")
    click.echo(f"{source}: HTTP {resp.status_code} {resp.text.strip()[:300]}")
    click.echo(f"sent job title {value!r} for record {object_id or _SAMPLE_IDS[source]}")
    if resp.status_code >= 300:
        sys.exit(1)


# ---- links -----------------------------------------------------------------------------------
@main.group()
def links() -> None:
    """Which LeadLex contact each CRM record is."""


def _read_links(path: Path) -> Iterator[tuple[str, str, str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != LINK_HEADER:
            _fail(f"{path}: header must be exactly {','.join(LINK_HEADER)}")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 4:
                _fail(f"{path}:{lineno}: expected 4 columns, got {len(row)}")
            source, account, object_id, leadlex_id = (c.strip() for c in row)
            if source not in SOURCES:
                _fail(f"{path}:{lineno}: source {source!r} is not one of {', '.join(SOURCES)}")
            if not object_id or ":" in object_id:
                _fail(f"{path}:{lineno}: object_id is empty or contains ':'")
            if ":" in account:
                _fail(f"{path}:{lineno}: account contains ':'")
            if not _ID_RE.match(leadlex_id):
                _fail(f"{path}:{lineno}: leadlex_id {leadlex_id!r} is not a LeadLex id")
            yield source, account, object_id, leadlex_id


@links.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def links_import(file: Path) -> None:
    """Load links from a CSV (header source,account,object_id,leadlex_id; empty account = any)."""
    from worker import pipeline

    rows = list(_read_links(file))  # validate everything before writing anything
    rt = _runtime(_settings())
    written = 0
    with click.progressbar(length=len(rows), label="links", file=sys.stderr, show_pos=True) as bar:
        for i in range(0, len(rows), 5000):
            chunk = rows[i : i + 5000]
            written += rt.state.set_links(chunk)
            bar.update(len(chunk))
    pipe = rt.redis.pipeline(transaction=False)
    for source, _account, object_id, _ in rows:
        pipe.exists(f"lls:unlinked:{source}:{object_id}")
    parked = [(r[0], r[2]) for r, has in zip(rows, pipe.execute(), strict=True) if has]
    replayed = pipeline.replay_unlinked(rt, parked)
    click.echo(f"imported {written} links; {replayed} parked events replayed")


@links.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
def links_export(file: Path | None) -> None:
    """Write all links as CSV (to FILE or standard output)."""
    from worker.state import State

    state = State(_redis(_settings()))
    out = file.open("w", newline="", encoding="utf-8") if file else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(LINK_HEADER)
        for row in state.iter_links():
            writer.writerow(row)
    finally:
        if file:
            out.close()


@links.command("show")
@click.argument("source", type=click.Choice(SOURCES))
@click.argument("object_id")
@click.option("--account", default="", help="CRM account (portal / org id).")
def links_show(source: str, object_id: str, account: str) -> None:
    """Show the LeadLex id a CRM record resolves to."""
    from worker.state import State

    contact = State(_redis(_settings())).resolve_link(source, account, object_id)
    if contact is None:
        _fail(f"no link for {source} record {object_id}")
    click.echo(contact)


# ---- status ----------------------------------------------------------------------------------
def status_report(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Budget, backlog, drain forecast, pause and circuit state, as a dict."""
    from worker.deadletter import DeadLetters
    from worker.ratelimit import Budget, Circuit
    from worker.state import State

    budget = Budget(client, settings.rate_per_minute, settings.daily_limit).status()
    circuit = Circuit(client).state()
    state = State(client)
    backlog = state.due_count()
    now = time.time()
    # Drain forecast: per-minute pace, but the daily quota caps what can go before reset.
    left_today = max(0, budget.daily_remaining)
    if backlog <= left_today:
        drain_at = now + 60.0 * backlog / max(1, settings.rate_per_minute)
    else:
        rest = backlog - left_today
        days = (rest - 1) // max(1, budget.daily_limit)
        drain_at = (
            budget.reset_at
            + days * 86_400
            + 60.0 * (rest - days * budget.daily_limit) / max(1, settings.rate_per_minute)
        )
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None  # noqa: E731
    return {
        "budget": {
            "per_minute": budget.per_minute,
            "daily_limit": budget.daily_limit,
            "daily_remaining": budget.daily_remaining,
            "minute_used": budget.minute_used,
            "reset_at": iso(budget.reset_at),
        },
        "backlog": {
            "contacts_waiting": backlog,
            "oldest_due": iso(state.oldest_due() or 0),
            "drains_by": iso(drain_at) if backlog else None,
            "unlinked_records": state.count_unlinked(),
        },
        "paused_until": iso(budget.paused_until) if budget.paused_until > now else None,
        "pause_reason": budget.pause_reason if budget.paused_until > now else "",
        "circuit": {"open": circuit.open, "reason": circuit.reason, "detail": circuit.detail},
        "dead_letters": DeadLetters(client).count(),
        "links": state.count_links(),
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Budget left today, its reset, the backlog and when it drains, pause/circuit state."""
    settings = _settings()
    report = status_report(settings, _redis(settings))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    b, q = report["budget"], report["backlog"]
    click.echo(
        f"budget     {b['daily_remaining']}/{b['daily_limit']} calls left today, "
        f"{b['per_minute']}/min; resets {b['reset_at']}"
    )
    click.echo(
        f"backlog    {q['contacts_waiting']} contacts waiting"
        + (f", drains by {q['drains_by']}" if q["drains_by"] else "")
        + f"; {q['unlinked_records']} unlinked records parked"
    )
    if report["paused_until"]:
        click.echo(f"paused     until {report['paused_until']} ({report['pause_reason']})")
    c = report["circuit"]
    click.echo("circuit    " + (f"OPEN ({c['reason']}): {c['detail']}" if c["open"] else "closed"))
    click.echo(f"dead letters {report['dead_letters']}; links {report['links']}")


# ---- dead letters ----------------------------------------------------------------------------
@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only this reason code.")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(reason: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    from worker.deadletter import DeadLetters

    letters = list(DeadLetters(_redis(_settings())).iter(reason))
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in letters], indent=2, default=str))
        return
    for d in letters:
        when = datetime.fromtimestamp(d.created_at, UTC).isoformat(timespec="seconds")
        click.echo(f"{d.id}  {when}  {d.reason:<20} {d.source:<10} {d.contact}  {d.last_error}")
    click.echo(f"{len(letters)} dead letters", err=True)


@dlq.command("show")
@click.argument("entry_id")
def dlq_show(entry_id: str) -> None:
    """Show one dead letter in full (JSON)."""
    from worker.deadletter import DeadLetters

    letter = DeadLetters(_redis(_settings())).get(entry_id)
    if letter is None:
        _fail(f"no dead letter {entry_id}")
    assert letter is not None
    click.echo(json.dumps(letter.to_dict(), indent=2, default=str))


@dlq.command("replay")
@click.argument("entry_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@click.option("--reason", default=None, help="Replay every dead letter with this reason.")
def dlq_replay(entry_id: str | None, all_: bool, reason: str | None) -> None:
    """Send dead letters through the normal pipeline again (dedupe, ordering, budget)."""
    from worker.deadletter import DeadLetters
    from worker.replay import replay_letters

    if sum(bool(x) for x in (entry_id, all_, reason)) != 1:
        _fail("give exactly one of ID, --all or --reason R")
    rt = _runtime(_settings())
    store = DeadLetters(rt.redis)
    if entry_id:
        one = store.get(entry_id)
        if one is None:
            _fail(f"no dead letter {entry_id}")
        letters = [one]
    else:
        letters = list(store.iter(reason))
    with click.progressbar(letters, label="replay", file=sys.stderr, show_pos=True) as bar:
        done, skipped = replay_letters(rt, [d for d in bar if d is not None])
    click.echo(f"replayed {done}; {skipped} cannot be replayed (kept)")


_DURATION = re.compile(r"^(\d+)([smhd])$")


@dlq.command("purge")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d, 12h, 90m.")
def dlq_purge(older_than: str) -> None:
    """Delete dead letters older than the given age."""
    from worker.deadletter import DeadLetters

    m = _DURATION.match(older_than.strip())
    if not m:
        _fail(f"--older-than {older_than!r}: use a number and s, m, h or d (e.g. 30d)")
    assert m is not None
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    removed = DeadLetters(_redis(_settings())).purge_older_than(seconds)
    click.echo(f"purged {removed} dead letters older than {older_than}")


# ---- config ----------------------------------------------------------------------------------
@main.group()
def config() -> None:
    """Check and show the configuration."""


@config.command("check")
def config_check() -> None:
    """Validate settings and the mapping file; print the effective config, secrets masked."""
    from worker.mapping import MappingError, load_mapping

    settings = _settings(require_leadlex=True)
    try:
        load_mapping(settings.mapping_file, settings.default_phone_region)
    except MappingError as err:
        _fail(f"MAPPING_FILE: {err}", 2)
    effective = settings.masked()
    effective["REDIS_URL"] = _safe_url(settings.redis_url)
    effective["effective_rate_per_minute"] = settings.rate_per_minute
    effective["effective_daily_limit"] = settings.daily_limit
    click.echo(json.dumps(effective, indent=2, default=str))
    click.echo("configuration OK", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()

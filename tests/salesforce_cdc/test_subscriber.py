"""The CDC subscriber against the simulator and a real Redis: hand-off, replay ids, recovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from click.testing import CliRunner

from cli import main
from pull_sources.salesforce_cdc.change_events import OriginFilter
from pull_sources.salesforce_cdc.replay_store import ReplayStore
from salesforce_sandbox.server import SalesforceSandbox
from tests.integration.support import wait_for
from tests.salesforce_cdc.conftest import Running, inbox_events
from worker.deadletter import DeadLetters
from worker.metrics import Metrics

CONTACTS = "/data/ContactChangeEvent"
Start = Callable[..., Running]


def _stored(client: redis.Redis, sandbox: SalesforceSandbox, topic: str = CONTACTS) -> bytes:
    position = ReplayStore(client, sandbox.config.org_id).get(topic)
    return position.replay_id if position else b""


def _gaps(client: redis.Redis) -> list[dict[str, Any]]:
    return [d.details for d in DeadLetters(client).iter("salesforce_gap")]


def test_changes_are_handed_off_fanned_out_and_gaps_dead_lettered(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """Updates reach the inbox per record, gaps become salesforce_gap dead letters, and the
    replay id of the last event is stored."""
    run = subscriber(initial_replay="earliest")
    salesforce.emit("Contact", "UPDATE", ["003A", "003B"], values={"Title": "CTO"})
    salesforce.emit("Lead", "CREATE", ["00QA"], values={"LastName": "Byron", "Company": "AE"})
    last = salesforce.emit("Contact", "GAP_UPDATE", ["003C"])
    wait_for(
        lambda: len(inbox_events(redis_client)) == 3 and _stored(redis_client, salesforce) == last
    )
    events = {(e["object_type"], e["object_id"]): e for e in inbox_events(redis_client)}
    assert events["contact", "003A"]["changes"]["Title"] == "CTO"
    assert events["contact", "003B"]["kind"] == "update"
    assert events["lead", "00QA"]["changes"] == {"LastName": "Byron", "Company": "AE"}
    assert {e["account"] for e in events.values()} == {salesforce.config.org_id}
    (gap,) = _gaps(redis_client)
    assert (gap["cause"], gap["record_ids"]) == ("gap", ["003C"])
    metrics = Metrics(redis_client)
    assert metrics.value("cdc_gaps", cause="gap") == 1
    assert metrics.value("cdc_events_received", topic=CONTACTS) == 2
    run.stop()


def test_restart_resumes_from_the_stored_replay_id_without_loss(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """A restarted subscriber resumes with CUSTOM after the stored id: later changes arrive,
    earlier ones are not handed off again."""
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    for i in range(3):
        salesforce.emit("Contact", "UPDATE", [f"003{i}"], values={"Title": f"t{i}"})
    wait_for(lambda: len(inbox_events(redis_client)) == 3)
    run.stop()
    redis_client.delete("lls:inbox")  # as if the worker took them in
    for i in range(3, 5):
        salesforce.emit("Contact", "UPDATE", [f"003{i}"], values={"Title": f"t{i}"})
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    wait_for(lambda: len(inbox_events(redis_client)) == 2)
    assert sorted(e["object_id"] for e in inbox_events(redis_client)) == ["0033", "0034"]
    assert salesforce.stats.presets[0] == "EARLIEST"
    assert salesforce.stats.presets[-1] == "CUSTOM"
    run.stop()


def test_an_expired_replay_id_restarts_at_earliest_counts_the_gap_and_alerts(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis, redis_url: str
) -> None:
    """A stored replay id the server refuses as too old -> EARLIEST, a gap dead letter, a
    replay-reset metric and an alert; changes stored since still arrive."""
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "before"})
    wait_for(lambda: len(inbox_events(redis_client)) == 1)
    run.stop()
    salesforce.bus.expire_all()  # 72 hours pass
    salesforce.emit("Contact", "UPDATE", ["003B"], values={"Title": "after"})
    run = subscriber(initial_replay="latest", topics=(CONTACTS,))
    wait_for(lambda: any(e["object_id"] == "003B" for e in inbox_events(redis_client)))
    assert salesforce.stats.presets[-2:] == ["CUSTOM", "EARLIEST"]
    assert [g["cause"] for g in _gaps(redis_client)] == ["replay_expired"]
    assert Metrics(redis_client).value("cdc_replay_resets", topic=CONTACTS) == 1
    alerts = ReplayStore.overview(redis_client)
    assert "too old" in alerts[f"{salesforce.config.org_id}:{CONTACTS}"]["alert"]["message"]
    run.stop()
    shown = CliRunner().invoke(main, ["status"], env={"REDIS_URL": redis_url})
    assert f"cdc        {salesforce.config.org_id}:{CONTACTS}: replay id stored" in shown.output
    assert "ALERT" in shown.output


def test_stream_errors_and_expired_tokens_are_survived(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """A broken stream is resubscribed, a refused token renewed, and no change is lost."""
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    wait_for(lambda: salesforce.stats.subscribes >= 1)
    salesforce.faults.fail_after_events = 2
    for i in range(6):
        salesforce.emit("Contact", "UPDATE", [f"003{i}"], values={"Title": f"t{i}"})
    wait_for(lambda: len(inbox_events(redis_client)) == 6)
    metrics = Metrics(redis_client)
    assert metrics.value("cdc_stream_errors", code="UNAVAILABLE") == 1
    with salesforce.lock:
        salesforce.tokens = dict.fromkeys(salesforce.tokens, 0.0)  # every session lapses
        salesforce.faults.fail_after_events = 1  # and the stream breaks: resubscribe
    for i in range(6, 9):
        salesforce.emit("Contact", "UPDATE", [f"003{i}"], values={"Title": f"t{i}"})
    wait_for(lambda: len(inbox_events(redis_client)) == 9)
    assert metrics.value("cdc_stream_errors", code="UNAUTHENTICATED") >= 1
    assert run.tokens.renewals >= 2
    run.stop()


def test_changes_by_a_filtered_user_are_skipped_but_the_replay_id_advances(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """commitUser filtering leaves the change out, counts it and still stores its replay id."""
    run = subscriber(
        initial_replay="earliest",
        topics=(CONTACTS,),
        origin_filter=OriginFilter.of(["005000000000009"], []),
    )
    skipped = salesforce.emit(
        "Contact", "UPDATE", ["003A"], values={"Title": "x"}, commit_user="005000000000009AAA"
    )
    wait_for(lambda: _stored(redis_client, salesforce) == skipped)
    assert inbox_events(redis_client) == []
    assert Metrics(redis_client).value("cdc_events_filtered", topic=CONTACTS) == 1
    run.stop()


def test_the_replay_id_is_not_stored_when_the_hand_off_fails(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis, redis_url: str
) -> None:
    """When events cannot be recorded the replay id stays put; a later run delivers them."""
    from worker.celery_app import app
    from worker.embedded_redis import free_port
    from worker.handoff import Enqueuer

    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    run.subscriber.enqueuer = Enqueuer(app, redis_client, dead_broker)
    replay = salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "x"})
    wait_for(lambda: salesforce.stats.subscribes >= 2, timeout=60)  # failed, resubscribed
    assert _stored(redis_client, salesforce) != replay
    # The hand-off records the inbox before it publishes, so the event may already sit in
    # the inbox (the pump's sweep would deliver it); what must not move is the replay id.
    run.stop()
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    wait_for(lambda: _stored(redis_client, salesforce) == replay)
    (event,) = inbox_events(redis_client)
    assert event["changes"]["Title"] == "x"
    run.stop()


def test_schema_drift_fetches_the_new_schema_by_id(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """After a field is added (new schema id), the subscriber fetches that schema once and
    decodes both old and new events."""
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,))
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "old schema"})
    wait_for(lambda: len(inbox_events(redis_client)) == 1)
    old_id = salesforce.bus.topic_schema[CONTACTS]
    new_id = salesforce.bus.add_field(CONTACTS, "Region__c")
    assert new_id != old_id
    salesforce.emit("Contact", "UPDATE", ["003B"], values={"Region__c": "EMEA"})
    salesforce.emit("Contact", "UPDATE", ["003C"], values={"Region__c": "APAC", "Title": "x"})
    wait_for(lambda: len(inbox_events(redis_client)) == 3)
    events = {e["object_id"]: e["changes"] for e in inbox_events(redis_client)}
    assert events["003B"]["Region__c"] == "EMEA"
    assert events["003C"]["Region__c"] == "APAC"
    assert salesforce.stats.schema_requests == 2  # one per schema id, then cached
    run.stop()


def test_a_silent_stream_is_cancelled_and_resubscribed(
    salesforce: SalesforceSandbox, subscriber: Start, redis_client: redis.Redis
) -> None:
    """No response (not even a keepalive) within the silence timeout: cancel and resubscribe."""
    salesforce.config.keepalive_seconds = 3600  # the server goes quiet
    run = subscriber(initial_replay="earliest", topics=(CONTACTS,), silence_timeout=1.0)
    wait_for(lambda: salesforce.stats.subscribes >= 3, timeout=60)
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "still flowing"})
    wait_for(lambda: len(inbox_events(redis_client)) == 1, timeout=60)
    assert Metrics(redis_client).value("cdc_stream_errors", code="CANCELLED") >= 2
    run.stop()

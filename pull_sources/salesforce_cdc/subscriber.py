"""The CDC subscriber: one Pub/Sub Subscribe stream per topic, events handed to the worker.

Per topic (one thread each), forever until stopped:
1. start from the stored replay id (CUSTOM); without one, from SALESFORCE_CDC_INITIAL_REPLAY
   (LATEST by default); after a refused replay id, from EARLIEST;
2. ask for SALESFORCE_CDC_BATCH_SIZE events (<= 100) and ask again each time the server
   says nothing is pending (`pending_num_requested == 0`), so demand follows our progress;
3. for each FetchResponse with events: fetch unknown schemas by id (cached), decode the
   Avro payloads, translate (change_events), hand the ChangeEvents to the worker through the
   same Enqueuer as the webhook receiver (one Celery message + inbox records), dead-letter
   gaps as `salesforce_gap` -- and only then store the last replay id. A keepalive (empty
   response) stores its `latest_replay_id` (every earlier event is already handed off);
4. on a stream error: UNAUTHENTICATED -> renew the token and resubscribe; a replay id refused
   as corrupted/too old -> count the gap (`cdc_replay_resets`, dead letter `salesforce_gap`
   cause `replay_expired`), raise an alert (`leadlex-sync status`, ERROR log) and restart at
   EARLIEST; anything else -> resubscribe from the stored id after a capped backoff. Events
   redelivered after a resubscribe carry the same fingerprints, so the worker applies them once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis

from pull_sources.salesforce_cdc.auth import AuthError, Session, TokenSource
from pull_sources.salesforce_cdc.change_events import (
    GAP_REASON,
    SOURCE,
    OriginFilter,
    Translation,
    commit_order,
    translate,
)
from pull_sources.salesforce_cdc.proto import pubsub_api_pb2 as pb
from pull_sources.salesforce_cdc.proto import pubsub_api_pb2_grpc as pb_grpc
from pull_sources.salesforce_cdc.replay_store import ReplayStore
from pull_sources.salesforce_cdc.schema import PayloadError, Schema
from worker.batch import Batch, InvalidEvent
from worker.deadletter import STREAM, DeadLetters
from worker.handoff import Enqueuer, EnqueueUnavailable
from worker.metrics import Metrics

log = logging.getLogger("leadlex_sync.salesforce_cdc")

REPLAY_CORRUPTED = "replayid.corrupted"
PRESETS = {"latest": pb.LATEST, "earliest": pb.EARLIEST}


@dataclass(frozen=True, slots=True)
class SubscriberConfig:
    topics: tuple[str, ...]
    batch_size: int = 100
    initial_replay: str = "latest"
    origin_filter: OriginFilter = field(default_factory=OriginFilter)
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    rpc_timeout: float = 30.0
    # Salesforce answers within 270 s even when idle (a keepalive); silence beyond this means
    # a dead connection: cancel the call and resubscribe.
    silence_timeout: float = 330.0


def _error_code(err: grpc.RpcError) -> str:
    """The Salesforce error code from the trailers (`error-code`; open question 9)."""
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "error-code":
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _status(err: grpc.RpcError) -> grpc.StatusCode | None:
    return err.code() if hasattr(err, "code") else None


class ReplayRefused(Exception):
    """Salesforce refused the stored replay id (corrupted or older than the retention)."""


class Subscriber:
    """Streams every configured topic until `stop` is set."""

    def __init__(
        self,
        config: SubscriberConfig,
        tokens: TokenSource,
        channel: grpc.Channel,
        enqueuer: Enqueuer,
        client: redis.Redis,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.stub = pb_grpc.PubSubStub(channel)
        self.enqueuer = enqueuer
        self.redis = client
        self.metrics = Metrics(client)
        self.dead_letters = DeadLetters(client)
        self.stop = stop or threading.Event()
        self._schemas: dict[str, Schema] = {}
        self._schema_lock = threading.Lock()
        self._calls: dict[str, Any] = {}
        self._calls_lock = threading.Lock()
        self.handed_off = 0  # events handed to the worker (for logs and tests)

    # ---- lifecycle -----------------------------------------------------------------------
    def run(self) -> None:
        """Block until stopped; one thread per topic."""
        threads = [
            threading.Thread(target=self.run_topic, args=(t,), name=f"cdc:{t}", daemon=True)
            for t in self.config.topics
        ]
        for thread in threads:
            thread.start()
        self.stop.wait()
        self.shutdown()
        for thread in threads:
            thread.join(timeout=10)

    def shutdown(self) -> None:
        self.stop.set()
        with self._calls_lock:
            calls = list(self._calls.values())
        for call in calls:
            call.cancel()

    def run_topic(self, topic: str) -> None:
        backoff = self.config.backoff_initial
        force_earliest = False
        while not self.stop.is_set():
            session: Session | None = None
            try:
                session = self.tokens.current()
                progressed = self._stream(topic, session, force_earliest)
                force_earliest = False
                if progressed:  # the server closed a working stream: resubscribe at once
                    backoff = self.config.backoff_initial
                    continue
                log.warning("Pub/Sub stream closed without a response", extra={"topic": topic})
            except ReplayRefused:
                force_earliest = True
                continue
            except grpc.RpcError as err:
                if self.stop.is_set():
                    return
                status = _status(err)
                code = status.name if status is not None else "UNKNOWN"
                with contextlib.suppress(redis.RedisError):  # counting is best effort
                    self.metrics.incr("cdc_stream_errors", code=code)
                if status == grpc.StatusCode.UNAUTHENTICATED:
                    self.tokens.invalidate(session)
                    log.info("Pub/Sub session refused; renewing the token", extra={"topic": topic})
                else:
                    log.warning(
                        "Pub/Sub stream ended: %s", code, extra={"topic": topic, "code": code}
                    )
            except EnqueueUnavailable as exc:
                log.warning("hand-off failed (%s); resubscribing from the stored replay id", exc)
            except AuthError as exc:
                level = logging.WARNING if exc.retryable else logging.ERROR
                log.log(level, "Salesforce token: %s", exc, extra={"topic": topic})
            except redis.RedisError as exc:
                log.warning("Redis unavailable (%s); resubscribing later", type(exc).__name__)
            except Exception:  # a bug must not silently end this topic's stream
                log.exception(
                    "CDC stream failed unexpectedly; resubscribing", extra={"topic": topic}
                )
            self.stop.wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(self.config.backoff_max, backoff * 2)

    # ---- one stream ----------------------------------------------------------------------
    def _first_request(self, topic: str, store: ReplayStore, force_earliest: bool) -> Any:
        position = None if force_earliest else store.get(topic)
        if position is not None:
            preset, replay_id = pb.CUSTOM, position.replay_id
        elif force_earliest:
            preset, replay_id = pb.EARLIEST, b""
        else:
            preset, replay_id = PRESETS[self.config.initial_replay], b""
        return pb.FetchRequest(
            topic_name=topic,
            replay_preset=preset,
            replay_id=replay_id,
            num_requested=self.config.batch_size,
        )

    def _stream(self, topic: str, session: Session, force_earliest: bool) -> bool:
        """One Subscribe call until it ends; True when it delivered anything."""
        store = ReplayStore(self.redis, session.org_id)
        first = self._first_request(topic, store, force_earliest)
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(first)

        def request_iter() -> Iterator[Any]:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        call = self.stub.Subscribe(request_iter(), metadata=session.metadata())
        with self._calls_lock:
            self._calls[topic] = call
        progressed = False
        log.info(
            "subscribed",
            extra={"topic": topic, "preset": pb.ReplayPreset.Name(first.replay_preset)},
        )
        heard = [time.monotonic()]
        ended = threading.Event()

        def watchdog() -> None:
            while not ended.wait(min(5.0, self.config.silence_timeout / 4)):
                if time.monotonic() - heard[0] > self.config.silence_timeout:
                    log.warning("Pub/Sub stream silent; reconnecting", extra={"topic": topic})
                    call.cancel()
                    return

        threading.Thread(target=watchdog, name=f"cdc-watchdog:{topic}", daemon=True).start()
        try:
            for response in call:
                heard[0] = time.monotonic()
                if self.stop.is_set():
                    break
                if response.events:
                    self._hand_off(topic, session, store, response)
                elif response.latest_replay_id:
                    store.put(topic, bytes(response.latest_replay_id))
                progressed = True
                if response.pending_num_requested == 0:
                    requests.put(pb.FetchRequest(num_requested=self.config.batch_size))
        except grpc.RpcError as err:
            if first.replay_preset == pb.CUSTOM and (
                REPLAY_CORRUPTED in _error_code(err)
                or (_status(err) == grpc.StatusCode.INVALID_ARGUMENT and "replay" in str(err))
            ):
                self._replay_refused(topic, store, first.replay_id)
                raise ReplayRefused(topic) from None
            raise
        finally:
            ended.set()
            requests.put(None)
            call.cancel()
            with self._calls_lock:
                self._calls.pop(topic, None)
        return progressed

    def _replay_refused(self, topic: str, store: ReplayStore, replay_id: bytes) -> None:
        message = (
            f"stored replay id for {topic} was refused as too old or corrupted; restarted at "
            "EARLIEST: changes older than the retention window may be missing (resync: see "
            "README 'Connecting Salesforce')"
        )
        log.error(message, extra={"topic": topic, "alert": "cdc_replay_expired"})
        pipe = self.redis.pipeline(transaction=True)
        self.metrics.incr("cdc_replay_resets", pipe=pipe, topic=topic)
        self.metrics.incr("cdc_gaps", pipe=pipe, cause="replay_expired")
        self.metrics.incr("dead_lettered", pipe=pipe, reason=GAP_REASON)
        pipe.xadd(
            STREAM,
            self.dead_letters.fields(
                GAP_REASON,
                source=SOURCE,
                payload={"topic": topic, "replay_id": replay_id.hex()},
                details={"cause": "replay_expired", "topic": topic},
            ),
        )
        pipe.execute()
        store.alert(topic, message)
        store.forget(topic)

    # ---- one response --------------------------------------------------------------------
    def _schema(self, schema_id: str) -> Schema:
        with self._schema_lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        info = self.stub.GetSchema(  # a new call: with a token renewed if it is due
            pb.SchemaRequest(schema_id=schema_id),
            metadata=self.tokens.current().metadata(),
            timeout=self.config.rpc_timeout,
        )
        schema = Schema.parse(schema_id, info.schema_json)
        with self._schema_lock:
            self._schemas[schema_id] = schema
        return schema

    def _hand_off(self, topic: str, session: Session, store: ReplayStore, response: Any) -> None:
        received_ms = int(time.time() * 1000)
        batch = Batch()
        batch.accounts.add(session.org_id)
        translations: list[Translation] = []
        for index, consumer_event in enumerate(response.events):
            event = consumer_event.event
            where = {
                "topic": topic,
                "replay_id": bytes(consumer_event.replay_id).hex(),
                "event_id": event.id,
                "schema_id": event.schema_id,
            }
            try:
                schema = self._schema(event.schema_id)
                body = schema.decode(bytes(event.payload))
                translations.append(
                    translate(
                        body,
                        schema.shape,
                        org=session.org_id,
                        event_uuid=event.id,
                        received_ms=received_ms,
                        origin_filter=self.config.origin_filter,
                    )
                )
            except InvalidEvent as exc:
                batch.reject(where, exc, index)
            except PayloadError as exc:
                batch.reject({**where, "payload": bytes(event.payload).hex()[:4096]},
                             InvalidEvent("payload", str(exc)), index)  # fmt: skip
        gaps = []
        filtered = 0
        for i in commit_order([t.header for t in translations]):
            translation = translations[i]
            for change in translation.events:
                batch.add(change)
            gaps += translation.gaps
            filtered += translation.filtered
            if translation.ignored:
                batch.ignore(translation.ignored)
        self.enqueuer.submit(SOURCE, batch)  # raises EnqueueUnavailable: nothing stored
        pipe = self.redis.pipeline(transaction=True)
        for gap in gaps:
            pipe.xadd(
                STREAM,
                self.dead_letters.fields(
                    GAP_REASON,
                    source=SOURCE,
                    payload={"topic": topic, "org": session.org_id, **gap.details()},
                    details=gap.details(),
                ),
            )
            self.metrics.incr("cdc_gaps", pipe=pipe, cause=gap.cause)
            self.metrics.incr("dead_lettered", pipe=pipe, reason=GAP_REASON)
        self.metrics.incr("cdc_events_received", len(response.events), pipe=pipe, topic=topic)
        if filtered:
            self.metrics.incr("cdc_events_filtered", filtered, pipe=pipe, topic=topic)
        pipe.execute()
        store.put(topic, bytes(response.events[-1].replay_id))
        self.handed_off += len(batch.events)
        log.info(
            "CDC events handed off",
            extra={
                "topic": topic,
                "events": len(response.events),
                "changes": len(batch.events),
                "gaps": len(gaps),
                "filtered": filtered,
                "invalid": len(batch.rejected),
            },
        )


def open_channel(endpoint: str, tls: bool) -> grpc.Channel:
    """A channel to the Pub/Sub API (TLS unless SALESFORCE_PUBSUB_TLS=false, for a simulator)."""
    if tls:
        return grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
    return grpc.insecure_channel(endpoint)

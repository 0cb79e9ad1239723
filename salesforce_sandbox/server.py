"""The simulator's two servers: Pub/Sub gRPC (Subscribe, GetSchema, GetTopic) and the org's
My Domain over HTTP (OAuth token endpoint, plus `/_sandbox/*` controls for dev mode and tests).

Enforced as Salesforce documents it (reference §3, §5):
- every RPC needs metadata `accesstoken` (a live token from our token endpoint),
  `instanceurl` (this org's URL) and `tenantid` (the org id): else UNAUTHENTICATED with the
  trailer `error-code: sfdc.platform.eventbus.grpc.service.auth.error`. A token is checked
  when a call starts; a stream outlives its token's expiry (keepalives outlast the session);
- Subscribe: the first FetchRequest names the topic and the replay start; a later request
  naming another topic -> INVALID_ARGUMENT; `num_requested` adds to what is pending, capped
  at 100; with demand and no events, an empty FetchResponse carrying `latest_replay_id` every
  `keepalive_seconds` (270 in Salesforce); when nothing is pending for `idle_close_seconds`
  (60) the stream closes; a replay id that is unknown, malformed or purged -> INVALID_ARGUMENT
  with `error-code: sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted`
  (the trailer key is undocumented: open question 9; `error-code` is what the samples read);
- GetSchema by id (NOT_FOUND otherwise); GetTopic with the current schema id. Publish and
  PublishStream answer UNIMPLEMENTED (change events are published by the org, not clients).
Knobs (POST /_sandbox/faults): `fail_subscribes` (the next N Subscribe calls fail with
UNAVAILABLE), `fail_after_events` (the stream breaks with UNAVAILABLE once that many more
events were delivered), `token_ttl_seconds`, `keepalive_seconds`, `idle_close_seconds`;
POST /_sandbox/expire purges every stored event (replay ids issued before become too old);
POST /_sandbox/schema {topic, field} adds a field (schema drift: a new schema id).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from pull_sources.salesforce_cdc.proto import pubsub_api_pb2 as pb
from pull_sources.salesforce_cdc.proto import pubsub_api_pb2_grpc as pb_grpc
from salesforce_sandbox import changes as change_bodies
from salesforce_sandbox import schemas
from salesforce_sandbox.bus import Bus, ReplayIdError

AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
REPLAY_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
MAX_REQUESTED = 100


@dataclass
class SandboxConfig:
    org_id: str = "00D5g000004SIMAAA2"
    user_id: str = "0055g00000SIMUSAAA"
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"  # noqa: S105 - the simulator's own dev secret
    username: str = "integration@sandbox.example"
    jwt_public_key: str | None = None  # PEM; enables the JWT bearer flow
    jwt_audience: str = "https://login.salesforce.com"
    token_ttl_seconds: float = 7200.0  # Salesforce's default session timeout (2 h)
    keepalive_seconds: float = 270.0
    idle_close_seconds: float = 60.0
    retention_seconds: float = 72 * 3600.0


@dataclass
class Faults:
    fail_subscribes: int = 0
    fail_after_events: int | None = None


@dataclass
class Stats:
    subscribes: int = 0
    tokens_issued: int = 0
    events_delivered: int = 0
    keepalives: int = 0
    schema_requests: int = 0
    presets: list[str] = field(default_factory=list)


def _rpc_id() -> str:
    return str(uuid.uuid4())


class PubSubService(pb_grpc.PubSubServicer):
    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sb = sandbox

    # ---- auth ----------------------------------------------------------------------------
    def _auth(self, context: grpc.ServicerContext) -> None:
        meta = dict(context.invocation_metadata())
        token = str(meta.get("accesstoken", ""))
        expires = self.sb.tokens.get(token)
        ok = (
            expires is not None
            and expires > time.time()
            and str(meta.get("instanceurl", "")).rstrip("/") == self.sb.instance_url
            and meta.get("tenantid") == self.sb.config.org_id
        )
        if not ok:
            context.set_trailing_metadata((("error-code", AUTH_ERROR),))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or expired session")

    # ---- unary ---------------------------------------------------------------------------
    def GetSchema(self, req: Any, context: grpc.ServicerContext) -> Any:
        self._auth(context)
        with self.sb.lock:
            self.sb.stats.schema_requests += 1
        text = self.sb.bus.schema_texts.get(req.schema_id)
        if text is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown schema id {req.schema_id[:40]}")
        return pb.SchemaInfo(schema_json=text, schema_id=req.schema_id, rpc_id=_rpc_id())

    def GetTopic(self, req: Any, context: grpc.ServicerContext) -> Any:
        self._auth(context)
        sid = self.sb.bus.topic_schema.get(req.topic_name)
        if sid is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown topic {req.topic_name[:80]}")
        return pb.TopicInfo(
            topic_name=req.topic_name,
            tenant_guid=self.sb.config.org_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=sid,
            rpc_id=_rpc_id(),
        )

    def Publish(self, req: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "change events are published by the org")

    def PublishStream(self, it: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "change events are published by the org")

    # ---- Subscribe -----------------------------------------------------------------------
    def Subscribe(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        sb = self.sb
        self._auth(context)
        with sb.lock:
            sb.stats.subscribes += 1
            if sb.faults.fail_subscribes > 0:
                sb.faults.fail_subscribes -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "simulated stream failure")
        try:
            first = next(requests)
        except StopIteration:
            return
        topic = first.topic_name
        if topic not in sb.bus.topic_schema:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown topic {topic[:80]}")
        if first.num_requested < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "num_requested must not be negative")
        preset = int(first.replay_preset)
        with sb.lock:
            sb.stats.presets.append(pb.ReplayPreset.Name(preset))
        try:
            position = sb.bus.start_after(topic, preset, bytes(first.replay_id))
        except ReplayIdError as exc:
            context.set_trailing_metadata((("error-code", REPLAY_CORRUPTED),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"replay id is corrupted: {exc}")

        state = {"pending": min(MAX_REQUESTED, first.num_requested), "error": ""}
        guard = threading.Lock()

        def read_requests() -> None:
            with contextlib.suppress(grpc.RpcError, ValueError):
                for req in requests:
                    with guard:
                        if req.topic_name and req.topic_name != topic:
                            state["error"] = "topic_name differs from the stream's topic"
                            return
                        if req.num_requested < 0:
                            state["error"] = "num_requested must not be negative"
                            return
                        state["pending"] = min(MAX_REQUESTED, state["pending"] + req.num_requested)

        threading.Thread(target=read_requests, daemon=True, name="sandbox-fetch").start()
        last_sent = time.monotonic()
        idle_since: float | None = None
        while context.is_active() and not sb.stopping.is_set():
            with guard:
                pending, error = int(state["pending"]), str(state["error"])
            if error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            now = time.monotonic()
            if pending <= 0:
                idle_since = idle_since or now
                if now - idle_since >= sb.config.idle_close_seconds:
                    return  # the client did not ask for more in time: the stream closes
                sb.bus.wait(0.05)
                continue
            idle_since = None
            batch = sb.bus.read_after(topic, position, pending)
            if batch:
                with sb.lock:
                    limit = sb.faults.fail_after_events
                    if limit is not None and len(batch) >= limit:
                        batch = batch[:limit]
                        sb.faults.fail_after_events = None
                        fail = True
                    else:
                        if limit is not None:
                            sb.faults.fail_after_events = limit - len(batch)
                        fail = False
                    sb.stats.events_delivered += len(batch)
                with guard:
                    state["pending"] = int(state["pending"]) - len(batch)
                    left = int(state["pending"])
                position = batch[-1].position
                if batch:
                    yield pb.FetchResponse(
                        events=[
                            pb.ConsumerEvent(
                                event=pb.ProducerEvent(
                                    id=e.event_uuid, schema_id=e.schema_id, payload=e.payload
                                ),
                                replay_id=e.replay_id,
                            )
                            for e in batch
                        ],
                        latest_replay_id=batch[-1].replay_id,
                        rpc_id=_rpc_id(),
                        pending_num_requested=left,
                    )
                last_sent = time.monotonic()
                if fail:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "simulated stream failure")
                continue
            if now - last_sent >= sb.config.keepalive_seconds:
                with sb.lock:
                    sb.stats.keepalives += 1
                yield pb.FetchResponse(
                    latest_replay_id=sb.bus.replay_id_of(position),
                    rpc_id=_rpc_id(),
                    pending_num_requested=pending,
                )
                last_sent = time.monotonic()
                continue
            sb.bus.wait(0.05)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: the simulator runs inside tests and the chaos harness."""


class SalesforceSandbox:
    """Both servers on free loopback ports; `start()` then `stop()`."""

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1") -> None:
        self.config = config or SandboxConfig()
        self.host = host
        self.bus = Bus(self.config.retention_seconds)
        self.tokens: dict[str, float] = {}
        self.faults = Faults()
        self.stats = Stats()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.grpc_port = 0
        self.http_port = 0
        self._grpc: grpc.Server | None = None
        self._http: Any = None
        self._commit = 0

    @property
    def instance_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pubsub_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self, grpc_port: int = 0, http_port: int = 0) -> SalesforceSandbox:
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_PubSubServicer_to_server(PubSubService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{grpc_port}")
        self._grpc.start()
        self._http = make_server(
            self.host, http_port, self.http_app(), threaded=True, request_handler=_QuietHandler
        )
        self.http_port = self._http.server_port
        threading.Thread(target=self._http.serve_forever, daemon=True, name="sandbox-http").start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(5)
        if self._http is not None:
            self._http.shutdown()

    # ---- emitting changes ----------------------------------------------------------------
    def emit(
        self,
        entity: str,
        change_type: str,
        record_ids: list[str],
        event_uuid: str | None = None,
        **kw: Any,
    ) -> bytes:
        """Publish one change event (see salesforce_sandbox.changes.body); its replay id."""
        topic = next(t for t, e in schemas.TOPIC_ENTITIES.items() if e == entity)
        with self.lock:
            self._commit += 1
            commit = self._commit
        kw.setdefault("commit_timestamp", int(time.time() * 1000))
        kw.setdefault("commit_number", commit)
        kw["schema"] = self.bus.current[topic]
        body = change_bodies.body(entity, change_type, record_ids, kw.pop("values", None), **kw)
        return self.bus.publish(topic, body, event_uuid)

    def issue_token(self) -> str:
        token = f"{self.config.org_id}!{secrets.token_urlsafe(24)}"
        with self.lock:
            self.tokens[token] = time.time() + self.config.token_ttl_seconds
            self.stats.tokens_issued += 1
        return token

    # ---- HTTP ----------------------------------------------------------------------------
    def http_app(self) -> Flask:
        app = Flask("salesforce_sandbox")
        sb = self

        def oauth_error(code: str, description: str, status: int = 400) -> Any:
            return jsonify({"error": code, "error_description": description}), status

        @app.post("/services/oauth2/token")
        def token() -> Any:
            form = request.form
            grant = form.get("grant_type", "")
            if grant == "client_credentials":
                if not (
                    secrets.compare_digest(form.get("client_id", ""), sb.config.client_id)
                    and secrets.compare_digest(
                        form.get("client_secret", ""), sb.config.client_secret
                    )
                ):
                    return oauth_error("invalid_client", "invalid client credentials")
            elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                if sb.config.jwt_public_key is None:
                    return oauth_error("invalid_grant", "JWT bearer is not configured")
                try:
                    claims = jwt.decode(
                        form.get("assertion", ""),
                        sb.config.jwt_public_key,
                        algorithms=["RS256"],
                        audience=sb.config.jwt_audience,
                        issuer=sb.config.client_id,
                        options={"require": ["exp", "iss", "sub", "aud"]},
                    )
                except jwt.PyJWTError as exc:
                    return oauth_error("invalid_grant", f"invalid assertion: {type(exc).__name__}")
                if claims.get("sub") != sb.config.username:
                    return oauth_error("invalid_grant", "user hasn't approved this consumer")
            else:
                return oauth_error("unsupported_grant_type", "grant type not supported")
            issued = int(time.time() * 1000)
            return jsonify(
                {
                    "access_token": sb.issue_token(),
                    "instance_url": sb.instance_url,
                    "id": f"{sb.instance_url}/id/{sb.config.org_id}/{sb.config.user_id}",
                    "token_type": "Bearer",
                    "issued_at": str(issued),
                    "signature": secrets.token_urlsafe(32),
                    "scope": "api",
                }
            )

        @app.post("/_sandbox/changes")
        def changes() -> Any:
            items = request.get_json(force=True, silent=True)
            items = items if isinstance(items, list) else [items]
            out = []
            for item in items:
                if not isinstance(item, dict):
                    return jsonify({"error": "each change must be an object"}), 400
                try:
                    replay = sb.emit(
                        str(item.pop("entity", "Contact")),
                        str(item.pop("change_type", "UPDATE")),
                        list(item.pop("record_ids", [])),
                        **item,
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    return jsonify({"error": f"bad change: {exc}"}), 400
                out.append(replay.hex())
            return jsonify({"replay_ids": out})

        @app.post("/_sandbox/faults")
        def faults() -> Any:
            knobs = request.get_json(force=True, silent=True) or {}
            with sb.lock:
                for name in ("fail_subscribes", "fail_after_events"):
                    if name in knobs:
                        setattr(sb.faults, name, knobs[name])
                for name in ("token_ttl_seconds", "keepalive_seconds", "idle_close_seconds"):
                    if name in knobs:
                        setattr(sb.config, name, float(knobs[name]))
            return jsonify({"ok": True})

        @app.post("/_sandbox/schema")
        def add_field() -> Any:
            knobs = request.get_json(force=True, silent=True) or {}
            topic, name = str(knobs.get("topic", "")), str(knobs.get("field", ""))
            if topic not in sb.bus.topic_schema or not name.isidentifier():
                return jsonify({"error": "give an existing topic and a field name"}), 400
            return jsonify({"schema_id": sb.bus.add_field(topic, name)})

        @app.post("/_sandbox/expire")
        def expire() -> Any:
            return jsonify({"purged": sb.bus.expire_all()})

        @app.post("/_sandbox/expire-tokens")
        def expire_tokens() -> Any:
            with sb.lock:
                sb.tokens = dict.fromkeys(sb.tokens, 0.0)
            return jsonify({"ok": True})

        @app.get("/_sandbox/state")
        def state() -> Any:
            with sb.lock:
                stats = dict(vars(sb.stats))
            stats["stored"] = {t: sb.bus.count(t) for t in sb.bus.topic_schema}
            return jsonify(stats)

        return app

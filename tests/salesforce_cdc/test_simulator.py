"""The Pub/Sub simulator over real gRPC: auth, topics, schemas, flow control, replay ids."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pull_sources.salesforce_cdc.auth import AuthError, Credentials, Session, TokenSource
from pull_sources.salesforce_cdc.proto import pubsub_api_pb2 as pb
from pull_sources.salesforce_cdc.proto import pubsub_api_pb2_grpc as pb_grpc
from pull_sources.salesforce_cdc.schema import Schema
from salesforce_sandbox.server import REPLAY_CORRUPTED, SalesforceSandbox, SandboxConfig
from tests.salesforce_cdc.conftest import credentials

CONTACTS = "/data/ContactChangeEvent"


def _session(sandbox: SalesforceSandbox) -> Session:
    return TokenSource(credentials(sandbox), httpx.Client(timeout=5), 900).current()


class Stream:
    """A raw Subscribe call whose requests the test sends one by one."""

    def __init__(self, stub: Any, session: Session, first: Any) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()
        self.requests.put(first)
        self.call = stub.Subscribe(self._iter(), metadata=session.metadata(), timeout=30)

    def _iter(self) -> Iterator[Any]:
        while (item := self.requests.get()) is not None:
            yield item

    def next(self) -> Any:
        return next(self.call)

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


@pytest.fixture
def stub(salesforce: SalesforceSandbox) -> Iterator[Any]:
    channel = grpc.insecure_channel(salesforce.pubsub_endpoint)
    yield pb_grpc.PubSubStub(channel)
    channel.close()


def test_client_credentials_token_names_the_org(salesforce: SalesforceSandbox) -> None:
    """The token endpoint answers client credentials with a token whose `id` names the org."""
    session = _session(salesforce)
    assert session.org_id == salesforce.config.org_id
    assert session.instance_url == salesforce.instance_url
    assert session.access_token not in repr(session)


def test_wrong_client_secret_is_a_permanent_auth_error(salesforce: SalesforceSandbox) -> None:
    """A wrong client secret is refused (invalid_client), not retried, and not echoed."""
    creds = Credentials(salesforce.instance_url, salesforce.config.client_id, "nope-secret")
    with pytest.raises(AuthError) as info:
        TokenSource(creds, httpx.Client(timeout=5), 900).current()
    assert not info.value.retryable
    assert "invalid_client" in str(info.value)
    assert "nope-secret" not in str(info.value)


def test_jwt_bearer_token_with_a_signed_assertion(tmp_path: Any) -> None:
    """The JWT bearer flow signs an RS256 assertion the org verifies with the app's certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sandbox = SalesforceSandbox(SandboxConfig(jwt_public_key=public.decode())).start()
    try:
        creds = Credentials(
            sandbox.instance_url,
            sandbox.config.client_id,
            username=sandbox.config.username,
            jwt_key_file=key_file,
        )
        assert creds.flow == "jwt_bearer"
        session = TokenSource(creds, httpx.Client(timeout=5), 900).current()
        assert session.org_id == sandbox.config.org_id
        wrong_user = Credentials(
            sandbox.instance_url, sandbox.config.client_id, username="x@y.z", jwt_key_file=key_file
        )
        with pytest.raises(AuthError, match="invalid_grant"):
            TokenSource(wrong_user, httpx.Client(timeout=5), 900).current()
    finally:
        sandbox.stop()


def test_token_is_renewed_after_the_refresh_interval(salesforce: SalesforceSandbox) -> None:
    """A session older than the refresh interval is replaced before use; a younger one is kept."""

    class Clock:
        now = 1000.0

        def time(self) -> float:
            return self.now

    clock = Clock()
    tokens = TokenSource(credentials(salesforce), httpx.Client(timeout=5), 600, clock=clock)
    first = tokens.current()
    clock.now += 599
    assert tokens.current() is first
    clock.now += 2
    assert tokens.current().access_token != first.access_token
    assert tokens.renewals == 2


def test_rpcs_without_a_valid_session_are_unauthenticated(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """GetTopic with a bad token or a wrong tenant id fails UNAUTHENTICATED."""
    session = _session(salesforce)
    bad = (("accesstoken", "forged"), *session.metadata()[1:])
    wrong_tenant = (*session.metadata()[:2], ("tenantid", "00D000000000000AAA"))
    for metadata in (bad, wrong_tenant):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetTopic(pb.TopicRequest(topic_name=CONTACTS), metadata=metadata, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_get_topic_and_get_schema_serve_avro_that_decodes_events(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """GetTopic names the schema id; GetSchema serves Avro JSON that decodes a delivered event."""
    session = _session(salesforce)
    topic = stub.GetTopic(pb.TopicRequest(topic_name=CONTACTS), metadata=session.metadata())
    assert (topic.can_subscribe, topic.tenant_guid) == (True, salesforce.config.org_id)
    info = stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=session.metadata())
    schema = Schema.parse(info.schema_id, info.schema_json)
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "CTO"})
    stream = Stream(stub, session, pb.FetchRequest(topic_name=CONTACTS, replay_preset=pb.EARLIEST,
                                                   num_requested=1))  # fmt: skip
    try:
        (event,) = stream.next().events
        body = schema.decode(event.event.payload)
        assert body["Title"] == "CTO"
        assert body["ChangeEventHeader"]["recordIds"] == ["003A"]
        with pytest.raises(grpc.RpcError) as info_missing:
            stub.GetSchema(pb.SchemaRequest(schema_id="nope"), metadata=session.metadata())
        assert info_missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        stream.close()


def test_flow_control_caps_demand_at_100_and_counts_pending(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """num_requested over 100 counts as 100; responses report what is still pending."""
    for i in range(130):
        salesforce.emit("Contact", "UPDATE", [f"003{i:03d}"], values={"Title": str(i)})
    session = _session(salesforce)
    stream = Stream(stub, session, pb.FetchRequest(topic_name=CONTACTS, replay_preset=pb.EARLIEST,
                                                   num_requested=500))  # fmt: skip
    try:
        got = 0
        while got < 100:
            response = stream.next()
            got += len(response.events)
            assert response.pending_num_requested == 100 - got
        time.sleep(0.5)
        assert salesforce.stats.events_delivered == 100  # nothing beyond the demand
        stream.requests.put(pb.FetchRequest(num_requested=30))
        while got < 130:
            got += len(stream.next().events)
        assert got == 130
    finally:
        stream.close()


def test_keepalive_carries_the_latest_replay_id_and_resumes_there(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """With demand but no events, an empty response carries latest_replay_id; CUSTOM resumes."""
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "one"})
    session = _session(salesforce)
    stream = Stream(stub, session, pb.FetchRequest(topic_name=CONTACTS, replay_preset=pb.EARLIEST,
                                                   num_requested=10))  # fmt: skip
    try:
        assert len(stream.next().events) == 1
        keepalive = stream.next()
        assert list(keepalive.events) == []
        assert keepalive.latest_replay_id
        assert keepalive.pending_num_requested == 9
    finally:
        stream.close()
    salesforce.emit("Contact", "UPDATE", ["003B"], values={"Title": "two"})
    resumed = Stream(stub, session, pb.FetchRequest(
        topic_name=CONTACTS, replay_preset=pb.CUSTOM, replay_id=keepalive.latest_replay_id,
        num_requested=10))  # fmt: skip
    try:
        (event,) = resumed.next().events
        assert salesforce.bus.read_after(CONTACTS, 0, 10)[-1].replay_id == event.replay_id
    finally:
        resumed.close()


def test_expired_or_forged_replay_id_is_refused_with_the_corrupted_code(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """A purged or forged replay id ends the stream INVALID_ARGUMENT with the `corrupted` code."""
    replay = salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "x"})
    salesforce.bus.expire_all()
    session = _session(salesforce)
    for replay_id in (replay, b"\x07garbage"):
        first = pb.FetchRequest(
            topic_name=CONTACTS, replay_preset=pb.CUSTOM, replay_id=replay_id, num_requested=1
        )
        stream = Stream(stub, session, first)
        with pytest.raises(grpc.RpcError) as info:
            stream.next()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("error-code", REPLAY_CORRUPTED) in tuple(info.value.trailing_metadata())
        stream.close()


def test_a_second_topic_on_one_stream_is_invalid(salesforce: SalesforceSandbox, stub: Any) -> None:
    """A later FetchRequest naming another topic ends the stream with INVALID_ARGUMENT."""
    stream = Stream(
        stub, _session(salesforce), pb.FetchRequest(topic_name=CONTACTS, num_requested=1)
    )
    stream.requests.put(pb.FetchRequest(topic_name="/data/LeadChangeEvent", num_requested=1))
    with pytest.raises(grpc.RpcError) as info:
        list(stream.call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream.close()


def test_stream_closes_when_the_client_asks_for_nothing(
    salesforce: SalesforceSandbox, stub: Any
) -> None:
    """With nothing pending for idle_close_seconds the server ends the stream."""
    salesforce.config.idle_close_seconds = 0.5
    salesforce.emit("Contact", "UPDATE", ["003A"], values={"Title": "x"})
    stream = Stream(stub, _session(salesforce), pb.FetchRequest(
        topic_name=CONTACTS, replay_preset=pb.EARLIEST, num_requested=1))  # fmt: skip
    assert len(stream.next().events) == 1
    started = time.monotonic()
    with pytest.raises(StopIteration):
        stream.next()
    assert time.monotonic() - started < 10
    stream.close()

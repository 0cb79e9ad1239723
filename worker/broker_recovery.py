"""The broker transport, hardened against a Redis that dies under a worker (issue 14).

Celery 5.7 / kombu 5.7 (redis transport): when the broker connection breaks while the
worker holds delivered, unacknowledged messages and a BRPOP is in flight, Celery's
`Consumer.on_connection_error_after_connected` first calls `connection.collect()`, which
clears `transport.client`; afterwards kombu still uses the old channel twice:
`connection.close()` tries to put the unacknowledged messages back, and a task finishing
meanwhile acks its message. Both build a new Redis client from `transport.client`
(`Channel._connparams`) and raise `AttributeError: 'NoneType' object has no attribute
'hostname'`, which neither kombu's `ignore_errors` nor `Message.ack_log_error` catch:
"Unrecoverable error", the worker exits 1 (reproduced with a real worker, two acks_late
tasks running, Redis killed with SIGKILL: tests/integration/test_restarts.py).
`--without-heartbeat` and `broker_connection_retry_on_startup` play no part; no released
kombu avoids it, so there is nothing to pin to.

The channels below raise a Redis `ConnectionError` instead: for kombu that is a broken
connection, which `ignore_errors` and `ack_log_error` handle, and the consumer
reconnects. Nothing is lost by the restore or ack that could not run: those messages stay
in kombu's unacked hash and any worker's periodic restore puts them back after the
visibility timeout (then a repeated ingest or flush is absorbed as after a worker
SIGKILL); ingest events are also swept from the inbox and flushes re-dispatched from the
due set by the pump.

Selected through `broker_transport` in worker/celery_app.py (`transport_for(url)`).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

CLOSED_MESSAGE = "broker connection already closed (Redis went away)"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; a client asked of a closed connection is a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError(CLOSED_MESSAGE)
        return super()._connparams(asynchronous)


class SentinelChannel(kombu_redis.SentinelChannel):
    """The same guard for the Sentinel channel (`sentinel://` URLs)."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError(CLOSED_MESSAGE)
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the guarded channel."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with the guarded channel."""

    Channel = SentinelChannel


def transport_for(url: str) -> str | None:
    """The transport class path for a broker URL: ours for `redis://` and `sentinel://`,
    kombu's own (None) for `rediss://` and `unix://`, whose TLS / socket handling kombu
    derives from the scheme (the guard does not cover them yet)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return {
        "redis": "worker.broker_recovery:Transport",
        "sentinel": "worker.broker_recovery:SentinelTransport",
    }.get(scheme)

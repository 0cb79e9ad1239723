"""Receiver throughput and latency under gunicorn, against a bare WSGI app as the yardstick.

    .venv/bin/python bench/receiver.py [--redis-url URL]

Starts gunicorn on 127.0.0.1 (same settings for both apps: `--workers`, `--worker-class`
(default: the shipped webhook_app.serving.BufferingWorker; `gthread` for the former shape)
with `--threads`, keep-alive), drives it from this process with a small non-blocking
raw-socket load generator (`--connections` keep-alive connections, bounded by
`--seconds` per phase), and prints one JSON object:

- hello: requests/s of a bare WSGI "hello" app given the same single-event POST;
- async_hello: the same answer from a bare handler on BufferingWorker's event loop (no
  thread hand-off, as the receiver answers webhook POSTs since RECEIVER_ASYNC_HANDOFF);
- singles: requests/s (= events/s) of signed one-event HubSpot batches;
- batches: requests/s and events/s of signed 100-event HubSpot batches;
- latency: p50/p99 of single-event requests at a fixed rate of half the measured max;
- ratio: singles requests/s / hello requests/s (the issue's definition), and the stricter
  ratio_singles_to_async_hello: singles requests/s / async_hello requests/s;
- cpu_us_per_request: CPU time (user + system) of the gunicorn workers, and of the private
  redis-server, per request in the hello and singles phases, and cpu_ratio = hello's CPU per
  request / singles' (the load generator left out). On a shared machine the requests/s (and
  so `ratio`) swing with other work; CPU per request barely does.

Targets: ratio >= 0.5, >= 16,000 events/s in batches (issue 14: keep what was reached),
p99 < 25 ms at half max.
Traffic goes to 127.0.0.1 only. Redis: a private redis-server this script starts and stops,
unless --redis-url names one; that database must be empty at the start (the receiver
enqueues real Celery messages there) and is flushed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # the only address this script ever sends to
SECRET = "bench-client-secret-0000"


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The yardstick: a bare WSGI app that answers without reading the body."""
    body = b'{"status":"ok"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "15")])
    return [body]


class _HelloOnTheLoop:
    """The async yardstick's handler: every request answered on BufferingWorker's event
    loop (webhook_app.serving.LoopHandler), with hello_app's answer."""

    def async_ready(self) -> bool:
        return True

    def takes_async(self, method: str, path: str) -> bool:
        return True

    async def respond_async(
        self, environ: dict[str, Any], in_thread: Any
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        return (
            200,
            [("Content-Type", "application/json"), ("Content-Length", "15")],
            b'{"status":"ok"}',
        )


class AsyncHelloApp:
    """The stricter yardstick: hello_app, but under BufferingWorker answered on the event
    loop (no thread hand-off), as the receiver now answers webhook POSTs. Under another
    worker class it is plain hello_app."""

    wsgi_app = _HelloOnTheLoop()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return hello_app(environ, start_response)


async_hello_app = AsyncHelloApp()


# ---- requests -------------------------------------------------------------------------------
def hubspot_requests(port: int, events_per_request: int, count: int) -> list[bytes]:
    """`count` distinct signed HubSpot requests (raw HTTP/1.1, keep-alive)."""
    sys.path.insert(0, str(ROOT))
    from webhook_app.signatures import hubspot_v3

    path = "/webhooks/hubspot"
    out = []
    for n in range(count):
        events = [
            {
                "eventId": n * 1000 + i,
                "subscriptionId": 2101,
                "portalId": 7070707,
                "appId": 909090,
                "occurredAt": 1760000000000 + n * 1000 + i,
                "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0,
                "objectId": 50_000 + (n * 7 + i) % 5000,
                "propertyName": "jobtitle",
                "propertyValue": f"Title {n}-{i}",
                "changeSource": "CRM_UI",
            }
            for i in range(events_per_request)
        ]
        body = json.dumps(events, separators=(",", ":")).encode()
        stamp = str(int(time.time() * 1000))
        signature = hubspot_v3(SECRET, "POST", f"http://{HOST}:{port}{path}", body, stamp)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-HubSpot-Signature-v3: {signature}\r\n"
            f"X-HubSpot-Request-Timestamp: {stamp}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


# ---- load generator -------------------------------------------------------------------------
@dataclass
class _Conn:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    sent_at: float = 0.0
    busy: bool = False
    next_at: float = 0.0


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _complete(buffer: bytearray) -> tuple[int, int] | None:
    """(status, length of the whole response) once a response is fully in `buffer`."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).split(b"\r\n")
    status = int(head[0].split()[1])
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    return (status, total) if len(buffer) >= total else None


def run_load(
    port: int,
    requests: list[bytes],
    *,
    connections: int,
    seconds: float,
    rate: float | None = None,
) -> LoadResult:
    """Keep `connections` keep-alive connections busy (or paced to `rate` req/s in total)."""
    selector = selectors.DefaultSelector()
    conns = [_Conn(_connect(port)) for _ in range(connections)]
    interval = connections / rate if rate else 0.0
    start = time.perf_counter()
    for i, conn in enumerate(conns):
        selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.next_at = start + (i * interval / connections if rate else 0.0)
    deadline = start + seconds
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    done = 0
    sent = 0
    while True:
        now = time.perf_counter()
        if now >= deadline and not any(c.busy for c in conns):
            break
        if now >= deadline + 10:
            break  # give up on stuck responses
        for conn in conns:
            if not conn.busy and now < deadline and now >= conn.next_at:
                conn.sock.sendall(requests[sent % len(requests)])
                sent += 1
                conn.sent_at = time.perf_counter()
                conn.busy = True
        wait = 0.0005 if rate else 0.05
        for key, _mask in selector.select(timeout=wait):
            conn = key.data
            data = conn.sock.recv(262_144)
            if not data:  # the server closed the connection: reconnect
                selector.unregister(conn.sock)
                conn.sock.close()
                conn.sock = _connect(port)
                conn.buffer.clear()
                conn.busy = False
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                continue
            conn.buffer += data
            parsed = _complete(conn.buffer)
            if parsed is None:
                continue
            status, total = parsed
            finished = time.perf_counter()
            del conn.buffer[:total]
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append((finished - conn.sent_at) * 1000)
            done += 1
            conn.busy = False
            conn.next_at = conn.next_at + interval if rate else finished
    elapsed = min(time.perf_counter(), deadline) - start
    for conn in conns:
        conn.sock.close()
    selector.close()
    return LoadResult(done, elapsed, statuses, latencies)


# ---- gunicorn -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def worker_pids(master: int) -> list[int]:
    """The gunicorn master's worker processes ([] without psutil)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [child.pid for child in psutil.Process(master).children()]
    except psutil.Error:
        return []


@dataclass
class CpuMeter:
    """CPU µs per request of some processes over one load phase, and each one's share."""

    pids: list[int]
    start: float | None = None
    used: float | None = None
    starts: list[float | None] = field(default_factory=list)
    each: list[float | None] = field(default_factory=list)

    def __enter__(self) -> CpuMeter:
        self.starts = [cpu_seconds([pid]) for pid in self.pids]
        self.start = cpu_seconds(self.pids)
        return self

    def __exit__(self, *exc: object) -> None:
        end = cpu_seconds(self.pids)
        self.used = None if end is None or self.start is None else end - self.start
        ends = [cpu_seconds([pid]) for pid in self.pids]
        self.each = [
            None if a is None or b is None else b - a
            for a, b in zip(self.starts, ends, strict=True)
        ]

    def per_request(self, requests: int) -> float | None:
        if self.used is None or not requests:
            return None
        return round(self.used / requests * 1e6, 1)

    def shares(self) -> list[float] | None:
        """Each process's share of the phase's CPU: [0.5, 0.5] when two workers split the
        load, [1.0, 0.0] when one worker accepted every connection (it then caps req/s)."""
        if not self.used or any(x is None for x in self.each):
            return None
        return [round((x or 0.0) / self.used, 2) for x in self.each]


@contextmanager
def gunicorn(
    target: str, args: argparse.Namespace, env: dict[str, str], port: int
) -> Iterator[int]:
    """Run `target` under gunicorn on 127.0.0.1:`port` until the block ends."""
    argv = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--bind", f"{HOST}:{port}",
        "--workers", str(args.workers),
        "--worker-class", args.worker_class,
        "--threads", str(args.threads),
        "--keep-alive", "5",
        "--log-level", "warning",
        "--chdir", str(ROOT),
        target,
    ]  # fmt: skip
    process = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=0.5) as sock:
                    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                    if sock.recv(64).startswith(b"HTTP/1.1"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn {target} did not start")
            time.sleep(0.1)
        time.sleep(0.5)  # let every worker boot
        args.worker_pids = worker_pids(process.pid)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=None, help="an empty database (default: a private redis-server)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--worker-class", default="webhook_app.serving.BufferingWorker", help="or gthread"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    args = parser.parse_args(argv)

    import redis

    sys.path.insert(0, str(ROOT))
    from worker.embedded_redis import RedisServer

    private = RedisServer(appendonly=False).start() if args.redis_url is None else None
    args.redis_pids = []
    if private is not None:
        args.redis_url = private.url
        if private.process is not None:
            args.redis_pids = [private.process.pid]
    try:
        return _run(args, redis.Redis.from_url(args.redis_url))
    finally:
        if private is not None:
            private.cleanup()


def _run(args: argparse.Namespace, client: Any) -> int:
    from worker.celery_app import QUEUE_INGEST

    if client.dbsize():
        print(f"refusing: {args.redis_url} is not empty (pick an unused db)", file=sys.stderr)
        return 2

    result: dict[str, Any] = {
        "gunicorn": {
            "workers": args.workers,
            "worker_class": args.worker_class,
            "threads": args.threads,
        },
        "connections": args.connections,
        "seconds_per_phase": args.seconds,
    }
    load: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds}
    try:
        port = _free_port()
        env = {
            "REDIS_URL": args.redis_url,
            "HUBSPOT_CLIENT_SECRET": SECRET,
            "PUBLIC_BASE_URL": f"http://{HOST}:{port}",
        }
        singles_req = hubspot_requests(port, 1, 200)
        batch_req = hubspot_requests(port, 100, 20)

        with gunicorn("bench.receiver:hello_app", args, env, port):
            run_load(port, singles_req, connections=args.connections, seconds=1)  # warm-up
            with CpuMeter(args.worker_pids) as hello_cpu:
                hello = run_load(port, singles_req, **load)

        with gunicorn("bench.receiver:async_hello_app", args, env, port):
            run_load(port, singles_req, connections=args.connections, seconds=1)  # warm-up
            with CpuMeter(args.worker_pids) as async_hello_cpu:
                async_hello = run_load(port, singles_req, **load)

        with gunicorn("webhook_app:create_app()", args, env, port):
            run_load(port, singles_req, connections=args.connections, seconds=1)  # warm-up
            client.delete(QUEUE_INGEST)
            with CpuMeter(args.worker_pids) as singles_cpu, CpuMeter(args.redis_pids) as redis_cpu:
                singles = run_load(port, singles_req, **load)
            # Group commit: webhooks answered on one loop turn share one ingest message.
            singles_messages = int(client.llen(QUEUE_INGEST))
            client.delete(QUEUE_INGEST)
            batches = run_load(port, batch_req, **load)
            client.delete(QUEUE_INGEST)
            half = singles.rps / 2
            paced = run_load(port, singles_req, **load, rate=half)
            client.delete(QUEUE_INGEST)

        result.update(
            {
                "hello": {"requests_per_s": round(hello.rps), "statuses": hello.statuses},
                "async_hello": {
                    "requests_per_s": round(async_hello.rps),
                    "statuses": async_hello.statuses,
                },
                "singles": {
                    "requests_per_s": round(singles.rps),
                    "events_per_s": round(singles.rps),
                    "p50_ms": round(singles.percentile(50), 2),
                    "p99_ms": round(singles.percentile(99), 2),
                    "statuses": singles.statuses,
                    "ingest_messages": singles_messages,
                    "requests_per_message": (
                        round(singles.statuses.get(200, 0) / singles_messages, 2)
                        if singles_messages
                        else None
                    ),
                },
                "batches": {
                    "requests_per_s": round(batches.rps),
                    "events_per_s": round(batches.rps * 100),
                    "p50_ms": round(batches.percentile(50), 2),
                    "p99_ms": round(batches.percentile(99), 2),
                    "statuses": batches.statuses,
                },
                "latency_at_half_max": {
                    "target_rate": round(half),
                    "achieved_rate": round(paced.rps),
                    "p50_ms": round(paced.percentile(50), 2),
                    "p99_ms": round(paced.percentile(99), 2),
                    "statuses": paced.statuses,
                },
                "ratio_singles_to_hello": round(singles.rps / hello.rps, 3) if hello.rps else None,
                "ratio_singles_to_async_hello": (
                    round(singles.rps / async_hello.rps, 3) if async_hello.rps else None
                ),
            }
        )
        hello_us = hello_cpu.per_request(hello.requests)
        async_hello_us = async_hello_cpu.per_request(async_hello.requests)
        singles_us = singles_cpu.per_request(singles.requests)
        redis_us = redis_cpu.per_request(singles.requests) if args.redis_pids else None
        result["cpu_us_per_request"] = {
            "hello": {"gunicorn": hello_us},
            "async_hello": {"gunicorn": async_hello_us},
            "singles": {"gunicorn": singles_us, "redis": redis_us},
            "cpu_ratio": (
                round(hello_us / (singles_us + (redis_us or 0)), 3)
                if hello_us and singles_us
                else None
            ),
            # Per gunicorn worker: a phase served by one worker is capped by one core.
            "worker_shares": {
                "hello": hello_cpu.shares(),
                "async_hello": async_hello_cpu.shares(),
                "singles": singles_cpu.shares(),
            },
            "cpu_ratio_async_hello": (
                round(async_hello_us / (singles_us + (redis_us or 0)), 3)
                if async_hello_us and singles_us
                else None
            ),
        }
        result["targets_met"] = {
            "ratio>=0.5": (result["ratio_singles_to_hello"] or 0) >= 0.5,
            "batch_events_per_s>=16000": batches.rps * 100 >= 16000,
            "p99_at_half_max<25ms": paced.percentile(99) < 25,
        }
    finally:
        client.flushdb()
        client.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

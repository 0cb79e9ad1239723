"""Slow clients against a receiver, with normal signed requests in between (issue 11).

Half the slow connections trickle their headers, half send headers and then trickle a
body, one small write every `interval` seconds; a slow connection the server closes is
opened again at once, so `slow` connections stay open for the whole run. Meanwhile signed
HubSpot batches are sent one after another and timed. Used by tests/security/ and
bench/slowclients.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.receiver.senders import dumps, hubspot_event, hubspot_v3_headers


@dataclass
class SlowResult:
    """What one run measured."""

    slow_connections: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    failures: int = 0
    slow_closed_by_server: int = 0
    slow_status_lines: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        sent = len(self.statuses) + self.failures
        ok = sum(1 for s in self.statuses if s == 200)
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

        return {
            "slow_connections": self.slow_connections,
            "duration_s": round(self.duration_s, 1),
            "normal_requests": sent,
            "answered_200": ok,
            "share_answered": round(ok / sent, 4) if sent else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(max(ordered), 1) if ordered else None,
            "mean_ms": round(statistics.fmean(ordered), 1) if ordered else None,
            "slow_closed_by_server": self.slow_closed_by_server,
            "slow_answers": self.slow_status_lines,
        }


async def _slow(
    host: str, port: int, mode: str, stop: asyncio.Event, interval: float, result: SlowResult
) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(interval)
            continue
        try:
            if mode == "headers":
                writer.write(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: slow\r\n")
            else:
                writer.write(
                    b"POST /webhooks/hubspot HTTP/1.1\r\nHost: slow\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n["
                )
            await writer.drain()
            n = 0
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(200), timeout=interval)
                except TimeoutError:
                    n += 1
                    writer.write(b"X-Slow-%d: 1\r\n" % n if mode == "headers" else b" ")
                    await writer.drain()
                    continue
                # The server answered (or closed): count it and open another.
                result.slow_closed_by_server += 1
                line = data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
                result.slow_status_lines[line] = result.slow_status_lines.get(line, 0) + 1
                break
        except OSError:
            result.slow_closed_by_server += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _normal(
    base: str, stop: asyncio.Event, result: SlowResult, timeout: float, pause: float
) -> None:
    async with httpx.AsyncClient(timeout=timeout) as client:
        i = 0
        while not stop.is_set():
            i += 1
            body = dumps([hubspot_event(eventId=900_000 + i, objectId=70_000 + i)])
            headers = hubspot_v3_headers(body, base=base)
            started = time.perf_counter()
            try:
                response = await client.post(
                    f"{base}/webhooks/hubspot", content=body, headers=headers
                )
            except httpx.HTTPError:
                result.failures += 1
            else:
                result.statuses.append(response.status_code)
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(pause)


async def run(
    base: str,
    *,
    slow: int = 64,
    duration: float = 10.0,
    interval: float = 0.5,
    timeout: float = 10.0,
    pause: float = 0.1,
) -> SlowResult:
    """Hold `slow` slow connections open for `duration` s while timing normal requests."""
    host, port = base.removeprefix("http://").split(":")
    result = SlowResult(slow_connections=slow, duration_s=duration)
    stop = asyncio.Event()
    slow_tasks = [
        asyncio.create_task(
            _slow(host, int(port), "headers" if i % 2 else "body", stop, interval, result)
        )
        for i in range(slow)
    ]
    await asyncio.sleep(min(2.0, duration / 4))  # let every slow connection open first
    normal = asyncio.create_task(_normal(base, stop, result, timeout, pause))
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(normal, *slow_tasks, return_exceptions=True)
    return result

"""``/health`` (JSON) and ``/metrics`` (Prometheus text) on 127.0.0.1.

A tiny HTTP/1.0 responder on ``asyncio.start_server`` (two GET routes do not need a
framework or a thread); the numbers come from :class:`ServiceMetrics`, which the
service updates on its hot path with plain attribute writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = ["HealthServer", "ServiceMetrics"]

logger = logging.getLogger(__name__)

LOOPBACK: Final = "127.0.0.1"


@dataclass(slots=True)
class ServiceMetrics:
    """Counters and gauges of one service process (wall-clock times from ``time.monotonic``)."""

    started: float = field(default_factory=time.monotonic)
    ticks: int = 0
    batches: int = 0
    ticks_rejected: int = 0
    nan_greeks: int = 0
    breaches: int = 0
    clears: int = 0
    proposals: int = 0
    stale_events: int = 0
    broker_connected: bool = False
    feed_done: bool = False
    last_tick_wall: dict[str, float] = field(default_factory=dict)
    last_tick_market: dict[str, str] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    regime: str = ""
    vix: float = 0.0

    def record_batch(self, last_market_ts: dict[str, str], latencies_s: list[float]) -> None:
        """One evaluated batch: the last market time per symbol and every tick's latency."""
        self.ticks += len(latencies_s)
        self.batches += 1
        now = time.monotonic()
        for symbol, market_ts in last_market_ts.items():
            self.last_tick_wall[symbol] = now
            self.last_tick_market[symbol] = market_ts
        self.latencies.extend(latencies_s)

    def tick_ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {s: now - t for s, t in self.last_tick_wall.items()}

    def latency_quantiles(self) -> dict[str, float]:
        if not self.latencies:
            return {"p50": 0.0, "p99": 0.0}
        arr = np.fromiter(self.latencies, dtype=np.float64)
        return {"p50": float(np.quantile(arr, 0.5)), "p99": float(np.quantile(arr, 0.99))}


class HealthServer:
    """Serves ``/health`` and ``/metrics`` from a snapshot callback.

    Parameters
    ----------
    snapshot:
        Returns the health document (a JSON-able dict with at least ``status``).
    metrics_text:
        Returns the Prometheus exposition text.
    port:
        TCP port on 127.0.0.1 (0 = pick a free one; see :attr:`port`).
    """

    def __init__(self, snapshot: Callable[[], dict[str, Any]], metrics_text: Callable[[], str], port: int) -> None:
        self._snapshot = snapshot
        self._metrics = metrics_text
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, self._port)
        logger.info("health endpoint listening host=%s port=%s", LOOPBACK, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while True:  # drain headers
                h = await asyncio.wait_for(reader.readline(), 5.0)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            if method != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", "GET only\n"
            elif path.split("?")[0] == "/health":
                doc = self._snapshot()
                status = "200 OK" if doc.get("status") == "ok" else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(doc, sort_keys=True) + "\n"
            elif path.split("?")[0] == "/metrics":
                status, ctype, body = "200 OK", "text/plain; version=0.0.4", self._metrics()
            else:
                status, ctype, body = "404 Not Found", "text/plain", "not found\n"
            data = body.encode()
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode() + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            logger.info("health request aborted error=%s", type(exc).__name__)
        finally:
            writer.close()

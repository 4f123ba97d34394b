"""The workspace side of an invocation: pick a served version by traffic, pick a worker, forward.

Connections to workers are kept alive in small per-port pools on the server's event loop, so a
request costs one write and one read on loopback (no connection set-up, no thread hop), and its
answer is parsed by a protocol as the bytes arrive.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from brickyard.serving.metrics import Metrics
from brickyard.serving.pool import CREATING, SCALED_TO_ZERO, ServedVersion

MAX_IDLE_PER_PORT = 64


class WorkerGone(Exception):
    """The worker closed or refused the connection."""


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a worker: a request written, its answer parsed as bytes arrive.

    A protocol rather than stream reader/writer: the answer completes one future, instead of a
    coroutine step per header line.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head: tuple[int, int, bool] | None = None  # status, content length, connection: close
        self.body_at = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        try:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self.buf[:end]).split(b"\r\n")
                status = int(lines[0].split(None, 2)[1])
                length, close = 0, False
                for h in lines[1:]:
                    k, _, v = h.partition(b":")
                    k = k.strip().lower()
                    if k == b"content-length":
                        length = int(v)
                    elif k == b"connection" and v.strip().lower() == b"close":
                        close = True
                self.head, self.body_at = (status, length, close), end + 4
            status, length, close = self.head
            if len(self.buf) < self.body_at + length:
                return
            payload = bytes(self.buf[self.body_at:self.body_at + length])
            if len(self.buf) > self.body_at + length:
                raise ValueError("more bytes than one answer")
        except (ValueError, IndexError) as exc:
            waiter.set_exception(exc)
            self.close()
            return
        self.buf.clear()
        self.head = None
        waiter.set_result((status, payload, close))

    async def request(self, data: bytes) -> tuple[int, bytes, bool]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Upstream:
    """Keep-alive HTTP/1.1 connections to one worker port."""

    def __init__(self, port: int):
        self.port = port
        self.busy = 0  # requests forwarded and not yet answered
        self.idle: list[_Conn] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        data = (b"POST /invocations HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(body)) + body
        for attempt in range(2):
            conn = None
            while self.idle and conn is None:
                conn = self.idle.pop()
                if conn.closed:
                    conn = None
            fresh = conn is None
            if fresh:
                try:
                    _, conn = await asyncio.get_running_loop().create_connection(_Conn, "127.0.0.1", self.port)
                except OSError:
                    raise WorkerGone() from None
            try:
                status, payload, close = await conn.request(data)
            except (OSError, ValueError, IndexError):
                conn.close()
                if fresh or attempt:
                    raise WorkerGone() from None
                continue  # a pooled connection the worker had closed: once more on a fresh one
            except BaseException:
                conn.close()  # cancelled (timeout): this connection's state is unknown
                raise
            if close or len(self.idle) >= MAX_IDLE_PER_PORT:
                conn.close()
            else:
                self.idle.append(conn)
            return status, payload
        raise WorkerGone()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


@dataclass
class Route:
    version: ServedVersion
    weight: int
    current: int = 0


class Routes:
    """The served versions of one endpoint and its traffic split (smooth weighted round-robin)."""

    def __init__(self, pairs: list[tuple[ServedVersion, int]]):
        self.routes = [Route(v, w) for v, w in pairs if w > 0]
        self.total = sum(r.weight for r in self.routes)

    def pick(self) -> ServedVersion:
        if len(self.routes) == 1:
            return self.routes[0].version
        best = None
        for r in self.routes:
            r.current += r.weight
            if best is None or r.current > best.current:
                best = r
        best.current -= self.total
        return best.version

    def versions(self) -> list[ServedVersion]:
        return [r.version for r in self.routes]


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


class Router:
    """Endpoint name -> routes; forwards invocations to worker processes."""

    def __init__(self, metrics: Metrics, request_timeout: float, cold_start_timeout: float, retry_after: int):
        self.metrics = metrics
        self.table: dict[str, Routes] = {}
        self.upstreams: dict[int, Upstream] = {}
        self.request_timeout = request_timeout
        self.cold_start_timeout = cold_start_timeout
        self.retry_after = retry_after
        self._rr = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self, endpoint: str, pairs: list[tuple[ServedVersion, int]]) -> None:
        """Switch an endpoint to new routes at once; requests already forwarded finish where they are."""
        self.table = {**self.table, endpoint: Routes(pairs)}

    def remove(self, endpoint: str) -> None:
        self.table = {k: v for k, v in self.table.items() if k != endpoint}

    def forget_ports(self, ports: list[int]) -> None:
        """Close pooled connections of stopped workers (on the event loop that owns them)."""
        def _drop() -> None:
            for port in ports:
                up = self.upstreams.pop(port, None)
                if up is not None:
                    up.close()
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_drop)

    def unavailable(self, message: str) -> tuple[int, dict, bytes]:
        return 503, {"Retry-After": str(self.retry_after)}, _error("TEMPORARILY_UNAVAILABLE", message)

    async def invoke(self, endpoint: str, body: bytes) -> tuple[int, dict, bytes] | None:
        """(status, headers, body) of a worker's answer; None when the endpoint has no routes."""
        routes = self.table.get(endpoint)
        if routes is None:
            return None
        self.loop = asyncio.get_running_loop()
        version = routes.pick()
        started = time.perf_counter()
        version.inflight += 1
        try:
            status, payload = await self._forward(version, body)
        finally:
            version.inflight -= 1
            version.last_used = time.monotonic()
        if status == 503:
            headers = {"Retry-After": str(self.retry_after)}
        else:
            headers = {"served-model-name": version.name}
        self.metrics.record(endpoint, version.name, status, (time.perf_counter() - started) * 1000)
        return status, headers, payload

    async def _forward(self, version: ServedVersion, body: bytes) -> tuple[int, bytes]:
        if not version.ready_ports and version.state in (SCALED_TO_ZERO, CREATING):
            await self._cold_start(version)
        tried: set[int] = set()
        while True:
            ports = [p for p in version.ready_ports if p not in tried]
            if not ports:
                return 503, _error("TEMPORARILY_UNAVAILABLE",
                                   f"No worker of served model {version.name} is up; retry shortly.")
            # The least busy worker (each predicts one request at a time); ties rotate.
            self._rr += 1
            port = min(ports[self._rr % len(ports):] + ports[:self._rr % len(ports)], key=self._load)
            up = self.upstreams.get(port)
            if up is None:
                up = self.upstreams[port] = Upstream(port)
            up.busy += 1
            try:
                async with asyncio.timeout(self.request_timeout):  # no extra task, unlike wait_for
                    return await up.post(body)
            except WorkerGone:
                tried.add(port)  # crashed or stopping: another worker may take it
            except asyncio.TimeoutError:
                return 504, _error("DEADLINE_EXCEEDED",
                                   f"Served model {version.name} did not answer within {self.request_timeout:.0f} s.")
            finally:
                up.busy -= 1

    def _load(self, port: int) -> int:
        up = self.upstreams.get(port)
        return up.busy if up is not None else 0

    async def _cold_start(self, version: ServedVersion) -> None:
        """Start a scaled-to-zero version and wait (bounded) until a worker answers."""
        if version.state == SCALED_TO_ZERO:
            await asyncio.get_running_loop().run_in_executor(None, version.wake)
        deadline = time.monotonic() + self.cold_start_timeout
        while not version.ready_ports and version.state == CREATING and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

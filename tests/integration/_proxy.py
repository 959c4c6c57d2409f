"""Loopback TCP proxies in front of the real server: one loses start requests or their answers
(`LossyProxy`), one cuts or stalls chosen responses midway (`BreakingProxy`).

Everything is forwarded byte for byte, except a start request
(`POST /api/v1/app-conversations HTTP/1.1`) while a fault is armed:

- `lose_answers=n`: the next n starts reach the server; once its answer arrives the proxy
  closes the client's connection without passing it on (the server acted, the client never
  hears of it: a timeout or a dropped connection after the request left);
- `lose_requests=n`: the next n starts are swallowed: the client's connection is closed and
  the server never sees the request;
- `refuse_after_loss=True`: once an answer is lost the proxy stops listening, so every
  later request (the SDK's lookups) fails to connect.

aiohttp sends one request at a time on a connection, so a request always starts a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, Literal

import attrs

START_LINE = b"POST /api/v1/app-conversations HTTP/"


Pump = Coroutine[Any, Any, None]


class _Proxy:
    """A loopback TCP proxy: one upstream connection per client connection, two pumps
    (client to server, server to client) that the subclass writes; the first to end ends
    the pair and both connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> _Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()  # a no-op when already closed (LossyProxy's refuse_after_loss)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pumps(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
    ) -> tuple[Pump, Pump]:
        raise NotImplementedError

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            pumps = [
                asyncio.ensure_future(pump)
                for pump in self._pumps(client_r, client_w, upstream_r, upstream_w)
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (client_w, upstream_w):
                if w is not None:
                    w.close()
                    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                        await w.wait_closed()


class LossyProxy(_Proxy):
    def __init__(
        self,
        upstream_port: int,
        *,
        lose_answers: int = 0,
        lose_requests: int = 0,
        refuse_after_loss: bool = False,
    ) -> None:
        super().__init__(upstream_port)
        self.lose_answers = lose_answers
        self.lose_requests = lose_requests
        self.refuse_after_loss = refuse_after_loss
        self.refusing = False
        self.starts_seen = 0  # start requests the client sent
        self.starts_forwarded = 0  # ... that reached the server
        self.answers_lost = 0
        self.requests_lost = 0

    async def __aenter__(self) -> LossyProxy:
        await super().__aenter__()
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        super()._accept(reader, writer)

    def _pumps(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
    ) -> tuple[Pump, Pump]:
        lose_answer = asyncio.Event()

        async def client_to_server() -> None:
            while chunk := await client_r.read(65536):
                if chunk.startswith(START_LINE):
                    self.starts_seen += 1
                    if self.lose_requests > 0:
                        self.lose_requests -= 1
                        self.requests_lost += 1
                        return  # never forwarded; closing the connection "loses" it
                    self.starts_forwarded += 1
                    if self.lose_answers > 0:
                        self.lose_answers -= 1
                        lose_answer.set()
                upstream_w.write(chunk)
                await upstream_w.drain()

        async def server_to_client() -> None:
            while chunk := await upstream_r.read(65536):
                if lose_answer.is_set():
                    self.answers_lost += 1
                    if self.refuse_after_loss and self._server is not None:
                        # Stop listening before the client learns its answer is gone.
                        self.refusing = True
                        self._server.close()
                    return  # the server answered; the client never gets it
                client_w.write(chunk)
                await client_w.drain()

        return client_to_server(), server_to_client()


# --------------------------------------------------------------------------- cut and stall


@attrs.define
class Break:
    """Break the response to a request whose first line starts with `request`.

    The response is passed through until `marker` has gone by `occurrence` times (counted in
    the response bytes, headers included), then `extra` more bytes, then:

    - "cut": the client's connection is closed (mid-body, mid-chunk: a truncated answer);
    - "stall": nothing more is passed on, the connection stays open (a hung server).

    It breaks `times` responses, then lets everything through. `seen` counts the matching
    requests, `broken` the responses it broke.
    """

    request: bytes
    action: Literal["cut", "stall"]
    marker: bytes = b"\r\n\r\n"
    occurrence: int = 1
    extra: int = 0
    times: int = 1
    seen: int = 0
    broken: int = 0

    def split(self, data: bytes) -> int | None:
        """Where in the response so far to act, or None if the point has not arrived."""
        at = -1
        for _ in range(self.occurrence):
            at = data.find(self.marker, at + 1)
            if at < 0:
                return None
        point = at + len(self.marker) + self.extra
        return point if point <= len(data) else None


class BreakingProxy(_Proxy):
    """A loopback TCP proxy that cuts or stalls chosen responses (see `Break`).

    aiohttp sends one request at a time on a connection, so a request always starts a
    chunk and the next response on the connection is its answer.
    """

    def __init__(self, upstream_port: int, *breaks: Break) -> None:
        super().__init__(upstream_port)
        self.breaks = list(breaks)
        self.requests: list[bytes] = []  # the request line of every request seen

    async def __aenter__(self) -> BreakingProxy:
        await super().__aenter__()
        return self

    def count(self, prefix: bytes) -> int:
        return sum(1 for line in self.requests if line.startswith(prefix))

    def _match(self, chunk: bytes) -> Break | None:
        if not chunk[:8].split(b" ", 1)[0].isalpha():
            return None  # a request body, not a request line
        self.requests.append(chunk.split(b"\r\n", 1)[0])
        for rule in self.breaks:
            if chunk.startswith(rule.request):
                rule.seen += 1
                if rule.broken < rule.times:
                    rule.broken += 1
                    return rule
        return None

    def _pumps(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_r: asyncio.StreamReader,
        upstream_w: asyncio.StreamWriter,
    ) -> tuple[Pump, Pump]:
        current: list[Break | None] = [None]  # the rule for the response now coming

        async def client_to_server() -> None:
            while chunk := await client_r.read(65536):
                rule = self._match(chunk)
                if rule is not None:
                    current[0] = rule
                upstream_w.write(chunk)
                await upstream_w.drain()

        async def server_to_client() -> None:
            so_far = b""
            while chunk := await upstream_r.read(65536):
                rule = current[0]
                if rule is None:
                    client_w.write(chunk)
                    await client_w.drain()
                    continue
                start = len(so_far)
                so_far += chunk
                point = rule.split(so_far)
                if point is None:
                    client_w.write(chunk)
                    await client_w.drain()
                    continue
                client_w.write(so_far[start:point])
                await client_w.drain()
                if rule.action == "cut":
                    return
                await asyncio.Event().wait()  # stall until the client or the test gives up

        return client_to_server(), server_to_client()

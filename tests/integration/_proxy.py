"""A loopback TCP proxy in front of the real server that loses start requests or their answers.

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

START_LINE = b"POST /api/v1/app-conversations HTTP/"


class LossyProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        lose_answers: int = 0,
        lose_requests: int = 0,
        refuse_after_loss: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        self.lose_answers = lose_answers
        self.lose_requests = lose_requests
        self.refuse_after_loss = refuse_after_loss
        self.refusing = False
        self.starts_seen = 0  # start requests the client sent
        self.starts_forwarded = 0  # ... that reached the server
        self.answers_lost = 0
        self.requests_lost = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LossyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()  # a no-op when already closed by `refuse_after_loss`
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_w: asyncio.StreamWriter | None = None
        lose_answer = asyncio.Event()
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

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

            pumps = [
                asyncio.ensure_future(client_to_server()),
                asyncio.ensure_future(server_to_client()),
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

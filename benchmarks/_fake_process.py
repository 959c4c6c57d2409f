"""A FakeCloud in a process of its own, for the benchmarks that measure a client's CPU and
memory: the server then shares neither the client's event loop nor its accounting.

The benchmark gives a `handle(cloud, message)` coroutine; its answer is sent back. Run it
from a top-level function of the benchmark (`spawn` re-imports that module in the child):

    def _serve(conn):
        serve(conn, API_KEY, _handle)

    server = FakeCloudProcess(_serve)
    ids = server.ask("seed", 1000)
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

Handler = Callable[[Any, tuple[Any, ...]], Awaitable[Any]]


def serve(conn: Connection, api_key: str, handle: Handler) -> None:
    """The child's loop: start a FakeCloud, send its port, answer each message until "stop"."""

    async def main() -> None:
        from openhands_async.testing import FakeCloud

        loop = asyncio.get_running_loop()
        async with FakeCloud(api_key=api_key, time_scale=1.0) as cloud:
            conn.send(cloud.port)
            while True:
                # The pipe blocks: read it on a thread so the server keeps serving meanwhile.
                msg = await loop.run_in_executor(None, conn.recv)
                if msg[0] == "stop":
                    return
                conn.send(await handle(cloud, msg))

    asyncio.run(main())


class FakeCloudProcess:
    """The parent's end: spawns the child running `target(conn)`, knows its base URL."""

    def __init__(self, target: Callable[[Connection], None]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child,), daemon=True)
        self.proc.start()
        self.base_url = f"http://127.0.0.1:{self.conn.recv()}"

    def ask(self, *msg: Any) -> Any:
        self.conn.send(msg)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()

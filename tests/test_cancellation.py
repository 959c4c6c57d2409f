"""Cancelling a public call at any await point leaves no tasks and no acquired connections."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud


async def _stream(c: oh.OpenHandsClient) -> None:
    async for _ in c.conversations.stream_start("hi", poll_interval=0.01):
        pass


def _server_side(task: asyncio.Task[Any]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return "aiohttp/web" in filename or "openhands_async/testing" in filename


CALLS: dict[str, Any] = {
    "start": lambda c: c.conversations.start("hi"),
    "get_many": lambda c: c.conversations.get_many(["a" * 32]),
    "search": lambda c: c.conversations.search().to_list(),
    "stream_start": _stream,
}


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 8, 13, 21, 34])
@pytest.mark.parametrize("call", list(CALLS))
async def test_cancel_after_k_iterations(call: str, k: int) -> None:
    async with FakeCloud(time_scale=0.01) as cloud:
        me = asyncio.current_task()
        baseline = asyncio.all_tasks() - {me}
        async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
            task = asyncio.ensure_future(CALLS[call](client))
            for _ in range(k):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            for _ in range(5):
                await asyncio.sleep(0)
            left = asyncio.all_tasks() - {me} - baseline
            left = {t for t in left if not t.done()}
            # FakeCloud's own server-side handler tasks are allowed; the client's are not
            client_tasks = {t for t in left if not _server_side(t)}
            assert not client_tasks, client_tasks
            if client.session is not None:
                assert not client.session.connector._acquired  # type: ignore[union-attr]
        assert cloud.duplicate_starts == 0

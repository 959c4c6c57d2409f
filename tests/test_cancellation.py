"""Cancelling a public call at any await point leaves no tasks and no acquired connections;
cancelling a task blocked on a poller leaves the poller working and closable."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud

from .conftest import eventually


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


async def _wait(p: oh.ConversationPoller) -> None:
    await p.wait()


async def _changes(p: oh.ConversationPoller) -> None:
    async for _ in p.changes():
        pass


async def _as_completed(p: oh.ConversationPoller) -> None:
    async for _ in p.as_completed():
        pass


CONSUMERS: dict[str, Any] = {"wait": _wait, "changes": _changes, "as_completed": _as_completed}


@pytest.mark.parametrize("k", [0, 1, 3, 8, 21])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
async def test_cancel_poller_consumer(consumer: str, k: int) -> None:
    """A consumer cancelled while blocked on a poller that never becomes idle: the poller
    keeps running for others, drops the consumer's queue, and closes without leftovers."""
    async with FakeCloud(time_scale=0.01) as cloud:
        # Idle forever: the consumer can only end by being cancelled.
        ids = cloud.seed_conversations(3, message="hold [fake:idle_seconds=inf]")
        me = asyncio.current_task()
        baseline = asyncio.all_tasks() - {me}
        async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
            poller = client.poller(poll_interval=0.01)
            poller.track_conversations(ids)
            task = asyncio.ensure_future(CONSUMERS[consumer](poller))
            for _ in range(k):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert task.cancelled()
            # Cancelling a consumer does not stop the poller (at k=0 it never started one).
            assert poller.running or k == 0
            assert not poller._subscribers
            await asyncio.wait_for(poller.aclose(), 10)
            assert not poller.running
            for _ in range(5):
                await asyncio.sleep(0)
            left = {t for t in asyncio.all_tasks() - {me} - baseline if not t.done()}
            client_tasks = {t for t in left if not _server_side(t)}
            assert not client_tasks, client_tasks
            if client.session is not None:  # None: cancelled before the first request
                assert not client.session.connector._acquired  # type: ignore[union-attr]


@pytest.mark.parametrize("consumer", list(CONSUMERS))
async def test_client_close_ends_poller_consumers(consumer: str) -> None:
    """Closing the client (not the poller) with a consumer blocked: the consumer returns
    promptly instead of hanging, and no task is left."""
    async with FakeCloud(time_scale=0.01) as cloud:
        ids = cloud.seed_conversations(2, message="hold [fake:idle_seconds=inf]")
        me = asyncio.current_task()
        baseline = asyncio.all_tasks() - {me}
        client = oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url)
        poller = client.poller(poll_interval=0.01)
        poller.track_conversations(ids)
        task = asyncio.ensure_future(CONSUMERS[consumer](poller))
        await eventually(lambda: poller.stats.cycles >= 2)  # blocked, with polls done
        await asyncio.wait_for(client.aclose(), 10)
        await asyncio.wait_for(task, 10)  # returns: a closed poller ends its consumers
        assert not poller.running
        left = {t for t in asyncio.all_tasks() - {me} - baseline if not t.done()}
        assert not {t for t in left if not _server_side(t)}

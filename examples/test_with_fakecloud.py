"""Use FakeCloud in your own tests: a real HTTP server on 127.0.0.1, no mocks, no conftest.

Installing openhands-async registers a pytest plugin with three fixtures: `fake_cloud` (a
running FakeCloud, options from `@pytest.mark.fake_cloud(...)`), `openhands_client` (a
client bound to it) and `make_fake_cloud` (a factory). They are async: install
pytest-asyncio.

python -m pytest examples/test_with_fakecloud.py
"""

from __future__ import annotations

import asyncio

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault
from openhands_async.testing.pytest_plugin import MakeFakeCloud

# Works whatever your asyncio_mode: in "strict" mode (pytest-asyncio's default) async tests
# need this mark; in "auto" mode it changes nothing.
pytestmark = pytest.mark.asyncio


async def count_finished(client: oh.OpenHandsClient, ids: list[str]) -> int:
    """The code under test: how many of these conversations finished?"""
    conversations = await client.conversations.get_many(ids)
    return sum(1 for c in conversations if c and c.execution_status == "finished")


async def wait_for(client: oh.OpenHandsClient, ids: list[str], n: int) -> int:
    for _ in range(500):  # bounded wait for the fake's timeline
        if (found := await count_finished(client, ids)) == n:
            return found
        await asyncio.sleep(0.01)
    return await count_finished(client, ids)


@pytest.mark.fake_cloud(time_scale=0.1)  # any FakeCloud option
async def test_counts_finished_conversations(
    fake_cloud: FakeCloud, openhands_client: oh.OpenHandsClient
) -> None:
    ids = fake_cloud.seed_conversations(3)
    assert await wait_for(openhands_client, ids, 3) == 3

    # Inject an outage: the SDK retries it, the fake counts what it received.
    fake_cloud.add_fault(Fault(route="get_conversations", status=503, times=1))
    before = fake_cloud.requests["get_conversations"]
    assert await count_finished(openhands_client, ids) == 3
    assert fake_cloud.requests["get_conversations"] == before + 2

    fake_cloud.add_fault(Fault(route="get_conversations", status=401))
    with pytest.raises(oh.AuthenticationError):
        await count_finished(openhands_client, ids)


@pytest.mark.fake_cloud(time_scale=0.1, run_outcome="error")
async def test_failed_conversations_are_not_counted(
    fake_cloud: FakeCloud, openhands_client: oh.OpenHandsClient
) -> None:
    ids = fake_cloud.seed_conversations(2)
    for _ in range(500):
        conversations = await openhands_client.conversations.get_many(ids)
        if all(c and c.is_terminal for c in conversations):
            break
        await asyncio.sleep(0.01)
    assert await count_finished(openhands_client, ids) == 0


async def test_two_accounts(make_fake_cloud: MakeFakeCloud) -> None:
    # The factory builds as many fakes as a test needs; each is stopped after the test.
    small = await make_fake_cloud(time_scale=0.1, max_running=1, cap_mode="refuse")
    async with oh.OpenHandsClient(api_key=small.api_key, base_url=small.base_url) as client:
        await client.conversations.start("[fake:idle_seconds=inf] first")
        with pytest.raises(oh.ConcurrencyLimitError):
            await client.conversations.start("second")

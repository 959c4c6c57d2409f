"""Use FakeCloud in your own tests: a real HTTP server on 127.0.0.1, no mocks.

python -m pytest examples/test_with_fakecloud.py
"""

from __future__ import annotations

import asyncio

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault


async def count_finished(client: oh.OpenHandsClient, ids: list[str]) -> int:
    """The code under test: how many of these conversations finished?"""
    conversations = await client.conversations.get_many(ids)
    return sum(1 for c in conversations if c and c.execution_status == "finished")


def test_counts_finished_conversations() -> None:
    async def scenario() -> None:
        async with (
            FakeCloud() as cloud,
            oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
        ):
            ids = cloud.seed_conversations(3)
            for _ in range(200):  # bounded wait for the fake's timeline
                if await count_finished(client, ids) == 3:
                    break
                await asyncio.sleep(0.02)
            assert await count_finished(client, ids) == 3

            # Inject an outage: the SDK retries it, the fake counts what it received.
            cloud.add_fault(Fault(route="get_conversations", status=503, times=1))
            assert await count_finished(client, ids) == 3
            assert cloud.requests["get_conversations"] >= 2

            cloud.add_fault(Fault(route="get_conversations", status=401))
            with pytest.raises(oh.AuthenticationError):
                await count_finished(client, ids)

    asyncio.run(scenario())

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud


@pytest.fixture
async def cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud(time_scale=0.2) as fake:
        yield fake


@pytest.fixture
async def client(cloud: FakeCloud) -> AsyncIterator[oh.OpenHandsClient]:
    # Short retry delays keep the suite quick; the policy's logic is what is under test.
    policy = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=policy
    ) as c:
        yield c


async def eventually(check: Callable[[], bool], *, steps: int = 400, step: float = 0.01) -> None:
    """Wait (bounded) until `check()` holds; fail the test if it never does."""
    for _ in range(steps):
        if check():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition never became true")

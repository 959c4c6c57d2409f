from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud

# What a successful start writes, in order: the expected answer, kept apart from the SDK's
# and FakeCloud's own lists so a change to those shows up here.
START_SEQUENCE = [
    "WORKING",
    "WAITING_FOR_SANDBOX",
    "PREPARING_REPOSITORY",
    "RUNNING_SETUP_SCRIPT",
    "SETTING_UP_GIT_HOOKS",
    "SETTING_UP_SKILLS",
    "STARTING_CONVERSATION",
    "READY",
]


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


def exactly(message: str) -> str:
    """A `pytest.raises(match=...)` pattern for this whole message and nothing else."""
    return f"^{re.escape(message)}$"

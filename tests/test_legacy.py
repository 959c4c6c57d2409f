"""The deprecated V0 client against FakeCloud's V0 routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

import openhands_async as oh
from openhands_async import legacy
from openhands_async.testing import FakeCloud, Fault

FAST = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


def make(cloud: FakeCloud) -> legacy.LegacyClient:
    legacy._warned = False
    with pytest.warns(DeprecationWarning, match="OpenHandsClient"):
        return legacy.LegacyClient(cloud.api_key, base_url=cloud.base_url, retry_policy=FAST)


@pytest.fixture
async def v0(cloud: FakeCloud) -> AsyncIterator[legacy.LegacyClient]:
    async with make(cloud) as c:
        yield c


def test_deprecation_warning_is_emitted_once_per_process() -> None:
    legacy._warned = False
    with pytest.warns(DeprecationWarning, match="OpenHandsClient") as caught:
        legacy.LegacyClient("k", base_url="http://127.0.0.1:1")
    # The second one is silent: filterwarnings=error would turn a warning into a failure.
    legacy.LegacyClient("k", base_url="http://127.0.0.1:1")
    assert len(caught) == 1


async def test_shares_the_core_client(cloud: FakeCloud) -> None:
    legacy._warned = True  # already warned in this process: no warning now
    async with oh.OpenHandsClient(cloud.api_key, base_url=cloud.base_url) as core:
        v0 = legacy.LegacyClient(client=core)
        created = await v0.create_conversation("hello")
        await v0.aclose()  # borrowed: stays open

        async def visible() -> oh.Conversation:
            while True:
                (found,) = await core.conversations.get_many([created.conversation_id])
                if found is not None:
                    return found
                await asyncio.sleep(0.01)

        assert (await asyncio.wait_for(visible(), 10)).id == created.conversation_id
    with pytest.raises(TypeError):
        legacy.LegacyClient("k", client=core)


async def test_create_get_search_stop_start_events(
    v0: legacy.LegacyClient, cloud: FakeCloud
) -> None:
    created = await v0.create_conversation("Fix the README", repository="o/r")
    assert created.status == "ok"
    assert cloud.requests["legacy_create"] == 1
    cid = created.conversation_id

    async def running() -> legacy.LegacyConversation:
        while True:
            try:
                info = await v0.get_conversation(cid)
            except oh.NotFoundError:  # not visible until its sandbox exists
                info = None
            if info is not None and info.status == "RUNNING":
                return info
            await asyncio.sleep(0.01)

    info = await asyncio.wait_for(running(), 10)
    assert info.selected_repository == "o/r"
    assert info.created_at is not None

    stopped = await v0.stop_conversation(cid)
    assert stopped.conversation_status == "STOPPED"
    assert (await v0.get_conversation(cid)).status == "STOPPED"
    started = await v0.start_conversation(cid)
    assert started.conversation_status == "RUNNING"

    page = await v0.get_events(cid, limit=1)
    assert page["events"][0]["message"] == "Fix the README"
    assert page["events"][0]["source"] == "user"

    cloud.seed_conversations(4, started_ago=60)
    ids = [c.conversation_id async for c in v0.search_conversations(page_size=2)]
    assert len(ids) == 5
    assert cid in ids
    assert cloud.requests["legacy_search"] == 3
    assert len([c async for c in v0.search_conversations(limit=3)]) == 3

    assert await v0.delete_conversation(cid) is True
    with pytest.raises(oh.NotFoundError):
        await v0.get_conversation(cid)


async def test_errors_and_retries_come_from_the_core(
    v0: legacy.LegacyClient, cloud: FakeCloud
) -> None:
    cloud.add_fault(Fault(route="legacy_search", status=503, times=1))
    assert [c async for c in v0.search_conversations()] == []
    assert cloud.requests["legacy_search"] == 2  # retried once, by the shared retry policy
    with pytest.raises(oh.NotFoundError):
        await v0.stop_conversation(uuid.uuid4().hex)
    with pytest.raises(ValueError, match="non-empty"):
        await v0.get_conversation("a/b")

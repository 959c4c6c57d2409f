"""`client.with_options(timeout=..., max_retries=...)`: a cheap copy sharing the session;
closing the copy leaves the session (and the original) working. Over loopback."""

from __future__ import annotations

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault


async def test_the_copy_has_its_options_and_the_original_keeps_its_own(cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        quick = client.with_options(timeout=2.5, max_retries=0)
        assert isinstance(quick, oh.OpenHandsClient)
        assert quick.timeouts.total == 2.5
        assert quick.timeouts.connect == client.timeouts.connect  # the rest kept
        assert quick.retry_policy.max_retries == 0
        assert client.timeouts.total != 2.5
        assert client.retry_policy.max_retries == oh.RetryPolicy().max_retries
        same = client.with_options()
        assert same.timeouts == client.timeouts
        assert same.retry_policy == client.retry_policy
        custom = client.with_options(timeout=oh.Timeouts(total=1.0, read=0.5))
        assert custom.timeouts == oh.Timeouts(total=1.0, read=0.5)


async def test_the_copy_shares_the_session_even_made_before_the_first_request(
    cloud: FakeCloud,
) -> None:
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        copy = client.with_options(max_retries=0)  # no session yet
        await copy.conversations.count()
        await client.conversations.count()
        assert client.session is not None
        assert copy.session is client.session


async def test_closing_the_copy_does_not_close_the_shared_session(cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        await client.conversations.count()
        async with client.with_options(timeout=5) as copy:
            await copy.conversations.count()
        assert client.session is not None
        assert not client.session.closed
        assert await client.conversations.count() == 0  # the original still works
    assert client.session is None or client.session.closed  # the original closes it


async def test_the_copys_resources_use_the_copys_options(cloud: FakeCloud) -> None:
    fast = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02)
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=fast
    ) as client:
        no_retries = client.with_options(max_retries=0)
        assert no_retries.conversations is not client.conversations
        cloud.add_fault(Fault(route="search_conversations", status=503, times=1))
        with pytest.raises(oh.ServiceUnavailableError):
            await _search(no_retries)
        cloud.add_fault(Fault(route="search_conversations", status=503, times=1))
        assert await _search(client) == []  # retried once, then answered


async def _search(client: oh.OpenHandsClient) -> list[oh.Conversation]:
    return [c async for c in client.conversations.search()]


async def test_a_short_timeout_on_the_copy_only(cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        cloud.add_fault(Fault(route="search_conversations", action="stall", times=1))
        with pytest.raises(oh.APITimeoutError):
            await _search(client.with_options(timeout=0.2, max_retries=0))
        assert await _search(client) == []


async def test_closing_the_original_stops_the_copy(cloud: FakeCloud) -> None:
    client = oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url)
    copy = client.with_options(max_retries=0)
    await copy.conversations.count()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await copy.conversations.count()

"""Every public method rejects bad arguments before sending anything."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud

CID = uuid.uuid4().hex
BAD: dict[str, Any] = {
    "start-empty": lambda c: c.conversations.start(""),
    "start-blank": lambda c: c.conversations.start("   "),
    "start-unknown-kw": lambda c: c.conversations.start("hi", colour="red"),
    "start-bad-secrets": lambda c: c.conversations.start("hi", secrets={"A": 1}),
    "stream_start-empty": lambda c: c.conversations.stream_start(""),
    "stream_start-unknown-kw": lambda c: c.conversations.stream_start("hi", colour="red"),
    "send_message-empty": lambda c: c.conversations.send_message(CID, ""),
    "send_message-bad-id": lambda c: c.conversations.send_message("not-an-id", "hi"),
    "get-bad-id": lambda c: c.conversations.get("../../etc"),
    "get_many-bad-id": lambda c: c.conversations.get_many(["nope"]),
    "get_many-not-str": lambda c: c.conversations.get_many([123]),
    "start_tasks.get-bad-id": lambda c: c.start_tasks.get("x/y"),
    "start_tasks.get_many-bad-id": lambda c: c.start_tasks.get_many(["x"]),
    "events.search-bad-id": lambda c: c.events.search("nope").to_list(),
    "events.count-bad-id": lambda c: c.events.count("nope"),
    "search-page_size-0": lambda c: c.conversations.search(page_size=0).to_list(),
    "search-page_size-101": lambda c: c.conversations.search(page_size=101).to_list(),
    "search-limit-str": lambda c: c.conversations.search(limit="5").to_list(),
    "search-limit-negative": lambda c: c.conversations.search(limit=-1).to_list(),
    "search-unknown-kw": lambda c: c.conversations.search(colour="red").to_list(),
    "start_tasks.search-page_size-0": lambda c: c.start_tasks.search(page_size=0).to_list(),
    "sandboxes.search-limit-negative": lambda c: c.sandboxes.search(limit=-1).to_list(),
    "sandboxes.pause-empty": lambda c: c.sandboxes.pause(""),
    "count-unknown-kw": lambda c: c.conversations.count(colour="red"),
}


async def _call(client: oh.OpenHandsClient, case: str) -> None:
    result = BAD[case](client)
    if hasattr(result, "__aiter__"):
        async for _ in result:
            pass
    else:
        await result


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_arguments_fail_before_any_request(case: str) -> None:
    async with (
        FakeCloud() as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        with pytest.raises((ValueError, TypeError)):
            await _call(client, case)
        assert sum(cloud.requests.values()) == 0


async def test_limit_zero_is_empty_without_a_request() -> None:
    async with (
        FakeCloud() as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        assert await client.conversations.search(limit=0).to_list() == []
        assert sum(cloud.requests.values()) == 0

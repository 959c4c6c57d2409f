"""FakeCloud names a conversation started without a title after its first message (as
OpenHands Cloud does), so `search(title_contains=...)` and `list --title` find it."""

from __future__ import annotations

import asyncio

import openhands_async as oh
from openhands_async.testing import FakeCloud

from .test_cli import auth, lines, run


async def titles_once(client: oh.OpenHandsClient, n: int, **filters: str) -> list[str | None]:
    """The titles of the conversations, once `n` of them exist (their starts take a moment)."""
    for _ in range(400):
        titles = [c.title async for c in client.conversations.search(**filters)]
        if len(titles) >= n:
            return titles
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} conversations")


async def test_a_conversation_without_a_title_is_named_after_its_message(
    client: oh.OpenHandsClient,
) -> None:
    await client.conversations.start("Fix the README typos [fake:run_seconds=0.1]")
    await client.conversations.start("Given title wins", title="My own title")
    await client.conversations.start("  \n  Second line is not the title  \nmore text")
    await client.conversations.start("x" * 80)
    titles = await titles_once(client, 4)
    assert sorted(titles, key=str) == sorted(
        [
            "Fix the README typos",
            "My own title",
            "Second line is not the title",
            "x" * 47 + "...",
        ],
        key=str,
    )
    found = await titles_once(client, 1, title_contains="readme")
    assert found == ["Fix the README typos"]


async def test_no_text_falls_back_to_the_id(cloud: FakeCloud) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {cloud.api_key}"}
    url = f"{cloud.base_url}/api/v1/app-conversations"
    async with aiohttp.ClientSession(headers=headers) as http, http.post(url, json={}) as r:
        assert r.status == 200, await r.text()
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        (title,) = await titles_once(client, 1)
        (conv,) = [c async for c in client.conversations.search()]
    assert title == f"Conversation {conv.id[:5]}"


async def test_list_title_finds_a_conversation_by_its_message(cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        await client.conversations.start("Fix the README")
        await client.conversations.start("Add a test")
        await titles_once(client, 2)
    code, out, err = await run("list", "--title", "readme", *auth(cloud))
    assert code == 0, err
    assert [o["title"] for o in lines(out)] == ["Fix the README"]

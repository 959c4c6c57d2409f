"""events.follow against the real server's agent server WebSocket (issue 16).

One conversation (one sandbox, ~15 s) is started and followed live to the end by the
`followed` fixture; the tests then compare with what `events.search` stores, follow again
from a midpoint, and follow once more through a `BreakingProxy` that cuts the socket after
a few frames. Full-state snapshots are per subscriber (the app server's webhook gets its
own, with other ids), so they are left out of every comparison.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import attrs
import pytest
import pytest_asyncio

import openhands_async as oh

from ._proxy import Break, BreakingProxy
from .conftest import FINISHED_BOUND, NOTES, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


@attrs.define
class Followed:
    cid: str
    events: list[oh.Event]
    transport: str | None
    snapshot: oh.Event | None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def followed(client: oh.OpenHandsClient) -> AsyncIterator[Followed]:
    cid = await oh.wait_until_ready(client, "Say hello, then finish.")
    async with client.events.follow(cid, transport="websocket") as stream:
        events = [event async for event in stream]
    NOTES.append(f"follow: {len(events)} events live over {stream.transport}")
    yield Followed(cid, events, stream.transport, stream.snapshot)


async def stored(client: oh.OpenHandsClient, cid: str) -> list[oh.Event]:
    return [e async for e in client.events.search(cid) if not e.is_snapshot]


async def test_follow_a_started_conversation_to_the_end(
    client: oh.OpenHandsClient, followed: Followed
) -> None:
    assert followed.transport == "websocket"
    assert followed.snapshot is not None
    ids = [e.id for e in followed.events]
    assert len(ids) == len(set(ids))
    assert followed.events[-1].is_terminal
    assert followed.events[-1].execution_status == oh.ExecutionStatus.FINISHED

    # Once the agent is done, everything the app server stores was seen live (its store is
    # fed by buffered webhooks, so wait until it has caught up with the end).
    async def caught_up() -> list[oh.Event] | None:
        events = await stored(client, followed.cid)
        return events if events and events[-1].is_terminal else None

    search = await wait_for("events/search to reach the end", caught_up, bound=FINISHED_BOUND)
    missed = [(e.kind, e.payload.get("key"), e.id) for e in search if e.id not in set(ids)]
    assert not missed, f"stored but never seen live: {missed}"


async def test_since_a_midpoint_repeats_nothing_before_it(
    client: oh.OpenHandsClient, followed: Followed
) -> None:
    middle = len(followed.events) // 2
    pivot = followed.events[middle]
    async with client.events.follow(followed.cid, since=pivot.payload["timestamp"]) as stream:
        again = [e.id async for e in stream]
    before = {e.id for e in followed.events[:middle] if e.timestamp < pivot.timestamp}
    assert not before & set(again)
    assert again == [e.id for e in followed.events[middle:]]


async def follow_through(
    client: oh.OpenHandsClient,
    cid: str,
    rule: Break,
    monkeypatch: pytest.MonkeyPatch,
    **follow: float,
) -> tuple[list[str], oh.EventStream, BreakingProxy]:
    """Follow `cid` with its agent server behind a `BreakingProxy` applying `rule`."""
    conv = await client.conversations.get(cid)
    assert conv.conversation_url is not None
    agent = urlsplit(conv.conversation_url)
    assert agent.port is not None
    async with BreakingProxy(agent.port, rule) as proxy:
        read = client.conversations.get

        async def through_proxy(conversation_id: str) -> oh.Conversation:
            found = await read(conversation_id)
            url = (found.conversation_url or "").replace(f":{agent.port}/", f":{proxy.port}/")
            return attrs.evolve(found, conversation_url=url)

        monkeypatch.setattr(client.conversations, "get", through_proxy)
        async with client.events.follow(cid, **follow) as stream:  # type: ignore[arg-type]
            seen = [e.id async for e in stream]
    return seen, stream, proxy


async def test_a_cut_socket_reconnects_with_no_gap(
    client: oh.OpenHandsClient, followed: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cut the first socket's answer after the snapshot and two replayed events.
    cut = Break(b"GET /sockets/events/", "cut", marker=b'"kind":', occurrence=3)
    seen, stream, proxy = await follow_through(client, followed.cid, cut, monkeypatch)
    assert cut.broken == 1
    assert stream.reconnects >= 1
    assert proxy.count(b"GET /sockets/events/") >= 2
    assert seen == [e.id for e in followed.events]


async def test_a_stalled_socket_is_given_up_and_followed_again_with_no_gap(
    client: oh.OpenHandsClient, followed: Followed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy passes the snapshot and two replayed events, then nothing more (pongs
    # included) while holding the connection open: the heartbeat notices, follow reconnects.
    stall = Break(b"GET /sockets/events/", "stall", marker=b'"kind":', occurrence=3)
    seen, stream, proxy = await follow_through(
        client, followed.cid, stall, monkeypatch, heartbeat=2.0
    )
    assert stall.broken == 1
    assert stream.reconnects >= 1
    assert proxy.count(b"GET /sockets/events/") >= 2
    assert seen == [e.id for e in followed.events]

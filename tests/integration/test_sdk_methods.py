"""The SDK's newer methods against the real server: health, events, sandboxes,
send_message, the poller and stream_start.

Runs after test_errors.py (which pauses and resumes A's sandbox), in file order:
health and reads first, then send_message (A runs again), then the poller, then
stream_start (a new conversation E in A's sandbox, last: it adds to A's sandbox).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

import openhands_async as oh

from .conftest import NOTES, Fleet, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_health_on_both_servers(
    client: oh.OpenHandsClient,
    keyed_base_url: str,
    http_session: aiohttp.ClientSession,
) -> None:
    assert await client.health() is True
    assert await client.health(ready=True) is True
    # The keyed server's probes need no key: a client without one is healthy too ...
    async with oh.OpenHandsClient(base_url=keyed_base_url, session=http_session) as bare:
        assert await bare.health(ready=True) is True
        # ... while its API refuses the same client.
        with pytest.raises(oh.AuthenticationError):
            await bare.conversations.count()
    # Nothing listening: a connection error, not False.
    async with oh.OpenHandsClient(base_url="http://127.0.0.1:9", session=http_session) as dead:
        with pytest.raises(oh.APIConnectionError):
            await dead.health()


async def test_events_search_count_and_last_agent_message(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    # Read count, list, count until the two counts agree: the server may still append a
    # state-update event after the sandbox was paused and resumed by an earlier test.
    for _ in range(5):
        counted = await client.events.count(fleet.a)
        events = await client.events.search(fleet.a).to_list()
        counted_after = await client.events.count(fleet.a)
        if counted == counted_after:
            break
        await asyncio.sleep(1)
    assert events, "a finished conversation has no events"
    NOTES.append(
        f"A's events: count {counted} / search {len(events)} / count {counted_after}: "
        + ", ".join(f"{e.kind}({e.source})" for e in events)
    )
    assert counted == len(events) == counted_after
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    assert all(e.timestamp.tzinfo is not None for e in events)
    newest_first = await client.events.search(fleet.a, order="TIMESTAMP_DESC").to_list()
    assert sorted(e.id for e in newest_first) == sorted(e.id for e in events)
    assert [e.timestamp for e in newest_first] == sorted(stamps, reverse=True)
    kinds = {e.kind for e in events}
    assert "MessageEvent" in kinds, kinds
    messages = await client.events.search(fleet.a, kind="MessageEvent").to_list()
    assert {e.kind for e in messages} == {"MessageEvent"}
    assert await client.events.count(fleet.a, kind="MessageEvent") == len(messages)
    # `kind` is an enum on the server: an unknown kind is a 422, not an empty result.
    with pytest.raises(oh.UnprocessableEntityError) as info:
        await client.events.count(fleet.a, kind="NoSuchEvent")
    assert info.value.errors[0]["loc"] == ["query", "kind__eq"]
    assert await client.events.count(fleet.a, kind="PauseEvent") == 0
    # The user's first message is there, with its text.
    user = [e for e in messages if e.source == "user"]
    assert user
    assert user[0].text == "Say hello (A)."
    assert user[0].role == "user"
    # Paging walks the same list.
    paged = await client.events.search(fleet.a, page_size=2).to_list()
    assert [e.id for e in paged] == [e.id for e in events]
    assert len(await client.events.search(fleet.a, limit=3, page_size=2).to_list()) == 3
    # since/until split the list at an event's timestamp.
    pivot = events[len(events) // 2].timestamp
    before = await client.events.count(fleet.a, until=pivot)
    after = await client.events.count(fleet.a, since=pivot)
    assert before + after == len(events)
    assert before >= 1
    # get_many: by id, order kept, None where missing.
    # (Event ids are UUIDs here: a non-UUID id makes openhands-ai 1.11.0 answer 500.)
    unknown = str(uuid.uuid4())
    got = await client.events.get_many(fleet.a, [events[0].id, unknown, events[-1].id])
    assert [e.id if e else None for e in got] == [events[0].id, None, events[-1].id]
    last = await client.events.last_agent_message(fleet.a)
    actions = [e for e in events if e.kind == "ActionEvent"]
    NOTES.append(
        f"A's last_agent_message {last!r}; its ActionEvent payloads: "
        + "; ".join(repr(e.payload.get("action"))[:300] for e in actions)
    )
    # The fake LLM answers with a `finish` tool call: the server records it as an agent
    # ActionEvent (then an ObservationEvent), never as an agent MessageEvent: the SDK's
    # last_agent_message reads the FinishAction's message.
    assert [e.source for e in actions] == ["agent"]
    finish = actions[0].payload["action"]
    assert finish["kind"] == "FinishAction"
    assert finish["message"] == "Hello from the fake LLM. Done."
    assert not [e for e in messages if e.source == "agent"]
    assert last == "Hello from the fake LLM. Done."
    assert actions[0].text == last
    # An unknown conversation is not a 404 for the events routes: it simply has no events.
    assert await client.events.count(uuid.uuid4().hex) == 0


async def test_sandboxes_search_get_many_pause_resume(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    boxes = await client.sandboxes.search().to_list()
    assert fleet.a in {s.id for s in boxes}
    got = await client.sandboxes.get_many([fleet.a, "nope"])
    assert got[1] is None
    assert got[0] is not None
    assert got[0].id == fleet.a
    assert got[0].status is oh.SandboxStatus.RUNNING
    assert got[0].exposed_urls
    assert (await client.sandboxes.get(fleet.a)).id == fleet.a
    with pytest.raises(oh.NotFoundError):
        await client.sandboxes.get("nope")
    with pytest.raises(oh.NotFoundError):
        await client.sandboxes.pause("nope")

    await client.sandboxes.pause(fleet.a)
    try:
        assert (await client.sandboxes.get(fleet.a)).status is oh.SandboxStatus.PAUSED
        with pytest.raises(oh.ConflictError) as info:
            await client.conversations.send_message(fleet.c, "while paused")
        assert info.value.status == 409
        assert "resume" in str(info.value)
    finally:
        await client.sandboxes.resume(fleet.a)

    async def running_again() -> bool | None:
        conv = await client.conversations.get(fleet.c)
        ok = conv.sandbox_status is oh.SandboxStatus.RUNNING and conv.execution_status
        return True if ok else None

    await wait_for("the sandbox to run again", running_again, bound=30)
    assert (await client.sandboxes.get(fleet.a)).status is oh.SandboxStatus.RUNNING


async def test_send_message_runs_the_agent_again(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    with pytest.raises(oh.NotFoundError):
        await client.conversations.send_message(uuid.uuid4().hex, "anyone?")
    before = await client.events.count(fleet.b)
    users_before = await client.events.count(fleet.b, kind="MessageEvent")
    result = await client.conversations.send_message(fleet.b, "Say hello again (B).")
    assert result.success is True
    NOTES.append(f"send_message answered {result!r}")

    async def answered() -> int | None:
        conv = await client.conversations.get(fleet.b)
        n = await client.events.count(fleet.b)
        return n if n > before + 1 and conv.is_terminal else None

    after = await wait_for("B to answer again", answered, bound=60)
    assert after > before + 1
    assert await client.events.count(fleet.b, kind="MessageEvent") > users_before
    texts = [
        e.text
        async for e in client.events.search(fleet.b, kind="MessageEvent")
        if e.source == "user"
    ]
    assert texts[-1] == "Say hello again (B).", texts
    conv = await client.conversations.get(fleet.b)
    assert conv.execution_status is oh.ExecutionStatus.FINISHED


async def test_poller_follows_the_fleet_to_finished(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    """Track A-D by start task: READY hands over to the conversation, then `finished`."""
    # Make one of them run again so the poller sees a live conversation, not only done ones.
    await client.conversations.send_message(fleet.d, "Once more (D).")
    poller = client.poller(0.4)
    async with poller:
        ids = poller.track_start_tasks([fleet.ready[cid].id for cid in fleet.ids])
        assert len(ids) == 4
        stream = poller.changes()  # subscribed before the first read (no await since track)
        seen: list[oh.StatusChange] = []

        async def collect() -> None:
            async for change in stream:
                seen.append(change)

        collector = asyncio.create_task(collect())
        final = await asyncio.wait_for(poller.wait(), 60)
        await asyncio.wait_for(collector, 5)
    stats = poller.stats
    convs = {k: v for k, v in final.items() if isinstance(v, oh.Conversation)}
    assert set(convs) == set(fleet.ids), final
    assert all(c.execution_status is oh.ExecutionStatus.FINISHED for c in convs.values())
    ends = {c.id: c.new for c in seen if c.terminal and c.kind == "conversation"}
    assert ends == {cid: "RUNNING/finished" for cid in fleet.ids}, seen
    # Each cycle sends ceil(due start tasks / 99) + ceil(due conversations / 99) requests:
    # with 4 items that is at most 2 per cycle, and the first cycle reads all 4 tasks at once.
    assert stats.reads >= 8
    assert stats.requests <= 2 * stats.cycles
    assert stats.requests < stats.reads, "items were not batched"
    assert stats.failed_requests == 0
    NOTES.append(f"poller: {stats}")


async def test_stream_start_yields_each_status_as_written(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    """A new conversation E in A's sandbox (a new sandbox could collide on a port).

    Even in a running sandbox, openhands-ai 1.11.0 walks the task through every status
    (WORKING, WAITING_FOR_SANDBOX, ... STARTING_CONVERSATION, READY: 8 elements over ~2-4 s
    on a 2-core machine). Asserted, as reliable: at least 3 elements, WORKING first,
    STARTING_CONVERSATION right before READY (last), no ERROR, each status once, and the
    elements spread over the start (the first well before the last), which a buffered
    read of the whole body could not show.
    """
    e = uuid.uuid4().hex
    t0 = time.monotonic()
    arrivals: list[tuple[float, oh.StartTask]] = []
    async with client.conversations.stream_start(
        "Say hello (E).", conversation_id=e, sandbox_id=fleet.a
    ) as stream:
        async for task in stream:
            arrivals.append((time.monotonic() - t0, task))
    statuses = [t.status.value for _, t in arrivals]
    NOTES.append(
        "stream_start E: " + ", ".join(f"{task.status.value}@{t:.2f}s" for t, task in arrivals)
    )
    assert len(arrivals) >= 3, statuses
    assert statuses[0] == "WORKING"
    assert statuses[-2:] == ["STARTING_CONVERSATION", "READY"]
    assert "ERROR" not in statuses
    assert len({t.id for _, t in arrivals}) == 1
    assert arrivals[-1][1].app_conversation_id == e
    assert arrivals[-1][1].sandbox_id == fleet.a
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= 0.5, f"all statuses arrived together: {statuses} at {arrivals}"
    assert first < 0.5 * last
    # Each status appears once, in the order the server writes them.
    assert len(statuses) == len(set(statuses))
    task = await client.start_tasks.get(arrivals[-1][1].id)
    assert task.status is oh.StartTaskStatus.READY

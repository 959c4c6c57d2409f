"""events.follow against FakeCloud's agent-server WebSocket (issue 16)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.lib.follow import agent_socket_url
from openhands_async.lib.helpers import wait_until_ready
from openhands_async.testing import AgentServerBehavior, FakeCloud

from .conftest import eventually

# A run long enough to be followed live: ten steps (20 events) over ~0.4 s at time_scale 0.2.
LIVE = "Fix the bug [fake:steps=10,run_seconds=2]"


@pytest.fixture
async def fast(cloud: FakeCloud) -> AsyncIterator[oh.OpenHandsClient]:
    policy = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=policy
    ) as c:
        yield c


def follow(client: oh.OpenHandsClient, cid: str, **kw: Any) -> Any:
    kw.setdefault("poll_interval", 0.02)
    kw.setdefault("settle", 0.2)
    return client.events.follow(cid, **kw)


async def ids_of(stream: Any) -> list[str]:
    return [event.id async for event in stream]


async def stored_ids(client: oh.OpenHandsClient, cid: str) -> list[str]:
    """Every event the app server lists once the run is over, snapshots aside."""
    return [e.id async for e in client.events.search(cid) if not e.is_snapshot]


async def test_every_event_once_in_order_with_conveniences(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cid = await wait_until_ready(fast, LIVE)
    events = [e async for e in follow(fast, cid)]
    assert [e.id for e in events] == await stored_ids(fast, cid)
    assert len({e.id for e in events}) == len(events)
    assert events[-1].execution_status == oh.ExecutionStatus.FINISHED
    assert events[-1].is_terminal
    actions = [e for e in events if e.kind == "ActionEvent"]
    observations = [e for e in events if e.kind == "ObservationEvent"]
    assert len(actions) == len(observations) == 10
    assert actions[0].command == "ls -la"
    assert observations[0].output == "total 0\n"
    assert events[0].text == LIVE
    assert events[0].role == "user"
    assert any(e.text == f"Done: {LIVE}" for e in events)
    assert cloud.agent_sockets.opened == 1
    assert cloud.agent_sockets.queries == ["resend_mode=all"]


async def test_since_replays_from_that_point(fast: oh.OpenHandsClient) -> None:
    cid = await wait_until_ready(fast, LIVE)
    everything = [e async for e in follow(fast, cid)]
    middle = everything[len(everything) // 2]
    later = await ids_of(follow(fast, cid, since=middle.timestamp))
    assert later == [e.id for e in everything[len(everything) // 2 :]]
    # The server's own timestamp text works too.
    assert await ids_of(follow(fast, cid, since=middle.payload["timestamp"])) == later


async def test_drop_reconnects_without_gap_or_duplicate(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cloud.agent_server = AgentServerBehavior(drop_after=4, drops=2)
    cid = await wait_until_ready(fast, LIVE)
    async with follow(fast, cid) as stream:
        seen = await ids_of(stream)
    assert seen == await stored_ids(fast, cid)
    assert stream.reconnects == 2
    assert cloud.agent_sockets.dropped == 2
    first, *again = cloud.agent_sockets.queries
    assert first == "resend_mode=all"
    assert all(q.startswith("resend_mode=since&after_timestamp=") for q in again)


async def test_stalled_socket_is_noticed_by_heartbeat(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cloud.agent_server = AgentServerBehavior(stall_after=3)
    cid = await wait_until_ready(fast, LIVE)
    async with follow(fast, cid, heartbeat=0.2) as stream:
        seen = await ids_of(stream)
    assert seen == await stored_ids(fast, cid)
    assert cloud.agent_sockets.stalled == 1
    assert stream.reconnects >= 1


async def test_4001_rereads_for_a_fresh_key(cloud: FakeCloud, fast: oh.OpenHandsClient) -> None:
    cloud.agent_server = AgentServerBehavior(refuse_auth=1)
    cid = await wait_until_ready(fast, LIVE)
    seen = await ids_of(follow(fast, cid))
    assert seen == await stored_ids(fast, cid)
    assert cloud.agent_sockets.refused == 1
    assert cloud.agent_sockets.opened == 2


async def test_a_conversation_just_read_is_followed_without_reading_it_again(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cid = await wait_until_ready(fast, LIVE)
    conversation = await fast.conversations.get(cid)
    reads = cloud.requests["get_conversations"]
    stream = follow(fast, conversation)
    assert stream.conversation_id == cid.replace("-", "")
    assert await ids_of(stream) == await stored_ids(fast, cid)
    assert cloud.requests["get_conversations"] == reads  # its URL and key were in hand
    # A key that went stale since: 4001, then one read for a fresh key, as ever.
    cloud.agent_server = AgentServerBehavior(refuse_auth=1)
    assert await ids_of(follow(fast, conversation)) == await stored_ids(fast, cid)
    assert cloud.requests["get_conversations"] == reads + 1
    assert cloud.agent_sockets.refused == 1


async def test_a_conversation_model_without_a_running_sandbox_is_read_first(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    # Read while its sandbox was starting (no agent server URL or key yet): read again.
    cid = await wait_until_ready(fast, LIVE)
    starting = structure({"id": cid, "sandbox_status": "STARTING"}, oh.Conversation)
    reads = cloud.requests["get_conversations"]
    assert await ids_of(follow(fast, starting)) == await stored_ids(fast, cid)
    assert cloud.requests["get_conversations"] == reads + 1


async def test_4001_twice_is_an_authentication_error(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cloud.agent_server = AgentServerBehavior(refuse_auth=2)
    cid = await wait_until_ready(fast, LIVE)
    with pytest.raises(oh.AuthenticationError, match="4001"):
        await ids_of(follow(fast, cid))
    assert cloud.agent_sockets.opened == 2


async def test_4004_is_not_found(
    cloud: FakeCloud, fast: oh.OpenHandsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await wait_until_ready(fast, LIVE)
    read = fast.conversations.get

    async def read_then_lose(conversation_id: str) -> oh.Conversation:
        conv = await read(conversation_id)
        # The agent server lost the conversation (its sandbox and key live on).
        cloud._store.conversations.pop(conv.id)
        return conv

    monkeypatch.setattr(fast.conversations, "get", read_then_lose)
    with pytest.raises(oh.NotFoundError, match="4004"):
        await ids_of(follow(fast, cid))


async def test_paused_sandbox_raises_or_resumes(cloud: FakeCloud, fast: oh.OpenHandsClient) -> None:
    cid = await wait_until_ready(fast, "Long job [fake:run_seconds=1]")
    conv = await fast.conversations.get(cid)
    assert conv.sandbox_id is not None
    await fast.sandboxes.pause(conv.sandbox_id)
    with pytest.raises(oh.ConversationPaused, match="resume=True") as caught:
        await ids_of(follow(fast, cid))
    assert caught.value.sandbox_status == "PAUSED"
    assert cloud.agent_sockets.opened == 0  # never connected: no key while paused
    seen = await ids_of(follow(fast, cid, resume=True))
    assert cloud.requests["resume_sandbox"] == 1
    assert seen == await stored_ids(fast, cid)


async def test_pause_mid_follow_is_reported(cloud: FakeCloud, fast: oh.OpenHandsClient) -> None:
    cid = await wait_until_ready(fast, "Slow [fake:steps=5,run_seconds=50]")
    conv = await fast.conversations.get(cid)
    assert conv.sandbox_id is not None
    seen: list[oh.Event] = []
    sandbox_id = conv.sandbox_id

    async def pause_at_first_action() -> None:
        async for event in follow(fast, cid):
            seen.append(event)
            if event.kind == "ActionEvent":
                await fast.sandboxes.pause(sandbox_id)

    with pytest.raises(oh.ConversationPaused):
        await pause_at_first_action()
    assert seen
    assert cloud.agent_sockets.open_total == 0


async def test_unreachable_agent_server_falls_back_to_polling(
    cloud: FakeCloud, fast: oh.OpenHandsClient, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.agent_server = AgentServerBehavior(unreachable=True)
    cid = await wait_until_ready(fast, LIVE)
    with caplog.at_level(logging.WARNING, logger="openhands_async"):
        async with follow(fast, cid) as stream:
            seen = await ids_of(stream)
    assert stream.transport == "poll"
    assert seen == await stored_ids(fast, cid)
    assert any("following by polling events/search" in r.getMessage() for r in caplog.records)
    assert cloud.agent_sockets.opened == 0
    with pytest.raises(oh.APIConnectionError):
        await ids_of(follow(fast, cid, transport="websocket", max_reconnects=1))


async def test_poll_transport_only_polls(cloud: FakeCloud, fast: oh.OpenHandsClient) -> None:
    cid = await wait_until_ready(fast, LIVE)
    async with follow(fast, cid, transport="poll") as stream:
        seen = await ids_of(stream)
    assert stream.transport == "poll"
    assert cloud.agent_sockets.opened == 0
    assert seen == await stored_ids(fast, cid)


async def test_cancellation_and_break_close_the_socket(
    cloud: FakeCloud, fast: oh.OpenHandsClient
) -> None:
    cid = await wait_until_ready(fast, "Endless [fake:run_seconds=inf]")
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in follow(fast, cid, until_done=False):
            got.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(got.wait(), 10)
    assert cloud.agent_sockets.open_total == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: cloud.agent_sockets.open_total == 0)
    # No task of the SDK outlives the follow.
    leftovers = [t for t in asyncio.all_tasks() if "openhands_async/lib" in repr(t.get_coro())]
    assert leftovers == []

    async for _ in follow(fast, cid, until_done=False):
        break
    await eventually(lambda: cloud.agent_sockets.open_total == 0)
    assert cloud.agent_sockets.opened == 2


async def test_a_finished_run_ends_after_its_replay(fast: oh.OpenHandsClient) -> None:
    cid = await wait_until_ready(fast, LIVE)
    everything = await ids_of(follow(fast, cid))
    # Followed again once over: the replay ends at the terminal state update.
    assert await ids_of(follow(fast, cid)) == everything
    # With `since` past the end there is nothing; a quiet socket after a terminal
    # snapshot ends it.
    events = [e async for e in follow(fast, cid)]
    last = events[-1]
    # `since` is inclusive: the last event and any that share its timestamp (the fake's
    # timeline can put two events at one instant).
    tail = [e.id for e in events if e.timestamp >= last.timestamp]
    assert tail[-1] == last.id
    assert await ids_of(follow(fast, cid, since=last.timestamp)) == tail


async def test_keys_stay_where_they_belong(
    cloud: FakeCloud, fast: oh.OpenHandsClient, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.agent_server = AgentServerBehavior(drop_after=3, refuse_auth=1)
    cid = await wait_until_ready(fast, LIVE)
    with caplog.at_level(logging.DEBUG):
        await ids_of(follow(fast, cid))
    conv = cloud._store.conversations[cid]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert conv.session_api_key not in logged
    assert "session_api_key=" not in logged
    assert cloud.api_key is not None
    assert cloud.api_key not in logged
    assert all("key" not in q for q in cloud.agent_sockets.queries)
    # No Authorization / X-Session-API-Key header ever reached an agent server.
    assert cloud.agent_sockets.opened >= 3
    assert cloud.agent_sockets.credential_headers == 0


def test_agent_socket_url_rules() -> None:
    def conv(url: str) -> oh.Conversation:
        return oh.Conversation(id="ab" * 16, conversation_url=url)

    cid = "ab" * 16
    https = conv(f"https://rt.example.com/api/conversations/{cid}")
    assert (
        agent_socket_url(https, allow_insecure_http=False)
        == f"wss://rt.example.com/sockets/events/{cid}"
    )
    local = conv(f"http://localhost:8101/api/conversations/{cid}")
    assert agent_socket_url(local, allow_insecure_http=False).startswith("ws://localhost:8101/")
    remote = conv(f"http://rt.example.com/api/conversations/{cid}")
    with pytest.raises(ValueError, match="allow_insecure_http"):
        agent_socket_url(remote, allow_insecure_http=False)
    assert agent_socket_url(remote, allow_insecure_http=True).startswith("ws://rt.example.com")


def test_follow_checks_its_arguments() -> None:
    client = oh.OpenHandsClient(api_key="k", base_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="transport"):
        client.events.follow("ab" * 16, transport="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="UUID"):
        client.events.follow("nope")


def test_event_conveniences_on_real_shapes() -> None:
    snapshot = oh.Event(
        id="s",
        kind="ConversationStateUpdateEvent",
        timestamp=datetime.now(timezone.utc),
        payload={"key": "full_state", "value": {"execution_status": "stuck"}},
    )
    assert snapshot.is_snapshot
    assert snapshot.execution_status == "stuck"
    assert snapshot.is_terminal
    odd = oh.Event(
        id="o",
        kind="ConversationStateUpdateEvent",
        timestamp=snapshot.timestamp,
        payload={"key": "execution_status", "value": "brand_new"},
    )
    assert odd.execution_status is not None
    assert not odd.execution_status.known
    assert not odd.is_terminal
    edit = oh.Event(
        id="e",
        kind="ActionEvent",
        timestamp=snapshot.timestamp,
        payload={"action": {"kind": "FileEditorAction", "command": "create", "path": "/a.py"}},
    )
    assert edit.path == "/a.py"
    assert edit.output is None
    assert edit.execution_status is None
    error = oh.Event(
        id="x", kind="AgentErrorEvent", timestamp=snapshot.timestamp, payload={"error": "boom"}
    )
    assert error.output == "boom"


def test_event_gist_of_each_real_event_says_what_it_is_about() -> None:
    # The events the real server recorded (a finish, its observation, state updates, the
    # system prompt, the user's message): one short line each, the gist rather than JSON.
    from openhands_async._converter import structure
    from openhands_async.lib.follow import event_gist

    from .captures import body

    events = [structure(e, oh.Event) for e in body("events_search_nonstream_after35s.txt")["items"]]
    gists = {(e.kind, e.payload.get("key")): event_gist(e) for e in events}
    assert gists[("ActionEvent", None)] == "FinishAction: Hello from the fake LLM. Done."
    assert gists[("ObservationEvent", None)].startswith("Hello from the fake LLM")
    message = next(e for e in events if e.kind == "MessageEvent")
    assert gists[("MessageEvent", None)] == " ".join((message.text or "-").split())
    assert gists[("SystemPromptEvent", None)] == "system prompt"
    assert gists[("ConversationStateUpdateEvent", "execution_status")] == "status -> finished"
    assert gists[("ConversationStateUpdateEvent", "stats")] == "stats updated"
    assert all(g and "{'" not in g and '{"' not in g for g in gists.values()), gists
    assert all(len(event_gist(e, width=20)) <= 20 for e in events)


async def test_a_runs_events_have_distinct_timestamps() -> None:
    # `since` is inclusive, so two events with one timestamp replay each other: every event
    # of a run must go out with a timestamp of its own (FakeCloud makes some 10 us apart).
    async with FakeCloud() as cloud:
        # Runs begun at 40 sub-microsecond phases: a timestamp is a rounded float sum, so
        # whether two close events round together depends on where in a microsecond they lie.
        ids = [
            cid
            for i in range(40)
            for cid in cloud.seed_conversations(1, message="work", started_ago=3600 + i * 3.3e-7)
        ]
        async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
            for cid in ids:
                stamps = [e.payload["timestamp"] async for e in client.events.search(cid)]
                assert len(stamps) >= 4
                assert len(set(stamps)) == len(stamps), stamps

"""Start, read, search and count against the real server (the shared `fleet` conversations)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

import openhands_async as oh

from ._drift import RECORDER
from .conftest import Fleet, same_uuid

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _missing() -> str:
    return uuid.uuid4().hex


async def test_start_returns_a_task_still_working(fleet: Fleet) -> None:
    task = fleet.a_task
    assert len(task.id) == 32
    assert int(task.id, 16) >= 0
    assert not task.is_terminal, task.status
    assert task.app_conversation_id is None
    assert task.request is not None
    assert same_uuid(task.request.conversation_id, fleet.a)
    assert task.request.initial_message is not None
    assert task.request.initial_message.text == "Say hello (A)."
    assert task.created_at is not None
    assert task.created_at.tzinfo is not None
    assert task.created_at >= fleet.began - timedelta(seconds=5)


async def test_start_task_goes_to_ready(fleet: Fleet) -> None:
    ready = fleet.ready[fleet.a]
    assert ready.id == fleet.a_task.id
    assert ready.status is oh.StartTaskStatus.READY
    assert ready.app_conversation_id == fleet.a
    # On the open-source server a conversation started with a chosen id gets a sandbox of that id.
    assert ready.sandbox_id == fleet.a
    assert ready.agent_server_url
    assert ready.agent_server_url.startswith("http://")
    seen = fleet.statuses[fleet.a]
    assert seen[-1] == "READY"
    assert "ERROR" not in seen
    assert len(seen) >= 2, f"only {seen} seen: the start was never observed in progress"
    # B, C and D ran in A's sandbox.
    for cid in (fleet.b, fleet.c, fleet.d):
        assert fleet.ready[cid].app_conversation_id == cid
        assert fleet.ready[cid].sandbox_id == fleet.a


async def test_start_tasks_get_and_get_many(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    task = await client.start_tasks.get(fleet.a_task.id)
    assert task.id == fleet.a_task.id
    assert task.status is oh.StartTaskStatus.READY
    missing = _missing()
    got = await client.start_tasks.get_many([fleet.a_task.id, missing, fleet.b_task.id])
    assert [t.id if t else None for t in got] == [fleet.a_task.id, None, fleet.b_task.id]
    with pytest.raises(oh.NotFoundError):
        await client.start_tasks.get(missing)
    # Dashed ids are accepted and normalized.
    (dashed,) = await client.start_tasks.get_many([str(uuid.UUID(fleet.c_task.id))])
    assert dashed is not None
    assert dashed.id == fleet.c_task.id


async def test_start_tasks_search_and_count(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    since = fleet.began - timedelta(seconds=5)
    newest_first = await client.start_tasks.search(created_after=since).to_list()
    ours = {fleet.ready[cid].id for cid in fleet.ids}
    assert ours <= {t.id for t in newest_first}
    created = [t.created_at for t in newest_first]
    assert all(c is not None for c in created)
    assert created == sorted(created, reverse=True)  # type: ignore[type-var]
    oldest_first = await client.start_tasks.search(
        created_after=since, order="CREATED_AT"
    ).to_list()
    assert [t.id for t in oldest_first] == [t.id for t in reversed(newest_first)]
    assert await client.start_tasks.count(created_after=since) == len(newest_first)
    assert await client.start_tasks.count() >= len(newest_first)
    # One item per page: the server's cursor walks the same list.
    paged = await client.start_tasks.search(created_after=since, page_size=1).to_list()
    assert [t.id for t in paged] == [t.id for t in newest_first]
    assert len(await client.start_tasks.search(limit=2, page_size=1).to_list()) == 2
    # Once READY, the server's conversation-id filter finds the task.
    by_id = await client.start_tasks.search(conversation_id=fleet.a).to_list()
    assert [t.id for t in by_id] == [fleet.a_task.id]
    assert await client.start_tasks.count(conversation_id=fleet.a) == 1
    assert await client.start_tasks.count(conversation_id=_missing()) == 0


async def test_conversations_get_and_get_many(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    conv = await client.conversations.get(fleet.a)
    assert conv.id == fleet.a
    assert conv.sandbox_id == fleet.a
    assert conv.sandbox_status is oh.SandboxStatus.RUNNING
    assert conv.created_at is not None
    assert conv.created_at.tzinfo is not None
    assert conv.conversation_url
    assert fleet.a in conv.conversation_url
    assert conv.session_api_key
    assert conv.session_api_key not in repr(conv)
    missing = _missing()
    got = await client.conversations.get_many([fleet.b, missing, fleet.a, fleet.c])
    assert [c.id if c else None for c in got] == [fleet.b, None, fleet.a, fleet.c]
    with pytest.raises(oh.NotFoundError):
        await client.conversations.get(missing)


async def test_get_many_beyond_the_server_cap(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    """150 ids: the server refuses 100 in one call; the SDK splits them and keeps the order."""
    ids = [_missing() for _ in range(150)]
    ids[7], ids[140] = fleet.a, fleet.d
    before = len(RECORDER.bodies)
    got = await client.conversations.get_many(ids)
    assert len(got) == 150
    assert [i for i, c in enumerate(got) if c is not None] == [7, 140]
    assert got[7] is not None
    assert got[7].id == fleet.a
    assert got[140] is not None
    assert got[140].id == fleet.d
    calls = [
        b
        for b in RECORDER.bodies[before:]
        if b.method == "GET" and b.path == "/api/v1/app-conversations"
    ]
    assert len(calls) == 2
    assert all(b.status == 200 for b in calls)
    tasks = await client.start_tasks.get_many([fleet.a_task.id, *ids[:120]])
    assert tasks[0] is not None
    assert sum(t is not None for t in tasks) == 1


async def test_conversations_search_and_count(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    everything = await client.conversations.search().to_list()
    assert set(fleet.ids) <= {c.id for c in everything}
    assert await client.conversations.count() == len(everything)
    created = [c.created_at for c in everything]
    assert created == sorted(created, reverse=True)  # type: ignore[type-var]

    in_a_sandbox = await client.conversations.search(sandbox_id=fleet.a).to_list()
    assert {c.id for c in in_a_sandbox} == set(fleet.ids)
    assert await client.conversations.count(sandbox_id=fleet.a) == 4

    since = fleet.began - timedelta(seconds=5)
    assert set(fleet.ids) <= {
        c.id for c in await client.conversations.search(created_after=since).to_list()
    }
    older = await client.conversations.search(created_before=since).to_list()
    assert not {c.id for c in older} & set(fleet.ids)
    assert await client.conversations.count(created_before=since) == len(older)

    # The server names a conversation "Conversation <id[:5]>", then renames it from the LLM's
    # answer (asynchronously): read the title right before searching, and again if it moved.
    for _ in range(3):
        title = (await client.conversations.get(fleet.a)).title
        assert title
        titled = await client.conversations.search(title_contains=title).to_list()
        if fleet.a in {c.id for c in titled}:
            break
        await asyncio.sleep(1)
    assert fleet.a in {c.id for c in titled}, (title, titled)
    assert await client.conversations.count(title_contains=title) == len(titled)
    assert await client.conversations.count(title_contains=f"no such title {_missing()}") == 0

    paged = await client.conversations.search(page_size=1).to_list()
    assert [c.id for c in paged] == [c.id for c in everything]
    assert len(await client.conversations.search(limit=3, page_size=2).to_list()) == 3


async def test_conversations_finish(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    """The fake LLM answers every turn with `finish`: each conversation ends `finished`."""
    for cid in fleet.ids:
        conv = fleet.finished[cid]
        assert conv.execution_status is oh.ExecutionStatus.FINISHED, (cid, fleet.executions[cid])
        assert conv.sandbox_status is oh.SandboxStatus.RUNNING
        assert conv.is_terminal
    (again,) = await client.conversations.get_many([fleet.a])
    assert again is not None
    assert again.execution_status is oh.ExecutionStatus.FINISHED
    assert again.updated_at is not None
    assert again.created_at is not None
    assert again.updated_at >= again.created_at

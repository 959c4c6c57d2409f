"""Starts are never duplicated: finding a start still in progress, and lost answers/requests.

Sending the same conversation_id twice breaks the original conversation on the real server
(measured on openhands-ai 1.11.0: see openhands_async/_safe_start.py), so after a lost
answer the SDK must look before it sends again. The `fleet`
starts B, C and D through `LossyProxy` (tests/integration/_proxy.py), a loopback proxy that
loses exactly what a flaky network would.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

import openhands_async as oh

from .conftest import Fleet, raw_start_tasks, same_uuid, starts_sent_with

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_find_start_sees_a_task_still_starting(fleet: Fleet) -> None:
    early = fleet.early
    # The lookups below happened before READY (A was read again after them).
    assert not early.status_after.is_terminal, early.status_after
    assert early.found is not None, "find_start did not see a start that is in progress"
    assert early.found.id == fleet.a_task.id
    assert not early.found.is_terminal
    assert early.found.request is not None
    assert same_uuid(early.found.request.conversation_id, fleet.a)


async def test_server_conversation_id_filter_misses_a_starting_task(fleet: Fleet) -> None:
    """The server's `conversation_id__eq` matches READY tasks only: useless for a lost start."""
    assert not fleet.early.status_after.is_terminal
    assert fleet.early.by_id_search == []
    assert fleet.early.by_id_count == 0


async def test_lost_answer_returns_the_one_task(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    proxy = fleet.b_proxy
    assert proxy.answers_lost == 1, "the proxy never lost B's answer: the scenario did not happen"
    assert proxy.starts_seen == 1, "B's start was sent again"
    assert proxy.starts_forwarded == 1
    task = fleet.b_task
    assert task.request is not None
    assert same_uuid(task.request.conversation_id, fleet.b)
    assert task.id == fleet.ready[fleet.b].id
    assert any("after a lost answer" in m and fleet.b in m for m in fleet.logs), fleet.logs
    assert starts_sent_with(await raw_start_tasks(client), fleet.b) == 1


async def test_lost_request_is_sent_again_exactly_once(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    proxy = fleet.c_proxy
    assert proxy.requests_lost == 1, "the proxy never lost C's request: the scenario did not happen"
    assert proxy.starts_seen == 2, "the SDK should look, find nothing, and send once more"
    assert proxy.starts_forwarded == 1
    task = fleet.c_task
    assert task.request is not None
    assert same_uuid(task.request.conversation_id, fleet.c)
    assert task.id == fleet.ready[fleet.c].id
    assert any("sending it again" in m and fleet.c in m for m in fleet.logs), fleet.logs
    # B's and D's starts were never sent again.
    assert not any("sending it again" in m and (fleet.b in m or fleet.d in m) for m in fleet.logs)
    assert starts_sent_with(await raw_start_tasks(client), fleet.c) == 1


async def test_unconfirmed_start_is_not_sent_again(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    """Answer lost and the server unreachable for the lookups: StartUnconfirmedError, no resend."""
    err = fleet.d_error
    assert isinstance(err, oh.StartUnconfirmedError)
    assert same_uuid(err.conversation_id, fleet.d)
    assert fleet.d_proxy.answers_lost == 1
    assert fleet.d_proxy.starts_seen == 1
    # The error's advice works: the start can be found later, and it ran.
    found = await client.conversations.find_start(err.conversation_id)
    assert found is not None
    assert found.app_conversation_id == fleet.d
    assert starts_sent_with(await raw_start_tasks(client), fleet.d) == 1
    assert fleet.finished[fleet.d].execution_status is oh.ExecutionStatus.FINISHED


async def test_no_conversation_id_was_started_twice(
    client: oh.OpenHandsClient, fleet: Fleet
) -> None:
    tasks = await raw_start_tasks(client)
    sent = Counter(
        uuid.UUID(t["request"]["conversation_id"]).hex
        for t in tasks
        if (t.get("request") or {}).get("conversation_id")
    )
    assert {cid: sent[cid] for cid in fleet.ids} == {cid: 1 for cid in fleet.ids}
    assert max(sent.values()) == 1, sent
    # The server echoes the chosen id back with dashes; the task's own ids have none.
    a = next(t for t in tasks if t["id"] == fleet.a_task.id)
    assert a["request"]["conversation_id"] == str(uuid.UUID(fleet.a))
    assert a["app_conversation_id"] == fleet.a


async def test_find_start_after_ready(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    for cid in fleet.ids:
        found = await client.conversations.find_start(cid)
        assert found is not None
        assert found.id == fleet.ready[cid].id
        assert found.status is oh.StartTaskStatus.READY
        assert found.app_conversation_id == cid
    assert await client.conversations.find_start(uuid.uuid4().hex) is None
    # Dashed form of the id finds the same task.
    dashed = await client.conversations.find_start(
        str(uuid.UUID(fleet.b)), created_after=fleet.began
    )
    assert dashed is not None
    assert dashed.id == fleet.b_task.id

"""The rest of the V1 surface over loopback against FakeCloud: messages, updates, deletes,
downloads, workspace reads, events, sandboxes, users and health."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault


async def finished(cloud: FakeCloud, n: int = 1, message: str = "Fix the README") -> list[str]:
    return cloud.seed_conversations(n, message=message, started_ago=60)


async def until_status(
    client: oh.OpenHandsClient, cid: str, status: str, timeout: float = 10
) -> oh.Conversation:
    async def poll() -> oh.Conversation:
        while True:
            found = (await client.conversations.get_many([cid]))[0]
            if found is not None and found.execution_status == status:
                return found
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), timeout)


# ---------------------------------------------------------------- send_message


async def test_send_message_reruns_a_finished_conversation(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud)
    assert (await client.conversations.get(cid)).execution_status == "finished"
    before = await client.events.count(cid, kind="MessageEvent")
    result = await client.conversations.send_message(cid, "Now add tests")
    assert result.success
    assert result.sandbox_status is oh.SandboxStatus.RUNNING
    assert cloud.requests["send_message"] == 1
    after = await until_status(client, cid, "finished")
    assert after.sandbox_status is oh.SandboxStatus.RUNNING
    assert await client.events.count(cid, kind="MessageEvent") == before + 2
    assert await client.events.last_agent_message(cid) == "Done: Now add tests"


async def test_send_message_without_run_only_appends(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud)
    await client.conversations.send_message(cid, ["just a note"], run=False)
    conv = await client.conversations.get(cid)
    assert conv.execution_status == "finished"
    users = [e async for e in client.events.search(cid, kind="MessageEvent") if e.role == "user"]
    assert [e.text for e in users] == ["Fix the README", "just a note"]


async def test_send_message_unknown_conversation_is_not_found(
    client: oh.OpenHandsClient,
) -> None:
    with pytest.raises(oh.NotFoundError):
        await client.conversations.send_message(uuid.uuid4().hex, "hi")


async def test_send_message_to_a_paused_sandbox_says_resume(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud)
    conv = await client.conversations.get(cid)
    assert conv.sandbox_id is not None
    await client.sandboxes.pause(conv.sandbox_id)
    with pytest.raises(oh.ConflictError) as info:
        await client.conversations.send_message(cid, "hi")
    assert info.value.status == 409
    assert "client.sandboxes.resume" in str(info.value)
    await client.sandboxes.resume(conv.sandbox_id)
    await client.conversations.send_message(cid, "hi")


@pytest.mark.parametrize(
    ("status", "error"), [(410, oh.GoneError), (503, oh.ServiceUnavailableError)]
)
async def test_send_message_gone_and_unavailable(
    client: oh.OpenHandsClient, cloud: FakeCloud, status: int, error: type[Exception]
) -> None:
    (cid,) = await finished(cloud)
    cloud.add_fault(Fault(route="send_message", status=status, times=None))
    with pytest.raises(error):
        await client.conversations.send_message(cid, "hi")
    # Never resent once it may have arrived: one request only.
    assert cloud.requests["send_message"] == 1


async def test_send_message_to_a_deleted_sandbox_is_gone(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud)
    conv = await client.conversations.get(cid)
    assert conv.sandbox_id is not None
    await client.sandboxes.delete(conv.sandbox_id)
    with pytest.raises(oh.GoneError, match="archived"):
        await client.conversations.send_message(cid, "hi")


async def test_send_message_refuses_empty(client: oh.OpenHandsClient) -> None:
    with pytest.raises(ValueError, match="empty"):
        await client.conversations.send_message(uuid.uuid4().hex, "  ")


# ---------------------------------------------------------------- update / delete


async def test_update_sends_only_given_fields(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    (cid,) = await finished(cloud)
    conv = await client.conversations.update(cid, title="Renamed", public=True)
    assert conv.title == "Renamed"
    assert conv.public is True
    conv = await client.conversations.update(cid, public=None)
    assert conv.title == "Renamed"
    assert conv.public is None
    with pytest.raises(TypeError):
        await client.conversations.update(cid)
    with pytest.raises(oh.NotFoundError):
        await client.conversations.update(uuid.uuid4().hex, title="x")


async def test_delete_removes_from_search_and_batch(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    keep, gone = await finished(cloud, 2)
    await client.conversations.delete(gone)
    assert [c.id async for c in client.conversations.search()] == [keep]
    assert await client.conversations.get_many([keep, gone]) == [
        await client.conversations.get(keep),
        None,
    ]
    assert await client.conversations.count() == 1
    with pytest.raises(oh.NotFoundError):
        await client.conversations.delete(gone)


# ---------------------------------------------------------------- download and workspace


async def test_download_to_a_path_and_to_a_file_object(
    client: oh.OpenHandsClient, cloud: FakeCloud, tmp_path: Path
) -> None:
    (cid,) = await finished(cloud)
    dest = tmp_path / "conv.zip"
    written = await client.conversations.download(cid, dest)
    assert written == dest.stat().st_size > 0
    assert not (tmp_path / "conv.zip.part").exists()
    with zipfile.ZipFile(dest) as archive:
        assert "hello.txt" in archive.namelist()
    buffer = io.BytesIO()
    assert await client.conversations.download(cid, buffer) == written
    assert zipfile.ZipFile(buffer).read("hello.txt") == b"hello\n"
    with pytest.raises(oh.NotFoundError):
        await client.conversations.download(uuid.uuid4().hex, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


async def test_workspace_reads(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    (cid,) = await finished(cloud)
    assert await client.conversations.git_changes(cid) == [{"status": "ADDED", "path": "hello.txt"}]
    diff = await client.conversations.git_diff(cid, "hello.txt")
    assert diff["modified"] == "hello\n"
    assert await client.conversations.read_file(cid, "hello.txt") == "hello\n"
    # The server reads a missing file (or an unknown conversation's) as "", not a 404.
    assert await client.conversations.read_file(cid, "nope.txt") == ""
    assert await client.conversations.read_file(uuid.uuid4().hex, "hello.txt") == ""


# ---------------------------------------------------------------- events


async def test_events_shape_and_last_agent_message(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud, message="Fix the README")
    events = [e async for e in client.events.search(cid)]
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert all(e.timestamp.tzinfo is not None for e in events)
    first = events[0]
    assert (first.kind, first.source, first.role, first.text) == (
        "MessageEvent",
        "user",
        "user",
        "Fix the README",
    )
    assert first.payload["llm_message"]["content"][0]["type"] == "text"
    assert {"ActionEvent", "ConversationStateUpdateEvent"} <= {e.kind for e in events}
    assert events[-1].payload["value"] == "finished"
    assert await client.events.last_agent_message(cid) == "Done: Fix the README"
    assert await client.events.count(cid) == len(events)


async def test_events_paginate_filter_and_batch(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = await finished(cloud)
    for n in range(6):
        await client.conversations.send_message(cid, f"note {n}", run=False)
    before = cloud.requests["search_events"]
    events = [e async for e in client.events.search(cid, page_size=2)]
    total = await client.events.count(cid)
    assert len(events) == total >= 10
    assert cloud.requests["search_events"] - before == -(-total // 2)
    newest = [e async for e in client.events.search(cid, order="TIMESTAMP_DESC", limit=3)]
    assert [e.id for e in newest] == [e.id for e in reversed(events)][:3]
    pivot = events[4].timestamp
    later = [e async for e in client.events.search(cid, since=pivot)]
    earlier = [e async for e in client.events.search(cid, until=pivot)]
    assert len(later) + len(earlier) == total
    assert await client.events.count(cid, since=pivot) == len(later)
    assert await client.events.count(cid, until=pivot + timedelta(days=1)) == total
    wanted = [e.id for e in events] * 25 + ["not-an-event"]
    got = await client.events.get_many(cid, wanted)
    assert cloud.requests["get_events"] == -(-len(wanted) // 99)
    assert [e.id if e else None for e in got] == [*wanted[:-1], None]
    # Like openhands-ai 1.11.0: an unknown conversation has no events (0, not a 404).
    assert await client.events.count(uuid.uuid4().hex) == 0


async def test_last_agent_message_is_none_before_the_agent_speaks(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = cloud.seed_conversations(1, message=None, started_ago=60)
    assert await client.events.last_agent_message(cid) is None


# ---------------------------------------------------------------- sandboxes


async def test_sandboxes_pause_freezes_conversation_resume_continues(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    (cid,) = cloud.seed_conversations(1, message="go [fake:run_seconds=5]", started_ago=0)
    conv = await until_status(client, cid, "running")
    assert conv.sandbox_id is not None
    sandbox = await client.sandboxes.get(conv.sandbox_id)
    assert sandbox.status is oh.SandboxStatus.RUNNING
    await client.sandboxes.pause(conv.sandbox_id)
    paused = await client.conversations.get(cid)
    assert paused.sandbox_status is oh.SandboxStatus.PAUSED
    assert paused.execution_status is None
    assert (await client.sandboxes.get(conv.sandbox_id)).status is oh.SandboxStatus.PAUSED
    frozen = await client.events.count(cid)
    await asyncio.sleep(0.3)
    assert await client.events.count(cid) == frozen
    assert (await client.conversations.get(cid)).sandbox_status is oh.SandboxStatus.PAUSED
    await client.sandboxes.resume(conv.sandbox_id)
    resumed = await client.conversations.get(cid)
    assert resumed.sandbox_status is oh.SandboxStatus.RUNNING
    assert resumed.execution_status == "running"
    await until_status(client, cid, "finished")
    assert await client.events.count(cid) > frozen
    # The run (5 s x time_scale 0.2 = 1 s) was frozen for the 0.3 s pause: it ends later.
    states = [e async for e in client.events.search(cid, kind="ConversationStateUpdateEvent")]
    began = next(e.timestamp for e in states if e.payload["value"] == "running")
    ended = next(e.timestamp for e in states if e.payload["value"] == "finished")
    assert (ended - began).total_seconds() >= 1.25
    assert cloud.requests["pause_sandbox"] == cloud.requests["resume_sandbox"] == 1


async def test_sandboxes_search_get_many_start_delete(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cids = await finished(cloud, 3)
    convs = await client.conversations.get_many(cids)
    ids = [c.sandbox_id for c in convs if c is not None and c.sandbox_id is not None]
    listed = [s.id async for s in client.sandboxes.search(page_size=2)]
    assert sorted(listed) == sorted(ids)
    assert cloud.requests["search_sandboxes"] == 2
    got = await client.sandboxes.get_many([*ids, "no-such-sandbox"] * 40)
    assert cloud.requests["get_sandboxes"] == 2
    assert [s.id if s else None for s in got[:4]] == [*ids, None]
    fresh = await client.sandboxes.start()
    assert fresh.status is oh.SandboxStatus.STARTING
    await client.sandboxes.delete(ids[0])
    assert ids[0] not in [s.id async for s in client.sandboxes.search()]
    with pytest.raises(oh.NotFoundError):
        await client.sandboxes.get(ids[0])
    with pytest.raises(oh.NotFoundError):
        await client.sandboxes.pause("no-such-sandbox")


# ---------------------------------------------------------------- users and health


async def test_users_me(client: oh.OpenHandsClient) -> None:
    me = await client.users.me()
    assert me.email == "developer@example.com"
    assert me.payload["user_version"] == 1


async def test_health_needs_no_key(cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENHANDS_API_KEY", raising=False)
    async with oh.OpenHandsClient(base_url=cloud.base_url) as c:
        assert await c.health(ready=True) is True
    assert cloud.requests["alive"] == cloud.requests["ready"] == 1
    cloud.add_fault(Fault(route="alive", status=503))
    async with oh.OpenHandsClient(base_url=cloud.base_url) as c:
        with pytest.raises(oh.ServiceUnavailableError):
            await c.health()


async def test_broken_download_leaves_no_partial_file(
    client: oh.OpenHandsClient, cloud: FakeCloud, tmp_path: Path
) -> None:
    (cid,) = await finished(cloud)
    cloud.add_fault(Fault(route="download_conversation", action="reset_mid_body"))
    dest = tmp_path / "conv.zip"
    with pytest.raises(oh.APIConnectionError, match="download broke off"):
        await client.conversations.download(cid, dest)
    assert not dest.exists()
    assert not (tmp_path / "conv.zip.part").exists()

"""`run_batch(watch_ends=True)`: each running job's end is heard on its agent server's
WebSocket and read at once, against FakeCloud's agent servers. The poll interval is an
hour here, so a job can only end through its watch: without one the run would hang
(`wait_for` turns that into a failure)."""

from __future__ import annotations

import asyncio
import logging

import pytest

import openhands_async as oh
from openhands_async.testing import AgentServerBehavior, FakeCloud

from .conftest import eventually

HOUR = 3600.0


def jobs(n: int) -> list[oh.Job]:
    return [oh.Job(f"job {i}", repository="o/r") for i in range(n)]


def cloud(run_seconds: float = 0.2, **kw: object) -> FakeCloud:
    # READY at once: the poller's first read of a start task already hands over to its
    # conversation (with an hour between reads, a later READY would never be seen).
    timeline = [("READY", 0.0)]
    return FakeCloud(start_timeline=timeline, idle_seconds=0.0, run_seconds=run_seconds, **kw)  # type: ignore[arg-type]


async def test_ends_are_heard_from_the_agent_servers_without_waiting_for_a_poll() -> None:
    async with (
        cloud() as server,
        oh.OpenHandsClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        run = client.run_batch(jobs(5), max_running=2, poll_interval=HOUR, watch_ends=True)
        results = await asyncio.wait_for(_all(run), 60)
        assert run.progress.ends_heard == 5
        assert server.agent_sockets.opened >= 5  # one watch (at least) per job
        await eventually(lambda: server.agent_sockets.open_total == 0)  # each closed at its end
    assert [r.state for r in results] == ["finished"] * 5
    assert len({r.conversation_id for r in results}) == 5
    assert server.starts_received == 5
    assert server.peak_running <= 2
    assert server.agent_sockets.credential_headers == 0  # the API key never went there


async def test_a_watch_refused_leaves_the_end_to_the_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every connection is closed 4001: the follow re-reads the conversation once for a fresh
    # key, is refused again and raises; the watch says so and the poll reads the end.
    async with (
        cloud(agent_server=AgentServerBehavior(refuse_auth=1000)) as server,
        oh.OpenHandsClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        with caplog.at_level(logging.INFO, "openhands_async"):
            run = client.run_batch(jobs(3), max_running=3, poll_interval=0.05, watch_ends=True)
            results = await asyncio.wait_for(_all(run), 60)
        assert run.progress.ends_heard == 0
        keys = [server.conversation(r.conversation_id or "")["session_api_key"] for r in results]
    assert [r.state for r in results] == ["finished"] * 3
    assert server.agent_sockets.refused == server.agent_sockets.opened == 6
    lines = [r.getMessage() for r in caplog.records if "not watching" in r.getMessage()]
    assert len(lines) == 3
    for r in results:
        (line,) = [m for m in lines if str(r.conversation_id).replace("-", "") in m]
        assert "AuthenticationError" in line
        assert line.endswith("its end is polled")
    assert server.api_key not in caplog.text
    assert not any(k and k in caplog.text for k in keys)


async def test_an_unreachable_agent_server_changes_nothing_but_the_wait() -> None:
    # The watches keep trying to connect (with backoff) until the poll reads each end;
    # then they are stopped: no task outlives the run.
    async with (
        cloud(agent_server=AgentServerBehavior(unreachable=True)) as server,
        oh.OpenHandsClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        run = client.run_batch(jobs(3), max_running=3, poll_interval=0.05, watch_ends=True)
        results = await asyncio.wait_for(_all(run), 60)
    assert [r.state for r in results] == ["finished"] * 3
    assert server.agent_sockets.opened == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_stopping_the_run_closes_every_watch() -> None:
    async with (
        cloud(run_seconds=HOUR) as server,
        oh.OpenHandsClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        seen: list[int] = []

        def progress(p: oh.BatchProgress) -> None:
            seen.append(p.running)

        run = client.run_batch(
            jobs(6), max_running=3, poll_interval=0.05, watch_ends=True, on_progress=progress
        )
        consumer = asyncio.ensure_future(_all(run))  # none ends: it waits
        await eventually(lambda: server.agent_sockets.open_total == 3, steps=3000)
        consumer.cancel()  # as a timeout or Ctrl-C would
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await eventually(lambda: server.agent_sockets.open_total == 0)
    assert max(seen) == 3
    assert server.starts_received == 3


async def _all(run: oh.BatchRun) -> list[oh.JobResult]:
    return [r async for r in run]

"""`run_batch(watch_ends=True)`: each running job's end is heard on its agent server's
WebSocket and read at once, against FakeCloud's agent servers. The poll interval is an
hour here, so a job can only end through its watch: without one the run would hang
(`wait_for` turns that into a failure)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

import openhands_async as oh
from openhands_async import SQLiteJournal
from openhands_async.lib.batch._runner import Runner, Settings
from openhands_async.testing import AgentServerBehavior, FakeCloud, Fault, RequestRecord

from .conftest import eventually

HOUR = 3600.0


def jobs(n: int) -> list[oh.Job]:
    return [oh.Job(f"job {i}", repository="o/r") for i in range(n)]


def cloud(run_seconds: float = 0.2, **kw: object) -> FakeCloud:
    # READY at once: the poller's first read of a start task already hands over to its
    # conversation (with an hour between reads, a later READY would never be seen).
    timeline = [("READY", 0.0)]
    return FakeCloud(start_timeline=timeline, idle_seconds=0.0, run_seconds=run_seconds, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def served(
    run_seconds: float = 0.2, **kw: object
) -> AsyncIterator[tuple[FakeCloud, oh.OpenHandsClient]]:
    """A FakeCloud (see `cloud`) and a client of it."""
    async with (
        cloud(run_seconds, **kw) as server,
        oh.OpenHandsClient(api_key=server.api_key, base_url=server.base_url) as client,
    ):
        yield server, client


async def test_ends_are_heard_from_the_agent_servers_without_waiting_for_a_poll() -> None:
    async with served() as (server, client):
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
    async with served(agent_server=AgentServerBehavior(refuse_auth=1000)) as (server, client):
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
    async with served(agent_server=AgentServerBehavior(unreachable=True)) as (server, client):
        run = client.run_batch(jobs(3), max_running=3, poll_interval=0.05, watch_ends=True)
        results = await asyncio.wait_for(_all(run), 60)
    assert [r.state for r in results] == ["finished"] * 3
    assert server.agent_sockets.opened == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_stopping_the_run_closes_every_watch() -> None:
    async with served(run_seconds=HOUR) as (server, client):
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


# The second conversation read is the one of job 1's end (the first: the poller's read at
# READY, whose answer the watch uses too): answered 503, read again after 1 s.
END_READ_REFUSED = Fault(route="get_conversations", skip=1, times=1, retry_after="1")


def _reads_of(log: list[RequestRecord], conversation_id: str | None) -> list[RequestRecord]:
    cid = str(conversation_id).replace("-", "")
    return [
        r
        for r in log
        if r.route == "get_conversations" and any(cid in v for k, v in r.query if k == "ids")
    ]


async def test_a_heard_end_keeps_its_socket_until_the_read_that_records_it() -> None:
    # Closed at once, the socket's close would run on the event loop between the end heard
    # and the start that refills its slot. Here that read is 503'd, and comes 1 s later.
    async with served() as (server, client):
        server.add_fault(END_READ_REFUSED)
        run = client.run_batch(jobs(2), max_running=1, poll_interval=HOUR, watch_ends=True)
        consumer = asyncio.ensure_future(_all(run))

        def refused() -> list[RequestRecord]:
            return [r for r in server.request_log if r.status == 503]

        # Job 2 started and ran its 0.2 s: long after job 1's end was heard.
        await eventually(
            lambda: bool(refused()) and server.starts_received == 2 and server.running == 0
        )
        (ids,) = [v for k, v in refused()[0].query if k == "ids"]
        assert server.agent_sockets.open_now[ids] == 1
        first, second = await asyncio.wait_for(consumer, 60)
        await eventually(lambda: server.agent_sockets.open_total == 0)
    assert [first.state, second.state] == ["finished", "finished"]
    assert str(first.conversation_id).replace("-", "") == ids
    assert run.progress.ends_heard == 1  # job 2's end was read (the poller waited 1 s)


async def test_a_heard_end_frees_its_slot_before_the_read_that_records_it() -> None:
    async with served() as (server, client):
        server.add_fault(END_READ_REFUSED)
        run = client.run_batch(jobs(2), max_running=1, poll_interval=HOUR, watch_ends=True)
        first, second = await asyncio.wait_for(_all(run), 60)
        # Job 2 ended while the poller waited out the Retry-After: read, not heard.
        assert run.progress.ends_heard == 1
        log = list(server.request_log)
    assert [first.state, second.state] == ["finished", "finished"]
    assert first.conversation is not None  # recorded from the read, as ever
    assert first.sandbox_status == "RUNNING"
    assert first.execution_status == "finished"
    reads = _reads_of(log, first.conversation_id)
    assert [r.status for r in reads] == [200, 503, 200]  # READY (the watch needs no other), the end
    recorded = reads[-1]
    starts = [r for r in log if r.route == "start"]
    assert len(starts) == 2
    # Job 2 did not wait the second for job 1's read: its slot was free when the end was heard.
    assert starts[1].time < recorded.time
    assert server.peak_running == 1


async def test_a_job_heard_finished_then_paused_before_its_read_is_recorded_finished() -> None:
    # A server that counts sandboxes (finished or not) pauses the oldest for a start beyond
    # its cap: that can be a job heard finished whose read has not come back. The read then
    # shows PAUSED and no execution status; the agent said it finished, so it did. Nothing
    # is resumed, and the batch does not take the pause for a lower cap.
    async with served() as (server, client):
        server.add_fault(END_READ_REFUSED)
        run = client.run_batch(jobs(3), max_running=1, poll_interval=HOUR, watch_ends=True)
        consumer = asyncio.ensure_future(_all(run))
        await eventually(lambda: any(r.status == 503 for r in server.request_log), steps=3000)
        (refused,) = [r for r in server.request_log if r.status == 503]
        (ids,) = [v for k, v in refused.query if k == "ids"]
        await client.sandboxes.pause(ids)  # the open-source server names it after its id
        first, *rest = await asyncio.wait_for(consumer, 60)
        assert run.progress.target == 1
        assert server.requests["resume_sandbox"] == 0
    assert first.conversation_id is not None
    assert first.conversation_id.replace("-", "") == ids
    assert first.state == "finished"
    assert first.error is None
    assert first.sandbox_status == "PAUSED"
    assert first.execution_status == "finished"  # as the agent server said
    assert [r.state for r in rest] == ["finished", "finished"]


async def test_an_end_heard_while_the_runner_was_not_waiting_is_acted_on_at_once() -> None:
    # Heard while the consumer held a result (the runner suspended at a yield, not waiting):
    # the next wait returns at once, so the refill and the read go out, rather than waiting
    # for something else to happen (a poll an hour away, at the end of a batch).
    async with served() as (_, client):
        settings = Settings(1, None, False, HOUR, None, watch_ends=True)
        journal = SQLiteJournal(":memory:")
        runner = Runner(client, journal, settings, oh.BatchProgress())
        try:
            await runner._adopt()  # as a run begins (then no lease to watch: a local journal)
            runner.to_read.append("a" * 32)  # what `_heard` leaves for the loop
            await asyncio.wait_for(runner._wait(), 5)
        finally:
            await runner.aclose()
            await journal.aclose()


async def test_a_start_refused_while_an_end_heard_is_unread_waits_for_that_read() -> None:
    # A server may count the job heard finished until it reads so: job 2's first start is
    # refused at the cap (429) while job 1's end read is answered 503 (again after 1 s). Job 2
    # is sent again once job 1's end is read, not at once (and again, and again), and the
    # cap is not taken as lower.
    refusal = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": 1, "current": 1}}
    async with served() as (server, client):
        server.add_fault(END_READ_REFUSED)
        server.add_fault(Fault(route="start", skip=1, times=1, status=429, body=refusal))
        run = client.run_batch(jobs(2), max_running=1, poll_interval=HOUR, watch_ends=True)
        first, second = await asyncio.wait_for(_all(run), 60)
        assert run.progress.target == 1
        log = list(server.request_log)
    assert [first.state, second.state] == ["finished", "finished"]
    starts = [r for r in log if r.route == "start"]
    assert [r.status for r in starts] == [200, 429, 200]
    recorded = _reads_of(log, first.conversation_id)[-1]
    assert recorded.status == 200
    assert starts[1].time < recorded.time < starts[2].time


async def _all(run: oh.BatchRun) -> list[oh.JobResult]:
    return [r async for r in run]

"""Fan-out batches against FakeCloud with a low running cap, in both cap modes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import openhands_async as oh
from openhands_async.lib.batch import JournalLockedError, SQLiteJournal
from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually

FAST = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


def jobs(n: int, marker: str = "") -> list[oh.Job]:
    return [oh.Job(f"job {i} {marker}".strip(), repository="o/r") for i in range(n)]


async def run(client: oh.OpenHandsClient, batch: object, **kw: object) -> list[oh.JobResult]:
    return [r async for r in client.run_batch(batch, poll_interval=0.05, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize("cap_mode", ["pause", "refuse"])
async def test_max_running_is_never_exceeded(cap_mode: str) -> None:
    async with (
        FakeCloud(max_running=3, cap_mode=cap_mode, time_scale=0.2, run_seconds=0.2) as cloud,  # type: ignore[arg-type]
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        results = await run(c, jobs(12), max_running=3)
    assert len(results) == 12
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert cloud.peak_running <= 3
    assert cloud.paused_by_cap == 0
    assert cloud.starts_received == 12
    assert len({r.conversation_id for r in results}) == 12


async def test_a_lower_server_cap_lowers_the_target_without_failing_jobs() -> None:
    progress: list[int] = []
    async with (
        FakeCloud(max_running=2, cap_mode="refuse", time_scale=0.2, run_seconds=0.2) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        results = await run(
            c, jobs(8), max_running=5, on_progress=lambda p: progress.append(p.target)
        )
    assert [r.ok for r in results] == [True] * 8
    assert cloud.peak_running <= 2
    assert min(progress) <= 2  # lowered to the server's limit
    # Some starts were refused at the cap (429) and sent again later: one conversation each.
    assert cloud.starts_received > 8
    assert cloud.conversation_count() == 8
    assert len({r.conversation_id for r in results}) == 8


async def test_failures_are_reported_and_the_batch_goes_on() -> None:
    batch = [
        *jobs(3),
        oh.Job("bad start [fake:start=ERROR]"),
        oh.Job("agent errs [fake:outcome=error]"),
        *jobs(2, "more"),
    ]
    async with (
        FakeCloud(time_scale=0.2, run_seconds=0.1) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        cloud.add_fault(Fault(route="start", status=400, body={"detail": "bad repo"}))
        results = await run(c, batch, max_running=3)
    by_message = {r.job.message: r for r in results}
    assert len(results) == 7
    failed = [r for r in results if not r.ok]
    assert len(failed) == 3
    assert "bad repo" in (failed[0].error or "") or any(
        "bad repo" in (r.error or "") for r in failed
    )
    assert "start failed" in (by_message["bad start [fake:start=ERROR]"].error or "")
    assert by_message["agent errs [fake:outcome=error]"].execution_status == "error"


async def test_fail_fast_stops_starting_new_jobs() -> None:
    async with (
        FakeCloud(time_scale=0.2) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        cloud.add_fault(Fault(route="start", status=422, body={"detail": [{"msg": "no"}]}))
        results = await run(c, jobs(10), max_running=2, fail_fast=True)
    assert results[0].state == "failed"
    assert cloud.starts_received < 10


async def test_async_generator_of_jobs_is_read_lazily() -> None:
    pulled = 0

    async def generate() -> AsyncIterator[dict[str, object]]:
        nonlocal pulled
        for i in range(6):
            pulled += 1
            yield {"message": f"gen {i}", "repository": "o/r", "title": f"t{i}"}

    async with (
        FakeCloud(time_scale=0.2) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        batch = c.run_batch(generate(), max_running=2, poll_interval=0.05)
        first = await anext(aiter(batch))
        assert pulled < 6  # not loaded all at once
        rest = [r async for r in batch]
    assert len([first, *rest]) == 6
    assert first.job.options == {"title": first.job.options["title"]}


async def test_the_next_job_is_read_ahead_while_every_slot_is_taken() -> None:
    # Read (and added to the journal) while the one slot is taken, so that the slot freed
    # is refilled without waiting for the input; never more than one ahead.
    pulled = 0

    async def generate() -> AsyncIterator[oh.Job]:
        nonlocal pulled
        for i in range(4):
            pulled += 1
            yield oh.Job(f"ahead {i}", repository="o/r")

    seen: list[tuple[int, int, int]] = []
    journal = SQLiteJournal(":memory:")
    async with (
        FakeCloud(time_scale=0.2, run_seconds=0.2) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        batch = c.run_batch(
            generate(),
            max_running=1,
            poll_interval=0.05,
            journal=journal,
            on_progress=lambda p: seen.append((p.running, p.queued, pulled)),
        )
        first = await anext(aiter(batch))
        ahead = await journal.get(oh.Job("ahead 1", repository="o/r").key)
        rest = [r async for r in batch]
    journal.close()
    assert first.job.message == "ahead 0"
    assert ahead is not None  # in the journal before the first job's end was reported
    assert ahead.state in ("pending", "starting", "running")
    assert (1, 1, 2) in seen  # the first running, the second read and queued
    assert max(q for _, q, _ in seen) == 1
    assert [r.job.message for r in rest] == ["ahead 1", "ahead 2", "ahead 3"]
    assert all(r.ok for r in [first, *rest])
    assert cloud.starts_received == 4


async def test_cancelled_run_resumes_without_starting_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "run.db")
    async with (
        FakeCloud(time_scale=0.2, run_seconds=0.3) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        task = asyncio.create_task(run(c, jobs(8), max_running=3, journal=db))
        await eventually(lambda: cloud.starts_received >= 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with SQLiteJournal(db) as journal:
            started = await journal.counts()
        assert started["running"] + started["finished"] >= 3
        results = await run(c, jobs(8), max_running=3, journal=db)
        assert cloud.starts_received == 8  # every job started exactly once
        assert cloud.duplicate_starts == 0
        with SQLiteJournal(db) as journal:
            assert (await journal.counts())["finished"] == 8
    assert all(r.ok for r in results)


def test_two_runs_on_one_journal_are_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "run.db")

    async def scenario() -> None:
        async with (
            FakeCloud(time_scale=0.2) as cloud,
            oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as c,
        ):
            with SQLiteJournal(db), pytest.raises(JournalLockedError):
                await run(c, jobs(1), journal=db)
            assert cloud.starts_received == 0

    asyncio.run(scenario())


_CHILD = """
import asyncio, sys
import openhands_async as oh
async def main():
    async with oh.OpenHandsClient(api_key=sys.argv[1], base_url=sys.argv[2]) as c:
        jobs = [oh.Job(f"job {i}", repository="o/r") for i in range(int(sys.argv[4]))]
        async for r in c.run_batch(jobs, max_running=3, journal=sys.argv[3], poll_interval=0.05):
            print("done", r.job.key, flush=True)
asyncio.run(main())
"""


def _held(cloud: FakeCloud) -> bool:
    return any(r.route == "start" and r.status == "hold" for r in cloud.request_log)


@pytest.mark.parametrize("held_start", [1, 4])
async def test_sigkill_after_a_start_was_taken_but_before_its_answer_was_recorded(
    tmp_path: Path, held_start: int
) -> None:
    db = str(tmp_path / "run.db")
    async with FakeCloud(time_scale=0.5, run_seconds=0.5) as cloud:
        # The server takes start #k (its conversation is recorded and runs) and never
        # answers; the child is killed exactly then: its journal says "starting".
        cloud.add_fault(Fault(route="start", action="hold", skip=held_start - 1))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            cloud.api_key or "",
            cloud.base_url,
            db,
            "6",
            stdout=asyncio.subprocess.DEVNULL,
        )
        await eventually(lambda: _held(cloud), steps=3000)
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        assert cloud.starts_received >= held_start
        with SQLiteJournal(db) as journal:
            counts = await journal.counts()
            assert counts["starting"] >= 1  # the held answer was never recorded
            finished_by_the_child = counts["finished"]
        async with oh.OpenHandsClient(
            api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST
        ) as c:
            results = await run(
                c,
                [oh.Job(f"job {i}", repository="o/r") for i in range(6)],
                max_running=3,
                journal=db,
            )
        # Exactly once: one start per distinct job, the held one never sent again.
        assert cloud.starts_received == 6
        assert cloud.duplicate_starts == 0
        with SQLiteJournal(db) as journal:
            assert (await journal.counts())["finished"] == 6
    assert all(r.ok for r in results)
    assert len({r.job.key for r in results}) == len(results) == 6 - finished_by_the_child


@pytest.mark.parametrize("watch_ends", [False, True])
async def test_jobs_the_server_pauses_at_its_cap_are_resumed_and_finish(watch_ends: bool) -> None:
    seen: list[tuple[int, int]] = []
    async with (
        FakeCloud(max_running=2, cap_mode="pause", time_scale=0.2, run_seconds=0.5) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        # A job left paused never ends: bound the run so that fails instead of hanging
        # (wait_for, not asyncio.timeout: that is Python 3.11+).
        results = await asyncio.wait_for(
            run(
                c,
                jobs(8),
                max_running=4,
                watch_ends=watch_ends,
                on_progress=lambda p: seen.append((p.target, p.paused)),
            ),
            60,
        )
        final = [cloud.conversation(r.conversation_id or "") for r in results]
    assert len(results) == 8
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert cloud.paused_by_cap >= 1  # the cap did pause some of ours
    assert cloud.requests["resume_sandbox"] >= 1
    assert max(paused for _, paused in seen) >= 1
    assert min(target for target, _ in seen) <= 2  # lowered to what the server runs
    assert seen[-1][1] == 0
    assert cloud.starts_received == 8
    assert cloud.peak_running <= 2
    # None stays paused: every conversation ran to the end.
    assert all(c is not None and c["sandbox_status"] == "RUNNING" for c in final)
    assert all(c is not None and c["execution_status"] == "finished" for c in final)


async def test_resume_refused_at_the_cap_is_retried_and_a_lost_sandbox_fails_its_job() -> None:
    refusal = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": 2, "current": 2}}
    async with (
        FakeCloud(max_running=2, cap_mode="pause", time_scale=0.2, run_seconds=0.5) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST) as c,
    ):
        cloud.add_fault(Fault(route="resume_sandbox", status=429, body=refusal))
        cloud.add_fault(Fault(route="resume_sandbox", status=404))
        results = await asyncio.wait_for(run(c, jobs(8), max_running=4), 60)
    assert len(results) == 8
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1  # the one whose sandbox was not found: failed, not left paused
    assert "not resumed" in (failed[0].error or "")
    assert failed[0].sandbox_status == "PAUSED"
    assert cloud.requests["resume_sandbox"] >= 3  # refused, not found, then the rest
    assert cloud.starts_received == 8


def test_job_keys_are_stable_and_validated() -> None:
    a = oh.Job("x", repository="o/r")
    assert a.key == oh.Job("x", repository="o/r").key
    assert a.key != oh.Job("y", repository="o/r").key
    assert oh.Job("x", key="mine").key == "mine"
    assert oh.Job.from_dict({"message": "x", "repository": "o/r"}).key == a.key
    with pytest.raises(ValueError, match="empty"):
        oh.Job("  ")
    with pytest.raises(ValueError, match="conversation_id"):
        oh.Job("x", options={"conversation_id": "abc"})


async def test_bad_arguments(client: oh.OpenHandsClient) -> None:
    with pytest.raises(ValueError, match="max_running"):
        client.run_batch([], max_running=0)
    with pytest.raises(TypeError, match="job"):
        await run(client, [42])

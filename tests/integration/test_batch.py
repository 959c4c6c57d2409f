"""run_batch against the real server: a job started, followed (its agent server watched,
`watch_ends`), read as finished and recorded in a SQLite journal.

One job: the process sandbox can give two agent servers that start together the same port
(the second then answers its app server 401), and each sandbox costs ~15 s. The fake LLM
finishes the agent's run about as soon as the start task is READY, so the poller's first
read of the conversation usually finds the end before the watch has connected; whether
the end was heard or read is noted, not asserted (FakeCloud's tests pin the watch)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

import openhands_async as oh

from .conftest import FINISHED_BOUND, NOTES, READY_BOUND

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_batch_job_is_started_once_followed_and_recorded(
    client: oh.OpenHandsClient, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.db"
    job = oh.Job("Say hello (batch), then finish.", key="b1")
    run = client.run_batch(
        [job], max_running=1, poll_interval=0.5, watch_ends=True, journal=journal
    )
    began = time.monotonic()
    results = await asyncio.wait_for(_all(run), READY_BOUND + FINISHED_BOUND)
    NOTES.append(
        f"batch: 1 job in {time.monotonic() - began:.1f}s, "
        f"{run.progress.ends_heard} end(s) heard on the agent server"
    )
    (result,) = results
    assert result.state == "finished", result.error
    assert (result.sandbox_status, result.execution_status) == ("RUNNING", "finished")
    assert result.conversation is not None
    assert uuid.UUID(result.conversation.id) == uuid.UUID(str(result.conversation_id))
    started = [t async for t in client.start_tasks.search(conversation_id=result.conversation_id)]
    assert len(started) == 1  # one start, never re-sent
    with contextlib.closing(sqlite3.connect(journal)) as db:
        rows = db.execute("SELECT key, state, conversation_id FROM jobs").fetchall()
    assert [(k, st, uuid.UUID(c)) for k, st, c in rows] == [
        ("b1", "finished", uuid.UUID(str(result.conversation_id)))
    ]
    summary = run.summary
    assert summary is not None
    assert (summary.finished, summary.failed) == (1, 0)


async def _all(run: oh.BatchRun) -> list[oh.JobResult]:
    return [r async for r in run]

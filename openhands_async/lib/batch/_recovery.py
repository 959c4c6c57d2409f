"""Taking over a job an earlier holder started (a crashed run, a worker whose lease
lapsed): find its start on the server by its recorded conversation id, so that it is
followed, never started a second time."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from ...models import StartTask
from ._config import BatchHost
from .jobs import Job
from .journal import Journal, JournalRow

log = logging.getLogger("openhands_async")

__all__ = ["find_started", "job_of", "look_again"]


def job_of(row: JournalRow) -> Job:
    """The job a journal row holds (as its feeder recorded it)."""
    return Job.from_dict({**row.job, "key": row.key}, source=row.source)


async def find_started(client: BatchHost, journal: Journal, row: JournalRow) -> StartTask | None:
    """The start task of a job an earlier holder started, recorded as running if found; None
    if the server has no trace of it (then it is safe to send again, with the same id)."""
    if row.state == "running" and row.start_task_id:
        task = await client.start_tasks.get_many([row.start_task_id])
        if task[0] is not None:
            return task[0]
    assert row.conversation_id is not None
    sent = datetime.fromtimestamp(row.sent_at or row.created_at, timezone.utc)
    found = await client.conversations.find_start(row.conversation_id, created_after=sent)
    if found is not None:
        await journal.mark_running(row.key, found.id)
        log.info("took over job %s: its start task %s exists", row.key, found.id)
    return found


async def look_again(
    client: BatchHost, journal: Journal, row: JournalRow, wait: float
) -> StartTask | None:
    """`find_started` once `wait` seconds have passed: a start its earlier holder may still
    have in flight has reached the server by then, or never will."""
    log.info(
        "job %s: no start found for conversation %s; looking again in %.1fs before sending it",
        row.key,
        row.conversation_id,
        wait,
    )
    await asyncio.sleep(wait)
    return await find_started(client, journal, row)

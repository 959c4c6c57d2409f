"""Reading a shared batch's state across its workers (`openhands-async batch status`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from . import _postgres_sql as sql

if TYPE_CHECKING:
    import psycopg

STATES = ("pending", "starting", "running", "finished", "failed")


@attrs.frozen
class WorkerStatus:
    worker: str
    account: str
    host: str
    pid: int
    max_running: int
    started_at: float
    seen_at: float
    stopped_at: float | None
    seen_ago: float  # seconds since its last lease renewal, by the database's clock
    alive: bool  # renewed within the lease and not stopped
    counts: dict[str, int]  # jobs it holds or ended, by state


@attrs.frozen
class BatchStatus:
    batch_name: str
    counts: dict[str, int]
    workers: list[WorkerStatus]


async def read_status(
    conn: psycopg.AsyncConnection[Any], batch_name: str, lease_seconds: float
) -> BatchStatus:
    """The batch across workers: counts by state, and each worker's jobs by state."""
    counts: dict[str, int] = dict.fromkeys(STATES, 0)
    by_worker: dict[str | None, dict[str, int]] = {}
    cursor = await conn.execute(sql.STATUS_JOBS, {"batch": batch_name})
    for worker, state, n in await cursor.fetchall():
        counts[state] += n
        by_worker.setdefault(worker, {})[state] = n
    workers = []
    cursor = await conn.execute(sql.STATUS_WORKERS, {"batch": batch_name})
    for worker, account, host, pid, cap, started, seen, stopped, ago in await cursor.fetchall():
        alive = stopped is None and ago < lease_seconds
        jobs = by_worker.get(worker, {})
        workers.append(
            WorkerStatus(worker, account, host, pid, cap, started, seen, stopped, ago, alive, jobs)
        )
    return BatchStatus(batch_name, counts, workers)

"""Fan-out: run many agent jobs with at most `max_running` conversations at once, resumably.

The server pauses an account's *oldest* running conversations when too many run at once,
so a naive fan-out stalls its own earlier work. `run_batch` keeps at most `max_running`
conversations starting or running, starts the next when one ends, and records every step
in a journal so that a crashed run, run again, never starts a job twice.

This module owns the public `BatchRun` (arguments, progress, lifetime); the run's steps
belong to `_runner.Runner`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

from ..._constants import (
    DEFAULT_BATCH_POLL_INTERVAL,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_RUNNING,
    DEFAULT_TOTAL_TIMEOUT,
)
from ._config import BatchHost, Settings
from ._postgres_rows import is_postgres_dsn
from ._runner import Runner
from .jobs import BatchProgress, JobResult, JobsInput
from .journal import Journal
from .results import BatchSummary, write_results
from .sqlite import SQLiteJournal

__all__ = ["BatchRun", "open_journal"]

JournalSpec = str | os.PathLike[str] | Journal | None


async def open_journal(
    spec: JournalSpec,
    *,
    batch_name: str | None = None,
    account: str | None = None,
    max_running: int = DEFAULT_MAX_RUNNING,
    lease_seconds: float | None = None,
) -> Journal:
    """The journal a run records to, open: a `Journal` as given, a shared `PostgresJournal`
    for a `postgresql://` DSN (`batch_name` names the batch in the database, `account`
    labels the API key's account: see `account_label`), a SQLite file path, or (None) a
    private in-memory one that keeps nothing."""
    _check_spec(spec, batch_name, account, lease_seconds)
    if spec is None:
        return SQLiteJournal(":memory:")
    if isinstance(spec, str) and is_postgres_dsn(spec):
        from .postgres import PostgresJournal

        assert batch_name is not None  # checked above
        assert account is not None
        shared = PostgresJournal(
            spec,
            batch_name=batch_name,
            account=account,
            max_running=max_running,
            lease_seconds=DEFAULT_LEASE_SECONDS if lease_seconds is None else lease_seconds,
        )
        return await shared.open()
    if isinstance(spec, str | os.PathLike):
        return SQLiteJournal(spec)
    return spec


def _check_spec(
    spec: JournalSpec, batch_name: str | None, account: str | None, lease_seconds: float | None
) -> None:
    shared = isinstance(spec, str) and is_postgres_dsn(spec)
    if shared and not batch_name:
        raise ValueError("a postgresql:// journal needs batch_name=... (the batch to join)")
    if shared and not account:
        raise ValueError("a postgresql:// journal needs the account label of the API key")
    if not shared and (batch_name is not None or lease_seconds is not None):
        raise ValueError("batch_name and lease_seconds are for a postgresql:// journal only")


class BatchRun:
    """The async iterator `client.run_batch(...)` returns; yields a `JobResult` per input as
    it ends (jobs ended in an earlier run are not yielded again). `progress` has live
    counts; `aclose()` (or leaving `async with`) stops it, leaving the journal consistent:
    what was started stays recorded, for the next run to resume.

    However the run ends (done, an error, cancelled), `summary` then holds this run's and
    the whole batch's counts, and with `out` the whole batch's results are written there
    from the journal, one JSON line per input, atomically (see `write_results`).

    A 401/403 on a start stops the batch: no further start is sent, the jobs not started
    stay pending, and `AuthenticationError` / `PermissionDeniedError` is raised.
    `retry_failed=True` starts jobs that failed in an earlier run again, each with a fresh
    conversation id (the old attempt stays in the journal row's `history`).

    Ends are read every `poll_interval` s, so a slot stays empty up to that long after its
    job ended. `watch_ends=True` also follows each running job's events on its agent
    server's WebSocket (at most `max_running` sockets) and reads a job the moment its agent
    reports the run over; the poll stays the record, and catches any end a watch missed.

    Shared batches: with `journal="postgresql://..."` and a `batch_name`, any number of
    workers (processes, machines) run one batch: each job is started by one of them,
    `max_running` holds per account across them (`account`: the label of the client's API
    key, which `client.run_batch` passes), and a worker that dies has its jobs adopted by a
    survivor of the same account once their lease (`lease_seconds`, default 60) lapses:
    looked up by their conversation id, never started again. This run yields (and counts)
    the jobs it ended; `out` and `summary.batch` cover the whole batch.
    """

    def __init__(
        self,
        client: BatchHost,
        jobs: JobsInput,
        *,
        max_running: int = DEFAULT_MAX_RUNNING,
        starts_per_second: float | None = None,
        journal: JournalSpec = None,
        fail_fast: bool = False,
        poll_interval: float = DEFAULT_BATCH_POLL_INTERVAL,
        watch_ends: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        retry_failed: bool = False,
        out: str | os.PathLike[str] | None = None,
        batch_name: str | None = None,
        lease_seconds: float | None = None,
        account: str | None = None,
    ) -> None:
        if isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
            raise ValueError(f"max_running must be an int >= 1, got {max_running!r}")
        if starts_per_second is not None and starts_per_second <= 0:
            raise ValueError(f"starts_per_second must be > 0, got {starts_per_second!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        _check_spec(journal, batch_name, account, lease_seconds)
        if lease_seconds is not None and not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        limiter: AbstractAsyncContextManager[Any] | None = None
        if starts_per_second is not None:
            from aiolimiter import AsyncLimiter

            limiter = AsyncLimiter(starts_per_second, 1.0)
        self._client = client
        self._jobs = jobs
        self._settings = Settings(
            max_running=max_running,
            start_limiter=limiter,
            fail_fast=fail_fast,
            poll_interval=float(poll_interval),
            watch_ends=bool(watch_ends),
            on_progress=on_progress,
            retry_failed=retry_failed,
            start_timeout=_start_timeout(client),
        )
        self._journal = journal
        self._batch_name, self._account, self._lease_seconds = batch_name, account, lease_seconds
        self._out = out
        self.progress = BatchProgress(target=max_running)
        #: Set when the run has ended (however it ended): this run's and the batch's counts.
        self.summary: BatchSummary | None = None
        self._iterator: AsyncIterator[JobResult] | None = None

    def __aiter__(self) -> AsyncIterator[JobResult]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def aclose(self) -> None:
        """Stop the run: no new starts; the journal keeps what was recorded, so the same
        batch with the same journal picks up where this one stopped.
        """
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> BatchRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncIterator[JobResult]:
        journal = await open_journal(
            self._journal,
            batch_name=self._batch_name,
            account=self._account,
            max_running=self._settings.max_running,
            lease_seconds=self._lease_seconds,
        )
        runner = Runner(self._client, journal, self._settings, self.progress)
        try:
            async with aclosing(runner.results(self._jobs)) as results:
                async for result in results:
                    yield result
        finally:
            try:
                await runner.aclose()
                self.summary = await BatchSummary.of(self.progress, journal)
                if self._out is not None:
                    await write_results(journal, self._out)
            finally:
                if journal is not self._journal:  # opened here: closed here
                    await journal.aclose()


def _start_timeout(client: BatchHost) -> float:
    """How long one start may stay in flight: an attempt's timeout, times the attempts."""
    t = client.timeouts
    attempt = t.total or ((t.connect or 0.0) + (t.read or 0.0)) or DEFAULT_TOTAL_TIMEOUT
    return attempt * (1 + client.retry_policy.max_retries)

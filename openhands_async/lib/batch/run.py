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

from ..._constants import DEFAULT_BATCH_POLL_INTERVAL, DEFAULT_MAX_RUNNING
from ._config import BatchHost, Settings
from ._runner import Runner
from .jobs import BatchProgress, JobResult, JobsInput
from .journal import Journal
from .results import BatchSummary, write_results
from .sqlite import SQLiteJournal

__all__ = ["BatchRun", "open_journal"]

JournalSpec = str | os.PathLike[str] | Journal | None


def open_journal(spec: JournalSpec) -> Journal:
    """The journal a run records to: a `Journal` as given, a SQLite file path, or (None) a
    private in-memory one that keeps nothing."""
    if spec is None:
        return SQLiteJournal(":memory:")
    if isinstance(spec, str | os.PathLike):
        return SQLiteJournal(spec)
    return spec


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
        on_progress: Callable[[BatchProgress], None] | None = None,
        retry_failed: bool = False,
        out: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
            raise ValueError(f"max_running must be an int >= 1, got {max_running!r}")
        if starts_per_second is not None and starts_per_second <= 0:
            raise ValueError(f"starts_per_second must be > 0, got {starts_per_second!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
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
            on_progress=on_progress,
            retry_failed=retry_failed,
        )
        self._journal = journal
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
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> BatchRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncIterator[JobResult]:
        journal = open_journal(self._journal)
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

"""`Intake`: the runner's reading of the caller's jobs, one at a time. It decides each input
once, against this run and the journal: a job to start, or a result to report now.

A key identifies one job. A second input with a key already seen (in this run, or in the
journal with other content) is never started: the same content again is reported
"skipped" as a duplicate, other content "failed" naming the key and where it was first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .jobs import (
    BatchProgress,
    InvalidJob,
    Job,
    JobResult,
    JobsInput,
    aiter_jobs,
    canonical,
    duplicate_problem,
    failed,
    skipped,
    where_of,
)
from .journal import Journal, JournalRow

__all__ = ["Intake"]


class Intake:
    def __init__(
        self,
        jobs: JobsInput,
        journal: Journal,
        progress: BatchProgress,
        *,
        retry_failed: bool,
        recovered: frozenset[str] = frozenset(),
    ) -> None:
        """`recovered`: keys of the jobs this run took over from an earlier one."""
        self._source: AsyncIterator[Job | InvalidJob] = aiter_jobs(jobs)
        self._journal = journal
        self._progress = progress
        self._retry_failed = retry_failed
        self._recovered = recovered
        self._seen: dict[str, tuple[str, str]] = {}  # key -> (first source, content)
        self._seq = 0
        self.exhausted = False

    async def next(self) -> tuple[JournalRow, Job] | JobResult | None:
        """The next job to start (its journal row, pending), a result to report at once
        (an invalid input, a duplicate), or None once the input is exhausted."""
        while not self.exhausted:
            try:
                item = await anext(self._source)
            except StopAsyncIteration:
                self.exhausted = True
                break
            seq, self._seq = self._seq, self._seq + 1
            if isinstance(item, InvalidJob):
                await self._journal.reject(
                    item.source, seq, "failed", error=item.error, key=item.key, job=item.data
                )
                return failed(None, None, None, item.error, None, source=item.source)
            decided = await self._decide(item, seq)
            if decided is not None:
                return decided
        return None

    async def _decide(self, job: Job, seq: int) -> tuple[JournalRow, Job] | JobResult | None:
        problem = duplicate_problem(job, self._seen)
        row: JournalRow | None = None
        if problem is None:
            row = await self._journal.add(job.key, seq, job.to_dict(), source=job.source)
            if canonical(row.job) != canonical(job.to_dict()):
                # The journal holds this key for other content: that job came first.
                self._seen[job.key] = (row.source or "", canonical(row.job))
                if row.source and row.source == job.source:
                    text = (
                        f"key {job.key!r} is recorded with other content: this input changed "
                        "since the journal recorded it"
                    )
                else:
                    first = where_of(row.source or "", job.source)
                    text = f"duplicate key {job.key!r} (first {first})"
                problem = ("failed", text)
        if problem is not None:
            state, text = problem
            assert job.source is not None  # aiter_jobs names every input
            await self._journal.reject(
                job.source, seq, state, error=text, key=job.key, job=job.to_dict()
            )
            return skipped(job, text) if state == "skipped" else failed(job, None, None, text, None)
        assert row is not None
        if row.state == "pending":
            return row, job
        if row.state == "failed" and self._retry_failed:
            return await self._journal.retry(job.key), job
        if row.state in ("starting", "running") or job.key in self._recovered:
            return None  # an earlier run started it: this run took it over when it began
        self._progress.skipped += 1  # ended in an earlier run
        if row.state == "failed":
            self._progress.not_retried += 1
        return None

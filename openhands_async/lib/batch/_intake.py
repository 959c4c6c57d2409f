"""`Intake`: the runner's reading of the caller's jobs, one at a time. It decides each input
once, against this run and the journal: a job to start, or a result to report now.

A key identifies one job. A second input with a key already seen (in this run, or in the
journal with other content) is never started: the same content again is reported
"skipped" as a duplicate, other content "failed" naming the key and where it was first.

Feeding ahead (a journal with `feed_ahead` > 0, whose pending jobs are anyone's to claim):
`feed` reads many inputs, adds their new jobs in one `add_all` and decides each exactly as
`next` would; the pending ones stay in the journal for the first claim to come, and `next`
hands out only the results to report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Set
from typing import Any

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
        recovered: Set[str] = frozenset(),
    ) -> None:
        """`recovered`: keys of the jobs this run took over from an earlier holder (a live
        set: the runner adds to it as it adopts)."""
        self._source: AsyncIterator[Job | InvalidJob] = aiter_jobs(jobs)
        self._journal = journal
        self._progress = progress
        self._retry_failed = retry_failed
        self._recovered = recovered
        self._seen: dict[str, tuple[str, str]] = {}  # key -> (first source, content)
        self._seq = 0
        self._read_all = False
        self._decided: deque[JobResult] = deque()  # fed, to report

    @property
    def exhausted(self) -> bool:
        """Every input read, and every result of a decided one handed out."""
        return self._read_all and not self._decided

    async def next(self) -> tuple[JournalRow, Job] | JobResult | None:
        """The next job to start (its journal row, pending), a result to report at once
        (an invalid input, a duplicate), or None once the input is exhausted. Feeding ahead:
        only the results of what `feed` read; None when there are none left."""
        if self._decided:
            return self._decided.popleft()
        while not self._read_all and not self._journal.feed_ahead:
            try:
                item = await anext(self._source)
            except StopAsyncIteration:
                self._read_all = True
                break
            seq, self._seq = self._seq, self._seq + 1
            decided = await self._decide(item, seq, None)
            if decided is not None:
                return decided
        return None

    async def feed(self) -> bool:
        """Read the next `feed_ahead` inputs and add their new jobs to the journal in one
        `add_all`; False if the input was exhausted already. The results `next` hands out."""
        items: list[tuple[int, Job | InvalidJob]] = []
        while not self._read_all and len(items) < self._journal.feed_ahead:
            try:
                items.append((self._seq, await anext(self._source)))
            except StopAsyncIteration:
                self._read_all = True
                break
            self._seq += 1
        # What `_decide` would add, one at a time: each key's first job not seen before.
        new: dict[str, tuple[str, int, dict[str, Any], str | None]] = {}
        for seq, item in items:
            if isinstance(item, Job) and item.key not in self._seen and item.key not in new:
                new[item.key] = (item.key, seq, item.to_dict(), item.source)
        rows = {row.key: row for row in await self._journal.add_all(list(new.values()))}
        for seq, item in items:
            decided = await self._decide(item, seq, rows)
            if isinstance(decided, JobResult):
                self._decided.append(decided)
            # else pending (or taken over earlier): the journal's, for the first claim
        return bool(items)

    async def _decide(
        self, item: Job | InvalidJob, seq: int, fed: dict[str, JournalRow] | None
    ) -> tuple[JournalRow, Job] | JobResult | None:
        """`fed`: the rows `feed` added (None: add the job here if new)."""
        if isinstance(item, InvalidJob):
            await self._journal.reject(
                item.source, seq, "failed", error=item.error, key=item.key, job=item.data
            )
            return failed(None, None, None, item.error, None, source=item.source)
        job = item
        problem = duplicate_problem(job, self._seen)
        row: JournalRow | None = None
        if problem is None:
            if fed is None:
                row = await self._journal.add(job.key, seq, job.to_dict(), source=job.source)
            else:
                row = fed[job.key]
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

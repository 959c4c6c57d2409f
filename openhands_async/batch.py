"""Fan-out: run many agent jobs with at most `max_running` conversations at once, resumably.

The server pauses an account's *oldest* running conversations when too many run at once,
so a naive fan-out stalls its own earlier work. `run_batch` keeps at most `max_running`
conversations starting or running, starts the next when one ends, and records every step
in a SQLite journal so that a crashed run, run again, never starts a job twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, aclosing
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs

from . import errors
from ._sansio import normalize_uuid
from .journal import Journal, JournalRow
from .models import Conversation, ExecutionStatus, SandboxStatus, StartTask, StartTaskStatus

if TYPE_CHECKING:
    from .client import OpenHandsClient
    from .poller import ConversationPoller, StatusChange

log = logging.getLogger("openhands_async")

__all__ = ["BatchProgress", "BatchRun", "Job", "JobResult"]

#: A conservative default: OpenHands Cloud's per-account cap is 10 (older docs say 3).
DEFAULT_MAX_RUNNING = 3
# How long to wait before trying a refused start again when none of ours is running
# (the slots are held by conversations outside this batch).
_CAP_RETRY_DELAY = 5.0


@attrs.frozen
class Job:
    """One agent task: a message plus any start argument (`repository`, `branch`, ...).

    `key` identifies the job in the journal; by default a stable hash of its content, so
    the same job read again from the same file is recognised.
    """

    message: str | None
    repository: str | None = None
    branch: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    key: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        if self.message is not None and not self.message.strip():
            raise ValueError("Job.message must not be empty")
        if "conversation_id" in self.options:
            raise ValueError("Job.options must not set conversation_id: the batch mints it")
        if not self.key:
            object.__setattr__(self, "key", _content_key(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message}
        if self.repository is not None:
            data["repository"] = self.repository
        if self.branch is not None:
            data["branch"] = self.branch
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """From a JSON object (one line of a JSONL file): message, repository, branch, key,
        and any other start argument (top level or under "options")."""
        known = {"message", "repository", "branch", "key", "options"}
        options = {
            **dict(data.get("options") or {}),
            **{k: v for k, v in data.items() if k not in known},
        }
        return cls(
            message=data.get("message"),
            repository=data.get("repository"),
            branch=data.get("branch"),
            options=options,
            key=str(data.get("key") or ""),
        )

    def start_options(self) -> dict[str, Any]:
        return {"repository": self.repository, "branch": self.branch, **self.options}


def _content_key(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@attrs.frozen
class JobResult:
    """How one job ended. `state` is "finished" (the agent finished) or "failed"."""

    job: Job
    state: Literal["finished", "failed"]
    conversation_id: str | None
    start_task: StartTask | None
    conversation: Conversation | None
    sandbox_status: str | None
    execution_status: str | None
    error: str | None
    started_at: float | None
    ended_at: float

    @property
    def ok(self) -> bool:
        return self.state == "finished"

    @property
    def duration(self) -> float | None:
        return None if self.started_at is None else self.ended_at - self.started_at


@attrs.define
class BatchProgress:
    """Counts for a progress display. `queued` jobs are read but not started yet."""

    queued: int = 0
    starting: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    target: int = 0
    #: Started jobs the server paused at its running cap; resumed as slots free.
    paused: int = 0
    started_at: float = attrs.field(factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.finished + self.failed


@attrs.define(eq=False)
class _Active:
    """A job the server took: followed by the poller until it ends."""

    row: JournalRow
    job: Job
    task: StartTask
    key: str = ""  # the start task id as the poller tracks it
    conversation_id: str | None = None  # normalized, once known
    sandbox_id: str | None = None
    # The server paused it to make room under its running cap; it holds no slot meanwhile.
    paused: bool = False


_StartOutcome = _Active | JobResult | errors.ConcurrencyLimitError


class _Changes:
    """The poller's status changes, one at a time; `next` is the task waiting for the next
    (None once the poller has closed). One stream for the whole run, open from the start,
    so nothing is missed while the batch follows no job (all ended, the next starting)."""

    def __init__(self, poller: ConversationPoller) -> None:
        self._stream = poller.changes(until_idle=False)
        self.next: asyncio.Task[StatusChange | None] | None = self._read_next()

    def _read_next(self) -> asyncio.Task[StatusChange | None]:
        return asyncio.get_running_loop().create_task(self._next())

    async def _next(self) -> StatusChange | None:
        # A coroutine for create_task: anext()'s awaitable is one only by duck typing.
        return await anext(self._stream, None)

    def take(self) -> StatusChange | None:
        """The change `next` (done) holds, and start reading the one after it."""
        assert self.next is not None
        change = self.next.result()  # raises the poller's error, if it stopped on one
        self.next = None if change is None else self._read_next()
        return change

    async def aclose(self) -> None:
        if self.next is not None:
            self.next.cancel()
            await asyncio.wait([self.next])
            self.next = None
        await cast("AsyncGenerator[StatusChange, None]", self._stream).aclose()


class BatchRun:
    """The async iterator `client.run_batch(...)` returns; yields a `JobResult` per job as it
    ends. `progress` has live counts; `aclose()` (or leaving `async with`) stops it, leaving
    the journal consistent: what was started stays recorded, for the next run to resume."""

    def __init__(
        self,
        client: OpenHandsClient,
        jobs: Iterable[Job | Mapping[str, Any]] | AsyncIterable[Job | Mapping[str, Any]],
        *,
        max_running: int,
        starts_per_second: float | None,
        journal: str | None,
        fail_fast: bool,
        poll_interval: float,
        on_progress: Callable[[BatchProgress], None] | None,
    ) -> None:
        if isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
            raise ValueError(f"max_running must be an int >= 1, got {max_running!r}")
        if starts_per_second is not None and starts_per_second <= 0:
            raise ValueError(f"starts_per_second must be > 0, got {starts_per_second!r}")
        self._client = client
        self._jobs = jobs
        self._max_running = max_running
        self._start_limiter: AbstractAsyncContextManager[Any] | None = None
        if starts_per_second is not None:
            from aiolimiter import AsyncLimiter

            self._start_limiter = AsyncLimiter(starts_per_second, 1.0)
        self._journal_path = journal or ":memory:"
        self._fail_fast = fail_fast
        self._poll_interval = poll_interval
        self._on_progress = on_progress
        self.progress = BatchProgress(target=max_running)
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
        journal = Journal(self._journal_path)
        # A fixed cadence, no backing off: a batch follows at most max_running items, read
        # in one or two requests a cycle, so backing off quiet ones would save few requests
        # but notice a finished job (and refill its slot) up to 4 intervals late.
        interval = self._poll_interval
        poller = self._client.poller(interval, min_interval=interval, max_interval=interval)
        run = _Run(self, journal, poller)
        try:
            async with aclosing(run.results()) as results:
                async for result in results:
                    yield result
        finally:
            await run.aclose()
            await poller.aclose()
            journal.close()

    async def _start(self, journal: Journal, row: JournalRow, job: Job) -> _StartOutcome:
        conversation_id = row.conversation_id or uuid.uuid4().hex
        # Committed before the request leaves: a crash from here on is recoverable.
        journal.mark_starting(row.key, conversation_id)
        sent_at = time.time()
        try:
            if self._start_limiter is not None:
                async with self._start_limiter:
                    pass
            task = await self._client.conversations.start(
                job.message, conversation_id=conversation_id, **job.start_options()
            )
        except errors.ConcurrencyLimitError as exc:
            journal.mark_pending(row.key)  # refused: the server did not take it
            return exc
        except errors.StartUnconfirmedError as exc:
            # Left as "starting": the next run looks it up instead of guessing now.
            return _failed(job, conversation_id, None, str(exc), sent_at)
        except (errors.APIError, ValueError, TypeError) as exc:
            journal.mark_ended(row.key, "failed", error=str(exc))
            return _failed(job, conversation_id, None, str(exc), sent_at)
        journal.mark_running(row.key, task.id)
        return _Active(journal.get(row.key) or row, job, task)

    async def _find(self, journal: Journal, row: JournalRow, job: Job) -> StartTask | None:
        """The start task of a job an earlier run started, or None if the server never took
        it (then it is safe to send again, with the same conversation id)."""
        if row.state == "running" and row.start_task_id:
            task = await self._client.start_tasks.get_many([row.start_task_id])
            if task[0] is not None:
                return task[0]
        assert row.conversation_id is not None
        sent = datetime.fromtimestamp(row.sent_at or row.created_at, timezone.utc)
        found = await self._client.conversations.find_start(row.conversation_id, created_after=sent)
        if found is not None:
            journal.mark_running(row.key, found.id)
            log.info("recovered job %s: its start task %s exists", row.key, found.id)
            return found
        return None

    def _finish(self, journal: Journal, entry: _Active, change: StatusChange) -> JobResult:
        model = change.model
        conversation = model if isinstance(model, Conversation) else None
        task = model if isinstance(model, StartTask) else entry.task
        sandbox = str(conversation.sandbox_status) if conversation else None
        execution = (
            str(conversation.execution_status)
            if conversation and conversation.execution_status
            else None
        )
        error: str | None = None
        if change.missing:
            error = f"{change.kind} {change.id} is missing on the server"
        elif isinstance(model, StartTask) and model.status is StartTaskStatus.ERROR:
            error = f"start failed: {model.detail or '(no detail)'}"
        elif (
            conversation is not None
            and conversation.execution_status is not ExecutionStatus.FINISHED
        ):
            error = f"conversation ended {sandbox}/{execution}"
        state: Literal["finished", "failed"] = "failed" if error else "finished"
        journal.mark_ended(
            entry.row.key, state, sandbox_status=sandbox, execution_status=execution, error=error
        )
        return JobResult(
            job=entry.job,
            state=state,
            conversation_id=entry.row.conversation_id,
            start_task=task,
            conversation=conversation,
            sandbox_status=sandbox,
            execution_status=execution,
            error=error,
            started_at=entry.row.sent_at,
            ended_at=time.time(),
        )


class _Run:
    """One run's state. Slots: a job holds one from sending its start until it ends, except
    while the server has it paused. Starts go out concurrently (each commits its journal row
    first), so a wave of finished jobs is refilled in one round trip, not one per job."""

    def __init__(self, batch: BatchRun, journal: Journal, poller: ConversationPoller) -> None:
        self.batch = batch
        self.client = batch._client
        self.journal = journal
        self.poller = poller
        self.changes = _Changes(poller)
        self.progress = batch.progress
        self.active: dict[str, _Active] = {}  # by start task id, as tracked
        self.by_conversation: dict[str, _Active] = {}  # by normalized conversation id
        self.paused: list[_Active] = []  # first paused first
        self.starting: dict[asyncio.Task[_StartOutcome], tuple[JournalRow, Job]] = {}
        self.queue: deque[tuple[JournalRow, Job]] = deque()
        self.ended: list[JobResult] = []  # to yield
        self.target = batch._max_running
        self.hold_until = 0.0  # no new start before this loop time (a cap refusal)
        self.stop_starting = False
        self.exhausted = False
        self.seq = 0

    async def results(self) -> AsyncGenerator[JobResult, None]:
        loop = asyncio.get_running_loop()
        await self._recover()
        jobs = _aiter_jobs(self.batch._jobs)
        while True:
            await self._fill(jobs)
            while self.ended:
                yield self.ended.pop(0)
            if not self.starting and not self.active:
                if self.stop_starting or (self.exhausted and not self.queue):
                    return
                # Refused at the cap with nothing of ours running: the slots are held by
                # conversations outside this batch, so try again later.
                await asyncio.sleep(max(0.0, self.hold_until - loop.time()))
                continue
            await self._wait()
            while self.ended:
                yield self.ended.pop(0)

    def _running(self) -> int:
        return len(self.active) - len(self.paused)

    def _report(self) -> None:
        p = self.progress
        p.queued, p.starting, p.running = len(self.queue), len(self.starting), self._running()
        p.paused, p.target = len(self.paused), self.target
        if self.batch._on_progress is not None:
            self.batch._on_progress(p)

    # ------------------------------------------------------------------ starting

    async def _fill(self, jobs: AsyncIterator[Job]) -> None:
        """Use free slots: resume what the server paused first (older work), then start."""
        loop = asyncio.get_running_loop()
        while len(self.starting) + self._running() < self.target and loop.time() >= self.hold_until:
            if self.paused:
                await self._resume_paused(self.paused[0])
                continue
            if self.stop_starting:
                break
            item = await self._next_job(jobs)
            if item is None:
                break
            task = loop.create_task(self.batch._start(self.journal, *item))
            self.starting[task] = item
            self._report()

    async def _next_job(self, jobs: AsyncIterator[Job]) -> tuple[JournalRow, Job] | None:
        if self.queue:
            return self.queue.popleft()
        while not self.exhausted:
            try:
                job = await anext(jobs)
            except StopAsyncIteration:
                self.exhausted = True
                break
            row = self.journal.add(job.key, self.seq, job.to_dict())
            self.seq += 1
            if row.state == "pending":
                return row, job
            self.progress.skipped += 1
        return None

    def _started(self, row: JournalRow, job: Job, outcome: _StartOutcome) -> None:
        if isinstance(outcome, _Active):
            self._follow(outcome)
        elif isinstance(outcome, errors.ConcurrencyLimitError):
            self.queue.appendleft((row, job))
            self._refused(outcome.limit)
        else:
            self._ended(outcome)
        self._report()

    def _refused(self, limit: int | None) -> None:
        """The server refused a start or resume at its running cap: aim lower."""
        running = self._running()
        self.target = max(1, min(self.target, limit or running, running or 1))
        log.info("server refused at its running cap; running at most %d", self.target)
        if not running and not self.starting:
            self.hold_until = asyncio.get_running_loop().time() + _CAP_RETRY_DELAY

    def _follow(self, entry: _Active) -> None:
        entry.key = self.poller.track_start_task(entry.task.id)
        self.active[entry.key] = entry
        if entry.row.conversation_id:  # minted by us, and the server keeps it
            entry.conversation_id = normalize_uuid(entry.row.conversation_id)
            self.by_conversation[entry.conversation_id] = entry

    async def _recover(self) -> None:
        """Pick up jobs an earlier run left starting or running (never start them twice)."""
        for row in self.journal.rows("starting", "running"):
            job = Job.from_dict({**row.job, "key": row.key})
            task = await self.batch._find(self.journal, row, job)
            if task is None:
                self.queue.append((self.journal.get(row.key) or row, job))
            else:
                self._follow(_Active(self.journal.get(row.key) or row, job, task))
        self._report()

    # ------------------------------------------------------------------ following

    async def _wait(self) -> None:
        """Until a start is answered or the poller reports a change (or a hold ends)."""
        waiting: set[asyncio.Future[Any]] = set(self.starting)
        if self.changes.next is not None:
            waiting.add(self.changes.next)
        assert waiting, "jobs in hand but nothing to wait for"  # every active job is tracked
        # A hold set while ours are all paused ends with no change to report.
        hold = self.hold_until - asyncio.get_running_loop().time()
        timeout = hold if hold > 0 else None
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in [t for t in self.starting if t.done()]:
            row, job = self.starting.pop(task)
            self._started(row, job, task.result())
        # One change at a time: a job that ended is refilled before the next change is read.
        if self.changes.next is not None and self.changes.next.done():
            change = self.changes.take()
            if change is not None:
                self._on_change(change)

    def _on_change(self, change: StatusChange) -> None:
        entry = self.active.get(change.id) or self.by_conversation.get(change.id)
        if entry is None:
            return
        model = change.model
        if isinstance(model, StartTask) and model.status is StartTaskStatus.READY:
            # Handed over to its conversation, which the poller follows from now on.
            entry.task = model
            self.poller.untrack(change.id)
            if model.app_conversation_id:
                entry.conversation_id = normalize_uuid(model.app_conversation_id)
                self.by_conversation[entry.conversation_id] = entry
            elif entry.conversation_id:  # the poller has no id to follow: use ours
                self.poller.track_conversation(entry.conversation_id)
            return
        if change.terminal:
            self._forget(entry)
            self._ended(self.batch._finish(self.journal, entry, change))
            return
        if not isinstance(model, Conversation):
            return
        entry.sandbox_id = model.sandbox_id or entry.sandbox_id
        paused = model.sandbox_status is SandboxStatus.PAUSED
        if paused and not entry.paused:
            # Not our doing: the server paused it to make room for a newer start (its cap is
            # below our target, or conversations outside this batch hold slots). Run no more
            # than are still running; it is resumed when a slot frees.
            entry.paused = True
            self.paused.append(entry)
            self.target = max(1, min(self.target, self._running()))
            log.info(
                "the server paused job %s at its running cap; running at most %d",
                entry.row.key,
                self.target,
            )
        elif not paused and entry.paused:  # resumed by someone else
            entry.paused = False
            self.paused.remove(entry)
        self._report()

    async def _resume_paused(self, entry: _Active) -> None:
        sandbox_id = entry.sandbox_id or entry.conversation_id
        assert sandbox_id is not None  # it was read as a paused conversation
        try:
            await self.client.sandboxes.resume(sandbox_id)
        except errors.ConcurrencyLimitError as exc:
            self._refused(exc.limit)
            return
        except (errors.APIError, ValueError) as exc:
            self._forget(entry)
            error = f"paused by the server's running cap and not resumed: {exc}"
            self.journal.mark_ended(entry.row.key, "failed", sandbox_status="PAUSED", error=error)
            row = entry.row
            failed = _failed(entry.job, row.conversation_id, entry.task, error, row.sent_at)
            self._ended(attrs.evolve(failed, sandbox_status="PAUSED"))
            return
        entry.paused = False
        self.paused.remove(entry)
        log.info("resumed job %s, paused by the server's running cap", entry.row.key)
        if entry.conversation_id:
            # Read it afresh: paused again before the next read, it would show no change.
            self.poller.untrack(entry.conversation_id)
            self.poller.track_conversation(entry.conversation_id)
        self._report()

    def _forget(self, entry: _Active) -> None:
        self.active.pop(entry.key, None)
        self.poller.untrack(entry.key)
        if entry.conversation_id:
            self.by_conversation.pop(entry.conversation_id, None)
            self.poller.untrack(entry.conversation_id)
        if entry.paused:
            self.paused.remove(entry)

    def _ended(self, result: JobResult) -> None:
        if result.ok:
            self.progress.finished += 1
        else:
            self.progress.failed += 1
            if self.batch._fail_fast:
                self.stop_starting = True
        self.ended.append(result)
        self._report()

    async def aclose(self) -> None:
        """Stop: starts still in flight stay "starting" in the journal, for the next run."""
        for task in self.starting:
            task.cancel()
        if self.starting:
            await asyncio.wait(list(self.starting))
        self.starting.clear()
        await self.changes.aclose()


def _failed(
    job: Job, conversation_id: str | None, task: StartTask | None, error: str, sent: float | None
) -> JobResult:
    return JobResult(
        job, "failed", conversation_id, task, None, None, None, error, sent, time.time()
    )


async def _aiter_jobs(
    jobs: Iterable[Job | Mapping[str, Any]] | AsyncIterable[Job | Mapping[str, Any]],
) -> AsyncIterator[Job]:
    """Jobs one at a time from a sync or async iterable (never all loaded at once)."""
    if isinstance(jobs, AsyncIterable):
        async for item in jobs:
            yield _as_job(item)
    else:
        for item in jobs:
            yield _as_job(item)


def _as_job(item: Job | Mapping[str, Any]) -> Job:
    if isinstance(item, Job):
        return item
    if isinstance(item, Mapping):
        return Job.from_dict(item)
    raise TypeError(f"a job must be a Job or a mapping, not {type(item).__name__}")

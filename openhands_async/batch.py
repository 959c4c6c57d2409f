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
from .models import Conversation, ExecutionStatus, StartTask, StartTaskStatus

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
    started_at: float = attrs.field(factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.finished + self.failed


@attrs.define
class _Active:
    row: JournalRow
    job: Job
    task: StartTask | None = None


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

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress)

    # ------------------------------------------------------------------ the run

    async def _run(self) -> AsyncIterator[JobResult]:
        journal = Journal(self._journal_path)
        poller = self._client.poller(self._poll_interval)
        # Keyed by start task id (and, once READY, by conversation id too).
        active: dict[str, _Active] = {}
        queue: list[tuple[JournalRow, Job]] = []
        target = self._max_running
        stop_starting = False
        try:
            for row in journal.rows("starting", "running"):
                job = Job.from_dict({**row.job, "key": row.key})
                resumed = await self._resume(journal, row, job)
                if resumed is None or resumed.task is None:
                    queue.append((journal.get(row.key) or row, job))
                else:
                    active[resumed.task.id] = resumed
                    poller.track_start_task(resumed.task.id)
            self.progress.running = len(active)
            jobs = _aiter_jobs(self._jobs)
            seq = 0
            exhausted = False
            while True:
                # Fill free slots from the queue, then from the (streamed) input.
                while not stop_starting and len(active) < target:
                    if not queue:
                        if exhausted:
                            break
                        try:
                            job = await anext(jobs)
                        except StopAsyncIteration:
                            exhausted = True
                            break
                        row = journal.add(job.key, seq, job.to_dict())
                        seq += 1
                        if row.state != "pending":
                            self.progress.skipped += 1
                            continue
                        queue.append((row, job))
                        self.progress.queued += 1
                    row, job = queue.pop(0)
                    outcome = await self._start(journal, row, job)
                    if isinstance(outcome, _Active):
                        assert outcome.task is not None
                        active[outcome.task.id] = outcome
                        poller.track_start_task(outcome.task.id)
                        self.progress.queued = max(0, self.progress.queued - 1)
                        self.progress.running = len(active)
                    elif isinstance(outcome, errors.ConcurrencyLimitError):
                        queue.insert(0, (row, job))
                        ours = len(active)
                        limit = outcome.limit if outcome.limit is not None else ours
                        target = max(1, min(target, limit, ours or 1))
                        self.progress.target = target
                        log.info("server refused a start at its cap; running at most %d", target)
                        if not active:
                            await asyncio.sleep(_CAP_RETRY_DELAY)
                        break
                    else:
                        self.progress.queued = max(0, self.progress.queued - 1)
                        self.progress.failed += 1
                        self._report()
                        yield outcome
                        if self._fail_fast:
                            stop_starting = True
                    self._report()
                if not active:
                    if stop_starting or (exhausted and not queue):
                        return
                    continue
                result = await self._next_completion(poller, journal, active)
                if result is None:
                    continue
                if result.ok:
                    self.progress.finished += 1
                else:
                    self.progress.failed += 1
                    if self._fail_fast:
                        stop_starting = True
                self.progress.running = len(active)
                self._report()
                yield result
        finally:
            await poller.aclose()
            journal.close()

    async def _start(
        self, journal: Journal, row: JournalRow, job: Job
    ) -> _Active | JobResult | errors.ConcurrencyLimitError:
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

    async def _resume(self, journal: Journal, row: JournalRow, job: Job) -> _Active | None:
        """Pick up a job an earlier run started: never start it again if the server has it."""
        if row.state == "running" and row.start_task_id:
            task = await self._client.start_tasks.get_many([row.start_task_id])
            if task[0] is not None:
                return _Active(row, job, task[0])
        assert row.conversation_id is not None
        sent = datetime.fromtimestamp(row.sent_at or row.created_at, timezone.utc)
        found = await self._client.conversations.find_start(row.conversation_id, created_after=sent)
        if found is not None:
            journal.mark_running(row.key, found.id)
            log.info("resumed job %s: its start task %s exists", row.key, found.id)
            return _Active(journal.get(row.key) or row, job, found)
        # The server never took it: safe to send it again, with the same conversation id.
        return None

    async def _next_completion(
        self, poller: ConversationPoller, journal: Journal, active: dict[str, _Active]
    ) -> JobResult | None:
        completions = cast("AsyncGenerator[StatusChange, None]", poller.as_completed())
        async with aclosing(completions):
            change = await anext(completions, None)
        if change is None:
            return None
        poller.untrack(change.id)
        entry = active.pop(change.id, None)
        if entry is None:
            # A conversation finished: find the job whose start task became it.
            for task_id, candidate in list(active.items()):
                if candidate.task and _same(
                    candidate.task.app_conversation_id or candidate.row.conversation_id, change.id
                ):
                    entry = active.pop(task_id)
                    poller.untrack(task_id)
                    break
        if entry is None:
            return None
        return self._finish(journal, entry, change)

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


def _failed(
    job: Job, conversation_id: str | None, task: StartTask | None, error: str, sent: float
) -> JobResult:
    return JobResult(
        job, "failed", conversation_id, task, None, None, None, error, sent, time.time()
    )


def _same(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return normalize_uuid(a) == normalize_uuid(b)
    except ValueError:
        return False


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

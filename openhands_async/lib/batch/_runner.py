"""`Runner`: one batch run's steps, owned by one class: read jobs, start them under the
running cap (recording each in the journal first), follow them with one poller, resume what
the server paused, and report each job as it ends.

Slots: a job holds one from sending its start until it ends, except while the server has
it paused. Starts go out concurrently (each commits its journal row first), so a wave of
finished jobs is refilled in one round trip, not one per job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator
from datetime import datetime, timezone
from typing import Any

import attrs

from ... import errors
from ..._constants import BATCH_CAP_RETRY_DELAY
from ..._inputs import normalize_uuid
from ..._start_request import make_start_request
from ...models import Conversation, SandboxStatus, StartTask, StartTaskStatus
from .._polling import StatusChange
from ..poller import ConversationPoller
from ._config import BatchHost, Settings
from ._intake import Intake
from .jobs import BatchProgress, Job, JobResult, JobsInput, ended, failed
from .journal import Journal, JournalRow

log = logging.getLogger("openhands_async")

__all__ = ["BatchHost", "Runner", "Settings"]


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


# 401/403: the credentials are wrong for every job, so the batch stops.
_AUTH_ERRORS = (errors.AuthenticationError, errors.PermissionDeniedError)
_Refusal = errors.ConcurrencyLimitError | errors.AuthenticationError | errors.PermissionDeniedError
_StartOutcome = _Active | JobResult | _Refusal


class Runner:
    """One run over one journal (see the module docs). `results(jobs)` yields each job's
    result as it ends; `aclose()` stops: starts in flight stay "starting" in the journal."""

    def __init__(
        self, client: BatchHost, journal: Journal, settings: Settings, progress: BatchProgress
    ) -> None:
        self.client = client
        self.journal = journal
        self.settings = settings
        self.progress = progress
        # A fixed cadence, no backing off: a batch follows at most max_running items, read
        # in one or two requests a cycle, so backing off quiet ones would save few requests
        # but notice a finished job (and refill its slot) up to 4 intervals late.
        period = settings.poll_interval
        self.poller = ConversationPoller(client, period, min_interval=period, max_interval=period)
        # One feed for the whole run, open from the start, so nothing is missed while the
        # batch follows no job (all ended, the next starting).
        self.changes = self.poller.changes(until_idle=False)
        self.next_change: asyncio.Task[StatusChange | None] | None = None
        self.active: dict[str, _Active] = {}  # by start task id, as tracked
        self.by_conversation: dict[str, _Active] = {}  # by normalized conversation id
        self.paused: list[_Active] = []  # first paused first
        self.starting: dict[asyncio.Task[_StartOutcome], tuple[JournalRow, Job]] = {}
        self.queue: deque[tuple[JournalRow, Job]] = deque()
        self.ended: list[JobResult] = []  # to yield
        self.target = settings.max_running
        self.hold_until = 0.0  # no new start before this loop time (a cap refusal)
        self.stop_starting = False
        # A 401/403 on a start: raised once the starts already sent are answered.
        self.fatal: errors.APIStatusError | None = None
        self.intake: Intake | None = None
        self.recovered: set[str] = set()  # keys taken over from an earlier run

    async def results(self, jobs: JobsInput) -> AsyncGenerator[JobResult, None]:
        loop = asyncio.get_running_loop()
        self.next_change = loop.create_task(self.changes.get())
        await self._recover()
        self.intake = intake = Intake(
            jobs,
            self.journal,
            self.progress,
            retry_failed=self.settings.retry_failed,
            recovered=frozenset(self.recovered),
        )
        while True:
            if self.fatal is not None and not self.starting:
                raise self.fatal
            await self._fill(intake)
            while self.ended:
                yield self.ended.pop(0)
            if not self.starting and not self.active:
                if self.fatal is not None:
                    continue
                if self.stop_starting or (intake.exhausted and not self.queue):
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
        if self.settings.on_progress is not None:
            self.settings.on_progress(p)

    # ------------------------------------------------------------------ starting

    async def _fill(self, intake: Intake) -> None:
        """Use free slots: resume what the server paused first (older work), then start."""
        loop = asyncio.get_running_loop()
        while (
            self.fatal is None
            and len(self.starting) + self._running() < self.target
            and loop.time() >= self.hold_until
        ):
            if self.paused:
                await self._resume_paused(self.paused[0])
                continue
            if self.stop_starting:
                break
            item = await self._next_job(intake)
            if item is None:
                break
            task = loop.create_task(self._start(*item))
            self.starting[task] = item
            self._report()

    async def _next_job(self, intake: Intake) -> tuple[JournalRow, Job] | None:
        if self.queue:
            return self.queue.popleft()
        while not self.stop_starting:
            item = await intake.next()
            if not isinstance(item, JobResult):
                return item
            self._ended(item)  # decided when read: invalid, or a duplicate
        return None

    async def _start(self, row: JournalRow, job: Job) -> _StartOutcome:
        conversation_id = row.conversation_id or uuid.uuid4().hex
        try:
            request = make_start_request(
                job.message, conversation_id=conversation_id, **job.start_options()
            )
        except (ValueError, TypeError) as exc:  # checked when read; kept for safety
            await self.journal.mark_ended(row.key, "failed", error=str(exc))
            return failed(job, None, None, str(exc), None)
        # Committed before the request leaves: a crash from here on is recoverable.
        row = await self.journal.mark_starting(row.key, conversation_id)
        # The id that goes out is this job's alone: checked here, where the request is
        # built, and not only by the journal (a repeated id breaks the first conversation).
        holder = await self.journal.key_of(normalize_uuid(request.conversation_id or ""))
        if holder != row.key:
            raise AssertionError(
                f"refusing to send conversation id {request.conversation_id} for job "
                f"{row.key!r}: the journal holds it for job {holder!r}"
            )
        try:
            if self.settings.start_limiter is not None:
                async with self.settings.start_limiter:
                    pass
            task = await self.client.conversations.send_start(request)
        except (errors.ConcurrencyLimitError, *_AUTH_ERRORS) as exc:
            await self.journal.mark_pending(row.key)  # refused: the server did not take it
            return exc
        except errors.StartUnconfirmedError as exc:
            # Left as "starting": the next run looks it up instead of guessing now.
            return failed(job, conversation_id, None, str(exc), row.sent_at)
        except (errors.APIError, ValueError, TypeError) as exc:
            await self.journal.mark_ended(row.key, "failed", error=str(exc))
            return failed(job, conversation_id, None, str(exc), row.sent_at)
        return _Active(await self.journal.mark_running(row.key, task.id), job, task)

    def _started(self, row: JournalRow, job: Job, outcome: _StartOutcome) -> None:
        if isinstance(outcome, _Active):
            self._follow(outcome)
        elif isinstance(outcome, errors.ConcurrencyLimitError):
            self.queue.appendleft((row, job))
            self._refused(outcome.limit)
        elif isinstance(outcome, _AUTH_ERRORS):
            # Stop at once: no further start; the job stays pending for the next run.
            log.warning("batch stopped: %s", outcome)
            self.fatal = self.fatal or outcome
        else:
            self._ended(outcome)
        self._report()

    def _refused(self, limit: int | None) -> None:
        """The server refused a start or resume at its running cap: aim lower."""
        running = self._running()
        self.target = max(1, min(self.target, limit or running, running or 1))
        log.info("server refused at its running cap; running at most %d", self.target)
        if not running and not self.starting:
            loop = asyncio.get_running_loop()
            self.hold_until = loop.time() + BATCH_CAP_RETRY_DELAY

    def _follow(self, entry: _Active) -> None:
        entry.key = self.poller.track_start_task(entry.task.id)
        self.active[entry.key] = entry
        if entry.row.conversation_id:  # minted by us, and the server keeps it
            entry.conversation_id = normalize_uuid(entry.row.conversation_id)
            self.by_conversation[entry.conversation_id] = entry

    async def _recover(self) -> None:
        """Pick up jobs an earlier run left starting or running (never start them twice)."""
        for row in await self.journal.rows("starting", "running"):
            self.recovered.add(row.key)
            job = Job.from_dict({**row.job, "key": row.key}, source=row.source)
            task = await self._find(row)
            row = await self.journal.get(row.key) or row
            if task is None:
                self.queue.append((row, job))
            else:
                self._follow(_Active(row, job, task))
        self._report()

    async def _find(self, row: JournalRow) -> StartTask | None:
        """The start task of a job an earlier run started, or None if the server never took
        it (then it is safe to send again, with the same conversation id)."""
        if row.state == "running" and row.start_task_id:
            task = await self.client.start_tasks.get_many([row.start_task_id])
            if task[0] is not None:
                return task[0]
        assert row.conversation_id is not None
        sent = datetime.fromtimestamp(row.sent_at or row.created_at, timezone.utc)
        found = await self.client.conversations.find_start(row.conversation_id, created_after=sent)
        if found is not None:
            await self.journal.mark_running(row.key, found.id)
            log.info("recovered job %s: its start task %s exists", row.key, found.id)
        return found

    # ------------------------------------------------------------------ following

    async def _wait(self) -> None:
        """Until a start is answered or the poller reports a change (or a hold ends)."""
        waiting: set[asyncio.Future[Any]] = set(self.starting)
        if self.next_change is not None:
            waiting.add(self.next_change)
        assert waiting, "jobs in hand but nothing to wait for"  # every active job is tracked
        # A hold set while ours are all paused ends with no change to report.
        hold = self.hold_until - asyncio.get_running_loop().time()
        timeout = hold if hold > 0 else None
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in [t for t in self.starting if t.done()]:
            row, job = self.starting.pop(task)
            self._started(row, job, task.result())
        # One change at a time: a job that ended is refilled before the next change is read.
        if self.next_change is not None and self.next_change.done():
            change = self.next_change.result()  # raises the poller's error, if it stopped
            self.next_change = (
                None
                if change is None
                else asyncio.get_running_loop().create_task(self.changes.get())
            )
            if change is not None:
                await self._on_change(change)

    async def _on_change(self, change: StatusChange) -> None:
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
            result = ended(
                entry.job, entry.row.conversation_id, entry.task, change, entry.row.sent_at
            )
            await self.journal.mark_ended(
                entry.row.key,
                "finished" if result.ok else "failed",
                sandbox_status=result.sandbox_status,
                execution_status=result.execution_status,
                error=result.error,
            )
            self._ended(result)
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
            row = entry.row
            await self.journal.mark_ended(row.key, "failed", sandbox_status="PAUSED", error=error)
            args = (entry.job, row.conversation_id, entry.task, error, row.sent_at)
            self._ended(failed(*args, sandbox_status="PAUSED"))
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
        if result.state == "finished":
            self.progress.finished += 1
        elif result.state == "skipped":
            self.progress.skipped += 1
        else:
            self.progress.failed += 1
            if self.settings.fail_fast:
                self.stop_starting = True
        self.ended.append(result)
        self._report()

    async def aclose(self) -> None:
        """Stop: starts still in flight stay "starting" in the journal, for the next run."""
        pending = [*self.starting, *([self.next_change] if self.next_change else [])]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self.starting.clear()
        self.next_change = None
        await self.changes.aclose()
        await self.poller.aclose()

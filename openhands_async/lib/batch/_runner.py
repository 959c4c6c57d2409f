"""`Runner`: one batch run's steps, owned by one class: read jobs, start them under the
running cap (recording each in the journal first), follow them with one poller, resume what
the server paused, and report each job as it ends.

Slots: a job holds one from sending its start until it ends, except while the server has
it paused. Starts go out concurrently (each commits its journal row first), so a wave of
finished jobs is refilled in one round trip, not one per job.

Shared journals (several workers): the journal may answer that a job is not this run's to
start (another worker took it, or the account's slots are all taken: then the run waits for
one), hands over jobs whose holder's lease lapsed (`adopt`, called again whenever a lease
may lapse), offers pending jobs other workers fed once this run's input is exhausted, and
refuses a transition on a job another worker took over (`JournalLeaseLost`: the job is let
go). A one-run journal answers these trivially; the runner never asks which it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from ... import errors
from ..._constants import BATCH_CAP_RETRY_DELAY
from ..._inputs import normalize_uuid
from ...models import Conversation, ExecutionStatus, SandboxStatus, StartTask, StartTaskStatus
from .._polling import StatusChange
from ..poller import ConversationPoller
from ._claims import AUTH_ERRORS, Active, Claims, Lost, Resend, StartOutcome
from ._config import BatchHost, Settings
from ._end_watch import EndWatch
from ._intake import Intake
from ._pauses import Pauses
from .jobs import BatchProgress, Job, JobResult, JobsInput, ended
from .journal import Ended, Journal, JournalRow

log = logging.getLogger("openhands_async")

__all__ = ["BatchHost", "Runner", "Settings"]


class Runner(Claims, Pauses):
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
        # At a fixed rate (from each cycle's start), an end is seen half an interval late on
        # average, not half an interval plus a cycle's round trip.
        period = settings.poll_interval
        self.poller = ConversationPoller(
            client, period, min_interval=period, max_interval=period, fixed_rate=True
        )
        # One feed for the whole run, open from the start, so nothing is missed while the
        # batch follows no job (all ended, the next starting).
        self.changes = self.poller.changes(until_idle=False)
        # Ends heard from the agent servers (`watch_ends`): see `_heard`.
        self.watch = EndWatch(client.events, self._heard) if settings.watch_ends else None
        self.unread = 0  # ends heard, not read yet: their slots are free
        self.refused_unread = False  # a start refused since: none until they are read
        self.to_read: list[str] = []  # conversations to read once the refills have gone out
        self.wake: asyncio.Future[None] | None = None  # what `_wait` waits on (`_ring`)
        self.next_change: asyncio.Task[StatusChange | None] | None = None
        self.active: dict[str, Active] = {}  # by start task id, as tracked
        self.by_conversation: dict[str, Active] = {}  # by normalized conversation id
        self.paused: list[Active] = []  # first paused first
        self.starting: dict[asyncio.Task[StartOutcome], tuple[JournalRow, Job]] = {}
        self.queue: deque[tuple[JournalRow, Job]] = deque()
        self.ended: list[JobResult] = []  # to yield
        self.ending: list[tuple[str, JobResult]] = []  # read as ended, to record (by key)
        self.target = settings.max_running
        self.hold_until = 0.0  # no new start before this loop time (a cap refusal)
        self.stop_starting = False
        # A 401/403 on a start: raised once the starts already sent are answered.
        self.fatal: errors.APIStatusError | None = None
        self.intake: Intake | None = None
        self.recovered: set[str] = set()  # keys taken over from an earlier holder
        # The account's running slots are all taken across workers (a shared journal): no
        # claim until one frees (`slot_wait`), or a job of ours ends.
        self.blocked = False
        self.slot_wait: asyncio.Task[bool] | None = None
        self.claimable = True  # worth asking the journal for a job fed by another worker
        self.next_adopt = 0.0  # loop time at which `adopt` may find more

    async def results(self, jobs: JobsInput) -> AsyncGenerator[JobResult, None]:
        loop = asyncio.get_running_loop()
        self.next_change = loop.create_task(self.changes.get())
        await self._adopt()
        self.intake = intake = Intake(
            jobs,
            self.journal,
            self.progress,
            retry_failed=self.settings.retry_failed,
            recovered=self.recovered,
        )
        while True:
            if self.fatal is not None and not self.starting:
                raise self.fatal
            if loop.time() >= self.next_adopt:
                await self._adopt()
            await self._fill(intake)
            for conversation_id in self.to_read:
                self.poller.refresh(conversation_id)
            self.to_read.clear()
            await self._read_ahead(intake)
            while self.ended:
                yield self.ended.pop(0)
            if not self.starting and not self.active:
                if self.fatal is not None:
                    continue
                if self.stop_starting:
                    return
                if intake.exhausted and not self.queue:
                    if not self.blocked and await self._done_elsewhere():
                        return
                elif not self.blocked:
                    # Refused at the cap with nothing of ours running: the slots are held by
                    # conversations outside this batch, so try again later.
                    await asyncio.sleep(max(0.0, self.hold_until - loop.time()))
                    continue
            await self._wait()
            while self.ended:
                yield self.ended.pop(0)

    def _counted(self) -> int:
        """Ours the server may count as running: ends heard but not read yet included."""
        return len(self.active) - len(self.paused)

    def _running(self) -> int:
        """Ours holding a slot: an end heard frees its slot before its read."""
        return self._counted() - self.unread

    def _heard(self, conversation_id: str, status: ExecutionStatus) -> None:
        """An end heard: its slot is free now. The read that records the end goes out after
        the start that takes the slot (sent first, it held that start up at the server)."""
        entry = self.by_conversation.get(conversation_id)
        if entry is None or entry.paused or entry.heard is not None:
            assert self.watch is not None  # the caller
            self.watch.stop(conversation_id)  # no slot to free: its socket can go now
            return
        entry.heard = status
        self.unread += 1
        self.to_read.append(conversation_id)
        self._ring()
        self._report()

    def _ring(self, _: object = None) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)  # `_wait` returns

    def _report(self) -> None:
        p = self.progress
        p.queued, p.starting, p.running = len(self.queue), len(self.starting), self._running()
        p.paused, p.target = len(self.paused), self.target
        if self.watch is not None:
            p.ends_heard = self.watch.heard
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
            and not self.refused_unread
        ):
            if self.paused:
                await self._resume_paused(self.paused[0])
                continue
            if self.stop_starting or self.blocked:
                break
            item = await self._next_job(intake)
            if item is not None:
                claimed = await self._claim(*item)
                if claimed is None:
                    continue  # another worker's now, or no slot (then `blocked` is set)
                self._launch(claimed)
                # Let it leave before the next job is claimed: a journal that answers without
                # suspending (SQLite) would hold every start of a wave until the last claim.
                await asyncio.sleep(0)
            elif self.journal.feed_ahead and self.claimable:
                # Pending jobs are anyone's: claim one per free slot, in one round trip.
                free = self.target - len(self.starting) - self._running()
                for claimed in await self._claim_many(free):
                    self._launch(claimed)
                # Fewer than asked and not for want of a slot (`blocked`): feed more.
                if not self.claimable and not self.blocked and await intake.feed():
                    self.claimable = True
            elif intake.exhausted and self.claimable:
                claimed = await self._claim_next()
                if claimed is None:
                    break
                self._launch(claimed)
            else:
                break

    def _launch(self, claimed: tuple[JournalRow, Job, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(*claimed))
        self.starting[task] = claimed[:2]
        self._report()

    def _started(self, row: JournalRow, job: Job, outcome: StartOutcome) -> None:
        if isinstance(outcome, Active):
            self._follow(outcome)
        elif isinstance(outcome, Resend):
            self.queue.appendleft((row, job))
        elif isinstance(outcome, Lost):
            log.warning("job %s was taken over by another worker; letting it go", row.key)
        elif isinstance(outcome, errors.ConcurrencyLimitError):
            self.queue.appendleft((row, job))
            self._refused(outcome.limit)
        elif isinstance(outcome, AUTH_ERRORS):
            # Stop at once: no further start; the job stays pending for the next run.
            log.warning("batch stopped: %s", outcome)
            self.fatal = self.fatal or outcome
        else:
            self._ended(outcome)
        self._report()

    def _refused(self, limit: int | None) -> None:
        """The server refused a start or resume at its running cap: aim lower."""
        running = self._counted()
        self.target = max(1, min(self.target, limit or running, running or 1))
        log.info("server refused at its running cap; running at most %d", self.target)
        if self.unread:
            self.refused_unread = True  # their reads free the slots the server counts
        elif not running and not self.starting:
            loop = asyncio.get_running_loop()
            self.hold_until = loop.time() + BATCH_CAP_RETRY_DELAY

    def _follow(self, entry: Active) -> None:
        entry.key = self.poller.track_start_task(entry.task)  # as the start answered
        self.active[entry.key] = entry
        if entry.row.conversation_id:  # minted by us, and the server keeps it
            entry.conversation_id = normalize_uuid(entry.row.conversation_id)
            self.by_conversation[entry.conversation_id] = entry

    async def _wait(self) -> None:
        """Until a start is answered, the poller reports a change, a hold ends or an end is
        heard (`_heard` resolves `wake`: one loop pass sooner than `asyncio.wait` would)."""
        loop = asyncio.get_running_loop()
        waiting: set[asyncio.Future[Any]] = set(self.starting)
        if self.next_change is not None:
            waiting.add(self.next_change)
        self.wake = wake = loop.create_future()
        if self.to_read:  # heard while the consumer held a result: act on it now
            wake.set_result(None)
        adopt_in = self.next_adopt - loop.time()
        if self.blocked:
            if self.slot_wait is None:
                bound = max(0.01, min(BATCH_CAP_RETRY_DELAY, adopt_in))
                self.slot_wait = loop.create_task(self.journal.wait_for_slot(bound))
            waiting.add(self.slot_wait)
        # Every active job is tracked (the poller reports its end), or its end is heard.
        assert waiting or self.watch is not None, "jobs in hand but nothing to wait for"
        # A hold set while ours are all paused ends with no change to report; adoption is
        # due when a lease may lapse.
        hold = self.hold_until - loop.time()
        timeouts = [t for t in (hold, adopt_in) if t > 0 and t != float("inf")]
        timeout = min(timeouts) if timeouts else (None if adopt_in > 0 else 0)
        for future in waiting:
            future.add_done_callback(self._ring)
        timer = loop.call_later(timeout, self._ring) if timeout is not None else None
        try:
            await wake
        finally:
            self.wake = None
            for future in waiting:
                future.remove_done_callback(self._ring)
            if timer is not None:
                timer.cancel()
        if self.slot_wait is not None and self.slot_wait.done():
            self.slot_wait.result()  # raises the journal's error, if waiting failed
            self.slot_wait = None
            self.blocked, self.claimable = False, True
        for task in [t for t in self.starting if t.done()]:
            row, job = self.starting.pop(task)
            self._started(row, job, task.result())
        # One change at a time: a job that ended is refilled before the next change is read.
        # Feeding ahead (a shared journal), every change already read first: the slots they
        # free are then refilled in one claim (one round trip, not one per job).
        while self.next_change is not None and self.next_change.done():
            change = self.next_change.result()  # raises the poller's error, if it stopped
            self.next_change = None if change is None else loop.create_task(self.changes.get())
            if change is not None:
                await self._on_change(change)
            if not self.journal.feed_ahead or self.next_change is None:
                break
            await asyncio.sleep(0)  # a change queued already is handed over in one step
        await self._record_ends()

    async def _record_ends(self) -> None:
        """Record the ends read (one round trip for all where the journal can), then report
        them; one another worker took over is its new holder's to record and report."""
        ending, self.ending = self.ending, []
        if ending:
            lost = await self.journal.mark_ended_many([Ended.of(k, r) for k, r in ending])
            for key, result in ending:
                if key in lost:
                    log.warning("job %s was taken over by another worker", key)
                else:
                    self._ended(result)

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
        paused = isinstance(model, Conversation) and model.sandbox_status is SandboxStatus.PAUSED
        # Heard finished, then paused before the read: a server counting sandboxes made room
        # for the start that took its slot. Its agent's word is its end.
        heard = entry.heard if paused else None
        if change.terminal or heard is not None:
            self._forget(entry)
            args = (entry.job, entry.row.conversation_id, entry.task, change, entry.row.sent_at)
            result = ended(*args, heard)
            self.ending.append((entry.row.key, result))
            if not self.journal.feed_ahead:  # else recorded with the other ends read
                await self._record_ends()
            return
        if not isinstance(model, Conversation):
            return
        entry.sandbox_id = model.sandbox_id or entry.sandbox_id
        if not entry.watched and not paused:  # its first read: the watch needs no other
            self._watch(entry, model)
        self._paused_or_not(entry, paused)

    def _watch(self, entry: Active, conversation: Conversation | None = None) -> None:
        if self.watch is not None and entry.conversation_id:
            entry.watched = True
            self.watch.watch(entry.conversation_id, conversation)

    def _forget(self, entry: Active) -> None:
        if self.active.pop(entry.key, None) is not None and entry.heard is not None:
            self.unread -= 1
            self.refused_unread = self.refused_unread and self.unread > 0
        self.poller.untrack(entry.key)
        if entry.conversation_id:
            self.by_conversation.pop(entry.conversation_id, None)
            self.poller.untrack(entry.conversation_id)
            if self.watch is not None:
                self.watch.stop(entry.conversation_id)
        if entry.paused:
            self.paused.remove(entry)

    def _ended(self, result: JobResult) -> None:
        self.blocked, self.claimable = False, True  # a slot of ours may be free
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
        pending = [
            *self.starting,
            *([self.next_change] if self.next_change else []),
            *([self.slot_wait] if self.slot_wait else []),
        ]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        self.starting.clear()
        self.next_change = self.slot_wait = None
        if self.watch is not None:
            await self.watch.aclose()
        await self.changes.aclose()
        await self.poller.aclose()

"""How the runner comes by the jobs it starts, and what a start comes to: a job read from
its input, claimed in the journal (its conversation id committed before the request
leaves); a pending job another worker fed; a job adopted from a holder that is gone. A
mixin of `Runner` (the one class owning the steps), kept apart for size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque

import attrs

from ... import errors
from ..._inputs import normalize_uuid
from ..._start_request import make_start_request
from ...models import ExecutionStatus, StartRequest, StartTask
from ._config import BatchHost, Settings
from ._intake import Intake
from ._recovery import find_started, job_of, look_again
from .jobs import Job, JobResult, failed
from .journal import Journal, JournalRow

log = logging.getLogger("openhands_async")

__all__ = ["AUTH_ERRORS", "Active", "Claims", "Lost", "Resend", "StartOutcome"]


@attrs.define(eq=False)
class Active:
    """A job the server took: followed by the poller until it ends."""

    row: JournalRow
    job: Job
    task: StartTask
    key: str = ""  # the start task id as the poller tracks it
    conversation_id: str | None = None  # normalized, once known
    sandbox_id: str | None = None
    # The server paused it to make room under its running cap; it holds no slot meanwhile.
    paused: bool = False
    # Its end as its agent server reported it (`watch_ends`): it holds no slot from then on.
    heard: ExecutionStatus | None = None
    watched: bool = False  # a watch was started (once; again after a resume)


# 401/403: the credentials are wrong for every job, so the batch stops.
AUTH_ERRORS = (errors.AuthenticationError, errors.PermissionDeniedError)
Refusal = errors.ConcurrencyLimitError | errors.AuthenticationError | errors.PermissionDeniedError


class Resend:
    """An adopted start the server still shows no trace of: send it again (same id)."""


class Lost:
    """Another worker took the job over (its lease lapsed here): it follows it now."""


StartOutcome = Active | JobResult | Refusal | Resend | Lost
_Claimed = tuple[JournalRow, Job, StartRequest]


class Claims:
    """The runner's claiming and adopting steps (state lives on `Runner`)."""

    client: BatchHost
    journal: Journal
    settings: Settings
    queue: deque[tuple[JournalRow, Job]]
    starting: dict[asyncio.Task[StartOutcome], tuple[JournalRow, Job]]
    recovered: set[str]
    blocked: bool
    claimable: bool
    next_adopt: float
    stop_starting: bool
    target: int

    def _ended(self, result: JobResult) -> None:
        raise NotImplementedError  # Runner's

    def _follow(self, entry: Active) -> None:
        raise NotImplementedError  # Runner's

    def _report(self) -> None:
        raise NotImplementedError  # Runner's

    def _running(self) -> int:
        raise NotImplementedError  # Runner's

    async def _next_job(self, intake: Intake) -> tuple[JournalRow, Job] | None:
        if self.queue:
            return self.queue.popleft()
        while not self.stop_starting:
            item = await intake.next()
            if not isinstance(item, JobResult):
                return item
            self._ended(item)  # decided when read: invalid, or a duplicate
        return None

    async def _read_ahead(self, intake: Intake) -> None:
        """With every slot taken, read the next job now (added to the journal as pending, as
        when its turn comes), so that the slot freed next is refilled without waiting for
        the input and the journal's add: ~half of a refill's work on the event loop. One at
        most; none while a slot is free (`_fill` left it for a hold or a refusal). A run
        that stops leaves it pending, as it leaves what it has not read; a shared journal's
        input is fed ahead in bulk (`Intake.next` then reads nothing)."""
        if self.queue or len(self.starting) + self._running() < self.target:
            return
        item = await self._next_job(intake)
        if item is not None:
            self.queue.append(item)
            self._report()

    async def _claim(self, row: JournalRow, job: Job) -> _Claimed | None:
        """Commit the job's conversation id (minted now, or the one recorded for a start the
        server never took) before its request leaves; None if not this run's to send."""
        conversation_id = row.conversation_id or uuid.uuid4().hex
        request = await self._request(row, job, conversation_id)
        if request is None:
            return None
        claimed = await self.journal.mark_starting(row.key, conversation_id)
        if claimed is None:
            now = await self.journal.get(row.key)
            if now is not None and now.state == "pending":  # the account has no free slot
                self.queue.appendleft((now, job))
                self.blocked = True
            return None  # else another worker took it: it reports it
        if claimed.key != row.key:
            # A shared journal hands a fresh id to the first pending job in its order, not
            # necessarily the one read (workers feeding one list would all race for that):
            # the one read stays pending for whoever comes to it first.
            job = job_of(claimed)
            request = await self._request(claimed, job, conversation_id)
            if request is None:
                return None
        return await self._checked(claimed, job, request)

    async def _claim_next(self) -> _Claimed | None:
        """A pending job another worker fed (this run's input is exhausted), claimed."""
        conversation_id = uuid.uuid4().hex
        row = await self.journal.claim_next(conversation_id)
        if row is None:  # none left, or (some pending) no free slot: wait for one
            self.claimable = False
            self.blocked = (await self.journal.remaining()).pending > 0
            return None
        job = job_of(row)
        request = await self._request(row, job, conversation_id)
        return None if request is None else await self._checked(row, job, request)

    async def _claim_many(self, n: int) -> list[_Claimed]:
        """Up to `n` pending jobs (anyone's: the journal feeds ahead), claimed in one round
        trip; fewer (then `claimable` is False) once none is left or no slot is free."""
        rows = await self.journal.claim_many([uuid.uuid4().hex for _ in range(n)])
        if len(rows) < n:  # none left, or (some pending) no free slot: wait for one
            self.claimable = False
            self.blocked = (await self.journal.remaining()).pending > 0
        claimed = []
        for row in rows:
            job = job_of(row)
            request = await self._request(row, job, row.conversation_id or "")
            if request is not None:
                claimed.append(await self._checked(row, job, request))
        return claimed

    async def _request(
        self, row: JournalRow, job: Job, conversation_id: str
    ) -> StartRequest | None:
        try:
            return make_start_request(
                job.message, conversation_id=conversation_id, **job.start_options()
            )
        except (ValueError, TypeError) as exc:  # checked when read; kept for safety
            with contextlib.suppress(errors.JournalLeaseLost):  # a shared journal's pending row
                await self.journal.mark_ended(row.key, "failed", error=str(exc))
            self._ended(failed(job, None, None, str(exc), None))
            return None

    async def _checked(self, row: JournalRow, job: Job, request: StartRequest) -> _Claimed:
        # The id that goes out is this job's alone: checked here, where the request is
        # built, and not only by the journal (a repeated id breaks the first conversation).
        holder = await self.journal.key_of(normalize_uuid(request.conversation_id or ""))
        if holder != row.key:
            raise AssertionError(
                f"refusing to send conversation id {request.conversation_id} for job "
                f"{row.key!r}: the journal holds it for job {holder!r}"
            )
        return row, job, request

    async def _send(self, row: JournalRow, job: Job, request: StartRequest) -> StartOutcome:
        conversation_id = request.conversation_id
        try:
            try:
                if self.settings.start_limiter is not None:
                    async with self.settings.start_limiter:
                        pass
                task = await self.client.conversations.send_start(request)
            except (errors.ConcurrencyLimitError, *AUTH_ERRORS) as exc:
                await self.journal.mark_pending(row.key)  # refused: the server did not take it
                return exc
            except errors.StartUnconfirmedError as exc:
                # Left as "starting": the next holder looks it up instead of guessing now.
                return failed(job, conversation_id, None, str(exc), row.sent_at)
            except (errors.APIError, ValueError, TypeError) as exc:
                await self.journal.mark_ended(row.key, "failed", error=str(exc))
                return failed(job, conversation_id, None, str(exc), row.sent_at)
            return Active(await self.journal.mark_running(row.key, task.id), job, task)
        except errors.JournalLeaseLost:
            return Lost()

    async def _look_again(self, row: JournalRow, job: Job, wait: float) -> StartOutcome:
        try:
            task = await look_again(self.client, self.journal, row, wait)
        except errors.JournalLeaseLost:
            return Lost()
        if task is None:
            return Resend()
        return Active(await self.journal.get(row.key) or row, job, task)

    async def _adopt(self) -> None:
        """Take over jobs whose holder is gone (an earlier run, a worker whose lease lapsed):
        follow each the server has, never start it twice. A start it has no trace of is sent
        again (same id), once any request its holder may still have in flight has landed."""
        window = self.journal.in_flight_window(self.settings.start_timeout)
        for row in await self.journal.adopt():
            self.recovered.add(row.key)
            job = job_of(row)
            try:
                task = await find_started(self.client, self.journal, row)
            except errors.JournalLeaseLost:
                continue
            row = await self.journal.get(row.key) or row
            if task is not None:
                self._follow(Active(row, job, task))
            elif window <= 0 or row.state != "starting":
                self.queue.append((row, job))
            else:
                look = asyncio.get_running_loop().create_task(self._look_again(row, job, window))
                self.starting[look] = (row, job)
        check = (await self.journal.remaining()).next_check
        loop = asyncio.get_running_loop()
        self.next_adopt = float("inf") if check is None else loop.time() + check
        self._report()

    async def _done_elsewhere(self) -> bool:
        """This run's own work is done: is the batch? If not, claim what others fed, or wait
        (`blocked`) for the jobs other workers of this account hold to end or be adopted."""
        remaining = await self.journal.remaining()
        if not remaining.pending and not remaining.held_elsewhere:
            return True
        if remaining.pending and not self.claimable:
            self.claimable = True  # try a claim first
        else:
            self.blocked = True
        return False

    # ------------------------------------------------------------------ following

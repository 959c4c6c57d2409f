"""The batch journal's contract: what the runner records about each job, and when.

The runner speaks only to `Journal`; which store is behind it (a SQLite file for one
machine, `SQLiteJournal`; a shared database for several workers later) is the backend's
business. Every method is async, so a networked backend never blocks the event loop, and
every write is committed before it returns: the runner relies on "recorded, then sent".

A job's life, one row per key:

    pending --mark_starting(conversation id minted)--> starting --mark_running(task)--> running
       ^                                                 |                                |
       +--------------- mark_pending (provably not taken)+                                |
                                         mark_ended("finished" | "failed") <--------------+

The rule that makes a crash safe: the conversation id is committed by `mark_starting`
*before* the start request leaves, so a later run can look for it on the server. A journal
never lets two jobs hold one conversation id (`key_of` says whose an id is), and `retry`
starts a failed job afresh: its old attempt, id included, moves to the row's `history`.

Inputs that are not jobs of their own (invalid lines, duplicate keys) are recorded by their
`source` (`reject`), so the whole batch's results (`rows` + `rejects`) list every input.

Sharing: a journal may be shared by several workers (`PostgresJournal`). The runner never
asks which kind it has; the hooks below have trivial answers for a journal one run holds
alone (`SQLiteJournal`): `mark_starting` may answer None (not this run's to start now),
`adopt` hands over jobs whose holder is gone (for a one-run journal: the earlier run's, on
the first call), `feed_ahead` says whether the run feeds its input ahead in bulk (`add_all`)
and starts only what `claim_many` hands it, `claim_next` / `claim_many` take pending jobs
(fed by this run or another), `remaining` says what is left beyond this run's own input,
`wait_for_slot` waits for another worker to free a running slot, and a transition on a job
another worker took over raises `JournalLeaseLost` (the runner then lets it go; the ends
`mark_ended_many` records together name such jobs instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import attrs

__all__ = [
    "TERMINAL_STATES",
    "Ended",
    "JobState",
    "Journal",
    "JournalRow",
    "NewJob",
    "RejectRow",
    "Remaining",
]

JobState = Literal["pending", "starting", "running", "finished", "failed"]
TERMINAL_STATES: frozenset[str] = frozenset({"finished", "failed"})
#: A job to add: (key, seq, job, source), what `add` takes.
NewJob = tuple[str, int, dict[str, Any], "str | None"]


@attrs.frozen
class JournalRow:
    """One job as the journal holds it. Times are epoch seconds."""

    key: str
    seq: int
    job: dict[str, Any]
    state: JobState
    conversation_id: str | None
    start_task_id: str | None
    sandbox_status: str | None
    execution_status: str | None
    error: str | None
    created_at: float
    sent_at: float | None
    running_at: float | None
    ended_at: float | None
    #: Where the job was first read ("jobs.jsonl:2", "item 2"), if known.
    source: str | None = None
    #: Earlier attempts (oldest first), each the fields `retry` cleared.
    history: tuple[dict[str, Any], ...] = ()


@attrs.frozen
class RejectRow:
    """An input that is not a job of its own: invalid, or a duplicate of another key."""

    source: str
    seq: int
    state: Literal["failed", "skipped"]
    key: str | None
    job: Any
    error: str
    recorded_at: float


@attrs.frozen
class Remaining:
    """What is left of the batch beyond this run's own input (a one-run journal: nothing)."""

    #: Pending jobs this run may claim (fed by other workers).
    pending: int = 0
    #: Jobs of this run's account other holders run: adopted here if their lease lapses.
    held_elsewhere: int = 0
    #: Seconds until `adopt` may find something (a lease lapses); None: never.
    next_check: float | None = None


@attrs.frozen
class Ended:
    """One job's end, as `mark_ended` takes it."""

    key: str
    state: Literal["finished", "failed"]
    sandbox_status: str | None = None
    execution_status: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, key: str, result: Any) -> Ended:
        """The end of a `JobResult` that ended on the server (finished or failed)."""
        state: Literal["finished", "failed"] = "finished" if result.ok else "failed"
        return cls(key, state, result.sandbox_status, result.execution_status, result.error)


class Journal(Protocol):
    """A batch's record of its jobs, held by one run (or, for a shared backend, one worker
    per job) at a time."""

    #: 0: the run reads its input one job at a time, adds each job as it reads it (one
    #: ahead of the free slots, so a freed slot is refilled at once), and starts it (a
    #: one-run journal). N > 0 (a shared journal, whose pending jobs are anyone's): the
    #: run reads its input ahead, N jobs at a time, adds them with one `add_all`, and starts
    #: whatever `claim_many` hands it (one claim for every free slot), so that every
    #: worker's claims find jobs waiting.
    feed_ahead: int

    async def add(
        self, key: str, seq: int, job: dict[str, Any], *, source: str | None = None
    ) -> JournalRow:
        """Record a job as pending, or return the row an earlier run left for this key (its
        content may differ: the caller compares). A reject recorded at `source` goes."""
        ...

    async def add_all(self, jobs: Sequence[NewJob]) -> Sequence[JournalRow]:
        """`add` for each of `jobs` (distinct keys), in as few round trips as the backend
        can: the rows, in any order. The runner calls it only when `feed_ahead` > 0."""
        ...

    async def get(self, key: str) -> JournalRow | None:
        """The row of this key, or None if no job with it was added."""
        ...

    async def rows(self, *states: JobState) -> Sequence[JournalRow]:
        """Rows in these states (all if none given), in the order the jobs were added."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per state, every state present (0 if none)."""
        ...

    async def key_of(self, conversation_id: str) -> str | None:
        """The job that holds, or once held, this conversation id (32 hex digits)."""
        ...

    async def mark_starting(self, key: str, conversation_id: str) -> JournalRow | None:
        """Commit the minted conversation id before the start request leaves (or, for a job
        this run holds in "starting" with that id, note that it is sent again). Raises
        AssertionError if another job holds, or held, that id. None: the job is not this
        run's to start now: another worker took it, or (the row is still pending) the
        account's running slots are all taken across workers. A shared journal may give a
        fresh id to another pending job instead (the first in its order that no other worker
        is claiming) and return that job's row; the job `key` then stays pending."""
        ...

    async def mark_pending(self, key: str) -> None:
        """The server provably did not take the start (e.g. its running cap refused it)."""
        ...

    async def mark_running(self, key: str, start_task_id: str) -> JournalRow:
        """The server took the start: record its start task; the job is running."""
        ...

    async def mark_ended(
        self,
        key: str,
        state: Literal["finished", "failed"],
        *,
        sandbox_status: str | None = None,
        execution_status: str | None = None,
        error: str | None = None,
    ) -> None:
        """The job ended (`state`), with the final statuses read and, if failed, why."""
        ...

    async def mark_ended_many(self, ends: Sequence[Ended]) -> set[str]:
        """`mark_ended` for each, in one round trip where the backend can. Returns the keys
        of the jobs another worker took over (whose `mark_ended` would raise
        `JournalLeaseLost`): nothing recorded for them."""
        ...

    async def retry(self, key: str) -> JournalRow:
        """Make a failed job pending again, its attempt moved to `history`."""
        ...

    async def reject(
        self,
        source: str,
        seq: int,
        state: Literal["failed", "skipped"],
        *,
        error: str,
        key: str | None = None,
        job: Any = None,
    ) -> None:
        """Record (or replace) what was wrong with the input at `source`."""
        ...

    async def rejects(self) -> Sequence[RejectRow]:
        """Every recorded reject, in input order."""
        ...

    # ------------------------------------------------------------------ sharing hooks

    async def adopt(self) -> Sequence[JournalRow]:
        """Starting/running jobs whose holder is gone, now this run's to look up on the
        server and follow (never to start again unless the server has no trace of them).
        A one-run journal: the rows an earlier run left, on the first call; then none."""
        ...

    async def claim_next(self, conversation_id: str) -> JournalRow | None:
        """Take the first pending job (with `feed_ahead`: whoever fed it; else one another
        worker fed) and mark it starting with `conversation_id`; None if there is none or no
        free slot. A one-run journal: None (a run starts the jobs it is given)."""
        ...

    async def claim_many(self, conversation_ids: Sequence[str]) -> Sequence[JournalRow]:
        """`claim_next` once per id, in order, in one round trip where the backend can: the
        jobs claimed, each marked starting with its id (fewer than the ids once nothing is
        pending or no slot is free). A one-run journal: none."""
        ...

    async def remaining(self) -> Remaining:
        """What is left beyond this run's own input (see `Remaining`)."""
        ...

    async def wait_for_slot(self, timeout: float) -> bool:
        """Until another holder frees a running slot or hands a job back (True), or
        `timeout` seconds (False)."""
        ...

    def in_flight_window(self, start_timeout: float) -> float:
        """Seconds a start sent by an adopted job's earlier holder may still reach the
        server: wait them out before sending it again. 0 when the earlier holder is
        provably gone (a one-run journal's lock); else `start_timeout` (a worker cut off
        from the database may still be sending)."""
        ...

    async def aclose(self) -> None:
        """Release the journal (and any hold on it). Safe to call twice."""
        ...

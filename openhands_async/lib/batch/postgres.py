"""The shared batch journal: one PostgreSQL database, any number of workers on any machines.

Owns the rules that let workers cooperate on one batch without a coordinator:

- jobs are inserted idempotently by key (every worker may feed the same JSONL);
- a claim hands one pending job to one worker (`FOR UPDATE SKIP LOCKED`) and, in the same
  transaction, takes a running slot of the worker's account (at most `max_running` jobs
  of an account starting or running, across all workers) and records the conversation id
  the worker minted, before its start request is sent;
- a worker's jobs carry a lease it renews; once a lease lapses (the worker died, or lost
  the database), a worker of the same account adopts the job: it looks the job up on the
  server by its recorded conversation id and follows it, never starting it again;
- accounts are labels derived from the API key by a keyed hash: the key is never stored.

psycopg (the `openhands-async[postgres]` extra) is imported only when a journal opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ... import errors
from ..._constants import DEFAULT_LEASE_SECONDS
from . import _postgres_schema as schema
from . import _postgres_sql as sql
from ._postgres_reads import Reads
from ._postgres_rows import SharedJobRow, account_label, connect, is_postgres_dsn
from ._postgres_rows import row as _row
from ._postgres_status import BatchStatus, WorkerStatus, batch_status
from .journal import Ended, Remaining

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString, Self

log = logging.getLogger("openhands_async")

__all__ = [
    "BatchStatus",
    "PostgresJournal",
    "SharedJobRow",
    "WorkerStatus",
    "account_label",
    "batch_status",
    "is_postgres_dsn",
]


class PostgresJournal(Reads):
    """`async with PostgresJournal(dsn, batch_name=..., account=...) as journal:`.

    One connection per worker for claims and updates (each one statement, autocommit), a
    second for `mark_running` (the answers to starts in flight, so that they do not queue
    ahead of the ends and claims that refill slots), one more that LISTENs for freed slots
    (opened with the journal, so none is missed). A
    background task renews the leases of the worker's jobs every third of `lease_seconds`;
    `close()` hands them over at once.
    `round_trips` counts the statements sent (for benchmarks).
    """

    #: Pending jobs are anyone's to claim: the runner feeds its input ahead, this many jobs
    #: in one statement, and starts what `claim_many` hands it (see `Journal.feed_ahead`).
    feed_ahead = 256

    def __init__(
        self,
        dsn: str,
        *,
        batch_name: str,
        account: str,
        max_running: int,
        worker: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if not batch_name:
            raise ValueError("batch_name must be a non-empty string")
        if isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1:
            raise ValueError(f"max_running must be an int >= 1, got {max_running!r}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.dsn = dsn
        self.batch_name = batch_name
        self.account = account
        self.max_running = max_running
        self.worker = worker or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.lease_seconds = float(lease_seconds)
        self.round_trips = 0
        #: Keys this worker claimed or adopted and has not ended.
        self.held: set[str] = set()
        #: Keys whose lease this worker lost to another worker (seen at a renewal).
        self.lost: set[str] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._side: psycopg.AsyncConnection[Any] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Conversation id -> key, for the ids this worker's claims just recorded (see
        # `key_of`).
        self._claimed_ids: dict[str, str] = {}

    # ------------------------------------------------------------------ lifetime

    async def open(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("the journal is open already")
        self._conn = await connect(self.dsn, f"openhands-async {self.worker}")
        host = {"host": socket.gethostname(), "pid": os.getpid(), "max_running": self.max_running}
        try:
            async with self._conn.transaction():
                await schema.create(self._execute)
            await self._execute(sql.REGISTER_WORKER, {**self._ids(), **host})
            await self.listen()
            self._side = await connect(self.dsn, f"openhands-async {self.worker} side")
        except BaseException:
            await self.close()
            raise
        self._heartbeat = asyncio.get_running_loop().create_task(self._renew_forever())
        return self

    async def close(self) -> None:
        """Stop renewing and hand this worker's unfinished jobs over (their leases end now:
        another worker adopts them at once; a later run of this worker would too)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        for other in (self._listener, self._side):
            if other is not None:
                await other.close()
        self._listener = self._side = None
        if self._conn is not None:
            with contextlib.suppress(Exception):  # the database may be what failed
                await self._execute(sql.RELEASE, self._ids())
            await self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ feeding, claiming

    async def claim(self, conversation_id: str, *, key: str | None = None) -> SharedJobRow | None:
        """Take the first pending job (or the one with `key`) and a slot of this account, and
        record `conversation_id` as its start's id: all in one transaction. None when no job
        is pending or the account's `max_running` slots are all taken."""
        import psycopg

        params = {
            **self._ids(),
            "max_running": self.max_running,
            "conversation_id": conversation_id,
            "lease": self.lease_seconds,
            "key": key,
        }
        try:
            cursor = await self._execute(sql.CLAIM, params)
        except psycopg.errors.UniqueViolation as exc:
            # Another job holds, or held, this id: it is never sent (see `Journal`).
            raise AssertionError(
                f"conversation id {conversation_id} is not job {key!r}'s to send: {exc}"
            ) from None
        record = await cursor.fetchone()
        if record is None:
            return None
        row = _row(record)
        self.held.add(row.key)
        # The claim recorded the id as this job's, and checked it, in its transaction; ids
        # are never reassigned: `key_of` can answer for it without asking again.
        self._claimed_ids[conversation_id] = row.key
        return row

    async def claim_many(self, conversation_ids: Sequence[str]) -> list[SharedJobRow]:
        """`claim` once per id (any pending job each), in one statement and transaction:
        the jobs claimed, in order; fewer once nothing is pending or the slots are taken."""
        import psycopg

        if not conversation_ids:
            return []
        params = {**self._ids(), "max_running": self.max_running, "lease": self.lease_seconds}
        try:
            cursor = await self._execute(sql.CLAIM_MANY, {**params, "ids": list(conversation_ids)})
        except psycopg.errors.UniqueViolation as exc:
            raise AssertionError(f"a minted conversation id is another job's: {exc}") from None
        rows = [_row(record) for record in await cursor.fetchall()]
        for row in rows:
            self.held.add(row.key)
            assert row.conversation_id is not None
            self._claimed_ids[row.conversation_id] = row.key  # see `claim`
        return rows

    async def adopt(self) -> list[SharedJobRow]:
        """This account's starting/running jobs whose holder's lease lapsed: now this
        worker's. Look each up on the server by its conversation id; never start it again."""
        cursor = await self._execute(sql.ADOPT, {**self._ids(), "lease": self.lease_seconds})
        rows = [_row(record) for record in await cursor.fetchall()]
        for row in rows:
            self.held.add(row.key)
            log.info("adopted job %s (conversation %s)", row.key, row.conversation_id)
        return rows

    async def remaining(self) -> Remaining:
        """Pending jobs (anyone's to claim), this account's jobs other workers hold, and
        when `adopt` is next worth calling: when the first of those leases lapses, else
        within a lease (a worker that claims a job now and dies lapses no sooner)."""
        cursor = await self._execute(sql.REMAINING, self._ids())
        record = await cursor.fetchone()
        assert record is not None
        pending, held, lapse = int(record[0]), int(record[1]), record[2]
        next_check = max(0.0, lapse) if held and lapse is not None else self.lease_seconds
        return Remaining(pending, held, min(next_check, self.lease_seconds))

    async def claim_next(self, conversation_id: str) -> SharedJobRow | None:
        return await self.claim(conversation_id)

    def in_flight_window(self, start_timeout: float) -> float:
        # A lapsed lease does not prove its holder dead: cut off from the database, it may
        # still be sending the start (retries included).
        return start_timeout

    async def listen(self) -> None:
        """Start hearing of freed slots (before the claim that may fail, so that a slot freed
        between that claim and `wait_for_slot` is not missed)."""
        if self._listener is None:
            listener = await connect(self.dsn, f"openhands-async {self.worker} listen")
            await listener.execute("LISTEN openhands_batch")
            self._listener = listener

    async def wait_for_slot(self, timeout: float) -> bool:
        """Until another worker frees a slot or hands a job back (True), or `timeout`."""
        await self.listen()
        assert self._listener is not None
        async for notify in self._listener.notifies(timeout=timeout):
            if notify.payload == self.batch_name:
                return True
        return False

    # ------------------------------------------------------------------ transitions

    async def mark_starting(self, key: str, conversation_id: str) -> SharedJobRow | None:
        """Claim the job `key` (read by this worker) with its minted id, or send again the
        start of a job this worker holds with its recorded id. None: not this worker's to
        start now (another worker took it, or the account has no free slot: see `get`)."""
        return await self.claim(conversation_id, key=key)

    async def mark_running(self, key: str, start_task_id: str) -> SharedJobRow:
        params = {"start_task_id": start_task_id}
        return _row(await self._fenced(key, sql.MARK_RUNNING, params, side=True))

    async def mark_pending(self, key: str) -> None:
        """The server provably did not take the start: the job and its slot are free again."""
        await self._fenced(key, sql.MARK_PENDING, {})
        self.held.discard(key)

    async def mark_ended(
        self,
        key: str,
        state: Literal["finished", "failed"],
        *,
        sandbox_status: str | None = None,
        execution_status: str | None = None,
        error: str | None = None,
    ) -> None:
        params = {
            "state": state,
            "sandbox_status": sandbox_status,
            "execution_status": execution_status,
            "error": error,
        }
        await self._fenced(key, sql.MARK_ENDED, params)
        self.held.discard(key)

    async def mark_ended_many(self, ends: Sequence[Ended]) -> set[str]:
        """`mark_ended` for all in one statement; the keys this worker no longer held."""
        params = {
            **self._ids(),
            "keys": [e.key for e in ends],
            "states": [e.state for e in ends],
            "sandbox": [e.sandbox_status for e in ends],
            "execution": [e.execution_status for e in ends],
            "errors": [e.error for e in ends],
        }
        cursor = await self._execute(sql.MARK_ENDED_MANY, params)
        recorded = {record[0] for record in await cursor.fetchall()}
        lost = {e.key for e in ends} - recorded
        self.held -= {e.key for e in ends}
        self.lost |= lost
        return lost

    async def retry(self, key: str) -> SharedJobRow:
        """Make the failed job `key` pending again (its attempt moved to `history`). If it is
        no longer failed (another worker retried it first), its row as it is now."""
        cursor = await self._execute(sql.RETRY, {"batch": self.batch_name, "key": key})
        record = await cursor.fetchone()
        if record is not None:
            return _row(record)
        found = await self.get(key)
        if found is None:
            raise KeyError(f"no job with key {key!r} in batch {self.batch_name!r}")
        return found

    async def retry_failed(self) -> int:
        """Put every failed job back to pending (old conversation ids kept in `history`)."""
        cursor = await self._execute(sql.RETRY_FAILED, {"batch": self.batch_name})
        return cursor.rowcount

    async def renew(self) -> int:
        """Extend the leases of this worker's jobs; returns how many. A held job missing from
        the renewal was adopted by another worker: it moves from `held` to `lost`."""
        cursor = await self._execute(sql.RENEW, {**self._ids(), "lease": self.lease_seconds})
        renewed = {record[0] for record in await cursor.fetchall()}
        gone = self.held - renewed
        if gone:
            # Ended or handed back by this worker in between? Those left `held` already.
            log.warning("lost the lease of jobs %s to another worker", sorted(gone))
            self.lost |= gone
            self.held -= gone
        return len(renewed)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew()
            except Exception as exc:  # keep trying: the next renewal may get through
                log.warning("could not renew leases: %s", exc)

    # ------------------------------------------------------------------ reads

    async def key_of(self, conversation_id: str) -> str | None:
        """The job that holds, or held, this id. For an id this worker's last claim recorded,
        the claim's answer (one round trip per start, not two): the claim inserted the id
        into `openhands_batch_conversations` (or found it there, its job's) and read its
        holder back in its own transaction, and nothing ever changes or deletes a row
        there. Answered once; later asks read the table."""
        known = self._claimed_ids.pop(conversation_id, None)
        if known is not None:
            return known
        cursor = await self._execute(sql.KEY_OF, {"cid": conversation_id})
        record = await cursor.fetchone()
        if record is None:
            return None
        batch, key = record
        # Another batch's id is never this batch's job's: name it so it matches no key here.
        return str(key) if batch == self.batch_name else f"{batch}/{key}"

    # ------------------------------------------------------------------ plumbing

    def _ids(self) -> dict[str, Any]:
        return {"batch": self.batch_name, "account": self.account, "worker": self.worker}

    def _require(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the journal is not open (use `async with` or `await open()`)")
        return self._conn

    async def _execute(
        self,
        query: LiteralString,
        params: Mapping[str, Any] | tuple[Any, ...] | None = None,
        *,
        side: bool = False,
    ) -> psycopg.AsyncCursor[Any]:
        self.round_trips += 1
        conn = self._side if side and self._side is not None else self._require()
        return await conn.execute(query, params)

    async def _fenced(
        self, key: str, query: LiteralString, params: Mapping[str, Any], *, side: bool = False
    ) -> Any:
        params = {**self._ids(), "key": key, **params}
        cursor = await self._execute(query, params, side=side)
        record = await cursor.fetchone()
        if record is None:
            self.held.discard(key)
            self.lost.add(key)
            raise errors.JournalLeaseLost(key, self.worker)
        return record

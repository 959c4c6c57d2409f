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
import hashlib
import hmac
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ... import errors
from ..._constants import DEFAULT_LEASE_SECONDS
from . import _postgres_sql as sql
from ._postgres_status import STATES, BatchStatus, WorkerStatus, read_status

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString, Self

log = logging.getLogger("openhands_async")

__all__ = ["BatchStatus", "PostgresJournal", "SharedJobRow", "WorkerStatus", "account_label"]

JobState = Literal["pending", "starting", "running", "finished", "failed"]
# The HMAC key of account labels: not a secret (anyone may compute a label), it only keeps
# a label from being a plain hash of the API key that other tools might also publish.
_LABEL_KEY = b"openhands-async batch account label v1"


def account_label(api_key: str, base_url: str) -> str:
    """A stable name for the account behind `api_key` on `base_url`, safe to store and show:
    HMAC-SHA256 over both, 80 bits in hex. API keys are long random strings, so the label
    cannot be turned back into the key."""
    digest = hmac.new(_LABEL_KEY, f"{base_url}\n{api_key}".encode(), hashlib.sha256)
    return "acct-" + digest.hexdigest()[:20]


def is_postgres_dsn(journal: str) -> bool:
    return journal.startswith(("postgresql://", "postgres://"))


@attrs.frozen
class SharedJobRow:
    """One job of a shared batch as the database holds it (times: seconds since the epoch,
    the database's clock)."""

    key: str
    seq: int
    job: dict[str, Any]
    state: JobState
    account: str | None
    worker: str | None
    conversation_id: str | None
    start_task_id: str | None
    sandbox_status: str | None
    execution_status: str | None
    error: str | None
    attempts: int
    history: list[str]
    created_at: float
    sent_at: float | None
    running_at: float | None
    ended_at: float | None
    lease_until: float | None


@attrs.frozen
class Remaining:
    """What stands between a worker and the end of the batch."""

    pending: int
    held_elsewhere: int  # this account's jobs other workers hold (adoptable if they die)
    next_lapse: float | None  # seconds until the first of those leases lapses


class PostgresJournal:
    """`async with PostgresJournal(dsn, batch_name=..., account=...) as journal:`.

    One connection per worker for claims and updates (each one statement, autocommit), one
    more while waiting for a slot (LISTEN). A background task renews the leases of the
    worker's jobs every third of `lease_seconds`; `close()` hands them over at once.
    `round_trips` counts the statements sent (for benchmarks).
    """

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
        self._heartbeat: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifetime

    async def open(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("the journal is open already")
        self._conn = await _connect(self.dsn, f"openhands-async {self.worker}")
        try:
            async with self._conn.transaction():
                await self._execute("SELECT pg_advisory_xact_lock(%s)", (sql.SCHEMA_LOCK,))
                await self._execute(sql.SCHEMA)
            await self._execute(
                sql.REGISTER_WORKER,
                {
                    **self._ids(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "max_running": self.max_running,
                },
            )
        except BaseException:
            await self._conn.close()
            self._conn = None
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
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
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

    async def add_many(self, jobs: Iterable[tuple[str, int, Mapping[str, Any]]]) -> int:
        """Insert (key, seq, job) rows as pending, keeping any row a key already has (from
        this worker or another); one statement for all. Returns how many were new."""
        keys: list[str] = []
        seqs: list[int] = []
        bodies: list[str] = []
        for key, seq, job in jobs:
            keys.append(key)
            seqs.append(seq)
            bodies.append(json.dumps(dict(job), sort_keys=True))
        if not keys:
            return 0
        cursor = await self._execute(
            sql.ADD, {"batch": self.batch_name, "keys": keys, "seqs": seqs, "jobs": bodies}
        )
        return cursor.rowcount

    async def add(self, key: str, seq: int, job: Mapping[str, Any]) -> SharedJobRow:
        """Insert one job (if its key is new) and return its row as the database has it."""
        await self.add_many([(key, seq, job)])
        row = await self.get(key)
        assert row is not None
        return row

    async def claim(self, conversation_id: str, *, key: str | None = None) -> SharedJobRow | None:
        """Take the first pending job (or the one with `key`) and a slot of this account, and
        record `conversation_id` as its start's id: all in one transaction. None when no job
        is pending or the account's `max_running` slots are all taken."""
        cursor = await self._execute(
            sql.CLAIM,
            {
                **self._ids(),
                "max_running": self.max_running,
                "conversation_id": conversation_id,
                "lease": self.lease_seconds,
                "key": key,
            },
        )
        record = await cursor.fetchone()
        if record is None:
            return None
        row = _row(record)
        self.held.add(row.key)
        return row

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
        cursor = await self._execute(sql.REMAINING, self._ids())
        record = await cursor.fetchone()
        assert record is not None
        return Remaining(int(record[0]), int(record[1]), record[2])

    async def listen(self) -> None:
        """Start hearing of freed slots (before the claim that may fail, so that a slot freed
        between that claim and `wait_for_slot` is not missed)."""
        if self._listener is None:
            listener = await _connect(self.dsn, f"openhands-async {self.worker} listen")
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
        record = await self._fenced(key, sql.MARK_RUNNING, {"start_task_id": start_task_id})
        return _row(record)

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

    async def get(self, key: str) -> SharedJobRow | None:
        cursor = await self._execute(sql.GET, {"batch": self.batch_name, "key": key})
        record = await cursor.fetchone()
        return None if record is None else _row(record)

    async def rows(self, *states: JobState) -> Sequence[SharedJobRow]:
        params = {"batch": self.batch_name, "states": list(states) or None}
        cursor = await self._execute(sql.ROWS, params)
        return [_row(record) for record in await cursor.fetchall()]

    async def counts(self) -> dict[str, int]:
        cursor = await self._execute(sql.COUNTS, {"batch": self.batch_name})
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for state, n in await cursor.fetchall():
            counts[state] = n
        return counts

    async def status(self) -> BatchStatus:
        return await read_status(self._require(), self.batch_name, self.lease_seconds)

    # ------------------------------------------------------------------ plumbing

    def _ids(self) -> dict[str, Any]:
        return {"batch": self.batch_name, "account": self.account, "worker": self.worker}

    def _require(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("the journal is not open (use `async with` or `await open()`)")
        return self._conn

    async def _execute(
        self, query: LiteralString, params: Mapping[str, Any] | tuple[Any, ...] | None = None
    ) -> psycopg.AsyncCursor[Any]:
        self.round_trips += 1
        return await self._require().execute(query, params)

    async def _fenced(self, key: str, query: LiteralString, params: Mapping[str, Any]) -> Any:
        cursor = await self._execute(query, {**self._ids(), "key": key, **params})
        record = await cursor.fetchone()
        if record is None:
            self.held.discard(key)
            self.lost.add(key)
            raise errors.JournalLeaseLost(key, self.worker)
        return record


async def _connect(dsn: str, application_name: str) -> psycopg.AsyncConnection[Any]:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "a postgresql:// journal needs psycopg: pip install 'openhands-async[postgres]'"
        ) from None
    return await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=application_name[:63]
    )


def _row(record: Any) -> SharedJobRow:
    (key, seq, job, state, account, worker, conversation_id, start_task_id, sandbox_status,
     execution_status, error, attempts, history, created_at, sent_at, running_at, ended_at,
     lease_until) = record  # fmt: skip
    return SharedJobRow(
        key, seq, job, state, account, worker, conversation_id, start_task_id, sandbox_status,
        execution_status, error, attempts, list(history), created_at, sent_at, running_at,
        ended_at, lease_until,
    )  # fmt: skip

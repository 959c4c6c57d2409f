"""`SQLiteJournal`: the batch journal in a SQLite file, one row per job, for one machine.

The conversation id is minted and committed *before* a start request is sent, so after a
crash at any point the journal holds enough to find out what the server did. The other
marks (a job added, running, ended, refused) are not needed for that: they ride along with
the next start's commit, or are committed within `JOURNAL_COMMIT_DELAY` seconds or on
close (a commit costs ~1 ms on a busy disk, four per job before). A crash can lose only
those: the next run then finds the start again (starting) or reads the job again
(running), and never sends a start twice. Inspect it
with `sqlite3 run.db 'select key, state, conversation_id from jobs'`. One run holds the
file at a time (an OS lock on `<path>.lock`). SQLite calls take microseconds on a local
file, so the async methods run them inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import attrs

from ..._constants import JOURNAL_COMMIT_DELAY
from ...errors import JournalLockedError
from .journal import Ended, JobState, JournalRow, NewJob, RejectRow, Remaining

__all__ = ["JournalLockedError", "SQLiteJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key              TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    job              TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('pending', 'starting', 'running', 'finished', 'failed')),
    conversation_id  TEXT,
    start_task_id    TEXT,
    sandbox_status   TEXT,
    execution_status TEXT,
    error            TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    running_at       REAL,
    ended_at         REAL,
    source           TEXT,
    history          TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
-- Every conversation id ever minted, and its job: no id ever serves two jobs.
CREATE TABLE IF NOT EXISTS conversation_ids (
    conversation_id  TEXT PRIMARY KEY,
    key              TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    source           TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('failed', 'skipped')),
    key              TEXT,
    job              TEXT,
    error            TEXT NOT NULL,
    recorded_at      REAL NOT NULL
);
"""
# Columns added after the first release: a journal written by it gains them on open.
_ADDED_COLUMNS = {"source": "TEXT", "history": "TEXT NOT NULL DEFAULT '[]'"}


class SQLiteJournal:
    """A SQLite (WAL) journal of a batch (see `Journal`), held by one run at a time.

    The exclusive hold is an OS file lock on `<path>.lock`: the kernel releases it when the
    process dies, even by SIGKILL, so a crashed run never leaves the journal locked.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """`path` is a file, or ":memory:" for a run that keeps nothing (and locks nothing)."""
        self.path = Path(path)
        self._lock_file: IO[str] | None = None
        if str(path) != ":memory:":
            self._lock()
        self._adopted = False  # the earlier run's starting/running rows handed over once
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._commit_timer: asyncio.TimerHandle | None = None
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only power loss can drop the last commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, decl in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
        self._db.execute(
            "INSERT OR IGNORE INTO conversation_ids SELECT conversation_id, key FROM jobs "
            "WHERE conversation_id IS NOT NULL"
        )

    def _lock(self) -> None:
        self._lock_file = open(f"{self.path}.lock", "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise JournalLockedError(
                f"journal {self.path} is in use by another run; wait for it to end "
                "(two runs on one journal could start the same job twice)"
            ) from None

    def close(self) -> None:
        """Commit what is held, close the database and release the lock. Safe to call
        twice."""
        with contextlib.suppress(sqlite3.ProgrammingError):  # already closed
            self._commit()
        self._db.close()
        if self._lock_file is not None and not self._lock_file.closed:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SQLiteJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    async def get(self, key: str) -> JournalRow | None:
        return self._get(key)

    def _get(self, key: str) -> JournalRow | None:
        row = self._db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return _row(row) if row else None

    async def rows(self, *states: JobState) -> list[JournalRow]:
        return self._rows(*states)

    def _rows(self, *states: JobState) -> list[JournalRow]:
        if states:
            marks = ",".join("?" for _ in states)
            cursor = self._db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", states
            )
        else:
            cursor = self._db.execute("SELECT * FROM jobs ORDER BY seq")
        return [_row(row) for row in cursor]

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(typing.get_args(JobState), 0)
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    # ------------------------------------------------------------------ writes (each commits)

    async def add(
        self, key: str, seq: int, job: dict[str, Any], *, source: str | None = None
    ) -> JournalRow:
        """Record a job as pending, or return the row a previous run left for this key."""
        with self._transaction(durable=False):
            self._db.execute(
                "INSERT OR IGNORE INTO jobs (key, seq, job, state, created_at, source) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (key, seq, json.dumps(job, sort_keys=True), time.time(), source),
            )
            if source is not None:
                self._db.execute("DELETE FROM rejects WHERE source = ?", (source,))
        return self._must_get(key)

    async def key_of(self, conversation_id: str) -> str | None:
        return self._key_of(conversation_id)

    def _key_of(self, conversation_id: str) -> str | None:
        row = self._db.execute(
            "SELECT key FROM conversation_ids WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        return None if row is None else str(row["key"])

    async def mark_starting(self, key: str, conversation_id: str) -> JournalRow:
        """Commit the minted conversation id before the start request leaves."""
        with self._transaction():  # the id is claimed and recorded together
            self._db.execute(
                "INSERT OR IGNORE INTO conversation_ids (conversation_id, key) VALUES (?, ?)",
                (conversation_id, key),
            )
            holder = self._key_of(conversation_id)
            if holder != key:
                raise AssertionError(
                    f"conversation id {conversation_id} belongs to job {holder!r} in journal "
                    f"{self.path}: it is never sent for job {key!r}"
                )
            self._update(
                key, state="starting", conversation_id=conversation_id, sent_at=time.time()
            )
        return self._must_get(key)

    async def mark_pending(self, key: str) -> None:
        """The server provably did not take the start (e.g. its concurrency cap refused it)."""
        with self._transaction(durable=False):
            self._update(key, state="pending", conversation_id=None, sent_at=None)

    async def mark_running(self, key: str, start_task_id: str) -> JournalRow:
        with self._transaction(durable=False):
            self._update(key, state="running", start_task_id=start_task_id, running_at=time.time())
        return self._must_get(key)

    async def mark_ended(
        self,
        key: str,
        state: Literal["finished", "failed"],
        *,
        sandbox_status: str | None = None,
        execution_status: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._transaction(durable=False):
            self._update(
                key,
                state=state,
                sandbox_status=sandbox_status,
                execution_status=execution_status,
                error=error,
                ended_at=time.time(),
            )

    async def retry(self, key: str) -> JournalRow:
        row = self._must_get(key)
        if row.state != "failed":
            raise ValueError(f"job {key!r} is {row.state}, not failed: nothing to retry")
        attempt = {name: getattr(row, name) for name in _ATTEMPT}
        with self._transaction():
            self._update(
                key,
                state="pending",
                history=json.dumps([*row.history, attempt], sort_keys=True),
                **dict.fromkeys(_ATTEMPT[1:]),
            )
        return self._must_get(key)

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
        with self._transaction(durable=False):
            self._db.execute(
                "INSERT OR REPLACE INTO rejects (source, seq, state, key, job, error, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source, seq, state, key, json.dumps(job, sort_keys=True), error, time.time()),
            )

    async def rejects(self) -> list[RejectRow]:
        cursor = self._db.execute("SELECT * FROM rejects ORDER BY seq")
        return [RejectRow(**{**dict(r), "job": json.loads(r["job"])}) for r in cursor]

    # ------------------------------------------------------------------ sharing hooks
    # One run holds the file (the lock), so these have trivial answers (see `Journal`).

    async def adopt(self) -> list[JournalRow]:
        if self._adopted:
            return []
        self._adopted = True
        return self._rows("starting", "running")

    feed_ahead = 0  # the run adds each job it reads (one ahead of the free slots)

    async def mark_ended_many(self, ends: Sequence[Ended]) -> set[str]:
        for end in ends:  # one run holds the file: no job is ever taken over
            await self.mark_ended(
                end.key,
                end.state,
                sandbox_status=end.sandbox_status,
                execution_status=end.execution_status,
                error=end.error,
            )
        return set()

    async def add_all(self, jobs: Sequence[NewJob]) -> list[JournalRow]:
        return [await self.add(key, seq, job, source=source) for key, seq, job, source in jobs]

    async def claim_next(self, conversation_id: str) -> JournalRow | None:
        return None

    async def claim_many(self, conversation_ids: Sequence[str]) -> list[JournalRow]:
        return []

    async def remaining(self) -> Remaining:
        return Remaining()

    async def wait_for_slot(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False

    def in_flight_window(self, start_timeout: float) -> float:
        return 0.0  # the lock proves the run that sent it is gone

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[None]:
        """Group statements (the connection is in autocommit mode). `durable`: committed
        when this returns, with any writes held before; otherwise held (see module docs)."""
        nested = self._db.in_transaction  # writes held: keep them if these fail
        self._db.execute("SAVEPOINT write" if nested else "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if nested:
                self._db.execute("ROLLBACK TO write")
                self._db.execute("RELEASE write")
            else:
                self._db.execute("ROLLBACK")
            raise
        if nested:
            self._db.execute("RELEASE write")
        if durable:
            self._commit()
        elif self._commit_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # used without a loop: nothing would commit it later
                self._commit()
            else:
                self._commit_timer = loop.call_later(JOURNAL_COMMIT_DELAY, self._commit)

    def _commit(self) -> None:
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def _must_get(self, key: str) -> JournalRow:
        row = self._get(key)
        if row is None:
            raise KeyError(f"no job with key {key!r} in journal {self.path}")
        return row

    def _update(self, key: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        cursor = self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE key = ?", (*fields.values(), key)
        )
        if cursor.rowcount != 1:
            raise KeyError(f"no job with key {key!r} in journal {self.path}")

    def export_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write every job's outcome as one JSON object per line; returns the count."""
        n = 0
        with open(path, "w", encoding="utf-8") as out:
            for row in self._rows():
                out.write(json.dumps(attrs.asdict(row), sort_keys=True) + "\n")
                n += 1
        return n


# What one attempt at a job wrote (kept in `history` when the job is retried).
_ATTEMPT = (
    "state",
    "conversation_id",
    "start_task_id",
    "sandbox_status",
    "execution_status",
    "error",
    "sent_at",
    "running_at",
    "ended_at",
)


def _row(row: sqlite3.Row) -> JournalRow:
    values = dict(row)
    values["job"] = json.loads(values["job"])
    values["history"] = tuple(json.loads(values["history"] or "[]"))
    return JournalRow(**values)

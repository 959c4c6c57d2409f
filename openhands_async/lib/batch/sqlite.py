"""`SQLiteJournal`: the batch journal in a SQLite file, one row per job, for one machine.

The conversation id is minted and committed *before* a start request is sent, so after a
crash at any point the journal holds enough to find out what the server did. Inspect it
with `sqlite3 run.db 'select key, state, conversation_id from jobs'`. One run holds the
file at a time (an OS lock on `<path>.lock`). SQLite calls take microseconds on a local
file, so the async methods run them inline.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import typing
from pathlib import Path
from typing import IO, Any, Literal

import attrs

from ...errors import JournalLockedError
from .journal import JobState, JournalRow

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
    ended_at         REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


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
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only power loss can drop the last commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

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
        """Close the database and release the lock. Safe to call twice."""
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

    async def add(self, key: str, seq: int, job: dict[str, Any]) -> JournalRow:
        """Record a job as pending, or return the row a previous run left for this key."""
        self._db.execute(
            "INSERT OR IGNORE INTO jobs (key, seq, job, state, created_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (key, seq, json.dumps(job, sort_keys=True), time.time()),
        )
        return self._must_get(key)

    async def mark_starting(self, key: str, conversation_id: str) -> JournalRow:
        """Commit the minted conversation id before the start request leaves."""
        self._update(key, state="starting", conversation_id=conversation_id, sent_at=time.time())
        return self._must_get(key)

    async def mark_pending(self, key: str) -> None:
        """The server provably did not take the start (e.g. its concurrency cap refused it)."""
        self._update(key, state="pending", conversation_id=None, sent_at=None)

    async def mark_running(self, key: str, start_task_id: str) -> JournalRow:
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
        self._update(
            key,
            state=state,
            sandbox_status=sandbox_status,
            execution_status=execution_status,
            error=error,
            ended_at=time.time(),
        )

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


def _row(row: sqlite3.Row) -> JournalRow:
    values = dict(row)
    values["job"] = json.loads(values["job"])
    return JournalRow(**values)

"""The shared journal's statements that hold no lease: feeding jobs (one or many at a time),
reads, and rejects. A mixin of `PostgresJournal`, kept apart for size. Every method is one
statement on the worker's connection (`_execute`, which counts it), unless it says so."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import _postgres_sql as sql
from ._postgres_rows import SharedJobRow, reject_row
from ._postgres_rows import row as _row
from ._postgres_status import STATES, BatchStatus, read_status
from .journal import JobState, NewJob, RejectRow

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString

__all__ = ["Reads"]


class Reads:
    """Feeding and reading one batch (state lives on `PostgresJournal`)."""

    batch_name: str
    lease_seconds: float

    def _require(self) -> psycopg.AsyncConnection[Any]:
        raise NotImplementedError  # PostgresJournal's

    async def _execute(
        self,
        query: LiteralString,
        params: Mapping[str, Any] | tuple[Any, ...] | None = None,
        *,
        side: bool = False,
    ) -> psycopg.AsyncCursor[Any]:
        raise NotImplementedError  # PostgresJournal's

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

    async def add(
        self, key: str, seq: int, job: Mapping[str, Any], *, source: str | None = None
    ) -> SharedJobRow:
        """Insert one job (if its key is new) and return its row as the database has it; a
        reject recorded at `source` goes. One round trip."""
        body = json.dumps(dict(job), sort_keys=True)
        params = {"batch": self.batch_name, "key": key, "seq": seq, "source": source}
        record = await (await self._execute(sql.ADD_ONE, {**params, "job": body})).fetchone()
        if record is None:  # inserted by another worker after this statement's snapshot
            found = await self.get(key)
            assert found is not None
            return found
        return _row(record)

    async def add_all(self, jobs: Sequence[NewJob]) -> list[SharedJobRow]:
        """`add` for many jobs in one statement (one more only for keys another worker was
        inserting at that moment): each job's row as the database has it, in no particular
        order."""
        if not jobs:
            return []
        keys = [key for key, _, _, _ in jobs]
        params = {
            "batch": self.batch_name,
            "keys": keys,
            "seqs": [seq for _, seq, _, _ in jobs],
            "jobs": [json.dumps(dict(job), sort_keys=True) for _, _, job, _ in jobs],
            "sources": [source for _, _, _, source in jobs],
        }
        cursor = await self._execute(sql.FEED, params)
        rows = [_row(record) for record in await cursor.fetchall()]
        if len(rows) < len(keys):  # inserted by others after this statement's snapshot
            have = {row.key for row in rows}
            rows += await self.rows_of([key for key in keys if key not in have])
        return rows

    async def get(self, key: str) -> SharedJobRow | None:
        cursor = await self._execute(sql.GET, {"batch": self.batch_name, "key": key})
        record = await cursor.fetchone()
        return None if record is None else _row(record)

    async def rows_of(self, keys: Sequence[str]) -> list[SharedJobRow]:
        """The rows of these keys (those that exist), in no particular order."""
        cursor = await self._execute(sql.ROWS_OF, {"batch": self.batch_name, "keys": list(keys)})
        return [_row(record) for record in await cursor.fetchall()]

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
        body = json.dumps(job, sort_keys=True)
        values = {"source": source, "seq": seq, "state": state, "key": key, "error": error}
        await self._execute(sql.REJECT, {"batch": self.batch_name, "job": body, **values})

    async def rejects(self) -> list[RejectRow]:
        cursor = await self._execute(sql.REJECTS, {"batch": self.batch_name})
        return [reject_row(record) for record in await cursor.fetchall()]

    async def status(self) -> BatchStatus:
        return await read_status(self._require(), self.batch_name, self.lease_seconds)

"""The shared journal's reads and its records that hold no job (rejects): a mixin of
`PostgresJournal`, kept apart for size. Every method is one statement on the worker's
connection (`_execute`, which counts it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import _postgres_sql as sql
from ._postgres_rows import SharedJobRow, reject_row
from ._postgres_rows import row as _row
from ._postgres_status import STATES, BatchStatus, read_status
from .journal import JobState, RejectRow

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString

__all__ = ["Reads"]


class Reads:
    """Reads of one batch (state lives on `PostgresJournal`)."""

    batch_name: str
    lease_seconds: float

    def _require(self) -> psycopg.AsyncConnection[Any]:
        raise NotImplementedError  # PostgresJournal's

    async def _execute(
        self, query: LiteralString, params: Mapping[str, Any] | tuple[Any, ...] | None = None
    ) -> psycopg.AsyncCursor[Any]:
        raise NotImplementedError  # PostgresJournal's

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

"""`PollLoop`: the poller's engine. One background task runs cycles (see `lib/poller.py`
for what a cycle reads and when): it picks the due items, reads them in batch requests,
and turns each answer into a `StatusChange` for the feeds. `ConversationPoller` is its
public face (tracking, feeds, lifetime) and sets the state declared here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from .._batch import chunked, for_each_bounded
from .._constants import MAX_BATCH_IDS
from .._inputs import normalize_uuid
from ..errors import ResponseValidationError
from ..models import StartTask, StartTaskStatus
from ._polling import (
    _CLOSED,
    _IDLE,
    MISSING,
    ChangeFeed,
    Kind,
    Model,
    PollerHost,
    PollerStats,
    StatusChange,
    StatusTable,
    _Item,
    _Queued,
    parse,
    read_raw,
    status_of,
)

__all__ = ["PollLoop"]

log = logging.getLogger("openhands_async")


class PollLoop:
    """The loop and what a read means; the state is set by `ConversationPoller.__init__`."""

    _client: PollerHost
    min_interval: float
    max_interval: float
    max_in_flight: int
    fixed_rate: bool
    stats: PollerStats
    _table: StatusTable
    _active: dict[str, _Item]
    _done: dict[str, Model | None]
    _missing_kinds: dict[str, Kind]  # kind of the ids the server had not
    _urgent: set[str]  # to read in the next cycle (`refresh`)
    # Weakly: a feed its consumer dropped stops receiving (and is freed).
    _subscribers: weakref.WeakSet[ChangeFeed]
    _wake: asyncio.Event | None
    _idle: asyncio.Event | None
    _error: BaseException | None
    _closed: bool

    def _track(self, key: str, kind: Kind, seen: Model | None = None) -> str:
        if self._closed:
            raise RuntimeError("this poller is closed")
        if key in self._active:
            return key
        self._done.pop(key, None)
        self._missing_kinds.pop(key, None)
        item = self._active[key] = _Item(key, kind, 0.0, self.min_interval)
        if seen is not None and not seen.is_terminal:
            # Taken as the first read (a final one is read again: its end is the read's).
            with contextlib.suppress(RuntimeError):  # no loop yet: read at once
                item.due = asyncio.get_running_loop().time() + self.min_interval
                item.status = status_of(seen)
        if self._idle is not None:
            self._idle.clear()
        if self._wake is not None:
            self._wake.set()
        return key

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        slack = self.min_interval / 2
        try:
            while True:
                self._wake.clear()
                now = loop.time()
                horizon = now + slack
                # Here, between cycles, every `due` is a loop time (a cycle makes it relative).
                for key in self._urgent:
                    if (item := self._active.get(key)) is not None:
                        # Halved: an unchanged answer doubles it back to min_interval.
                        item.due, item.interval = now, self.min_interval / 2
                self._urgent.clear()
                due = [item for item in self._active.values() if item.due <= horizon]
                if due:
                    await self._cycle(due)
                    continue
                if not self._active:
                    await self._wake.wait()
                    continue
                next_due = min(item.due for item in self._active.values())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, next_due - now))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug or a non-transient API error: tell consumers
            if isinstance(exc, Exception):  # Ctrl-C (3.10 delivers it here) is the user's
                log.warning("poller stopped: %r", exc)
            self._error = exc
            if self._idle is not None:
                self._idle.set()
            self._broadcast(_CLOSED)
            if not isinstance(exc, Exception):
                raise

    async def _cycle(self, due: Sequence[_Item]) -> None:
        tasks = [item for item in due if item.kind == "start_task"]
        convs = [item for item in due if item.kind == "conversation"]
        chunks = [*chunked(tasks, MAX_BATCH_IDS), *chunked(convs, MAX_BATCH_IDS)]
        self.stats.count_cycle(len(tasks), len(convs), len(chunks))
        # Chunks are observed as they come in (<= max_in_flight alive). Intervals count from
        # the cycle's end, or (`fixed_rate`) its start, unless it took over min_interval/2:
        # the next cycle takes in items due that soon, so it would start at once (back to
        # back on a server slow to answer). Items read together stay due together (`due`
        # holds the interval; base added here).
        clock = asyncio.get_running_loop().time
        start = clock()
        await for_each_bounded(chunks, self._read_chunk, concurrency=self.max_in_flight)
        end = clock()
        quick = end - start <= self.min_interval / 2
        base = start if self.fixed_rate and quick else end
        for item in due:
            item.due += base
        if not self._active:
            self._went_idle()

    async def _read_chunk(self, chunk: Sequence[_Item]) -> None:
        # Ids were normalized when tracked; a chunk is <= 99 ids, so this is one request.
        result = await read_raw(self._client, chunk[0].kind, [i.id for i in chunk])
        now = 0.0  # the cycle adds its end time (see `_cycle`)
        if isinstance(result, BaseException):
            self.stats.failed_requests += 1
            for item in chunk:
                self._back_off(item, now)
            return
        for item, raw in zip(chunk, result, strict=True):
            self._observe(item, raw, now)

    def _back_off(self, item: _Item, now: float) -> None:
        item.interval = min(self.max_interval, item.interval * 2)
        item.due = now + item.interval

    def _observe(self, item: _Item, raw: dict[str, Any] | None, now: float) -> None:
        if self._active.get(item.id) is not item:
            return  # untracked (or re-tracked) while the read was in flight
        if raw is None:
            del self._active[item.id]
            self._done[item.id] = None
            self._missing_kinds[item.id] = item.kind
            self._emit(StatusChange(item.id, item.kind, item.status, MISSING, None, True, True))
            return
        key = self._table.key(item.kind, raw)
        row = self._table.row(key, raw)
        if row is not None and row[0] == item.status:
            self._back_off(item, now)
            return
        model: Model | None = None
        if row is None or row[1] is not False or self._subscribers:
            # A model only when a feed will see it, it is kept (terminal), or the raw fields
            # cannot tell the status or whether it is terminal.
            try:
                model = parse(self._client, item.kind, raw)
            except ResponseValidationError as exc:  # one bad object: read it again later
                log.info("poller read of %s failed (%r); retrying later", item.id, exc)
                self._back_off(item, now)
                return
            status, terminal = status_of(model), model.is_terminal
            if row is not None:
                row[1] = terminal
            if status == item.status:
                self._back_off(item, now)
                return
        else:
            status, terminal = row[0], False
        old, item.status = item.status, status
        item.interval = self.min_interval
        item.due = now + item.interval
        if terminal:
            del self._active[item.id]
            self._done[item.id] = model
        self._emit(StatusChange(item.id, item.kind, old, status, model, terminal))
        if (
            isinstance(model, StartTask)
            and model.status is StartTaskStatus.READY
            and model.app_conversation_id
        ):
            conv_id = normalize_uuid(model.app_conversation_id, "app_conversation_id")
            if conv_id not in self._active and conv_id not in self._done:
                self._track(conv_id, "conversation")

    def _emit(self, change: StatusChange) -> None:
        self.stats.changes += 1
        self._broadcast(change)

    def _broadcast(self, item: _Queued) -> None:
        for feed in list(self._subscribers):
            feed._put(item)

    def _went_idle(self) -> None:
        if self._idle is not None:
            self._idle.set()
        self._broadcast(_IDLE)

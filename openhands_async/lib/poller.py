"""`ConversationPoller`: follow many start tasks and conversations with batch reads.

One background task runs *cycles*. A cycle takes every tracked item that is due, reads
them with the batch routes (<= 99 ids a request, start tasks and conversations in
separate requests, at most `max_in_flight` requests at once), and records what changed.
A cycle sends exactly ceil(due start tasks / 99) + ceil(due conversations / 99) requests.
Every request goes through the client's request pipeline, so its rate limit, retries and
client-wide 429 pause apply to the poller like to any other call.

Intervals (per item; `poll_interval` is the base, `min_interval` defaults to a quarter of it
and `max_interval` to four times it):

- an item just added or whose status just changed is read again after `min_interval`;
- an item whose status did not change since its last read waits twice as long as last
  time, capped at `max_interval` (min, 2*min, 4*min, ... max);
- a read that failed (connection error, 5xx, 429 after the client's own retries) counts
  as "quiet": the item backs off the same way and is read again later, never dropped.
Items due within `min_interval / 2` of a cycle are read in it too (they share requests).

Terminal: a start task READY or ERROR (READY hands over to its conversation, which is then
followed automatically); a conversation whose `is_terminal` holds. Sandbox PAUSED is not
terminal: it is reported as a change and followed on. An id the server answers null for is
reported once as missing and no longer read. Cost: per followed item the poller keeps its
id, kind, status and schedule (~100-300 bytes); a model only once the item is final (what
`wait()` returns). A read builds a typed model only for a change a feed will see or a final
one: an unchanged item is compared by its raw status fields (`_polling.StatusTable`), as
building a model costs 1.5-3x parsing it. Each chunk's answer is observed as it comes in (a
cycle holds <= `max_in_flight`); each consumer reads its own `ChangeFeed` (`changes()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from .._batch import chunked, for_each_bounded
from .._constants import DEFAULT_POLLER_INTERVAL, DEFAULT_POLLER_MAX_IN_FLIGHT, MAX_BATCH_IDS
from .._inputs import normalize_uuid
from ..errors import ResponseValidationError
from ..models import Conversation, StartTask, StartTaskStatus
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
    bounds,
    final_change,
    parse,
    read_raw,
    resolve_poll_interval,
    status_of,
)

__all__ = ["ChangeFeed", "ConversationPoller", "PollerHost", "PollerStats", "StatusChange"]

log = logging.getLogger("openhands_async")


class ConversationPoller:
    """Follow many start tasks and conversations until they are done (see module docs).

    Create it with `client.poller(...)`. It starts on first use of `changes()`, `wait()`
    or `as_completed()`, or with `async with poller:`; stop it with `await poller.aclose()`
    (the client's `aclose()` stops its pollers too).
    """

    def __init__(
        self,
        client: PollerHost,
        poll_interval: float | None = None,
        *,
        min_interval: float | None = None,
        max_interval: float | None = None,
        max_in_flight: int = DEFAULT_POLLER_MAX_IN_FLIGHT,
        interval: float | None = None,
        fixed_rate: bool = False,
    ) -> None:
        """`interval`: deprecated name of `poll_interval`. `fixed_rate`: see `_cycle`."""
        period = resolve_poll_interval(poll_interval, interval, DEFAULT_POLLER_INTERVAL)
        min_i, max_i = bounds(period, min_interval, max_interval)
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self._client = client
        self.poll_interval = period
        self.min_interval = min_i
        self.max_interval = max_i
        self.max_in_flight = max_in_flight
        self.fixed_rate = fixed_rate
        self.stats = PollerStats()
        self._table = StatusTable()
        self._active: dict[str, _Item] = {}
        self._done: dict[str, Model | None] = {}
        self._missing_kinds: dict[str, Kind] = {}  # kind of the ids the server had not
        # Weakly: a feed its consumer dropped stops receiving (and is freed).
        self._subscribers: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._closed = False

    # ------------------------------------------------------------------ tracking

    def track_start_task(self, task_id: str) -> str:
        """Follow a start task to READY (then its conversation) or ERROR. Returns the id."""
        return self._track(normalize_uuid(task_id, "task_id"), "start_task")

    def track_conversation(self, conversation_id: str) -> str:
        """Follow a conversation until it is terminal. Returns the normalized id. The server
        answers null for a conversation until its sandbox exists, so track one known to exist
        (or follow its start task instead): a null read is reported as missing, ends tracking."""
        return self._track(normalize_uuid(conversation_id, "conversation_id"), "conversation")

    def track_start_tasks(self, task_ids: Iterable[str]) -> list[str]:
        """`track_start_task` for each id; returns the normalised ids."""
        return [self.track_start_task(i) for i in task_ids]

    def track_conversations(self, conversation_ids: Iterable[str]) -> list[str]:
        """`track_conversation` for each id; returns the normalised ids."""
        return [self.track_conversation(i) for i in conversation_ids]

    def untrack(self, item_id: str) -> None:
        """Stop following an item and forget it (no error if it is not tracked)."""
        key = normalize_uuid(item_id, "id")
        self._active.pop(key, None)
        self._done.pop(key, None)
        self._missing_kinds.pop(key, None)
        if not self._active:
            self._went_idle()

    def _track(self, key: str, kind: Kind) -> str:
        if self._closed:
            raise RuntimeError("this poller is closed")
        if key in self._active:
            return key
        self._done.pop(key, None)
        self._missing_kinds.pop(key, None)
        self._active[key] = _Item(key, kind, 0.0, self.min_interval)
        if self._idle is not None:
            self._idle.clear()
        if self._wake is not None:
            self._wake.set()
        return key

    @property
    def tracked(self) -> int:
        """Items still being read (not yet terminal)."""
        return len(self._active)

    @property
    def interval(self) -> float:
        """Deprecated: `poll_interval`."""
        return self.poll_interval

    def results(self) -> dict[str, StartTask | Conversation | None]:
        """Final model of every item that is done, as of now (None: the server had no such id).
        Items still followed are not included: the poller keeps only their status (to stay
        small with thousands of items); their latest model comes with each `StatusChange`."""
        return dict(self._done)

    # ------------------------------------------------------------------ consuming

    def changes(self, *, until_idle: bool = True) -> ChangeFeed:
        """Every status change from now on, in order; ends when nothing is left to follow
        (or, with `until_idle=False`, only when the poller closes: for consumers that keep
        adding items, such as a service or the batch runner).

        Each call gets its own stream; changes seen before the call are not replayed.
        """
        return self._subscribe(until_idle=until_idle, only_terminal=False)

    def as_completed(self) -> ChangeFeed:
        """The final `StatusChange` of each item as it finishes (already finished ones first).

        A start task that becomes READY hands over to its conversation and is not yielded;
        the conversation is. For items finished before the call the change is rebuilt from
        the final model (`old` is None).
        """
        feed = self._subscribe(until_idle=True, only_terminal=True)
        for key, model in self._done.items():
            # The feed drops READY start tasks (their conversations are the results).
            feed._put(final_change(key, model, self._missing_kinds.get(key, "conversation")))
        return feed

    async def wait(
        self, timeout: float | None = None
    ) -> dict[str, StartTask | Conversation | None]:
        """Wait until every tracked item is terminal; return id -> final model (None: missing).

        That is `results()` once nothing is left to follow (if the poller was closed first,
        items it still followed are absent). Raises `asyncio.TimeoutError` after `timeout`
        seconds (the poller keeps running).
        """
        self._ensure_started()
        assert self._idle is not None
        if timeout is None:
            await self._idle.wait()
        else:
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._raise_if_failed()
        return self.results()

    def _subscribe(self, *, until_idle: bool, only_terminal: bool) -> ChangeFeed:
        self._ensure_started()
        feed = ChangeFeed(self, until_idle=until_idle, only_terminal=only_terminal)
        self._subscribers.add(feed)
        return feed

    def _unsubscribe(self, feed: ChangeFeed) -> None:
        self._subscribers.discard(feed)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------ lifetime

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("this poller is closed")
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        if not self._active:
            self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._run())
        # Its failure reaches consumers (`_error`); never "exception never retrieved" at exit.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._client._register_poller(self)

    async def start(self) -> ConversationPoller:
        """Start polling now (it otherwise starts on first use); returns the poller."""
        self._ensure_started()
        return self

    async def __aenter__(self) -> ConversationPoller:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background task; waiting consumers return. Safe to call twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait does not re-raise the task's CancelledError, but a cancel of the
            # caller itself still propagates.
            await asyncio.wait([task])
        self._client._unregister_poller(self)
        if self._idle is not None:
            self._idle.set()
        self._broadcast(_CLOSED)

    @property
    def running(self) -> bool:
        """True while the polling loop runs."""
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        slack = self.min_interval / 2
        try:
            while True:
                self._wake.clear()
                now = loop.time()
                horizon = now + slack
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
        # the cycle's end, or (`fixed_rate`) its start but >= min_interval/2 after its end;
        # items read together stay due together (`due` holds the interval; base added here).
        clock = asyncio.get_running_loop().time
        start = clock()
        await for_each_bounded(chunks, self._read_chunk, concurrency=self.max_in_flight)
        end = clock()
        base = max(start, end - self.min_interval / 2) if self.fixed_rate else end
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

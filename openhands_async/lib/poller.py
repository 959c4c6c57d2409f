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
reported once as missing and no longer read. `refresh(id)` reads an item in the next cycle,
for a caller told by other means that it changed (the batch runner's `watch_ends`).

Cost: per followed item the poller keeps its id, kind, status and schedule (~100-300
bytes); a model only once the item is final (what `wait()` returns). A read builds a typed
model only for a change a feed will see or a final one: an unchanged item is compared by
its raw status fields (`_polling.StatusTable`), as building a model costs 1.5-3x parsing
it. Each chunk's answer is observed as it comes in (a cycle holds <= `max_in_flight`);
each consumer reads its own `ChangeFeed` (`changes()`).
The loop itself lives in `lib/_poll_loop.py`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable

from .._constants import DEFAULT_POLLER_INTERVAL, DEFAULT_POLLER_MAX_IN_FLIGHT
from .._inputs import normalize_uuid
from ..models import Conversation, StartTask
from ._poll_loop import PollLoop
from ._polling import (
    _CLOSED,
    ChangeFeed,
    PollerHost,
    PollerStats,
    StatusChange,
    StatusTable,
    bounds,
    final_change,
    resolve_poll_interval,
)

__all__ = ["ChangeFeed", "ConversationPoller", "PollerHost", "PollerStats", "StatusChange"]


class ConversationPoller(PollLoop):
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
        """`interval`: deprecated name of `poll_interval`. `fixed_rate`: see `PollLoop._cycle`."""
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
        self._active = {}
        self._done = {}
        self._missing_kinds = {}
        self._urgent = set()
        self._subscribers = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._wake = None
        self._idle = None
        self._error = None
        self._closed = False

    # ------------------------------------------------------------------ tracking

    def track_start_task(self, task: str | StartTask) -> str:
        """Follow a start task to READY (then its conversation) or ERROR. Returns the id.

        Given the `StartTask` a start returned (not its id), its status is taken as read:
        the first read comes `min_interval` later, and no change is reported until it moves.
        """
        if isinstance(task, StartTask):
            return self._track(normalize_uuid(task.id, "task_id"), "start_task", task)
        return self._track(normalize_uuid(task, "task_id"), "start_task")

    def track_conversation(self, conversation: str | Conversation) -> str:
        """Follow a conversation until it is terminal. Returns the normalized id. The server
        answers null for a conversation until its sandbox exists, so track one known to exist
        (or follow its start task instead): a null read is reported as missing, ends tracking.
        A `Conversation` just read is taken as read, as a `StartTask` is above."""
        if isinstance(conversation, Conversation):
            key = normalize_uuid(conversation.id, "conversation_id")
            return self._track(key, "conversation", conversation)
        return self._track(normalize_uuid(conversation, "conversation_id"), "conversation")

    def track_start_tasks(self, task_ids: Iterable[str | StartTask]) -> list[str]:
        """`track_start_task` for each id (or model); returns the normalised ids."""
        return [self.track_start_task(i) for i in task_ids]

    def track_conversations(self, conversation_ids: Iterable[str | Conversation]) -> list[str]:
        """`track_conversation` for each id (or model); returns the normalised ids."""
        return [self.track_conversation(i) for i in conversation_ids]

    def refresh(self, item_id: str) -> None:
        """Read a followed item now, not at its turn: for a caller told by other means (its
        events, say) that it changed. Its back-off then starts over (`min_interval`, twice
        that, ...). Nothing happens if it is not followed."""
        key = normalize_uuid(item_id, "id")
        if key in self._active:
            self._urgent.add(key)
            if self._wake is not None:
                self._wake.set()

    def untrack(self, item_id: str) -> None:
        """Stop following an item and forget it (no error if it is not tracked)."""
        key = normalize_uuid(item_id, "id")
        self._active.pop(key, None)
        self._done.pop(key, None)
        self._missing_kinds.pop(key, None)
        if not self._active:
            self._went_idle()

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

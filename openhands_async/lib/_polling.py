"""The poller's vocabulary and edges: what it reports (`StatusChange`, `PollerStats`), the
one table a status string is built from, the batch reads it sends, and `ChangeFeed`, the
queue each consumer reads.

The poller compares an unchanged item by its raw status fields and builds a model only on a
change, so the raw reading and the model reading must give the same string. Both go through
`STATUS_FIELDS` and `_join`, and the raw defaults are read from the models' own attrs
defaults, so they agree by construction.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs

from ..errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    RateLimitError,
    ResponseValidationError,
)
from ..models import Conversation, StartTask, StartTaskStatus

if TYPE_CHECKING:
    from ..resources.conversations import Conversations
    from ..resources.start_tasks import StartTasks

__all__ = [
    "MISSING",
    "ChangeFeed",
    "Kind",
    "Model",
    "PollerHost",
    "PollerStats",
    "StatusChange",
    "StatusTable",
    "raw_status",
    "read_raw",
    "resolve_poll_interval",
    "status_of",
]

log = logging.getLogger("openhands_async")

Kind = Literal["start_task", "conversation"]
Model = StartTask | Conversation
MODELS: dict[Kind, type[Model]] = {"start_task": StartTask, "conversation": Conversation}
MISSING = "MISSING"

#: The fields a status string is made of, per kind, in order, joined with "/" (an absent
#: optional field is left out: "PAUSED", "RUNNING/finished"). Model attribute names are
#: the wire names.
STATUS_FIELDS: dict[Kind, tuple[str, ...]] = {
    "start_task": ("status",),
    "conversation": ("sandbox_status", "execution_status"),
}


def _wire(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


# Each field's value when the JSON omits it: the model's default, as the wire spells it.
_RAW_DEFAULTS: dict[Kind, tuple[str | None, ...]] = {
    kind: tuple(_wire(attrs.fields_dict(MODELS[kind])[name].default) for name in names)
    for kind, names in STATUS_FIELDS.items()
}


def _join(values: Sequence[str | None]) -> str:
    # Interned, so 10,000 followed items share a few strings.
    return sys.intern("/".join(v for v in values if v is not None))


def raw_status(kind: Kind, raw: dict[str, Any]) -> str | None:
    """What `status_of` gives for this object's model, without building it; None when a
    status field is not a string (or null where the model requires a value): building the
    model then decides."""
    values: list[str | None] = []
    for name, default in zip(STATUS_FIELDS[kind], _RAW_DEFAULTS[kind], strict=True):
        value = raw.get(name, default)
        if type(value) is not str and not (value is None and default is None):
            return None
        values.append(value)
    return _join(values)


class StatusTable:
    """Status strings by their raw field values, so that an unchanged read costs one tuple
    and one dict look-up (no join, no per-field type checks): a key gets in only through
    `raw_status`, which checked its values. `terminal` of a key is learnt from the first
    model built for it (`is_terminal` depends on the status fields alone), so a change need
    not build a model only to know whether it is terminal.
    """

    __slots__ = ("_getters", "_rows")

    _CAP = 512  # distinct (kind, values) rows kept; the server's vocabulary is ~20

    def __init__(self) -> None:
        # kind -> (field names, their defaults), the arguments of map(raw.get, ...)
        self._getters = {k: (n, _RAW_DEFAULTS[k]) for k, n in STATUS_FIELDS.items()}
        # (kind, values) -> [status string, terminal (None until a model says)]
        self._rows: dict[tuple[Kind, tuple[Any, ...]], list[Any]] = {}

    def key(self, kind: Kind, raw: dict[str, Any]) -> tuple[Kind, tuple[Any, ...]]:
        names, defaults = self._getters[kind]
        return kind, tuple(map(raw.get, names, defaults))

    def row(self, key: tuple[Kind, tuple[Any, ...]], raw: dict[str, Any]) -> list[Any] | None:
        """[status, terminal or None] of a key; None when `raw_status` gives none."""
        try:
            row = self._rows.get(key)
        except TypeError:  # an unhashable value (a list, an object): the model decides
            return None
        if row is None:
            status = raw_status(key[0], raw)
            if status is None:
                return None
            row = [status, None]
            if len(self._rows) < self._CAP:
                self._rows[key] = row
        return row


def status_of(model: Model) -> str:
    kind: Kind = "start_task" if isinstance(model, StartTask) else "conversation"
    return _join([_wire(getattr(model, name)) for name in STATUS_FIELDS[kind]])


@attrs.frozen
class StatusChange:
    """One status change as the poller saw it.

    `old`/`new` are status strings: a start task's status (`"WORKING"`, `"READY"`, ...); for
    a conversation the sandbox status, followed by `/` and the execution status when there
    is one (`"RUNNING/running"`, `"PAUSED"`, `"RUNNING/finished"`). `old` is None on the
    first read. `new` is `"MISSING"` and `missing` True when the server answered null
    (then `model` is None). `terminal` is True when the item will not be read again.
    """

    id: str
    kind: Kind
    old: str | None
    new: str
    model: StartTask | Conversation | None
    terminal: bool = False
    missing: bool = False


class _Item:
    """What the poller keeps per followed item: no model (a Conversation is ~2 KB; the
    latest one goes out with each StatusChange, and only a final one is kept)."""

    __slots__ = ("due", "id", "interval", "kind", "status")

    def __init__(self, item_id: str, kind: Kind, due: float, interval: float) -> None:
        self.id = item_id
        self.kind: Kind = kind
        self.status: str | None = None  # interned, so 10,000 items share a few strings
        self.due = due
        self.interval = interval


def final_change(key: str, model: Model | None, kind_if_missing: Kind) -> StatusChange:
    """The terminal change an item that is already done would have reported (`old` None)."""
    if model is None:
        return StatusChange(key, kind_if_missing, None, MISSING, None, True, True)
    kind: Kind = "start_task" if isinstance(model, StartTask) else "conversation"
    return StatusChange(key, kind, None, status_of(model), model, True)


@attrs.define
class PollerStats:
    """Counters, for monitoring and tests. `last_*` describe the most recent cycle.

    `requests` counts batch reads sent (each <= 99 ids), `reads` item reads (ids asked for),
    `changes` status changes reported, `cycles` cycles started.
    """

    cycles: int = 0
    requests: int = 0
    failed_requests: int = 0
    reads: int = 0
    changes: int = 0
    last_due_start_tasks: int = 0
    last_due_conversations: int = 0
    last_requests: int = 0

    def count_cycle(self, start_tasks: int, conversations: int, requests: int) -> None:
        """Record one cycle: the items it read and the requests it sent."""
        self.cycles += 1
        self.requests += requests
        self.reads += start_tasks + conversations
        self.last_due_start_tasks = start_tasks
        self.last_due_conversations = conversations
        self.last_requests = requests


class PollerHost(Protocol):
    """What the poller needs of a client: the two resources it reads through, and a
    registry so that closing the client stops its pollers."""

    @property
    def start_tasks(self) -> StartTasks: ...

    @property
    def conversations(self) -> Conversations: ...

    def _register_poller(self, poller: Any) -> None: ...

    def _unregister_poller(self, poller: Any) -> None: ...


def _resource(client: PollerHost, kind: Kind) -> StartTasks | Conversations:
    return client.start_tasks if kind == "start_task" else client.conversations


async def read_raw(
    client: PollerHost, kind: Kind, ids: Sequence[str]
) -> list[dict[str, Any] | None] | APIError:
    """One batch read of <= 99 ids as raw JSON objects (or None), in the order asked, by
    the resource's raw batch reader (objects are structured only on a change: `parse`).

    A failure worth reading again later (connection, 429 after the client's retries, 5xx,
    an answer of the wrong shape) is returned, not raised; any other error is raised.
    """
    try:
        return await _resource(client, kind).read_raw(ids)
    except (APIConnectionError, RateLimitError, ResponseValidationError) as exc:
        log.info("poller read of %d ids failed (%r); retrying later", len(ids), exc)
        return exc
    except APIStatusError as exc:
        if exc.status < 500:
            raise
        log.info("poller read of %d ids failed (%r); retrying later", len(ids), exc)
        return exc


def parse(client: PollerHost, kind: Kind, raw: dict[str, Any]) -> Model:
    """The model of one object `read_raw` returned (ResponseValidationError if it does not
    fit)."""
    return _resource(client, kind).parse_raw(raw)


def bounds(
    period: float, min_interval: float | None, max_interval: float | None
) -> tuple[float, float]:
    """`min_interval` (default period / 4) and `max_interval` (default period * 4)."""
    low = period / 4 if min_interval is None else float(min_interval)
    high = period * 4 if max_interval is None else float(max_interval)
    if not 0 < low <= period <= high:
        raise ValueError(
            "need 0 < min_interval <= poll_interval <= max_interval, got "
            f"{low!r}, {period!r}, {high!r}"
        )
    return low, high


def resolve_poll_interval(
    poll_interval: float | None, interval: float | None, default: float, *, stacklevel: int = 3
) -> float:
    """The poll period from `poll_interval` or its deprecated alias `interval` (warns)."""
    if interval is not None:
        if poll_interval is not None:
            raise TypeError("pass poll_interval, not both poll_interval and interval")
        warnings.warn(
            "interval= is deprecated: use poll_interval=", DeprecationWarning, stacklevel=stacklevel
        )
        poll_interval = interval
    period = default if poll_interval is None else poll_interval
    if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
        raise ValueError(f"poll_interval must be a number > 0, got {period!r}")
    return float(period)


class _FeedSource(Protocol):
    """The poller, as a feed sees it."""

    @property
    def running(self) -> bool: ...

    @property
    def tracked(self) -> int: ...

    def _raise_if_failed(self) -> None: ...

    def _unsubscribe(self, feed: ChangeFeed) -> None: ...


class _Signal:
    """Marker put on subscriber queues: `idle` (nothing left to follow) or `closed`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_IDLE = _Signal("idle")
_CLOSED = _Signal("closed")
_Queued = StatusChange | _Signal


class ChangeFeed:
    """One consumer's status changes, in order: the queue the poller writes each change to.

    `async for change in feed`, or `await feed.get()` (None once the feed has ended: the
    poller closed, or, with `until_idle`, nothing is left to follow); a poller that stopped
    on an error raises it from here. `aclose()` ends the feed; so does cancelling a `get()`
    (like cancelling a generator), and dropping the feed (the poller holds it weakly).
    """

    def __init__(self, poller: _FeedSource, *, until_idle: bool, only_terminal: bool):
        self._poller = poller
        self._until_idle = until_idle
        self._only_terminal = only_terminal
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._ended = False

    def _put(self, item: _Queued) -> None:
        self._queue.put_nowait(item)

    def _wanted(self, change: StatusChange) -> bool:
        if not self._only_terminal:
            return True
        # as_completed: a READY start task hands over to its conversation, which is yielded.
        ready = (
            change.kind == "start_task"
            and change.model is not None
            and not change.missing
            and change.new == StartTaskStatus.READY.value
        )
        return change.terminal and not ready

    async def get(self) -> StatusChange | None:
        """The next change; None once the feed has ended."""
        poller = self._poller
        try:
            while not self._ended:
                if self._queue.empty() and (
                    not poller.running or (self._until_idle and not poller.tracked)
                ):
                    break
                item = await self._queue.get()
                if item is _CLOSED:
                    break
                if isinstance(item, _Signal):
                    continue  # idle: the check at the top decides
                if self._wanted(item):
                    return item
        except BaseException:
            self.close()
            raise
        was_open = not self._ended
        self.close()
        if was_open:
            poller._raise_if_failed()
        return None

    def close(self) -> None:
        """Stop receiving changes (no error if already ended)."""
        self._ended = True
        self._poller._unsubscribe(self)

    async def aclose(self) -> None:
        """Stop the feed (as `close()`); the poller carries on."""
        self.close()

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> StatusChange:
        change = await self.get()
        if change is None:
            raise StopAsyncIteration
        return change

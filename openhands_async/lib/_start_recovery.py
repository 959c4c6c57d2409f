"""Following a stream-start's task after its stream broke or went silent, never resending it.

`poll` reads the task by id until it is terminal: for a stream that is gone (a cut).

`follow_open` is for a stream that went silent (the idle timeout) but is still open. The
open-source server (openhands-ai 1.11.0) runs the start inside the stream-start response and
drops it when that connection closes, so closing a silent stream would end the very start
the recovery then waits for. The stream stays open, and is read on, while the task is
polled; what either source brings is merged (each status once, in order, never an older
snapshot after a newer one), and the caller closes the stream once the task is terminal,
the stall bound gives up, or the consumer leaves.

`Rest` and `resume_point` let a new parser take up the rest of such a stream where the
first parser (ended by the silence) stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Protocol

from ..errors import APIConnectionError, StartStalledError, StreamError, StreamTruncated
from ..models import StartTask
from ..resources.start_tasks import StartTasks
from ._stream_parser import CountingReader

log = logging.getLogger("openhands_async")

_DRAIN_SIZE = 65536

__all__ = ["Rest", "Watch", "drain", "follow_open", "mark", "poll", "resume_point"]


class Watch:
    """How a broken stream's task is polled: every `interval` seconds, until it has shown the
    same status and `updated_at` for `stall_timeout` seconds (None: for as long as it takes)."""

    def __init__(self, interval: float, stall_timeout: float | None) -> None:
        self.interval = interval
        self.stall_timeout = stall_timeout


Stalled = Callable[[StartTask], StartStalledError]


def mark(task: StartTask) -> tuple[str, datetime | None]:
    """What moves whenever the server works on a start: its status and `updated_at`."""
    return task.status.value, task.updated_at


def newer(task: StartTask, than: StartTask) -> bool:
    """Whether `task` is a later snapshot than `than` (the server bumps `updated_at` with
    every move; without it, any other status or time counts as later)."""
    if task.updated_at is not None and than.updated_at is not None:
        return task.updated_at > than.updated_at
    return mark(task) != mark(than)


def _pause(watch: Watch, seen_at: float, now: float) -> float:
    # Read once more right at the stall bound rather than up to an interval after it.
    if watch.stall_timeout is None:
        return watch.interval
    return min(watch.interval, max(0.0, seen_at + watch.stall_timeout - now))


async def poll(
    start_tasks: StartTasks, last: StartTask, seen_at: float, watch: Watch, stalled: Stalled
) -> AsyncGenerator[StartTask, None]:
    """Poll a task until terminal, yielding only snapshots whose status changed.

    `seen_at` is the loop time `last` was read. The server bumps `updated_at` whenever the
    task moves, so the same status and `updated_at` read `stall_timeout` seconds after they
    were first seen mean nothing moved in between: then `stalled(task)` is raised.
    """
    loop = asyncio.get_running_loop()
    status, seen = last.status, mark(last)
    bound = watch.stall_timeout
    while not status.is_terminal:
        await asyncio.sleep(_pause(watch, seen_at, loop.time()))
        task = await start_tasks.get(last.id)
        now = loop.time()
        if mark(task) != seen:
            seen, seen_at = mark(task), now
        elif bound is not None and now - seen_at >= bound:
            raise stalled(task)
        if task.status != status:
            status = task.status
            yield task


async def follow_open(
    start_tasks: StartTasks,
    last: StartTask,
    seen_at: float,
    watch: Watch,
    stalled: Stalled,
    elements: AsyncGenerator[StartTask, None],
) -> AsyncGenerator[StartTask, None]:
    """Like `poll`, while the silent stream's later `elements` are read too.

    A snapshot from either is yielded when it is newer than any seen and shows another
    status than the last yielded. Ends at READY/ERROR; a stream that ends or breaks leaves
    the polling alone, and the stall bound counts from the newest snapshot of either."""
    loop = asyncio.get_running_loop()
    newest, shown = last, last.status
    bound = watch.stall_timeout
    element: asyncio.Task[StartTask | None] | None = asyncio.ensure_future(_next(elements))
    reading: asyncio.Task[StartTask] | None = None
    try:
        while not shown.is_terminal:
            if reading is None:
                pause = _pause(watch, seen_at, loop.time())
                reading = asyncio.ensure_future(_get_after(start_tasks, last.id, pause))
            waiting: list[asyncio.Task[StartTask] | asyncio.Task[StartTask | None]] = [reading]
            if element is not None:
                waiting.append(element)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            got: list[StartTask] = []
            if element is not None and element.done():
                streamed = _result(element, last)
                element = None
                if streamed is not None:
                    got.append(streamed)
                    if not streamed.status.is_terminal:
                        element = asyncio.ensure_future(_next(elements))
            polled: StartTask | None = None
            if reading.done():
                polled, reading = reading.result(), None
                got.append(polled)
            now = loop.time()
            moved = False
            for task in got:  # the streamed snapshot first: it was read before the poll
                if newer(task, newest):
                    newest, seen_at, moved = task, now, True
                    if task.status != shown:
                        shown = task.status
                        yield task
            if polled is not None and not moved and bound is not None and now - seen_at >= bound:
                raise stalled(polled)
    finally:
        await _discard(reading, element)
        await elements.aclose()


async def _next(elements: AsyncIterator[StartTask]) -> StartTask | None:
    try:
        return await elements.__anext__()
    except StopAsyncIteration:
        return None


async def _get_after(start_tasks: StartTasks, task_id: str, pause: float) -> StartTask:
    await asyncio.sleep(pause)
    return await start_tasks.get(task_id)


def _result(element: asyncio.Task[StartTask | None], last: StartTask) -> StartTask | None:
    """The element the stream brought; None once it ended or broke (polling goes on)."""
    try:
        task = element.result()
    except (APIConnectionError, StreamTruncated) as exc:
        log.info("the stream of start task %s broke (%s); polling only", last.id, exc)
        return None
    if task is None:
        log.debug("the stream of start task %s ended", last.id)
    return task


async def _discard(*tasks: asyncio.Task[StartTask] | asyncio.Task[StartTask | None] | None) -> None:
    """Cancel what is still running and wait for it: nothing outlives the recovery."""
    present = [t for t in tasks if t is not None]
    running = [t for t in present if not t.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
    for done in present:
        if not done.cancelled():
            done.exception()  # retrieved: a failure nobody waits for any more is not logged


class _Source(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...
    def map_error(self, exc: BaseException) -> APIConnectionError | None: ...


def resume_point(reader: CountingReader) -> bytes | None:
    """Where the body `reader` read so far stands: b"" nothing yet, b"[" or b"," just before
    an element, b"}" just after one; None anywhere else (inside an element or a string),
    where no parser can take it up."""
    if not reader.started:
        return b""
    if reader.nesting.depth != 1 or reader.nesting.in_string:
        return None
    last = reader.excerpt().rstrip()[-1:]
    return last if last in (b"[", b",", b"}") else None


class Rest:
    """The rest of a stream-start body, from `point` (see `resume_point`), as a body of its
    own: `[` first (unless nothing was read yet), then the bytes still to come, with the
    comma after the element already read turned into a blank so byte offsets stay true.

    `offset` is how many bytes of the body were read before. After a comma the next element
    must come: a `]` there (`[{...},]`) would close an empty array of the rest alone, so it
    raises the `StreamError` the whole body gets."""

    def __init__(
        self, source: _Source, point: bytes, *, offset: int, method: str = "", url: str = ""
    ) -> None:
        self._source = source
        self._head = b"[" if point else b""
        self._comma = point == b"}"
        self._element = point == b","  # the next non-blank byte must open an element
        self._offset = offset
        self._method = method
        self._url = url

    async def read(self, n: int = -1, /) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        data = await self._source.read(n)
        if (self._comma or self._element) and data.strip():
            at = len(data) - len(data.lstrip())
            if self._comma and data[at : at + 1] == b",":
                data = data[:at] + b" " + data[at + 1 :]
            if self._element and data[at : at + 1] == b"]":
                raise self._trailing_comma(self._offset + at, data[: at + 1])
            self._comma = self._element = False
        self._offset += len(data)
        return data

    def _trailing_comma(self, at: int, blanks_and_end: bytes) -> StreamError:
        return StreamError(
            f"stream-start body is not valid JSON: ']' right after ',' at byte {at}",
            method=self._method,
            url=self._url,
            offset=at,
            excerpt=b"," + blanks_and_end,
        )

    def map_error(self, exc: BaseException) -> APIConnectionError | None:
        return self._source.map_error(exc)


async def drain(source: _Source) -> AsyncGenerator[StartTask, None]:
    """Read a stream no parser can take up to its end, yielding nothing: the server is
    never left blocked on a full connection."""
    while await source.read(_DRAIN_SIZE):
        pass
    return
    yield  # an async generator, like a parser

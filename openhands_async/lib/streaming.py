"""Streaming start: `StartTaskStream` follows `POST /api/v1/app-conversations/stream-start`.

The server keeps the response open and writes one JSON array, one start-task snapshot per
element (`[` newline, elements separated by `,` newline, `]` once READY or ERROR); the
parser (`_stream_parser`) turns it into `StartTask`s as it arrives.

If the connection breaks (or stays silent longer than the idle timeout), the start is never
sent again: with at least one element in hand the task is polled by id; with none, the SDK
first looks for the start on the server (`SafeStart.look`) and polls it if found. The
polling ends: the open-source server drops a start whose stream connection closed (the task
stays in its last status for good), so a task whose status and `updated_at` have not moved
for `stall_timeout` seconds raises `StartStalledError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from datetime import datetime

from .._base_client import BaseClient
from .._constants import DEFAULT_START_STALL_TIMEOUT, DEFAULT_STREAM_POLL_INTERVAL
from .._converter import unstructure
from .._http import ByteStream
from .._retry import Idempotency
from .._safe_start import SafeStart
from ..errors import (
    APIConnectionError,
    InternalServerError,
    StartStalledError,
    StartTaskFailed,
    StreamError,
    StreamTruncated,
)
from ..models import StartRequest, StartTask, StartTaskStatus
from ..resources.start_tasks import StartTasks
from ._async_stream import AsyncStream
from ._stream_parser import CountingReader, iter_start_task_batches

log = logging.getLogger("openhands_async")

__all__ = ["STREAM_PATH", "StartTaskStream"]

STREAM_PATH = "/api/v1/app-conversations/stream-start"


class _State:
    """What the stream object and its generator share (no reference back to the stream)."""

    def __init__(self) -> None:
        self.response: ByteStream | None = None

    def release(self) -> None:
        resp, self.response = self.response, None
        if resp is not None:
            # Closes the connection if the body was not read to the end; sync and immediate.
            resp.release()


class StartTaskStream(AsyncStream[StartTask]):
    """The start-task snapshots of one conversation start, as they happen.

    `async for task in client.conversations.stream_start(...)`, or
    `async with client.conversations.stream_start(...) as stream: async for task in stream`.

    Ends after READY; a final ERROR task is yielded and then `StartTaskFailed` is raised
    (unless `raise_on_error=False`). After a break, `StartStalledError` is raised if the
    polled task has not moved (status and `updated_at`) for `stall_timeout` seconds.
    Leaving early (`break`, cancellation, leaving the `async with`, `aclose()`) closes the
    response at once. `conversation_id` is the id the
    request carries (minted by the SDK unless given), `task` the latest snapshot. Snapshots
    whose `request` the server sent unchanged share one `StartRequest` object.
    """

    def __init__(
        self,
        client: BaseClient,
        request: StartRequest,
        *,
        start_tasks: StartTasks,
        safe_start: SafeStart,
        raise_on_error: bool = True,
        recover: bool = True,
        idle_timeout: float | None = None,
        poll_interval: float = DEFAULT_STREAM_POLL_INTERVAL,
        stall_timeout: float | None = DEFAULT_START_STALL_TIMEOUT,
    ) -> None:
        if request.conversation_id is None:
            raise ValueError("request.conversation_id must be set (make_start_request mints one)")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        if stall_timeout is not None and not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 or None, got {stall_timeout!r}")
        self.conversation_id: str = request.conversation_id
        self.request = request
        self._state = _State()
        run = _run(
            _Deps(client, start_tasks, safe_start),
            request,
            self._state,
            raise_on_error=raise_on_error,
            recover=recover,
            idle_timeout=idle_timeout,
            watch=_Watch(poll_interval, stall_timeout),
        )
        super().__init__(run, self._state.release)

    @property
    def task(self) -> StartTask | None:
        """The latest snapshot yielded (None before the first)."""
        return self._latest

    def __repr__(self) -> str:
        status = self._latest.status if self._latest else None
        return f"StartTaskStream(conversation_id={self.conversation_id!r}, status={status})"


class _Deps:
    """What the stream's generator uses: the pipeline, task reads, the safe-start look-up."""

    def __init__(self, client: BaseClient, start_tasks: StartTasks, safe: SafeStart) -> None:
        self.client = client
        self.start_tasks = start_tasks
        self.safe = safe


class _Watch:
    """How a broken stream's task is polled: every `interval` seconds, until it has shown the
    same status and `updated_at` for `stall_timeout` seconds (None: for as long as it takes)."""

    def __init__(self, interval: float, stall_timeout: float | None) -> None:
        self.interval = interval
        self.stall_timeout = stall_timeout


async def _run(
    deps: _Deps,
    request: StartRequest,
    state: _State,
    *,
    raise_on_error: bool,
    recover: bool,
    idle_timeout: float | None,
    watch: _Watch,
) -> AsyncGenerator[list[StartTask], None]:
    last: StartTask | None = None
    async for got in _stream_or_recover(
        deps,
        request,
        state,
        recover=recover,
        idle_timeout=idle_timeout,
        watch=watch,
    ):
        # The parser hands over a read's worth of snapshots at once (no generator hop per
        # element); the recovery, one snapshot per poll.
        batch = got if isinstance(got, list) else [got]
        last = batch[-1]
        yield batch
    if last is not None and last.status is StartTaskStatus.ERROR and raise_on_error:
        raise StartTaskFailed(last)


async def _stream_or_recover(
    deps: _Deps,
    request: StartRequest,
    state: _State,
    *,
    recover: bool,
    idle_timeout: float | None,
    watch: _Watch,
) -> AsyncGenerator[list[StartTask] | StartTask, None]:
    client, safe = deps.client, deps.safe
    method, url = "POST", client.url(STREAM_PATH)
    cid = safe.conversation_id
    idle = client.timeouts.stream_idle if idle_timeout is None else idle_timeout
    loop = asyncio.get_running_loop()
    last: StartTask | None = None
    # Loop time the last element arrived: the stall clock of the recovery starts there.
    last_at = 0.0
    items = 0
    found: StartTask | None = None
    broken: APIConnectionError | StreamError
    try:
        try:
            resp = await client.open_stream(
                method,
                STREAM_PATH,
                json=unstructure(request),
                idle_timeout=idle,
                idempotency=Idempotency.UNSENT_ONLY,
            )
        except APIConnectionError as exc:
            if not recover or not exc.may_have_been_sent:
                raise
            broken = exc
        except InternalServerError as exc:
            # A 5xx may come after the server took the start: look before giving up.
            if not recover:
                raise
            found = await safe.look(exc)
            if found is None:
                raise
            broken = _as_conn(exc)
        else:
            state.response = resp
            reader = CountingReader(resp, method=method, url=url)
            try:
                async for batch in iter_start_task_batches(reader, method=method, url=url):
                    last, last_at, items = batch[-1], loop.time(), items + len(batch)
                    yield batch
                return  # `]` and a clean end
            except (APIConnectionError, StreamTruncated) as exc:
                if not recover:
                    raise
                broken = exc
            finally:
                state.release()
    finally:
        state.release()

    # Recovery: never send the start again.
    def stalled(task: StartTask) -> StartStalledError:
        assert watch.stall_timeout is not None
        log.warning(
            "start task %s of %s stalled in %s after its stream broke; not sent again",
            task.id,
            cid,
            task.status.value,
        )
        error = StartStalledError(
            task,
            conversation_id=cid,
            stall_timeout=watch.stall_timeout,
            method=method,
            url=url,
            items_received=items,
        )
        error.__cause__ = broken  # why the stream broke in the first place
        return error

    if last is not None:
        log.info(
            "stream-start of task %s broke (%s); polling it instead", last.id, type(broken).__name__
        )
        async for task in _poll(deps.start_tasks, last, last_at, watch, stalled):
            yield task
        return
    if found is None:
        found = await safe.look(
            broken if isinstance(broken, APIConnectionError) else _as_conn(broken)
        )
    if found is None:
        raise APIConnectionError(
            f"stream-start of conversation {cid} broke before any start task arrived "
            f"({broken.message}), and the server has no trace of it; it was not sent again",
            method=method,
            url=url,
        ) from broken
    log.info("stream-start of %s broke; found task %s, polling it", cid, found.id)
    found_at = loop.time()
    yield found
    if not found.status.is_terminal:
        async for task in _poll(deps.start_tasks, found, found_at, watch, stalled):
            yield task


async def _poll(
    start_tasks: StartTasks,
    last: StartTask,
    seen_at: float,
    watch: _Watch,
    stalled: Callable[[StartTask], StartStalledError],
) -> AsyncGenerator[StartTask, None]:
    """Poll a task until terminal, yielding only snapshots whose status changed.

    `seen_at` is the loop time `last` was read. The server bumps `updated_at` whenever the
    task moves, so the same status and `updated_at` read `stall_timeout` seconds after they
    were first seen mean nothing moved in between: then `stalled(task)` is raised.
    """
    loop = asyncio.get_running_loop()
    status, mark = last.status, _mark(last)
    bound = watch.stall_timeout
    while not status.is_terminal:
        pause = watch.interval
        if bound is not None:
            # Read once more right at the bound rather than up to an interval after it.
            pause = min(pause, max(0.0, seen_at + bound - loop.time()))
        await asyncio.sleep(pause)
        task = await start_tasks.get(last.id)
        now = loop.time()
        if _mark(task) != mark:
            mark, seen_at = _mark(task), now
        elif bound is not None and now - seen_at >= bound:
            raise stalled(task)
        if task.status != status:
            status = task.status
            yield task


def _mark(task: StartTask) -> tuple[str, datetime | None]:
    """What moves whenever the server works on a start: its status and `updated_at`."""
    return task.status.value, task.updated_at


def _as_conn(exc: StreamError | InternalServerError) -> APIConnectionError:
    return APIConnectionError(exc.message, method=exc.request_method, url=exc.request_url)

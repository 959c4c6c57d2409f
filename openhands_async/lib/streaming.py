"""Streaming start: `StartTaskStream` follows `POST /api/v1/app-conversations/stream-start`.

The server keeps the response open and writes one JSON array, one start-task snapshot per
element (`[` newline, elements separated by `,` newline, `]` once READY or ERROR); the
parser (`_stream_parser`) turns it into `StartTask`s as it arrives.

If the connection breaks (or stays silent longer than the idle timeout), the start is never
sent again: with at least one element in hand the task is polled by id; with none, the SDK
first looks for the start on the server (`SafeStart.look`) and polls it if found. The
open-source server runs the start inside the stream's response and drops it when that
connection closes, so a silent stream is kept open, and read on, while the task is polled
(`_start_recovery.follow_open`), and closed only once the task is terminal, the stall bound
gives up or the consumer leaves. The polling ends: a task whose status and `updated_at`
have not moved for `stall_timeout` seconds raises `StartStalledError` (a cut stream's start
is dropped by that server, its task stays in its last status for good).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from .._base_client import BaseClient
from .._constants import DEFAULT_START_STALL_TIMEOUT, DEFAULT_STREAM_POLL_INTERVAL
from .._converter import unstructure
from .._http import ByteStream
from .._retry import Idempotency
from .._safe_start import SafeStart
from ..errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    StartStalledError,
    StartTaskFailed,
    StreamError,
    StreamTruncated,
)
from ..models import StartRequest, StartTask, StartTaskStatus
from ..resources.start_tasks import StartTasks
from ._async_stream import AsyncStream
from ._start_recovery import Rest, Watch, drain, follow_open, poll, resume_point
from ._stream_parser import CountingReader, iter_start_task_batches

log = logging.getLogger("openhands_async")

__all__ = ["STREAM_PATH", "StartTaskStream"]

STREAM_PATH = "/api/v1/app-conversations/stream-start"

_Tasks = AsyncGenerator[StartTask, None]


class _State:
    """What the stream object and its generator share (no reference back to the stream)."""

    def __init__(self) -> None:
        self.response: ByteStream | None = None

    def release(self) -> None:
        resp, self.response = self.response, None
        if resp is not None:
            # Closes the connection if the body was not read to the end; sync and immediate.
            resp.release()

    async def aclose(self) -> None:
        """`release`, and wait for the stream's pending read (if any) to be cancelled."""
        resp, self.response = self.response, None
        if resp is not None:
            await resp.aclose()


class StartTaskStream(AsyncStream[StartTask]):
    """The start-task snapshots of one conversation start, as they happen.

    `async for task in client.conversations.stream_start(...)`, or
    `async with client.conversations.stream_start(...) as stream: async for task in stream`.

    Ends after READY; a final ERROR task is yielded and then `StartTaskFailed` is raised
    (unless `raise_on_error=False`). After a break, `StartStalledError` is raised if the
    polled task has not moved (status and `updated_at`) for `stall_timeout` seconds. A
    stream that went silent stays open (and is read on) while its task is polled, since
    the open-source server drops a start whose stream connection closes.
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
            watch=Watch(poll_interval, stall_timeout),
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


async def _run(
    deps: _Deps,
    request: StartRequest,
    state: _State,
    *,
    raise_on_error: bool,
    recover: bool,
    idle_timeout: float | None,
    watch: Watch,
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
    watch: Watch,
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
    # The reader of a stream that went silent (idle timeout) and stays open, if one did.
    silent: CountingReader | None = None
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
                if isinstance(exc, APITimeoutError) and exc.kind == "stream-idle":
                    silent = reader  # still open: closing it could end the start (see below)
            finally:
                if silent is None:
                    state.release()
    finally:
        if silent is None:
            state.release()

    # Recovery: never send the start again.
    def stalled(task: StartTask) -> StartStalledError:
        assert watch.stall_timeout is not None
        log.warning(
            "start task %s of %s stalled in %s after its stream %s; not sent again",
            task.id,
            cid,
            task.status.value,
            "broke" if silent is None else "went silent",
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

    def no_trace() -> APIConnectionError:
        error = APIConnectionError(
            f"stream-start of conversation {cid} broke before any start task arrived "
            f"({broken.message}), and the server has no trace of it; it was not sent again",
            method=method,
            url=url,
        )
        error.__cause__ = broken
        return error

    async def rest(stream: ByteStream, read: CountingReader, first: StartTask) -> _Tasks:
        # What the silent stream still brings, parsed on from where the first parser stopped.
        nonlocal items
        stream.idle_timeout = None  # the polling bounds the wait now (`stall_timeout`)
        point = resume_point(read)
        if point is None:  # went silent inside an element: read on, parse nothing
            async for task in drain(stream):
                yield task
            return
        rest_of = Rest(stream, point, offset=read.offset, method=method, url=url)
        more = CountingReader(rest_of, method=method, url=url)
        more.offset = read.offset - (1 if point else 0)  # Rest's `[` stands before the rest
        batches = iter_start_task_batches(
            more, method=method, url=url, task_id=first.id, received=items
        )
        try:
            async for batch in batches:
                for task in batch:
                    items += 1
                    yield task
        finally:
            await batches.aclose()

    if silent is not None:
        # The open-source server runs the start inside this response and drops it when the
        # connection closes: keep the stream open, and read on, until the task is terminal.
        assert state.response is not None
        try:
            if last is None:
                last = await safe.look(broken)  # nothing arrived yet: find the start first
                if last is None:
                    raise no_trace()
                log.info("stream-start of %s went silent; found task %s, polling it", cid, last.id)
                last_at = loop.time()
                yield last
                if last.status.is_terminal:
                    return
            else:
                log.info(
                    "stream-start of task %s went silent for %ss; polling it, the stream kept open",
                    last.id,
                    idle,
                )
            more = rest(state.response, silent, last)
            async for task in follow_open(deps.start_tasks, last, last_at, watch, stalled, more):
                yield task
        finally:
            await state.aclose()
        return
    if last is not None:
        log.info(
            "stream-start of task %s broke (%s); polling it instead", last.id, type(broken).__name__
        )
        async for task in poll(deps.start_tasks, last, last_at, watch, stalled):
            yield task
        return
    if found is None:
        found = await safe.look(
            broken if isinstance(broken, APIConnectionError) else _as_conn(broken)
        )
    if found is None:
        raise no_trace()
    log.info("stream-start of %s broke; found task %s, polling it", cid, found.id)
    found_at = loop.time()
    yield found
    if not found.status.is_terminal:
        async for task in poll(deps.start_tasks, found, found_at, watch, stalled):
            yield task


def _as_conn(exc: StreamError | InternalServerError) -> APIConnectionError:
    return APIConnectionError(exc.message, method=exc.request_method, url=exc.request_url)

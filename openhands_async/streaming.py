"""Streaming start: `POST /api/v1/app-conversations/stream-start`, parsed as it arrives.

The server keeps the response open and writes one JSON array, one start-task snapshot per
element (`[` newline, elements separated by `,` newline, `]` once READY or ERROR). The body
is parsed incrementally with ijson (never buffered whole) and each `StartTask` is yielded as
soon as its closing brace arrives.

If the connection breaks (or stays silent longer than the idle timeout), the start is never
sent again: with at least one element in hand the task is polled by id; with none, the SDK
first looks for the start on the server (`find_start`) and polls it if found.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import aiohttp
import ijson

from ._converter import structurer, unstructure
from ._http import connection_error
from ._retry import Idempotency
from .errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    ResponseValidationError,
    StartTaskFailed,
    StreamError,
)
from .models import StartRequest, StartTask, StartTaskStatus

if TYPE_CHECKING:
    from .client import OpenHandsClient

log = logging.getLogger("openhands_async")

__all__ = [
    "IJSON_BACKEND",
    "StartTaskStream",
    "iter_start_tasks",
]

#: The ijson backend in use: "yajl2_c" is the fast C one; "python" is pure Python (slow).
IJSON_BACKEND: str = ijson.backend_name

STREAM_PATH = "/api/v1/app-conversations/stream-start"
DEFAULT_POLL_INTERVAL = 1.0
_TAIL = 256  # bytes kept for error excerpts
_EXCERPT = 120


class AsyncByteReader(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


class StreamTruncated(StreamError):
    """The body ended (cleanly, at EOF) in the middle of the array: a `StreamError`."""


class _TooDeep(Exception):
    """Raised by the reader, turned into a `StreamError` where the element count is known."""


class CountingReader:
    """Wraps a byte source: counts bytes, keeps the last few hundred for error excerpts.

    `read(n)` returns as soon as any bytes are available (aiohttp's `StreamReader.read`
    does), so ijson sees each element the moment it arrives. Network failures are turned
    into the SDK's connection errors here.
    """

    def __init__(
        self,
        source: AsyncByteReader,
        *,
        method: str = "",
        url: str = "",
        idle_timeout: float | None = None,
    ) -> None:
        self._source = source
        self._method = method
        self._url = url
        self._idle_timeout = idle_timeout
        self.offset = 0
        self.eof = False
        self._tail = bytearray()
        self._started = False
        self._nesting = NestingGuard()

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""  # ijson probes the type with read(0)
        try:
            data = await self._source.read(n)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self.connection_error(exc) from exc
        if not data:
            self.eof = True
            return data
        if not self._started:
            self._check_start(data)
        self.offset += len(data)
        self._tail += data
        if len(self._tail) > _TAIL:
            del self._tail[: len(self._tail) - _TAIL]
        if not self._nesting.feed(data):
            raise _TooDeep
        return data

    def _check_start(self, data: bytes) -> None:
        stripped = data.lstrip()
        if not stripped:
            return
        self._started = True
        if stripped[:1] != b"[":
            skipped = len(data) - len(stripped)
            raise StreamError(
                f"stream-start body is not a JSON array (starts with {stripped[:1]!r} "
                f"at byte {self.offset + skipped})",
                method=self._method,
                url=self._url,
                offset=self.offset + skipped,
                excerpt=stripped[:_EXCERPT],
            )

    def excerpt(self) -> bytes:
        return bytes(self._tail[-_EXCERPT:])

    def connection_error(self, exc: BaseException) -> APIConnectionError:
        if isinstance(exc, asyncio.TimeoutError):
            return APITimeoutError(
                f"stream idle timeout: the server sent nothing for {self._idle_timeout}s "
                f"(after {self.offset} bytes)",
                method=self._method,
                url=self._url,
                kind="stream-idle",
                seconds=self._idle_timeout,
            )
        err = connection_error(
            exc,
            method=self._method,
            url=self._url,
            timeouts=aiohttp.ClientTimeout(sock_read=self._idle_timeout),
        )
        err.message = f"{err.message} (stream broke after {self.offset} bytes)"
        return err


# Far deeper than a start task nests; a body past it is hostile or broken.
MAX_DEPTH = 64
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
# Keep quotes and brackets only, `{}` spelled `[]`: what nesting depth depends on.
_SHAPE = bytes.maketrans(b"{}", b"[]")
_NOT_SHAPE = bytes(set(range(256)) - set(b'"[]{}'))


class NestingGuard:
    """Tracks a JSON body's nesting depth across chunks, at C speed (a few bytes methods
    a chunk, no per-event Python), and raises once it passes MAX_DEPTH.

    ijson keeps a prefix string per open level, so memory grows with the square of the
    depth: 100 000 nested `[` in a 200 KB body took tens of GB. Checking the bytes before
    ijson sees them keeps its fast C `items` path for every element.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False  # the chunk before ended inside a string, on a backslash

    def feed(self, data: bytes) -> bool:
        """Account for the next chunk; False once the body nests deeper than MAX_DEPTH."""
        if self._escaped:
            data, self._escaped = data[1:], False
        # Escapes go first so an escaped quote cannot end a string; a lone backslash left
        # at the very end escapes the next chunk's first byte.
        if b"\\" in data:
            data = _ESCAPE.sub(b"", data)
            if data.endswith(b"\\"):
                data, self._escaped = data[:-1], True
        shape = data.translate(_SHAPE, _NOT_SHAPE)
        if self._in_string:
            close = shape.find(b'"')
            if close < 0:
                return True
            shape, self._in_string = shape[close + 1 :], False
        # Dropping two adjacent quotes leaves every other byte as much inside or outside a
        # string as before, and clears most strings (no brackets in them) without a regex.
        shape = _STRING.sub(b"", shape.replace(b'""', b""))
        quote = shape.find(b'"')
        if quote >= 0:  # a string still open at the chunk's end
            shape, self._in_string = shape[:quote], True
        opens = shape.count(b"[")
        if self.depth + opens <= MAX_DEPTH:
            self.depth += 2 * opens - len(shape)
            return True
        for byte in shape:
            self.depth += 1 if byte == 0x5B else -1
            if self.depth > MAX_DEPTH:
                return False
        return True


async def iter_start_tasks(
    reader: CountingReader, *, method: str = "", url: str = ""
) -> AsyncIterator[StartTask]:
    """The parser core: yield each element of a stream-start body as a `StartTask`.

    Raises `StreamError` (with byte offset and excerpt) on a malformed body,
    `StreamTruncated` when the body ends mid-array, and lets the reader's
    `APIConnectionError` through when the connection breaks. Checks that every element
    has the same task id. Nothing from ijson or cattrs escapes.
    """
    count = 0
    first_id: str | None = None
    raw_request: object = None
    request: StartRequest | None = None

    def fail(message: str, cls: type[StreamError] = StreamError) -> StreamError:
        return cls(
            message,
            method=method,
            url=url,
            offset=reader.offset,
            excerpt=reader.excerpt(),
            items_received=count,
        )

    to_task = structurer(StartTask, method=method, url=url)
    items = ijson.items_async(reader, "item", use_float=True)
    try:
        async for item in items:
            if not isinstance(item, dict):
                raise fail(
                    f"stream-start element {count} is a {type(item).__name__}, not an object"
                )
            this_request = item.get("request")
            if this_request is not None and this_request == raw_request:
                # The server repeats the start request in every element, and structuring it
                # is half the cost of one: an equal request gets the StartRequest already
                # made (frozen, so shared by the snapshots), the value structuring it again
                # would give. Only fields typed Any keep the first of equal numbers (1, 1.0).
                item["request"] = request
            else:
                raw_request = this_request
            try:
                task = to_task(item)
            except ResponseValidationError as exc:
                raise fail(f"stream-start element {count}: {exc.message}") from None
            request = task.request
            if first_id is None:
                first_id = task.id
            elif task.id != first_id:
                raise fail(
                    f"stream-start element {count} is task {task.id}, "
                    f"the stream started with task {first_id}"
                )
            count += 1
            yield task
    except _TooDeep:
        raise fail(f"stream-start body nests too deep (over {MAX_DEPTH} levels)") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        # ijson's C backend re-raises an exception thrown into its await chain without
        # passing it through the reader's `read`, so network errors are mapped here too.
        raise reader.connection_error(exc) from exc
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        # yajl lets some invalid UTF-8 through (surrogates, overlong forms); Python's decode
        # of the string then fails, and that is malformed JSON too.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reader.eof and "premature EOF" in reason:
            if reader.offset == 0:
                raise fail("stream-start body is empty", StreamTruncated) from None
            raise fail(
                f"stream-start body ended mid-array after {count} elements", StreamTruncated
            ) from None
        raise fail(f"stream-start body is not valid JSON: {reason}") from None
    if not reader._started:
        raise fail("stream-start body is empty", StreamTruncated)


class _State:
    """What the stream object and its generator share (no reference back to the stream)."""

    def __init__(self) -> None:
        self.response: aiohttp.ClientResponse | None = None
        self.task: StartTask | None = None

    def release(self) -> None:
        resp, self.response = self.response, None
        if resp is not None:
            # Closes the connection if the body was not read to the end; sync and immediate.
            resp.release()


class StartTaskStream:
    """The start-task snapshots of one conversation start, as they happen.

    `async for task in client.conversations.stream_start(...)`, or
    `async with client.conversations.stream_start(...) as stream: async for task in stream`.

    Ends after READY; a final ERROR task is yielded and then `StartTaskFailed` is raised
    (unless `raise_on_error=False`). Leaving early (`break`, cancellation, leaving the
    `async with`, `aclose()`) closes the response at once. `conversation_id` is the id the
    request carries (minted by the SDK unless given), `task` the latest snapshot. Snapshots
    whose `request` the server sent unchanged share one `StartRequest` object.
    """

    def __init__(
        self,
        client: OpenHandsClient,
        request: StartRequest,
        *,
        raise_on_error: bool = True,
        recover: bool = True,
        idle_timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        if request.conversation_id is None:
            raise ValueError("request.conversation_id must be set (make_start_request mints one)")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.conversation_id: str = request.conversation_id
        self.request = request
        self._state = _State()
        self._gen = _run(
            client,
            request,
            self._state,
            raise_on_error=raise_on_error,
            recover=recover,
            idle_timeout=idle_timeout,
            poll_interval=poll_interval,
        )
        # A plain `async for ... break` drops the stream without closing it: release the
        # response when the object goes away (a finalizer, so no reference cycle keeps it).
        self._finalizer = weakref.finalize(self, self._state.release)

    @property
    def task(self) -> StartTask | None:
        """The latest snapshot yielded (None before the first)."""
        return self._state.task

    def __aiter__(self) -> StartTaskStream:
        return self

    async def __anext__(self) -> StartTask:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop: close the response (the start itself carries on on the server)."""
        self._state.release()
        await self._gen.aclose()

    async def __aenter__(self) -> StartTaskStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        status = self._state.task.status if self._state.task else None
        return f"StartTaskStream(conversation_id={self.conversation_id!r}, status={status})"


async def _run(
    client: OpenHandsClient,
    request: StartRequest,
    state: _State,
    *,
    raise_on_error: bool,
    recover: bool,
    idle_timeout: float | None,
    poll_interval: float,
) -> AsyncGenerator[StartTask, None]:
    last: StartTask | None = None
    async for task in _stream_or_recover(
        client,
        request,
        state,
        recover=recover,
        idle_timeout=idle_timeout,
        poll_interval=poll_interval,
    ):
        last = state.task = task
        yield task
    if last is not None and last.status is StartTaskStatus.ERROR and raise_on_error:
        raise StartTaskFailed(last)


async def _stream_or_recover(
    client: OpenHandsClient,
    request: StartRequest,
    state: _State,
    *,
    recover: bool,
    idle_timeout: float | None,
    poll_interval: float,
) -> AsyncGenerator[StartTask, None]:
    method, url = "POST", client.url(STREAM_PATH)
    cid = request.conversation_id
    assert cid is not None
    sent_after = datetime.now(timezone.utc)
    idle = client.timeouts.stream_idle if idle_timeout is None else idle_timeout
    last: StartTask | None = None
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
            found = await client.conversations._look_for_lost_start(cid, sent_after, exc)
            if found is None:
                raise
            broken = _as_conn(exc)
        else:
            state.response = resp
            reader = CountingReader(resp.content, method=method, url=url, idle_timeout=idle)
            try:
                async for task in iter_start_tasks(reader, method=method, url=url):
                    last = task
                    yield task
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
    if last is not None:
        log.info(
            "stream-start of task %s broke (%s); polling it instead", last.id, type(broken).__name__
        )
        async for task in _poll(client, last, poll_interval):
            yield task
        return
    if found is None:
        found = await client.conversations._look_for_lost_start(
            cid, sent_after, broken if isinstance(broken, APIConnectionError) else _as_conn(broken)
        )
    if found is None:
        raise APIConnectionError(
            f"stream-start of conversation {cid} broke before any start task arrived "
            f"({broken.message}), and the server has no trace of it; it was not sent again",
            method=method,
            url=url,
        ) from broken
    log.info("stream-start of %s broke; found task %s, polling it", cid, found.id)
    yield found
    if not found.status.is_terminal:
        async for task in _poll(client, found, poll_interval):
            yield task


async def _poll(
    client: OpenHandsClient, last: StartTask, interval: float
) -> AsyncGenerator[StartTask, None]:
    """Poll a task until terminal, yielding only snapshots whose status changed."""
    status = last.status
    while not status.is_terminal:
        await asyncio.sleep(interval)
        task = await client.start_tasks.get(last.id)
        if task.status != status:
            status = task.status
            yield task


def _as_conn(exc: StreamError | InternalServerError) -> APIConnectionError:
    return APIConnectionError(exc.message, method=exc.request_method, url=exc.request_url)

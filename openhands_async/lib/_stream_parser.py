"""The stream-start parser, pure: any async byte reader in, `StartTask`s out.

The body is one JSON array written incrementally; it is parsed with ijson as it arrives
(never buffered whole) and each element becomes a `StartTask` the moment its closing
brace is read. `NestingGuard` refuses hostile nesting before ijson sees it. No HTTP here:
the reader (e.g. `_http.ByteStream`) already turns network failures into SDK errors.

Whatever the reads, it yields exactly the longest valid prefix of the body: ijson pushes
(`items_coro`) into a list the parser owns, so what a read completed is still in hand
when the rest of it is malformed (`ijson.items_async` raises and drops them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

import ijson

from ..errors import (
    APIConnectionError,
    APITimeoutError,
    OpenHandsError,
    ResponseValidationError,
    StreamError,
    StreamTruncated,
)
from ..models import StartTask
from ._nesting import MAX_DEPTH, NestingGuard
from ._request_cut import RequestCut
from ._task_builder import TaskBuilder

__all__ = [
    "IJSON_BACKEND",
    "MAX_DEPTH",
    "AsyncByteReader",
    "CountingReader",
    "NestingGuard",
    "iter_start_task_batches",
    "iter_start_tasks",
]

IJSON_BACKEND: str = ijson.backend_name
"""The ijson backend in use: "yajl2_c" is the fast C one; "python" is pure Python (slow)."""

_TAIL = 256  # bytes kept for error excerpts
_EXCERPT = 120
_READ_SIZE = 65536  # ijson's own buffer size; a read returns as soon as any bytes arrived
_END = Exception("end of body")  # the loop's "failure" once the body ended cleanly


class AsyncByteReader(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


class _TooDeep(Exception):
    """Raised by the reader, turned into a `StreamError` where the element count is known.

    `prefix`: the read before the byte that nests too deep, still parsed (not lost)."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__()
        self.prefix = prefix


class CountingReader:
    """Wraps a byte source: counts bytes, keeps the last few hundred for error excerpts,
    checks the body opens an array and guards its nesting.

    `read(n)` returns as soon as any bytes are available, so ijson sees each element the
    moment it arrives. Network failures become the SDK's errors (see `map_error`).
    """

    def __init__(self, source: AsyncByteReader, *, method: str = "", url: str = "") -> None:
        self._source = source
        self._method = method
        self._url = url
        self.offset = 0
        self.eof = False
        #: True once the first non-blank byte arrived (and was a `[`).
        self.started = False
        self._tail = b""
        #: The nesting of the bytes read so far (where a body can be taken up).
        self.nesting = NestingGuard()

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""  # ijson probes the type with read(0)
        try:
            data = await self._source.read(n)
        except Exception as exc:
            mapped = self.map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if not data:
            self.eof = True
            return data
        if not self.started:
            self._check_start(data)
        self.offset += len(data)
        # Only the last bytes of a read can end up in the tail: a 64 KB read is not copied.
        self._tail = (self._tail + data[-_TAIL:])[-_TAIL:]
        if not self.nesting.feed(data):
            raise _TooDeep(data[: self.nesting.safe_length(data)])
        return data

    def _check_start(self, data: bytes) -> None:
        stripped = data.lstrip()
        if not stripped:
            return
        self.started = True
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
        return self._tail[-_EXCERPT:]

    def map_error(self, exc: BaseException) -> APIConnectionError | None:
        """The SDK error for a network failure of the source (None: not one). The source's
        own `map_error` decides when it has one (`_http.ByteStream` does: it knows aiohttp);
        a bare `OSError` or timeout from a plain source is mapped here as a last resort."""
        if isinstance(exc, OpenHandsError):
            return None
        source_map = getattr(self._source, "map_error", None)
        if source_map is not None:
            mapped: APIConnectionError | None = source_map(exc)
            return mapped
        where = f"after {self.offset} bytes"
        # Two classes before Python 3.11, one since: a plain source may raise either.
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return APITimeoutError(
                f"stream idle timeout ({where})",
                method=self._method,
                url=self._url,
                kind="stream-idle",
            )
        if isinstance(exc, OSError):
            return APIConnectionError(
                f"connection error: {type(exc).__name__}: {exc} (stream broke {where})",
                method=self._method,
                url=self._url,
            )
        return None


class _Next:
    """Hands one of ijson's C coroutines the next stage itself as its "target.send":
    `ijson.items_coro` chains them through bound `send` methods (a Python call per JSON
    event, which doubled the parser's cost); given the stage, C calls it directly."""

    __slots__ = ("send",)

    def __init__(self, target: object) -> None:
        self.send = target


def _push_parser(into: list[Any]) -> Any:
    """A push parser: `.send(bytes)`, `.close()` at the end; appends each element of the
    top-level array to `into` as soon as it is complete, before raising for bad bytes."""
    if IJSON_BACKEND == "yajl2_c":
        backend = ijson.get_backend("yajl2_c")
        items = backend.items_basecoro(_Next(into), "item", None)
        events = backend.parse_basecoro(_Next(items))
        return backend.basic_parse_basecoro(_Next(events), use_float=True)
    return ijson.items_coro(into, "item", use_float=True)  # `into`: a sendable_list


async def iter_start_tasks(
    reader: CountingReader, *, method: str = "", url: str = ""
) -> AsyncIterator[StartTask]:
    """The parser, one `StartTask` at a time: `iter_start_task_batches`, flattened."""
    batches = iter_start_task_batches(reader, method=method, url=url)
    try:
        async for batch in batches:
            for task in batch:
                yield task
    finally:
        await batches.aclose()


async def iter_start_task_batches(
    reader: CountingReader,
    *,
    method: str = "",
    url: str = "",
    task_id: str | None = None,
    received: int = 0,
) -> AsyncGenerator[list[StartTask], None]:
    """The parser core: the elements of a stream-start body as `StartTask`s, a list per
    read (every element the read completed, handed over before the next read).

    Yields every element of the longest valid prefix, then raises `StreamError` (with
    byte offset and excerpt) on a malformed body, `StreamTruncated` when the body ends
    mid-array, and lets the reader's `APIConnectionError` through when the connection
    breaks. Checks that every element has the same task id. Nothing from ijson or cattrs
    escapes. A parser that reads on after another one stopped mid-body (a stream that went
    silent) takes over its `task_id` and the count of elements `received`, so its checks
    and errors speak of the whole body.
    """
    count = received
    first_id = task_id

    def fail(
        message: str, cls: type[StreamError] = StreamError, excerpt: bytes | None = None
    ) -> StreamError:
        return cls(
            message,
            method=method,
            url=url,
            offset=reader.offset,
            excerpt=reader.excerpt() if excerpt is None else excerpt,
            items_received=count,
        )

    cutter = RequestCut()
    builder = TaskBuilder(method=method, url=url, cutter=cutter)
    build = builder.build
    # Push-style: ijson appends each element it completes to `done`; a read that is
    # malformed after some elements raises only once those elements are in `done`.
    done = ijson.sendable_list()
    push = _push_parser(done)
    failure: BaseException | None = None
    truncated = False
    failed_read = b""
    sent, cuts = b"", list[int]()  # what ijson was given of the last read: repeats cut, where
    while failure is None:
        try:
            data = await reader.read(_READ_SIZE)
        except _TooDeep as exc:
            data, failure = exc.prefix, exc
        try:
            if data:
                sent, cuts = (data, []) if failure else cutter.cut(data, reader.nesting)
                push.send(sent)
            elif failure is None:
                failure = _END
                push.close()  # the end of the body: ijson checks the array was closed
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            # yajl lets some invalid UTF-8 through (surrogates, overlong forms); Python's
            # decode of the string then fails, and that is malformed JSON too.
            # An error only at the end (premature EOF, a cut escape or UTF-8 sequence) is
            # a body cut short: every byte before it was valid.
            truncated = failure is _END
            failure = exc
            failed_read = data
        if not done:
            continue
        batch: list[StartTask] = []
        invalid: StreamError | None = None
        for item in done:
            if not isinstance(item, dict):
                invalid = fail(
                    f"stream-start element {count} is a {type(item).__name__}, not an object"
                )
                break
            try:
                task = build(item)
            except ResponseValidationError as exc:
                invalid = fail(f"stream-start element {count}: {exc.message}")
                break
            if task.id != first_id:
                if first_id is not None:
                    invalid = fail(
                        f"stream-start element {count} is task {task.id}, "
                        f"the stream started with task {first_id}"
                    )
                    break
                first_id = task.id
            count += 1
            batch.append(task)
        del done[:]
        if builder.cut_is_stale:  # a new request to cut the repeats of from the reads
            builder.expect_cut(cutter.expect(builder.raw_request))
        if batch:
            yield batch
        if invalid is not None:
            raise invalid from None
    if failure is _END:  # ijson's close() passed: a whole array was read
        return
    if isinstance(failure, _TooDeep):
        raise fail(f"stream-start body nests too deep (over {MAX_DEPTH} levels)")
    reason = (_text(failure, "replace").splitlines() or [type(failure).__name__])[0]
    if truncated:
        if not reader.started:  # nothing, or only blanks
            raise fail("stream-start body is empty", StreamTruncated)
        raise fail(f"stream-start body ended mid-array after {count} elements", StreamTruncated)
    raise fail(
        f"stream-start body is not valid JSON: {reason}",
        excerpt=_excerpt_at_error(failure, sent, failed_read, lambda at: cutter.origin(at, cuts))
        if cuts and failed_read
        else _excerpt_at_error(failure, failed_read),
    )


def _excerpt_at_error(
    exc: BaseException,
    data: bytes,
    received: bytes | None = None,
    origin: Callable[[int], int] | None = None,
) -> bytes | None:
    """The bytes around the error itself, when the parser says where it is.

    yajl's message quotes the text near the error and points at it with a caret; the last
    bytes read can be well past it (good elements may follow the garbage in one read).
    None when the message has no such pointer (other backends) or the quote is not found.
    When ijson was given the read with its request repeats cut (`data`), the excerpt is
    of the bytes `received`, around the error's place there (`origin`).
    """
    lines = _text(exc, "surrogateescape").split("\n")
    if len(lines) < 3 or "^" not in lines[2]:
        return None
    quoted = lines[1].lstrip()
    at = lines[2].index("^") - (len(lines[1]) - len(quoted))
    # yajl writes line breaks in the quote as spaces (tabs as they are).
    spaced = data.translate(_LINE_BREAKS_AS_SPACES)
    pos = spaced.find(quoted.encode("utf-8", "surrogateescape"))
    if pos < 0 or at < 0:
        return None
    error = pos + at
    if received is not None and origin is not None:
        data, error = received, origin(error)
    return data[max(0, error - _EXCERPT // 3) : error + 2 * _EXCERPT // 3]


_LINE_BREAKS_AS_SPACES = bytes.maketrans(b"\n\r", b"  ")


def _text(exc: BaseException, errors: str) -> str:
    # ijson passes yajl's message on as bytes when the text it quotes is not UTF-8.
    message = exc.args[0] if len(exc.args) == 1 else None
    return message.decode("utf-8", errors) if isinstance(message, bytes) else str(exc)

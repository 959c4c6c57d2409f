"""The stream parser's rules, through its public surface only (pure, no sockets).

Fast enough to run once per mutant (`nox -s mutation`): `iter_start_tasks` (what it yields,
each error's message, offset, excerpt and count), `CountingReader` (counting, the array
check, mapping a plain source's network errors) and `NestingGuard` (depth across chunks,
against a byte-by-byte reference). No internals, so a rewrite of the parser's inside keeps
these valid.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.errors import APIConnectionError, APITimeoutError, StreamTruncated
from openhands_async.lib._stream_parser import (
    IJSON_BACKEND,
    MAX_DEPTH,
    CountingReader,
    NestingGuard,
    iter_start_tasks,
)

URL = "https://app.example/api/v1/app-conversations/stream-start"


class Reads:
    """Hands out the given reads in order (an exception in the list is raised instead)."""

    def __init__(self, reads: list[bytes | BaseException]) -> None:
        self._reads = [r for r in reads if r != b""]  # an empty read is the end of the body
        self.calls: list[int] = []

    async def read(self, n: int = -1, /) -> bytes:
        self.calls.append(n)
        if not self._reads:
            return b""
        item = self._reads.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


async def run(
    reads: list[bytes | BaseException],
) -> tuple[list[oh.StartTask], BaseException | None]:
    got: list[oh.StartTask] = []
    try:
        async for task in iter_start_tasks(
            CountingReader(Reads(reads), method="POST", url=URL), method="POST", url=URL
        ):
            got.append(task)
    except Exception as exc:
        return got, exc
    return got, None


def element(task_id: str = "a", status: str = "WORKING", **more: Any) -> bytes:
    return json.dumps({"id": task_id, "status": status, **more}).encode()


def body(*elements: bytes) -> bytes:
    return b"[\n" + b",\n".join(elements) + b"\n]"


def _error(exc: BaseException | None) -> oh.StreamError:
    assert isinstance(exc, oh.StreamError), exc
    assert (exc.request_method, exc.request_url) == ("POST", URL)
    return exc


# ---------------------------------------------------------------------- what it yields


async def test_a_valid_body_yields_every_element_in_any_split() -> None:
    data = body(element(), element(status="READY", app_conversation_id="c" * 32))
    for cut in range(len(data) + 1):
        tasks, exc = await run([data[:cut], data[cut:]])
        assert exc is None
        assert [(t.id, t.status.value) for t in tasks] == [("a", "WORKING"), ("a", "READY")]
        assert tasks[1].app_conversation_id == "c" * 32
    tasks, exc = await run([b"  \n ", data, b"  \n"])  # blanks around the array
    assert (len(tasks), exc) == (2, None)
    assert await run([b"[]"]) == ([], None)


async def test_equal_requests_share_one_model_and_others_are_structured() -> None:
    request = {"initial_message": {"content": [{"type": "text", "text": "hi"}]}, "title": "t"}
    other = {**request, "title": "u"}
    elements = [
        {"id": "a", "status": "WORKING", "request": request},
        {"id": "a", "status": "WORKING", "request": dict(request)},
        {"id": "a", "status": "WORKING", "request": other},
        {"id": "a", "status": "WORKING", "request": None},
        {"id": "a", "status": "WORKING"},
        {"id": "a", "status": "READY", "request": request},
    ]
    tasks, exc = await run([body(*(json.dumps(e).encode() for e in elements))])
    assert exc is None
    assert tasks == [structure(e, oh.StartTask) for e in elements]
    assert tasks[1].request is tasks[0].request
    assert tasks[2].request is not tasks[1].request
    assert (tasks[3].request, tasks[4].request) == (None, None)
    assert tasks[5].request == tasks[0].request


async def test_each_element_comes_out_before_the_next_read() -> None:
    reads = Reads([b"[" + element() + b",", element(status="READY") + b"]"])
    stream = iter_start_tasks(CountingReader(reads)).__aiter__()
    first = await stream.__anext__()
    assert first.status is oh.StartTaskStatus.WORKING
    assert len(reads.calls) == 1
    assert reads.calls[0] > 0
    rest = [t async for t in stream]
    assert [t.status.value for t in rest] == ["READY"]


def test_the_fast_backend_is_in_use() -> None:
    assert IJSON_BACKEND == "yajl2_c"


# ---------------------------------------------------------------------- each failure


async def test_an_element_that_is_not_an_object() -> None:
    for value, name in ((b"1", "int"), (b"[]", "list"), (b'"x"', "str"), (b"null", "NoneType")):
        tasks, exc = await run([body(element(), value)])
        err = _error(exc)
        assert [t.id for t in tasks] == ["a"]
        assert err.message == f"stream-start element 1 is a {name}, not an object"
        assert err.items_received == 1


async def test_an_element_of_another_task() -> None:
    data = body(element("a"), element("a"), element("b"))
    tasks, exc = await run([data])
    err = _error(exc)
    assert len(tasks) == 2
    assert err.message == "stream-start element 2 is task b, the stream started with task a"
    assert (err.items_received, err.offset, err.excerpt) == (2, len(data), data[-120:])


async def test_an_element_that_does_not_fit_start_task() -> None:
    data = body(element(), b'{"status": "WORKING"}')
    tasks, exc = await run([data])
    err = _error(exc)
    assert len(tasks) == 1
    assert err.message == (
        "stream-start element 1: the server's answer does not fit StartTask: "
        "required field missing @ $.id"
    )
    assert err.__cause__ is None
    assert err.__suppress_context__


async def test_an_empty_body_is_truncated() -> None:
    tasks, exc = await run([])
    err = _error(exc)
    assert isinstance(err, StreamTruncated)
    assert (tasks, err.message, err.offset, err.items_received) == (
        [],
        "stream-start body is empty",
        0,
        0,
    )


async def test_a_body_cut_short_is_truncated_after_its_elements() -> None:
    data = body(element(), element(), element())
    for cut in (len(data) - 1, len(data) - 3, len(data) - 10):
        tasks, exc = await run([data[:cut]])
        err = _error(exc)
        assert isinstance(err, StreamTruncated)
        assert err.message == f"stream-start body ended mid-array after {len(tasks)} elements"
        assert (err.offset, err.items_received) == (cut, len(tasks))
    tasks, exc = await run([b"[\n"])
    err = _error(exc)
    assert isinstance(err, StreamTruncated)
    assert err.message == "stream-start body ended mid-array after 0 elements"
    tasks, exc = await run([b"[", b'{"id": "a", "status": "WOR'])
    assert isinstance(exc, StreamTruncated)


async def test_a_body_that_is_not_an_array() -> None:
    for reads, offset in (([b'{"id": "a"}'], 0), ([b"  ", b" \n{}"], 4), ([b"<html>"], 0)):
        tasks, exc = await run(list(reads))
        err = _error(exc)
        first = b"".join(reads).lstrip()[:1]
        assert err.message == (
            f"stream-start body is not a JSON array (starts with {first!r} at byte {offset})"
        )
        assert err.offset == offset
        assert err.excerpt == b"".join(reads).lstrip()[:120]
        assert tasks == []
    long = b"x" * 300
    err = _error((await run([long]))[1])
    assert err.excerpt == long[:120]


async def test_garbage_keeps_the_elements_before_it_and_shows_where_it_is() -> None:
    good = element(title="x" * 150)
    data = b"[" + good + b", @@@ " + good + b"]"
    at = data.index(b"@")
    tasks, exc = await run([data])
    err = _error(exc)
    assert len(tasks) == 1
    assert err.message == (
        "stream-start body is not valid JSON: lexical error: invalid char in json text."
    )
    # yajl points just past the invalid byte: 40 bytes before that point, 80 from it
    assert err.excerpt == data[at + 1 - 40 : at + 1 + 80]
    assert (err.offset, err.items_received) == (len(data), 1)
    # the garbage near the start: the excerpt starts at the body's first byte
    data = b"[@" + b" " * 200
    err = _error((await run([data]))[1])
    assert err.excerpt == data[:82]


async def test_trailing_garbage_after_the_array() -> None:
    data = body(element()) + b" x"
    tasks, exc = await run([data])
    err = _error(exc)
    assert len(tasks) == 1
    assert err.message == "stream-start body is not valid JSON: parse error: trailing garbage"
    assert not isinstance(err, StreamTruncated)
    tasks, exc = await run([body(element()), b"\n[", b"]"])
    assert len(tasks) == 1
    assert "not valid JSON" in _error(exc).message


async def test_invalid_utf8_in_a_string_is_not_valid_json() -> None:
    data = b'[{"id": "a", "status": "WORKING", "title": "\xed\xa0\x80"}]'
    tasks, exc = await run([data])
    err = _error(exc)
    assert tasks == []
    assert err.message.startswith("stream-start body is not valid JSON: ")
    assert not isinstance(err, StreamTruncated)


async def test_a_body_nesting_too_deep_keeps_the_elements_before_it() -> None:
    data = b"[" + element() + b"," + b'{"x": ' * (MAX_DEPTH + 5)
    for reads in ([data], [data[:20], data[20:]]):
        tasks, exc = await run(list(reads))
        err = _error(exc)
        assert [t.id for t in tasks] == ["a"]
        assert err.message == f"stream-start body nests too deep (over {MAX_DEPTH} levels)"
        assert (err.offset, err.items_received) == (len(data), 1)
    # exactly MAX_DEPTH levels is allowed
    nested: Any = 0
    for _ in range(MAX_DEPTH - 2):
        nested = [nested]
    ok = body(json.dumps({"id": "a", "status": "WORKING", "x": nested}).encode())
    tasks, exc = await run([ok])
    assert (len(tasks), exc) == (1, None)


async def test_a_broken_connection_comes_through_after_the_elements() -> None:
    data = b"[" + element() + b","
    tasks, exc = await run([data, ConnectionResetError("reset by peer")])
    assert [t.id for t in tasks] == ["a"]
    assert isinstance(exc, APIConnectionError)
    assert not isinstance(exc, oh.StreamError)
    assert str(exc).startswith(
        f"connection error: ConnectionResetError: reset by peer (stream broke after {len(data)} "
        "bytes)"
    )


# ---------------------------------------------------------------------- CountingReader


async def test_the_reader_counts_and_keeps_the_tail() -> None:
    source = Reads([b"  ", b"[" + b"1," * 200, b"2]"])
    reader = CountingReader(source)
    assert await reader.read(0) == b""
    assert source.calls == []  # a probe, not a read
    assert (reader.offset, reader.started, reader.eof) == (0, False, False)
    assert await reader.read(10) == b"  "
    assert (reader.offset, reader.started) == (2, False)
    await reader.read(10)
    assert (reader.offset, reader.started) == (403, True)
    await reader.read()
    assert reader.excerpt() == (b"  [" + b"1," * 200 + b"2]")[-120:]
    assert await reader.read(10) == b""
    assert (reader.offset, reader.eof) == (405, True)
    assert source.calls == [10, 10, -1, 10]


async def test_the_reader_maps_a_plain_sources_errors() -> None:
    reader = CountingReader(Reads([b"[1", TimeoutError()]), method="GET", url=URL)
    await reader.read(5)
    with pytest.raises(APITimeoutError) as caught:
        await reader.read(5)
    err = caught.value
    assert err.message == "stream idle timeout (after 2 bytes)"
    assert (err.request_method, err.request_url, err.kind) == ("GET", URL, "stream-idle")
    assert isinstance(err.__cause__, TimeoutError)

    reader = CountingReader(Reads([OSError("gone")]), method="GET", url=URL)
    with pytest.raises(APIConnectionError) as caught_conn:
        await reader.read(5)
    assert caught_conn.value.message == (
        "connection error: OSError: gone (stream broke after 0 bytes)"
    )
    assert caught_conn.value.request_url == URL
    assert not isinstance(caught_conn.value, APITimeoutError)

    reader = CountingReader(Reads([ValueError("a bug")]))
    with pytest.raises(ValueError, match="a bug"):  # not a network error: as it is
        await reader.read(5)
    sdk_error = oh.StreamError("already mapped")
    assert CountingReader(Reads([])).map_error(sdk_error) is None
    reader = CountingReader(Reads([sdk_error]))
    with pytest.raises(oh.StreamError) as caught_sdk:
        await reader.read(5)
    assert caught_sdk.value is sdk_error


async def test_a_source_that_maps_its_own_errors_decides() -> None:
    mine = APIConnectionError("mapped by the source")

    class Mapping(Reads):
        def map_error(self, exc: BaseException) -> APIConnectionError | None:
            return mine if isinstance(exc, KeyError) else None

    reader = CountingReader(Mapping([KeyError("k")]))
    with pytest.raises(APIConnectionError) as caught:
        await reader.read(5)
    assert caught.value is mine
    # the source says "not mine": no fallback mapping, the error goes through
    reader = CountingReader(Mapping([OSError("x")]))
    with pytest.raises(OSError, match=r"^x$"):
        await reader.read(5)


# ---------------------------------------------------------------------- NestingGuard


def _reference(data: bytes) -> list[int]:
    """The depth after each byte, by a byte-by-byte reading of JSON strings and brackets."""
    depths, depth, in_string, escaped = [], 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
        elif byte in b"]}":
            depth -= 1
        depths.append(depth)
    return depths


SHAPES = [
    b'[{"a": [1, {"b": "[[[{{{"}], "c": "\\"]]]", "d": "\\\\"}, "e"]',
    b'{"k": "x\\\\\\"[", "m": [[], [[]], {}], "n": ""}',
    b'["", "\\\\", "\\"", "[", "]", "{}"]',
    b"[" * 40 + b'"' + b"[" * 40 + b'"' + b"]" * 40,
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b"[" * 30 + b"[]" * 200 + b"]" * 30,
    b"[" * 60 + b"]" * 60 + b"[" * 60 + b"]" * 60,
    b"[" * 10 + b"[[]]" * 40 + b"[[[[[]]]]]" * 20 + b"]" * 10,
]


@pytest.mark.parametrize("data", SHAPES)
def test_the_guard_follows_the_depth_in_any_split(data: bytes) -> None:
    depths = _reference(data)
    assert max(depths) <= MAX_DEPTH
    for cut in range(len(data) + 1):
        for second in (cut, min(len(data), cut + 1), min(len(data), cut + 7)):
            guard = NestingGuard()
            for part in (data[:cut], data[cut:second], data[second:]):
                assert guard.feed(part)
            assert guard.depth == depths[-1]
        guard = NestingGuard()
        assert guard.feed(data[:cut])
        assert guard.depth == (depths[cut - 1] if cut else 0)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * (MAX_DEPTH + 1),
        b"[" * 30 + b"[]" * 200 + b"[" * 35,
        b"[" * 60 + b"]" * 60 + b"[" * 65,
        b'["' + b"[" * 100 + b'",' + b"{" * (MAX_DEPTH + 1),
        b"[" * MAX_DEPTH + b'"\\"' + b'"' + b"[",
    ],
)
def test_the_guard_refuses_one_level_past_the_cap(data: bytes) -> None:
    assert max(_reference(data)) == MAX_DEPTH + 1 or max(_reference(data)) > MAX_DEPTH
    assert not NestingGuard().feed(data)
    for cut in (1, len(data) // 2, len(data) - 1):
        guard = NestingGuard()
        ok = guard.feed(data[:cut])
        assert ok == (max(_reference(data[:cut])) <= MAX_DEPTH)
        if ok:
            assert not guard.feed(data[cut:])


def test_the_guard_carries_strings_and_escapes_across_chunks() -> None:
    guard = NestingGuard()
    assert guard.feed(b'["abc\\')  # a backslash at the end escapes the next chunk's byte
    assert guard.feed(b'"[[[')  # the escaped quote does not end the string
    assert guard.depth == 1
    assert guard.feed(b'"]')  # this quote does
    assert guard.depth == 0
    guard = NestingGuard()
    assert guard.feed(b'[["')
    assert guard.feed(b"[" * 200)  # inside a string: no depth
    assert guard.feed(b'{{"')  # still inside the string, which this quote ends
    assert guard.depth == 2
    assert guard.feed(b"{{")
    assert guard.depth == 4
    guard = NestingGuard()
    assert guard.feed(b'["\\\\')  # an escaped backslash: the string is still open
    assert guard.feed(b'"[')
    assert guard.depth == 2


def test_the_guard_says_how_much_of_a_refused_chunk_is_safe() -> None:
    guard = NestingGuard()
    data = b'[{"a": "[[["}, ' + b"[" * 100
    assert not guard.feed(data)
    assert guard.safe_length(data) == data.index(b"[[[[") + MAX_DEPTH - 1
    full = NestingGuard()
    assert full.feed(b"[" * MAX_DEPTH)
    assert not full.feed(b"[")
    assert full.safe_length(b"[") == 0


async def test_the_excerpt_finds_the_error_across_blank_lines_and_repeats() -> None:
    good = element(title="y" * 150)
    # whitespace near the error (yajl quotes it as spaces), the same text again later
    data = b"[" + good + b",\n\t@@@\r\n " + good + b",\n\t@@@\r\n " + good + b"]"
    at = data.index(b"@")
    tasks, exc = await run([data])
    err = _error(exc)
    assert len(tasks) == 1
    assert err.excerpt == data[at + 1 - 40 : at + 1 + 80]


async def test_the_reader_keeps_method_and_url_on_a_broken_connection() -> None:
    reader = CountingReader(Reads([OSError("gone")]), method="GET", url=URL)
    with pytest.raises(APIConnectionError) as caught:
        await reader.read(5)
    assert (caught.value.request_method, caught.value.request_url) == ("GET", URL)

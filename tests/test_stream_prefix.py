"""The stream parser yields exactly the longest valid prefix of a body, for every chunking.

The oracle is independent of the parser (and of ijson): the known valid body is cut into
its elements with the standard library's `json.JSONDecoder.raw_decode`, each element is
structured on its own, and a mutation at a known byte keeps exactly the elements that
end before it. Whatever the reads look like (everything in one read, the fault in the
same read as the last good element, one byte at a time, anywhere), the parser must yield
those elements and then raise `StreamError`: never lose one, never invent one.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.errors import StreamTruncated
from openhands_async.lib._stream_parser import MAX_DEPTH, CountingReader, iter_start_tasks

from .captures import raw

BODIES = [
    "stream-start.pretty.json",
    "stream-start.raw",
    "stream-start_ERROR_no_chromium.raw",
    "stream-start_llm_unreachable.pretty.json",
]


class Reads:
    """An async byte source handing out the given reads, in order."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = [r for r in reads if r]

    async def read(self, n: int = -1, /) -> bytes:
        if n == 0 or not self._reads:
            return b""
        await asyncio.sleep(0)
        return self._reads.pop(0)


async def run_parser(reads: list[bytes]) -> tuple[list[oh.StartTask], oh.StreamError | None]:
    got: list[oh.StartTask] = []
    try:
        async for task in iter_start_tasks(CountingReader(Reads(reads))):
            got.append(task)
    except oh.StreamError as exc:
        return got, exc
    return got, None


def parse_all(reads: list[bytes]) -> tuple[list[oh.StartTask], oh.StreamError | None]:
    return asyncio.run(asyncio.wait_for(run_parser(reads), 10))


class Body:
    """A valid stream-start body and, from the standard library, where each element ends."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        text = data.decode()
        decoder = json.JSONDecoder()
        pos = self._skip(text, 0)
        assert text[pos] == "["
        pos = self._skip(text, pos + 1)
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.tasks: list[oh.StartTask] = []
        while text[pos] != "]":
            value, end = decoder.raw_decode(text, pos)
            self.starts.append(len(text[:pos].encode()))
            self.ends.append(len(text[:end].encode()))
            self.tasks.append(structure(value, oh.StartTask))
            pos = self._skip(text, end)
            if text[pos] == ",":
                pos = self._skip(text, pos + 1)
        self.close = len(text[: pos + 1].encode())  # just after the final `]`
        assert not text[pos + 1 :].strip()

    @staticmethod
    def _skip(text: str, pos: int) -> int:
        while text[pos] in " \t\r\n":
            pos += 1
        return pos

    def prefix_before(self, at: int) -> list[oh.StartTask]:
        """The oracle: the elements whose last byte lies before byte `at`."""
        return [t for t, end in zip(self.tasks, self.ends, strict=True) if end <= at]


def captured(name: str) -> Body:
    return Body(raw(name))


# ---------------------------------------------------------------- the table


def test_the_oracle_reads_the_capture() -> None:
    body = captured("stream-start.pretty.json")
    assert len(body.tasks) == 8
    assert body.tasks[-1].status is oh.StartTaskStatus.READY


def test_html_after_the_array_in_the_same_read_keeps_every_element() -> None:
    body = captured("stream-start.pretty.json")
    bad = body.data + b"<html>oops</html>"
    for reads in ([bad], [body.data, b"<html>oops</html>"]):
        got, err = parse_all(reads)
        assert got == body.tasks
        assert type(err) is oh.StreamError
        assert "not valid JSON" in str(err)


def test_bad_token_in_the_next_element_in_the_same_read_keeps_the_five() -> None:
    body = captured("stream-start.pretty.json")
    bad = body.data[: body.ends[4]] + b',\n{"id": "x", "status": WORKING}'
    got, err = parse_all([bad])
    assert got == body.tasks[:5]
    assert type(err) is oh.StreamError
    assert err.items_received == 5


def test_the_excerpt_shows_the_garbage_when_good_elements_follow_it_in_one_read() -> None:
    # Garbage in place of element 2, then more elements, all in one read: the excerpt is
    # taken around the error, not from the end of the read.
    body = captured("stream-start.pretty.json")
    bad = body.data[: body.ends[1]] + b",\n<html>oops</html>" + body.data[body.ends[2] :]
    got, err = parse_all([bad])
    assert got == body.tasks[:2]
    assert type(err) is oh.StreamError
    assert b"<html>oops" in err.excerpt
    assert len(err.excerpt) <= 120


def test_truncated_element_then_eof_keeps_the_five() -> None:
    body = captured("stream-start.pretty.json")
    cut = body.data[: body.ends[4]] + b',\n{"id": "x", "sta'
    got, err = parse_all([cut])
    assert got == body.tasks[:5]
    assert isinstance(err, StreamTruncated)
    assert err.items_received == 5


# ---------------------------------------------------------------- mutations, property


def _mutate(body: Body, kind: str, k: int, pos: int) -> tuple[bytes, int, type[Exception]]:
    """A damaged copy of `body`; the byte where the damage starts; the error it must raise.

    `k` picks an element, `pos` a byte: both are taken modulo what the body offers.
    """
    data, n = body.data, len(body.tasks)
    k %= n
    start, end = body.starts[k], body.ends[k]
    if kind == "truncate":  # anywhere before the final `]`
        at = pos % body.close
        return data[:at], at, StreamTruncated
    if kind == "garbage-after-close":
        tail = [b"<html>oops</html>", b"x", b"[", b",{}", b"]"][pos % 5]
        return data + tail, len(data), oh.StreamError
    if kind == "bad-token":  # a bare word where a value or key of element k should start
        # Outside strings only: a word inside one (a URL's ":", a detail's ",") is valid.
        spots = [i + 1 for i in _structural(data, start, end) if data[i] in b":{,"]
        at = spots[pos % len(spots)]
        at += len(data[at:]) - len(data[at:].lstrip())
        return data[:at] + b"WORKING" + data[at:], at, oh.StreamError
    if kind == "html-instead":  # a proxy's error page where element k should be
        return data[:start] + b"<html>502 Bad Gateway</html>", start, oh.StreamError
    if kind == "other-task":  # element k belongs to another task
        if k == 0:
            k = 1 % n
            start, end = body.starts[k], body.ends[k]
        old = json.loads(data[start:end])
        other = json.dumps({**old, "id": "0" * 32}).encode()
        if k == 0:  # a one-element body: the first element sets the id, nothing to break
            return data, len(data) + 1, Exception
        return data[:start] + other + data[end:], start + 1, oh.StreamError
    if kind == "not-an-object":
        return data[:start] + b"[1]" + data[end:], start + 1, oh.StreamError
    if kind == "too-deep":
        deep = b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2)
        return data[:start] + deep + data[end:], start + 1, oh.StreamError
    raise AssertionError(kind)


def _structural(data: bytes, start: int, end: int) -> list[int]:
    """The offsets in data[start:end] (an element starts at `start`) outside strings."""
    out, in_string, escaped = [], False, False
    for i in range(start, end):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        else:
            out.append(i)
    return out


KINDS = [
    "truncate",
    "garbage-after-close",
    "bad-token",
    "html-instead",
    "other-task",
    "not-an-object",
    "too-deep",
]


def _chunkings(data: bytes, fault: int, last_good_start: int, cuts: list[int]) -> list[list[int]]:
    """Cut points: everything in one read; the fault in the same read as the last good
    element (cut just before that element, and at a drawn point before it); drawn cuts."""
    fault = min(fault, len(data))
    out: list[list[int]] = [[], [last_good_start]]
    if last_good_start:
        out.append([cuts[0] % last_good_start] if cuts else [last_good_start // 2])
    out.append([c % (len(data) + 1) for c in cuts])
    out.append([c % (fault + 1) for c in cuts] + [fault])  # drawn cuts up to the fault
    return out


def _reads(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("name", BODIES)
def test_mutated_bodies_yield_the_oracles_prefix_in_any_chunking(name: str) -> None:
    body = captured(name)

    @settings(
        max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        kind=st.sampled_from(KINDS),
        k=st.integers(0, 100),
        pos=st.integers(0, 10**6),
        cuts=st.lists(st.integers(0, 10**6), max_size=10),
    )
    def check(kind: str, k: int, pos: int, cuts: list[int]) -> None:
        data, fault, error = _mutate(body, kind, k, pos)
        expected = body.prefix_before(fault)
        good = len(expected)
        last_good_start = body.starts[good - 1] if good else 0
        for chunk_cuts in _chunkings(data, fault, last_good_start, cuts):
            got, err = parse_all(_reads(data, chunk_cuts))
            if error is Exception:  # the mutation changed nothing
                assert (got, err) == (body.tasks, None)
                continue
            assert got == expected, (kind, chunk_cuts)
            assert isinstance(err, error), (kind, chunk_cuts, err)
            if error is oh.StreamError:
                assert not isinstance(err, StreamTruncated), (kind, err)
            assert err.items_received == good

    check()


@pytest.mark.parametrize("name", BODIES)
def test_valid_bodies_parse_whole_in_any_chunking(name: str) -> None:
    body = captured(name)

    @settings(max_examples=40, deadline=None, database=None)
    @given(cuts=st.lists(st.integers(0, 10**6), max_size=20))
    def check(cuts: list[int]) -> None:
        got, err = parse_all(_reads(body.data, [c % (len(body.data) + 1) for c in cuts]))
        assert err is None
        assert got == body.tasks

    check()


def test_one_byte_reads_keep_the_prefix() -> None:
    body = captured("stream-start.pretty.json")
    bad = body.data[: body.ends[6]] + b",\n<html>oops</html>"
    got, err = parse_all([bad[i : i + 1] for i in range(len(bad))])
    assert got == body.tasks[:7]
    assert type(err) is oh.StreamError


def test_the_generic_push_parser_keeps_the_prefix_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other ijson backends get ijson's public `items_coro` instead of the C stages chained
    # directly; it must keep the elements of a failing read just the same.
    from openhands_async.lib import _stream_parser

    monkeypatch.setattr(_stream_parser, "IJSON_BACKEND", "python")
    body = captured("stream-start.pretty.json")
    got, err = parse_all([body.data + b"<html>oops</html>"])
    assert got == body.tasks
    assert type(err) is oh.StreamError

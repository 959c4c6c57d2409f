"""More of the stream parser's rules, each one a mutant of `lib/_stream_parser.py` survived.

Pure and fast (run once per mutant by `nox -s mutation`), through the public surface only:
`iter_start_tasks(CountingReader(source))` over in-memory reads, `NestingGuard`, `MAX_DEPTH`
and the `StreamError` attributes. What each test pins down: no request named when none
was given, an empty-string request is not "the same request again", JSON numbers come out
as Python floats with either push parser, `safe_length` answers exactly (also for a fresh
guard), and the excerpt shows the error itself even when identical text repeats later in
the read or the error is the read's very first byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.errors import APIConnectionError, StreamTruncated
from openhands_async.lib import _stream_parser
from openhands_async.lib._stream_parser import (
    IJSON_BACKEND,
    MAX_DEPTH,
    CountingReader,
    NestingGuard,
    iter_start_task_batches,
    iter_start_tasks,
)

from .test_stream_parser_rules import Reads


async def parse(
    reads: list[bytes | BaseException], **where: str
) -> tuple[list[oh.StartTask], BaseException | None]:
    got: list[oh.StartTask] = []
    try:
        async for task in iter_start_tasks(CountingReader(Reads(reads), **where), **where):
            got.append(task)
    except Exception as exc:
        return got, exc
    return got, None


def element(**fields: Any) -> bytes:
    return json.dumps({"id": "a", "status": "WORKING", **fields}).encode()


def stream_error(exc: BaseException | None) -> oh.StreamError:
    assert isinstance(exc, oh.StreamError), exc
    return exc


# ------------------------------------------------------- no request named unless given


async def test_without_method_and_url_no_request_is_named() -> None:
    # the parser's own errors (an element that is not an object)
    err = stream_error((await parse([b"[1]"]))[1])
    assert (err.request_method, err.request_url) == ("", "")
    assert str(err) == err.message == "stream-start element 0 is a int, not an object"
    # the reader's: a body that is not an array, a broken connection
    err = stream_error((await parse([b"{}"]))[1])
    assert (err.request_method, err.request_url) == ("", "")
    assert str(err) == err.message
    _, exc = await parse([b"[", OSError("gone")])
    assert isinstance(exc, APIConnectionError)
    assert (exc.request_method, exc.request_url) == ("", "")
    assert str(exc) == "connection error: OSError: gone (stream broke after 1 bytes)"


async def test_the_batch_parser_names_no_request_unless_given_one() -> None:
    # `iter_start_task_batches` (the stream's own entry point) has its own defaults.
    with pytest.raises(oh.StreamError) as got:
        async for _ in iter_start_task_batches(CountingReader(Reads([b"[1]"]))):
            pass
    assert (got.value.request_method, got.value.request_url) == ("", "")
    assert str(got.value) == got.value.message
    where = {"method": "POST", "url": "https://app.example/api/v1/app-conversations/stream-start"}
    with pytest.raises(oh.StreamError) as got:
        async for _ in iter_start_task_batches(CountingReader(Reads([b"[1]"])), **where):
            pass
    assert (got.value.request_method, got.value.request_url) == (where["method"], where["url"])


async def test_a_parser_reading_on_refuses_another_task_even_as_its_first_element() -> None:
    # The rest of a silent stream (`task_id`: the task it started with) must not start a
    # task of its own: its very first element is held to `task_id` too.
    seen: list[oh.StartTask] = []
    reads = Reads([b"[" + element(id="b") + b"]"])

    async def read_on() -> None:
        async for batch in iter_start_task_batches(CountingReader(reads), task_id="a"):
            seen.extend(batch)

    with pytest.raises(oh.StreamError) as got:
        await read_on()
    assert seen == []
    assert got.value.message == "stream-start element 0 is task b, the stream started with task a"


# ------------------------------------------------------------------ repeated requests


async def test_an_empty_string_request_is_refused_not_taken_for_a_repeat() -> None:
    # Equal requests of successive elements share one model; "" is no request at all and
    # must not be mistaken for a repeat of the "nothing yet" before the first element.
    tasks, exc = await parse([b"[" + element(request="") + b"]"])
    err = stream_error(exc)
    assert tasks == []
    assert err.message.startswith("stream-start element 0: the server's answer does not fit ")
    assert err.message.endswith("@ $.request")
    assert err.items_received == 0


# ---------------------------------------------------------- numbers, either push parser


@pytest.mark.parametrize("backend", [IJSON_BACKEND, "python"])
async def test_numbers_are_floats_and_the_prefix_is_kept_with_either_push_parser(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "python": the generic push parser (ijson's public items_coro) other backends get
    monkeypatch.setattr(_stream_parser, "IJSON_BACKEND", backend)
    request = {"title": "t", "observability_metadata": {"cost": 0.25, "tokens": 3}}
    first = element(request=request)
    last = element(status="READY", app_conversation_id="c" * 32, request=request)
    data = b"[" + first + b",\n" + last + b"]<html>oops</html>"
    tasks, exc = await parse([data])
    err = stream_error(exc)
    assert not isinstance(err, StreamTruncated)
    assert [t.status.value for t in tasks] == ["WORKING", "READY"]
    assert tasks[1].app_conversation_id == "c" * 32
    for task in tasks:
        assert task.request is not None
        metadata = task.request.observability_metadata
        assert metadata == {"cost": 0.25, "tokens": 3}
        # floats, not Decimals: a user can json.dumps what the stream gave
        assert type(metadata["cost"]) is float
        assert type(metadata["tokens"]) is int
    assert err.items_received == 2


# ---------------------------------------------------------------- NestingGuard bisection


def test_a_fresh_guard_says_how_much_of_a_chunk_is_safe() -> None:
    # safe_length measures from the guard's state before its last feed; before any feed
    # that is a new guard's (depth 0, outside any string, no escape pending), so a chunk
    # a new guard would refuse can be measured before feeding it
    string = b'["' + b"[" * 100 + b'",'  # depth 1: the brackets are inside a string
    for data, safe in (
        (b"[" * 100, MAX_DEPTH),
        (b"[" * (MAX_DEPTH + 1), MAX_DEPTH),
        (string + b"{" * 70, len(string) + MAX_DEPTH - 1),
    ):
        assert not NestingGuard().feed(data)
        assert NestingGuard().safe_length(data) == safe


@pytest.mark.parametrize("before", [0, 1, 17, MAX_DEPTH - 1])
def test_safe_length_is_exact_for_every_length(before: int) -> None:
    for pad in range(4):
        for extra in range(1, 70):
            guard = NestingGuard()
            assert guard.feed(b"[" * before)
            data = b" " * pad + b"[" * (MAX_DEPTH - before + extra)
            assert not guard.feed(data)
            # every `[` up to the cap passes; the next one is the first refused byte
            assert guard.safe_length(data) == pad + MAX_DEPTH - before


def test_safe_length_carries_an_open_string_and_a_pending_escape() -> None:
    guard = NestingGuard()
    assert guard.feed(b'["x\\')  # inside a string, the next byte escaped
    data = b'"[[[' + b'"' + b"[" * 100  # the escaped quote does not end the string
    assert not guard.feed(data)
    assert guard.safe_length(data) == 5 + MAX_DEPTH - 1


# --------------------------------------------------------------------- error excerpts


async def test_the_excerpt_is_at_the_first_error_when_its_text_repeats_later() -> None:
    # yajl quotes ~30 bytes either side of the error; here that text appears twice in the
    # read, and only the bytes further on (the `detail`) tell the two places apart.
    tail = "y" * 150
    data = (
        b"["
        + element(title=tail)
        + b",\n\t@@@\r\n "
        + element(detail="1" * 40, title=tail)
        + b",\n\t@@@\r\n "
        + element(detail="2" * 40, title=tail)
        + b"]"
    )
    at = data.index(b"@")
    tasks, exc = await parse([data])
    err = stream_error(exc)
    assert len(tasks) == 1
    assert err.excerpt == data[at + 1 - 40 : at + 1 + 80]
    assert b"1" * 20 in err.excerpt
    assert b"2" not in err.excerpt


async def test_the_excerpt_starts_at_the_error_when_it_is_the_reads_first_byte() -> None:
    # A string started in one read; the next read opens with a control character, invalid
    # inside a string: yajl points at the read's first byte.
    first = b"[" + element() + b', "ab'
    second = b'\x01c", ' + b" " * 200 + b"1]"
    tasks, exc = await parse([first, second])
    err = stream_error(exc)
    assert len(tasks) == 1
    assert err.message == (
        "stream-start body is not valid JSON: lexical error: invalid character inside string."
    )
    assert err.excerpt == second[:80]
    assert err.offset == len(first) + len(second)


# ----------------------------------------------- bugs the survivors pointed at (now fixed)


async def test_a_body_of_blanks_only_is_empty() -> None:
    # ijson ends it with a premature-EOF error after bytes were read: it was reported as
    # "ended mid-array after 0 elements".
    tasks, exc = await parse([b"  \n", b"\r\n"])
    err = stream_error(exc)
    assert isinstance(err, StreamTruncated)
    assert (tasks, err.message, err.items_received) == ([], "stream-start body is empty", 0)


async def test_invalid_utf8_near_the_error_keeps_a_readable_reason() -> None:
    # ijson hands yajl's message over as bytes when the text it quotes is not UTF-8: the
    # reason was that bytes repr, and the excerpt fell back to the last bytes read.
    data = b"[" + element(title="x" * 150) + b", \xff\xfe" + b" " * 200
    tasks, exc = await parse([data])
    err = stream_error(exc)
    assert len(tasks) == 1
    assert err.message == (
        "stream-start body is not valid JSON: lexical error: invalid char in json text."
    )
    assert err.excerpt is not None
    assert b"\xff\xfe" in err.excerpt

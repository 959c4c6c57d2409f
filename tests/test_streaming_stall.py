"""A stream-start that goes silent: the connection stays open while the task is polled.

The open-source server runs the start inside the stream-start response and drops it when
that connection closes, the SDK's own idle timeout closing a silent stream included
(measured on openhands-ai 1.11.0). FakeCloud's `stream_stall_after=K` with
`stream_drops_start=1` does the same: the start goes on while the silent connection stays
open and stops the moment the client closes it. Times below are FakeCloud timelines only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from itertools import pairwise

import pytest

import openhands_async as oh
from openhands_async.lib._start_recovery import Rest, resume_point
from openhands_async.lib._stream_parser import (
    CountingReader,
    iter_start_task_batches,
    iter_start_tasks,
)
from openhands_async.testing import FakeCloud

from .captures import body
from .test_streaming import collect, make_client, no_acquired, settle

DROPPED = "[fake:stream_drops_start=1]"
# The sandbox takes a while: a stream silent since WORKING outlasts a short idle timeout.
SLOW_SANDBOX = [
    ("WORKING", 0.0),
    ("WAITING_FOR_SANDBOX", 0.5),
    ("PREPARING_REPOSITORY", 0.02),
    ("STARTING_CONVERSATION", 0.02),
    ("READY", 0.02),
]
STATUSES = [status for status, _ in SLOW_SANDBOX]
# The SDK's own tasks while it follows a silent stream (the pending read, the next element,
# the next poll): none may outlive the stream.
_SDK_TASKS = {"StreamReader.read", "_next", "_get_after"}


def sdk_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") in _SDK_TASKS
    ]


async def until(what: str, test: Callable[[], bool]) -> None:
    """Wait for a condition the FakeCloud reaches on its own (bounded, never timed)."""
    for _ in range(500):
        if test():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def stream_handled(cloud: FakeCloud) -> bool:
    """The FakeCloud's stream-start handler ended: it saw the client close the stream."""
    (record,) = [r for r in cloud.request_log if r.route == "stream_start"]
    return record.status is not None


def statuses(tasks: list[oh.StartTask]) -> list[str]:
    return [t.status.value for t in tasks]


async def test_silent_stream_stays_open_so_the_start_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Silent after WORKING; the sandbox comes 0.5 s later, long after the 0.1 s idle
    # timeout. Closing the stream then would drop the start at WORKING for good.
    caplog.set_level(logging.INFO, "openhands_async")
    async with FakeCloud(start_timeline=SLOW_SANDBOX) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=1] {DROPPED}",
            idle_timeout=0.1,
            poll_interval=0.02,
            stall_timeout=5.0,
        )
        seen = [t async for t in stream]
        assert sdk_tasks() == []
        got = statuses(seen)
        assert got[0] == "WORKING"
        assert got[-1] == "READY"
        assert got == [s for s in STATUSES if s in got]  # each once, in order
        assert seen[-1].app_conversation_id == stream.conversation_id
        assert cloud.starts_received == 1
        assert cloud.requests["stream_start"] == 1
        assert cloud.requests["start"] == 0
        assert cloud.duplicate_starts == 0
        assert cloud.requests["get_start_tasks"] >= 1
        assert any("went silent" in r.getMessage() for r in caplog.records)
        # Closed once READY: the FakeCloud sees the client go, after the start was done.
        await until("the stream to be closed", lambda: stream_handled(cloud))
        record = cloud._store.tasks[seen[0].id]
        assert record.stopped_at < float("inf")
        assert record.ready_at < float("inf")
        await settle(client)


async def test_elements_after_the_silence_are_used(caplog: pytest.LogCaptureFixture) -> None:
    # Silent for 1 s after WORKING, then the stream carries on; the first poll is due only
    # after 30 s, so every later status comes from the stream kept open.
    caplog.set_level(logging.INFO, "openhands_async")
    async with FakeCloud(start_timeline=SLOW_SANDBOX) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=1,stream_stall_seconds=1] {DROPPED}",
            idle_timeout=0.1,
            poll_interval=30,
            stall_timeout=30,
        )
        seen = [t async for t in stream]
        assert statuses(seen) == STATUSES
        assert len({t.id for t in seen}) == 1
        assert any("went silent" in r.getMessage() for r in caplog.records)
        assert cloud.requests["get_start_tasks"] == 0
        assert cloud.starts_received == 1
        assert sdk_tasks() == []
        await settle(client)


async def test_stream_and_polls_together_yield_each_status_once() -> None:
    # Polls see WAITING_FOR_SANDBOX during the silence; the stream then writes it again
    # (older, skipped) and the later statuses, which either source may bring first.
    timeline = [
        ("WORKING", 0.0),
        ("WAITING_FOR_SANDBOX", 0.3),
        ("PREPARING_REPOSITORY", 0.6),
        ("READY", 0.3),
    ]
    async with FakeCloud(start_timeline=timeline) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=1,stream_stall_seconds=0.6] {DROPPED}",
            idle_timeout=0.1,
            poll_interval=0.05,
            stall_timeout=5.0,
        )
        seen = [t async for t in stream]
        assert statuses(seen) == [status for status, _ in timeline]
        updated = [t.updated_at for t in seen]
        assert all(a is not None and b is not None and a < b for a, b in pairwise(updated))
        assert cloud.starts_received == 1
        assert cloud.requests["get_start_tasks"] >= 1
        assert sdk_tasks() == []
        await settle(client)


async def test_a_start_that_never_moves_still_raises_stalled() -> None:
    timeline = [("WORKING", 0.0), ("READY", 3600.0)]
    async with FakeCloud(start_timeline=timeline) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=1] {DROPPED}",
            idle_timeout=0.1,
            poll_interval=0.02,
            stall_timeout=0.3,
        )
        seen: list[oh.StartTask] = []
        with pytest.raises(oh.StartStalledError) as info:
            await collect(stream, seen)
        err = info.value
        assert statuses(seen) == ["WORKING"]
        assert err.task.status is oh.StartTaskStatus.WORKING
        assert err.items_received == 1
        cause = err.__cause__
        assert isinstance(cause, oh.APITimeoutError)
        assert cause.kind == "stream-idle"
        assert sdk_tasks() == []
        # Given up on: the stream is closed then (and the server drops the start).
        await until("the stream to be closed", lambda: stream_handled(cloud))
        assert cloud._store.tasks[seen[0].id].stopped_at < float("inf")
        assert cloud.starts_received == 1
        await settle(client)


async def test_silent_before_any_element_finds_the_start_and_keeps_the_stream() -> None:
    async with FakeCloud(start_timeline=SLOW_SANDBOX) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=0] {DROPPED}",
            idle_timeout=0.1,
            poll_interval=0.02,
            stall_timeout=5.0,
        )
        seen = [t async for t in stream]
        got = statuses(seen)
        assert got[-1] == "READY"
        assert got == [s for s in STATUSES if s in got]
        assert cloud.requests["search_start_tasks"] >= 1  # looked up: nothing had arrived
        assert cloud.starts_received == 1
        assert cloud._store.tasks[seen[0].id].ready_at < float("inf")
        assert sdk_tasks() == []
        await settle(client)


@pytest.mark.parametrize("leave", ["break", "aclose", "cancel"])
async def test_leaving_during_the_silence_closes_the_stream(leave: str) -> None:
    async with FakeCloud(start_timeline=SLOW_SANDBOX) as cloud, make_client(cloud) as client:
        # Only `consume` holds the stream (besides `aclose`): a plain `break` drops it.
        box = [
            client.conversations.stream_start(
                f"hello [fake:stream_stall_after=1] {DROPPED}",
                idle_timeout=0.1,
                poll_interval=0.02,
                stall_timeout=5.0,
            )
        ]
        moved = asyncio.Event()

        async def consume() -> None:
            async for task in box[0] if leave != "break" else box.pop():
                if task.status is not oh.StartTaskStatus.WORKING:  # found by a poll
                    moved.set()
                    if leave == "break":
                        break
                    if leave == "aclose":
                        await asyncio.Event().wait()
                    # "cancel": on to the next status, so the cancel lands inside the stream

        job = asyncio.create_task(consume())
        waiting = asyncio.ensure_future(moved.wait())
        await asyncio.wait([job, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not moved.is_set():
            job.result()  # raises what ended the stream early
            pytest.fail("the stream ended before a poll moved the task")
        if leave == "aclose":
            await box[0].aclose()
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        if leave == "cancel":
            await box[0].aclose()
        box.clear()
        await until("the SDK's tasks to end", lambda: sdk_tasks() == [])
        await until("the stream to be closed", lambda: stream_handled(cloud))
        assert no_acquired(client)
        assert cloud.starts_received == 1


async def test_fake_drops_a_stalled_start_when_the_client_closes() -> None:
    # Wider margins than the others: the first element must come within the idle timeout
    # and the start must not be READY by then, on a loaded machine too.
    slower = [(status, 5.0 if status == "WAITING_FOR_SANDBOX" else s) for status, s in SLOW_SANDBOX]
    async with FakeCloud(start_timeline=slower) as cloud, make_client(cloud) as client:
        seen: list[oh.StartTask] = []
        stream = client.conversations.stream_start(
            f"hello [fake:stream_stall_after=1] {DROPPED}", idle_timeout=1.0, recover=False
        )
        with pytest.raises(oh.APITimeoutError):
            await collect(stream, seen)
        await until("the stream to be closed", lambda: stream_handled(cloud))
        record = cloud._store.tasks[seen[0].id]
        assert record.ready_at == float("inf")
        later = asyncio.get_running_loop().time() + 3600
        assert record.phase(later) == 0  # WORKING for good: it was dropped when the client left
        read = await client.start_tasks.get(seen[0].id)
        assert (read.status, read.updated_at) == (seen[0].status, seen[0].updated_at)
        await settle(client)


async def test_fake_rejects_a_bad_stall_seconds_marker(cloud: FakeCloud) -> None:
    async with make_client(cloud) as client:
        with pytest.raises(oh.UnprocessableEntityError, match="stream_stall_seconds"):
            async for _ in client.conversations.stream_start(
                "x [fake:stream_stall_after=1,stream_stall_seconds=-1]"
            ):
                pass


# ------------------------------------------- taking the body up after a silence (no network)


class _SilentOnce:
    """Hands out chunks; at `silence` (a chunk index) raises the idle timeout once, then
    carries on, as `_http.ByteStream` does for a stream that stays open."""

    def __init__(self, chunks: list[bytes], silence: int) -> None:
        self._chunks = list(chunks)
        self._silence = silence
        self._served = 0

    async def read(self, n: int = -1, /) -> bytes:
        if self._served == self._silence:
            self._silence = -1
            raise oh.APITimeoutError("stream idle timeout", kind="stream-idle")
        if not self._chunks:
            return b""
        self._served += 1
        return self._chunks.pop(0)

    def map_error(self, exc: BaseException) -> oh.APIConnectionError | None:
        return None


def _elements() -> list[bytes]:
    tasks = body("stream-start.pretty.json")
    return [json.dumps(t).encode() for t in tasks]


@pytest.mark.parametrize(
    ("cut", "sep", "point"),
    [
        ("", ",\n", b""),  # nothing read
        ("[", ",\n", b"["),  # the array opened
        ("[\n", ",\n", b"["),
        ("[\n{0},\n", ",\n", b","),  # between a comma and the next element
        ("[\n{0}", ",\n", b"}"),  # right after an element
        ("[\n{0}  \n", "  \n,\n", b"}"),
        ("[\n{0},\n{1}", ",\n", b"}"),
        ('[\n{{"id": ', ",\n", None),  # inside an element
        ('[\n{{"id": "a,b}}', ",\n", None),  # inside a string
    ],
)
async def test_rest_of_a_silent_body_parses_to_the_same_elements(
    cut: str, sep: str, point: bytes | None
) -> None:
    elements = _elements()
    whole = b"[\n" + sep.encode().join(elements) + b"]"
    head = cut.format(*(e.decode() for e in elements[:2])).encode()
    assert whole.startswith(head) or point is None
    if point is None:
        chunks, tail = [head], b""
    else:
        tail = whole[len(head) :]
        chunks = [head, tail[:7], tail[7:]] if head else [tail[:7], tail[7:]]
    source = _SilentOnce(chunks, silence=1 if head else 0)
    first = CountingReader(source)
    before: list[oh.StartTask] = []

    async def parse_until_silent() -> None:
        async for task in iter_start_tasks(first):
            before.append(task)

    with pytest.raises(oh.APITimeoutError):
        await parse_until_silent()
    assert resume_point(first) == point
    if point is None:
        return
    more = CountingReader(Rest(source, point, offset=first.offset))
    more.offset = first.offset - (1 if point else 0)
    after = [t async for t in iter_start_tasks(more)]
    expected = [t async for t in iter_start_tasks(CountingReader(_SilentOnce([whole], -1)))]
    assert before + after == expected
    assert more.offset == len(whole)


@pytest.mark.parametrize("tail", [b"]", b"\n  ]"])
async def test_a_comma_then_a_silence_then_the_end_of_the_array_is_malformed(tail: bytes) -> None:
    # `[{...},]` is not JSON whether or not the server paused after the comma; the rest
    # of the body alone (`]`) would close an empty array if the parser reading on took it.
    head = b"[\n" + _elements()[0] + b",\n"
    source = _SilentOnce([head, tail], silence=1)
    first = CountingReader(source)
    with pytest.raises(oh.APITimeoutError):
        async for _ in iter_start_tasks(first):
            pass
    assert resume_point(first) == b","
    more = CountingReader(Rest(source, b",", offset=first.offset, method="POST", url="u"))
    more.offset = first.offset - 1
    with pytest.raises(oh.StreamError) as info:
        async for _ in iter_start_tasks(more):
            pass
    at = len(head) + len(tail) - 1
    assert info.value.message == (
        f"stream-start body is not valid JSON: ']' right after ',' at byte {at}"
    )
    assert (info.value.offset, info.value.request_method, info.value.request_url) == (
        at,
        "POST",
        "u",
    )
    assert info.value.excerpt == b"," + (head + tail)[len(head) : at + 1]


async def test_a_parser_reading_on_checks_the_first_parsers_task_and_counts_on() -> None:
    # The rest of a silent body, parsed by a second parser, is held to the task the stream
    # started with, and its errors count the elements of the whole body.
    first, other = (json.loads(e) for e in _elements()[:2])
    other["id"] = "0" * 32
    rest = b"[" + json.dumps(first).encode() + b"," + json.dumps(other).encode() + b"]"
    seen: list[oh.StartTask] = []

    async def read_on() -> None:
        reader = CountingReader(_SilentOnce([rest], -1))
        async for batch in iter_start_task_batches(reader, task_id=first["id"], received=3):
            seen.extend(batch)

    with pytest.raises(oh.StreamError) as info:
        await read_on()
    assert [t.id for t in seen] == [first["id"]]
    assert info.value.message == (
        f"stream-start element 4 is task {'0' * 32}, the stream started with task {first['id']}"
    )
    assert info.value.items_received == 4

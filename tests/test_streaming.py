"""Streaming start: the incremental parser, the stream over loopback, breaks and recovery."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.errors import StreamTruncated
from openhands_async.lib._stream_parser import (
    MAX_DEPTH,
    CountingReader,
    NestingGuard,
    iter_start_tasks,
)
from openhands_async.testing import FakeCloud, Fault, StreamBehavior

from .captures import raw
from .conftest import START_SEQUENCE

FAST = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
CAPTURES = [
    "stream-start.raw",
    "stream-start_ERROR_before_dockerenv_fix.raw",
    "stream-start_ERROR_no_chromium.raw",
    "stream-start_ERROR_sleeping_status_bug.raw",
    "stream-start_empty_body.raw",
    "stream-start_llm_unreachable.raw",
]


class Chunks:
    """An in-memory async byte source handing out fixed chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def read(self, n: int = -1, /) -> bytes:
        if n == 0 or not self._chunks:
            return b""
        await asyncio.sleep(0)
        return self._chunks.pop(0)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i, k = i + n, k + 1
    return out


async def parse(chunks: list[bytes]) -> list[oh.StartTask]:
    return [t async for t in iter_start_tasks(CountingReader(Chunks(chunks)))]


async def collect(stream: oh.StartTaskStream, into: list[oh.StartTask]) -> None:
    async for task in stream:
        into.append(task)


def no_acquired(client: oh.OpenHandsClient) -> bool:
    session = client.session
    if session is None:
        return True
    connector = session.connector
    assert isinstance(connector, aiohttp.BaseConnector)
    return len(connector._acquired) == 0


async def settle(client: oh.OpenHandsClient) -> None:
    for _ in range(50):
        if no_acquired(client):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a connection is still acquired")


@pytest.fixture
async def slow_cloud() -> AsyncIterator[FakeCloud]:
    # time_scale 3: the full timeline takes ~0.5 s, so a break leaves work for the poller.
    async with FakeCloud(time_scale=3.0) as fake:
        yield fake


def make_client(cloud: FakeCloud) -> oh.OpenHandsClient:
    return oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST)


# ---------------------------------------------------------------- parser core


@pytest.mark.parametrize("name", CAPTURES)
async def test_captures_parse_in_any_chunking(name: str) -> None:
    data = raw(name)
    expected = json.loads(data)
    rng = random.Random(name)
    chunkings = [
        [data],
        split(data, [1]),
        split(data, [7, 3, 64]),
        split(data, [rng.randint(1, 200) for _ in range(50)]),
    ]
    for chunks in chunkings:
        tasks = await parse(chunks)
        assert [t.status.value for t in tasks] == [e["status"] for e in expected]
        assert [t.id for t in tasks] == [e["id"] for e in expected]
        assert tasks[-1].is_terminal


async def test_parser_yields_each_element_as_soon_as_it_closes() -> None:
    data = raw("stream-start.raw")
    first_end = data.index(b"},\n") + 1
    gate = asyncio.Event()

    class Gated:
        def __init__(self) -> None:
            self.sent = 0

        async def read(self, n: int = -1, /) -> bytes:
            if n == 0:
                return b""
            if self.sent == 0:
                self.sent = 1
                return data[:first_end]
            await gate.wait()
            if self.sent == 1:
                self.sent = 2
                return data[first_end:]
            return b""

    it = iter_start_tasks(CountingReader(Gated())).__aiter__()
    first = await asyncio.wait_for(it.__anext__(), 1.0)  # the rest has not "arrived" yet
    assert first.status is oh.StartTaskStatus.WORKING
    gate.set()
    rest = [t async for t in it]
    assert rest[-1].status is oh.StartTaskStatus.READY


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{}", "not a JSON array"),
        (b'  {"id": "x"}', "not a JSON array"),
        (b"[1]", "not an object"),
        (b"[[]]", "not an object"),
        (b'[{"id": "a", "status": "WORKING"}]x', "not valid JSON"),
        (b'[{"id": "a", "status": "WORKING"}]\n[', "not valid JSON"),
        (b"[nonsense]", "not valid JSON"),
        (b'[{"id": "a", "status": "WORKING"},\n{"id": "b", "status": "READY"}]', "task b"),
        (b'[{"status": "WORKING"}]', "element 0"),
    ],
)
async def test_malformed_bodies_raise_stream_error(body: bytes, fragment: str) -> None:
    for chunks in ([body], split(body, [1])):
        with pytest.raises(oh.StreamError, match=fragment) as info:
            await parse(chunks)
        err = info.value
        assert err.offset is not None
        assert 0 <= err.offset <= len(body)
        assert err.excerpt
        assert err.excerpt in body


@pytest.mark.parametrize("body", [b"", b"[\n", b'[\n{"id": "a", "status": "WOR'])
async def test_truncated_bodies(body: bytes) -> None:
    with pytest.raises(StreamTruncated) as info:
        await parse([body] if body else [])
    assert isinstance(info.value, oh.StreamError)
    assert info.value.offset == len(body)


async def test_unknown_status_does_not_break_parsing() -> None:
    body = b'[{"id": "a", "status": "BRAND_NEW"},\n{"id": "a", "status": "READY"}]'
    tasks = await parse(split(body, [5]))
    assert [t.status.value for t in tasks] == ["BRAND_NEW", "READY"]


def stream_body(elements: list[dict[str, Any]]) -> bytes:
    return b"[\n" + b",\n".join(json.dumps(e).encode() for e in elements) + b"]"


def varied_requests() -> list[dict[str, Any]]:
    """The captured stream, with requests that change, vanish and come back."""
    elements: list[dict[str, Any]] = json.loads(raw("stream-start.raw"))
    first = elements[0]["request"]
    other = {**first, "title": "other", "pr_number": [7]}
    requests = [first, copy.deepcopy(first), other, copy.deepcopy(other), None, {}, {}, first]
    out = [{**e, "request": r} for e, r in zip(elements, requests, strict=True)]
    del out[6]["request"]
    out[4] |= {"status": "WARMING_UP", "created_at": "2026-11-22T22:59:19"}
    return out


@pytest.mark.parametrize("name", [*CAPTURES, "varied"])
async def test_stream_tasks_equal_element_by_element_structuring(name: str) -> None:
    # The stream structures a request its elements repeat only once; what it yields must be
    # what `structure` makes of each element on its own.
    elements = varied_requests() if name == "varied" else json.loads(raw(name))
    tasks = await parse(split(stream_body(elements), [97]))
    expected = [structure(e, oh.StartTask) for e in elements]
    assert tasks == expected
    assert [repr(t) for t in tasks] == [repr(t) for t in expected]
    repeated = [
        k
        for k in range(1, len(elements))
        if elements[k].get("request") is not None
        and elements[k].get("request") == elements[k - 1].get("request")
    ]
    assert all(tasks[k].request is tasks[k - 1].request for k in repeated)


@pytest.mark.parametrize(
    "edit",
    [
        {"created_at": "not a date"},
        {"status": 5},
        {"request": {"pr_number": "x"}},
    ],
    ids=["bad-field-same-request", "bad-status-same-request", "bad-request"],
)
async def test_stream_element_errors_match_structure(edit: dict[str, Any]) -> None:
    elements: list[dict[str, Any]] = json.loads(raw("stream-start.raw"))[:3]
    elements[1] = {**elements[1], **edit}
    with pytest.raises(oh.ResponseValidationError) as expected:
        structure(elements[1], oh.StartTask)
    with pytest.raises(oh.StreamError) as info:
        await parse([stream_body(elements)])
    assert info.value.message == f"stream-start element 1: {expected.value.message}"
    assert info.value.items_received == 1


# ---------------------------------------------------------------- over loopback


async def test_full_sequence_to_ready(cloud: FakeCloud, client: oh.OpenHandsClient) -> None:
    stream = client.conversations.stream_start("hello", repository="owner/repo")
    seen = [task async for task in stream]
    assert [t.status.value for t in seen] == START_SEQUENCE
    assert seen[-1].app_conversation_id == stream.conversation_id
    assert stream.task is seen[-1]
    assert cloud.starts_received == 1
    assert cloud.requests["stream_start"] == 1
    await settle(client)


async def test_async_with_form(cloud: FakeCloud, client: oh.OpenHandsClient) -> None:
    async with client.conversations.stream_start("hello") as stream:
        statuses = [t.status async for t in stream]
    assert statuses[-1] is oh.StartTaskStatus.READY
    assert no_acquired(client)


async def test_error_ending_raises_after_yielding_the_error_task(
    cloud: FakeCloud, client: oh.OpenHandsClient
) -> None:
    seen: list[oh.StartTask] = []
    with pytest.raises(oh.StartTaskFailed) as info:
        await collect(client.conversations.stream_start("hello [fake:start=ERROR]"), seen)
    assert seen[-1].status is oh.StartTaskStatus.ERROR
    assert info.value.task == seen[-1]
    assert info.value.detail
    await settle(client)


async def test_error_ending_without_raise(cloud: FakeCloud, client: oh.OpenHandsClient) -> None:
    stream = client.conversations.stream_start("hello [fake:start=ERROR]", raise_on_error=False)
    seen = [t async for t in stream]
    assert seen[-1].status is oh.StartTaskStatus.ERROR
    await settle(client)


async def test_wait_until_ready(cloud: FakeCloud, client: oh.OpenHandsClient) -> None:
    conv_id = await oh.wait_until_ready(client, "hello", conversation_id="ab" * 16)
    assert conv_id == "ab" * 16
    assert cloud.conversation(conv_id) is not None
    with pytest.raises(oh.StartTaskFailed):
        await oh.wait_until_ready(client, "hello [fake:start=ERROR]")
    await settle(client)


async def test_garbage_in_stream_raises_stream_error(
    cloud: FakeCloud, client: oh.OpenHandsClient
) -> None:
    seen: list[oh.StartTask] = []
    with pytest.raises(oh.StreamError) as info:
        await collect(client.conversations.stream_start("hi [fake:stream_garbage_after=2]"), seen)
    assert len(seen) <= 2  # elements may share a read with the garbage
    assert info.value.offset
    assert info.value.offset > 0
    assert b"<html>" in info.value.excerpt
    await settle(client)


async def test_cut_then_recover_by_polling(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            "hello [fake:stream_cut_after=2]", poll_interval=0.05
        )
        seen = [t async for t in stream]
        statuses = [t.status.value for t in seen]
        assert statuses[:2] == START_SEQUENCE[:2]
        assert statuses[-1] == "READY"
        assert len(statuses) == len(set(statuses))  # only changes are yielded
        assert slow_cloud.starts_received == 1
        assert slow_cloud.duplicate_starts == 0
        assert slow_cloud.requests["stream_start"] == 1
        assert slow_cloud.requests["get_start_tasks"] >= 1
        await settle(client)


async def test_cut_with_stream_behavior_knob() -> None:
    cloud = FakeCloud(time_scale=3.0, stream=StreamBehavior(cut_after=2))
    async with cloud, make_client(cloud) as client:
        seen = [t async for t in client.conversations.stream_start("hello", poll_interval=0.05)]
        assert seen[-1].status is oh.StartTaskStatus.READY
        assert cloud.starts_received == 1
        await settle(client)


async def test_cut_without_recover_raises(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        with pytest.raises(oh.APIConnectionError):
            async for _ in client.conversations.stream_start(
                "hello [fake:stream_cut_after=2]", recover=False
            ):
                pass
        assert slow_cloud.starts_received == 1
        await settle(client)


async def test_stall_then_idle_timeout_then_recover(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        seen = [
            t
            async for t in client.conversations.stream_start(
                "hello [fake:stream_stall_after=1]", idle_timeout=0.3, poll_interval=0.05
            )
        ]
        assert seen[0].status is oh.StartTaskStatus.WORKING
        assert seen[-1].status is oh.StartTaskStatus.READY
        assert slow_cloud.starts_received == 1
        await settle(client)


async def test_stall_without_recover_raises_timeout(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        with pytest.raises(oh.APITimeoutError) as info:
            async for _ in client.conversations.stream_start(
                "hello [fake:stream_stall_after=1]", idle_timeout=0.3, recover=False
            ):
                pass
        assert info.value.kind == "stream-idle"
        assert info.value.seconds == 0.3
        await settle(client)


async def test_reset_mid_body_nothing_arrived_finds_and_polls(slow_cloud: FakeCloud) -> None:
    slow_cloud.add_fault(Fault(route="stream_start", action="reset_mid_body"))
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start("hello", poll_interval=0.05)
        seen = [t async for t in stream]
        assert seen[-1].status is oh.StartTaskStatus.READY
        assert seen[-1].app_conversation_id == stream.conversation_id
        assert slow_cloud.starts_received == 1
        assert slow_cloud.requests["stream_start"] == 1
        assert slow_cloud.requests["search_start_tasks"] >= 1
        await settle(client)


async def test_stall_before_first_element_finds_and_polls(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            "hello [fake:stream_stall_after=0]", idle_timeout=0.3, poll_interval=0.05
        )
        seen = [t async for t in stream]
        assert seen[-1].status is oh.StartTaskStatus.READY
        assert slow_cloud.starts_received == 1
        assert slow_cloud.requests["stream_start"] == 1
        await settle(client)


async def test_recovered_error_still_raises(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        seen: list[oh.StartTask] = []
        with pytest.raises(oh.StartTaskFailed):
            await collect(
                client.conversations.stream_start(
                    "hi [fake:stream_cut_after=1] [fake:start=ERROR]", poll_interval=0.05
                ),
                seen,
            )
        assert seen[-1].status is oh.StartTaskStatus.ERROR
        assert slow_cloud.starts_received == 1
        await settle(client)


async def test_reset_mid_body_without_recover_raises(slow_cloud: FakeCloud) -> None:
    slow_cloud.add_fault(Fault(route="stream_start", action="reset_mid_body"))
    async with make_client(slow_cloud) as client:
        with pytest.raises(oh.APIConnectionError):
            async for _ in client.conversations.stream_start("hello", recover=False):
                pass
        assert slow_cloud.requests["stream_start"] == 1
        await settle(client)


async def test_reset_before_not_found_raises_without_resending(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="stream_start", action="reset_before"))
    async with make_client(cloud) as client:
        with pytest.raises(oh.APIConnectionError, match="not sent again"):
            async for _ in client.conversations.stream_start("hello"):
                pass
        assert cloud.requests["stream_start"] == 1
        assert cloud.starts_received == 0
        await settle(client)


async def test_5xx_on_open_not_found_raises_without_resending(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="stream_start", status=500))
    async with make_client(cloud) as client:
        with pytest.raises(oh.InternalServerError):
            await collect(client.conversations.stream_start("hello"), [])
        assert cloud.requests["stream_start"] == 1
        assert cloud.starts_received == 0
        await settle(client)


async def test_4xx_on_open_is_raised(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="stream_start", status=422, body={"detail": []}))
    async with make_client(cloud) as client:
        with pytest.raises(oh.UnprocessableEntityError):
            await collect(client.conversations.stream_start("hello"), [])
        assert cloud.requests["search_start_tasks"] == 0
        await settle(client)


async def test_break_releases_the_connection(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        async for task in client.conversations.stream_start("hello"):
            assert task.status is oh.StartTaskStatus.WORKING
            break
        assert no_acquired(client)  # released at once, not at garbage collection
        await asyncio.sleep(0.05)


async def test_leaving_async_with_releases(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        async with client.conversations.stream_start("hello") as stream:
            await stream.__anext__()
        assert no_acquired(client)
        await stream.aclose()  # twice is fine


async def test_cancelling_the_consumer_releases(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in client.conversations.stream_start("hello"):
                first.set()

        job = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 2)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert no_acquired(client)
        assert slow_cloud.starts_received == 1


# ------------------------------------- a start the server dropped with its stream
# The open-source server runs the start inside the stream-start response: a cut stream ends
# the start and its task stays in its last status for good (`stream_drops_start=1`).

DROPPED = "[fake:stream_drops_start=1]"


async def test_fake_drops_the_start_with_a_cut_stream(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_cut_after=2] {DROPPED}", recover=False
        )
        seen: list[oh.StartTask] = []
        with pytest.raises(oh.APIConnectionError):
            await collect(stream, seen)
        record = slow_cloud._store.tasks[seen[-1].id]
        # However late it is read, the task shows the last element's status and time.
        later = asyncio.get_running_loop().time() + 3600
        assert record.phase(later) == 1
        assert record.ready_at == record.error_at == float("inf")
        read = await client.start_tasks.get(seen[-1].id)
        assert (read.status, read.updated_at) == (seen[-1].status, seen[-1].updated_at)
        conv = slow_cloud._store.conversations[stream.conversation_id]
        assert conv.view(later) in (None, ("STARTING", None))
        await settle(client)


async def test_fake_drops_the_start_by_knob_and_keeps_it_by_default() -> None:
    behavior = StreamBehavior(cut_after=1, drops_start=True)
    async with FakeCloud(time_scale=3.0, stream=behavior) as cloud, make_client(cloud) as client:
        first = await anext(client.conversations.stream_start("a", recover=False))
        with_marker = client.conversations.stream_start("b [fake:stream_drops_start=0]")
        seen = [t async for t in with_marker]
        assert seen[-1].status is oh.StartTaskStatus.READY  # carried on after the cut
        assert cloud._store.tasks[first.id].stopped_at < float("inf")
        assert cloud._store.tasks[seen[0].id].stopped_at == float("inf")
        await settle(client)


async def test_fake_rejects_a_bad_drops_start_marker(cloud: FakeCloud) -> None:
    async with make_client(cloud) as client:
        with pytest.raises(oh.UnprocessableEntityError, match="stream_drops_start"):
            await collect(client.conversations.stream_start("x [fake:stream_drops_start=yes]"), [])
        await settle(client)


async def test_dropped_start_raises_stalled_and_is_not_resent(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_cut_after=2] {DROPPED}", poll_interval=0.02, stall_timeout=0.2
        )
        seen: list[oh.StartTask] = []
        with pytest.raises(oh.StartStalledError) as info:
            await collect(stream, seen)
        err = info.value
        assert isinstance(err, oh.StreamError)
        assert [t.status.value for t in seen] == START_SEQUENCE[:2]
        assert err.task.id == seen[-1].id
        assert (err.task.status, err.task.updated_at) == (seen[-1].status, seen[-1].updated_at)
        assert err.conversation_id == stream.conversation_id
        assert err.stall_timeout == 0.2
        assert err.items_received == 2
        assert isinstance(err.__cause__, oh.APIConnectionError | oh.StreamError)
        text = str(err)
        assert "not sent again" in text
        assert f"client.start_tasks.get({err.task.id!r})" in text
        assert "WAITING_FOR_SANDBOX" in text
        # Polled, never sent again.
        assert slow_cloud.starts_received == 1
        assert slow_cloud.requests["stream_start"] == 1
        assert slow_cloud.requests["start"] == 0
        assert slow_cloud.requests["get_start_tasks"] >= 1
        assert slow_cloud.duplicate_starts == 0
        await settle(client)


async def test_dropped_before_any_element_is_found_then_raises_stalled(
    slow_cloud: FakeCloud,
) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_cut_after=0] {DROPPED}", poll_interval=0.02, stall_timeout=0.2
        )
        seen: list[oh.StartTask] = []
        with pytest.raises(oh.StartStalledError) as info:
            await collect(stream, seen)
        assert [t.id for t in seen] == [info.value.task.id]  # the task the look-up found
        assert info.value.items_received == 0
        assert info.value.task.request is not None
        sent_as = info.value.task.request.conversation_id
        assert sent_as is not None
        assert uuid.UUID(sent_as) == uuid.UUID(stream.conversation_id)
        assert slow_cloud.starts_received == 1
        assert slow_cloud.requests["stream_start"] == 1
        assert slow_cloud.requests["search_start_tasks"] >= 1
        await settle(client)


async def test_a_task_that_keeps_updating_is_not_stalled() -> None:
    # Two seconds in one status, updated every 0.1 s: each update restarts the stall clock,
    # so a 1 s bound never fires although the status stays the same for twice as long.
    timeline = [("WORKING", 0.0), *[("WAITING_FOR_SANDBOX", 0.1)] * 20, ("READY", 0.1)]
    async with FakeCloud(start_timeline=timeline) as cloud, make_client(cloud) as client:
        stream = client.conversations.stream_start(
            "hello [fake:stream_cut_after=2]", poll_interval=0.02, stall_timeout=1.0
        )
        seen = [t async for t in stream]
        assert [t.status.value for t in seen] == ["WORKING", "WAITING_FOR_SANDBOX", "READY"]
        assert cloud.starts_received == 1
        await settle(client)


async def test_stall_timeout_none_polls_a_dropped_start_on(slow_cloud: FakeCloud) -> None:
    async with make_client(slow_cloud) as client:
        stream = client.conversations.stream_start(
            f"hello [fake:stream_cut_after=1] {DROPPED}", poll_interval=0.01, stall_timeout=None
        )
        job = asyncio.create_task(collect(stream, []))
        while slow_cloud.requests["get_start_tasks"] < 30:  # many polls: no bound fired
            assert not job.done()
            await asyncio.sleep(0.01)
        assert not job.done()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await stream.aclose()
        await settle(client)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
async def test_stall_timeout_must_be_positive(client: oh.OpenHandsClient, bad: float) -> None:
    with pytest.raises(ValueError, match="stall_timeout"):
        client.conversations.stream_start("hello", stall_timeout=bad)


# ---------------------------------------------------------------- nesting guard

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab"\\[]{}\n\u00e9', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='k"\\[{', max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=_json_values, extra=st.sampled_from([0, 1]), data=st.data())
def test_nesting_guard_measures_depth_across_any_chunking(
    value: Any, extra: int, data: st.DataObject
) -> None:
    # Wrapped to just under or just over the cap, with strings full of quotes, escapes and
    # brackets that must not count, cut into chunks anywhere (inside escapes too).
    levels = MAX_DEPTH - _depth(value) + extra
    body = json.dumps(value, ensure_ascii=False)
    for i in range(levels):
        body = f'{{"k{i}": {body}}}' if i % 2 else f"[{body}]"
    raw_body = body.encode()
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw_body) - 1)), max_size=12)))
    guard = NestingGuard()
    ok = True
    for start, end in zip([0, *cuts], [*cuts, len(raw_body)], strict=True):
        ok = ok and guard.feed(raw_body[start:end])
    assert ok is (extra == 0)
    if ok:
        assert guard.depth == 0

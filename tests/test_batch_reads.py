"""`_batch`: the shape of a batch answer, chunking under the server's cap (99 ids: it
asserts len(ids) < 100), and bounded concurrent reads that keep the order asked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import openhands_async as oh
from openhands_async._batch import check_batch, chunked, gather_bounded
from openhands_async._constants import MAX_BATCH_IDS

# -- the answer's shape -------------------------------------------------------------------


def test_a_list_of_n_objects_or_nulls_is_returned_as_is() -> None:
    data: list[Any] = [{"id": "a"}, None, {}]
    assert check_batch(data, 3, "http://x/b") is data
    assert check_batch([], 0, "http://x/b") == []


@pytest.mark.parametrize(
    ("data", "n", "got"),
    [
        ([{"id": "a"}], 2, "1 items"),
        ([{}, {}, {}], 2, "3 items"),
        ([], 1, "0 items"),
        ([{"id": "a"}, "b"], 2, "2 items"),
        ([["a"]], 1, "1 items"),
        ({"items": []}, 1, "dict"),
        (None, 1, "NoneType"),
        ("[]", 0, "str"),
    ],
)
def test_any_other_answer_is_a_validation_error(data: Any, n: int, got: str) -> None:
    with pytest.raises(oh.ResponseValidationError) as info:
        check_batch(data, n, "http://x/api/batch")
    err = info.value
    assert err.message == (
        f"asked for {n} ids, the server did not answer a list of {n} objects or nulls (got {got})"
    )
    assert (err.request_method, err.request_url) == ("GET", "http://x/api/batch")
    assert err.body is data


# -- chunking -----------------------------------------------------------------------------


def test_the_cap_is_below_the_servers_100() -> None:
    assert MAX_BATCH_IDS == 99


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (0, []),
        (1, [1]),
        (98, [98]),
        (99, [99]),
        (100, [99, 1]),
        (101, [99, 2]),
        (198, [99, 99]),
        (199, [99, 99, 1]),
    ],
)
def test_chunks_at_the_cap(n: int, sizes: list[int]) -> None:
    ids = [f"id{i}" for i in range(n)]
    chunks = chunked(ids, MAX_BATCH_IDS)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == ids  # every id once, in order


def test_chunks_small_sizes() -> None:
    assert chunked("abcde", 2) == ["ab", "cd", "e"]
    assert chunked([1, 2, 3], 1) == [[1], [2], [3]]
    assert chunked([1, 2, 3], 3) == [[1, 2, 3]]
    assert chunked((1, 2, 3, 4), 5) == [(1, 2, 3, 4)]


# -- bounded reads ------------------------------------------------------------------------


async def test_no_chunks_reads_nothing() -> None:
    calls: list[Sequence[int]] = []

    async def read(chunk: Sequence[int]) -> list[int]:
        calls.append(chunk)
        return []

    assert await gather_bounded([], read, concurrency=2) == []
    assert calls == []


async def test_one_chunk_is_read_once() -> None:
    calls: list[Sequence[int]] = []

    async def read(chunk: Sequence[int]) -> list[int]:
        calls.append(chunk)
        return [x * 10 for x in chunk]

    result = await gather_bounded([[1, 2]], read, concurrency=1)
    assert result == [10, 20]
    assert type(result) is list
    assert calls == [[1, 2]]


async def test_results_concatenate_in_chunk_order() -> None:
    order: list[int] = []
    release = asyncio.Event()

    async def read(chunk: Sequence[int]) -> list[int]:
        if chunk[0] == 0:
            await release.wait()  # the first chunk finishes last
        order.append(chunk[0])
        if len(order) == 2:
            release.set()
        return list(chunk)

    assert await gather_bounded([[0, 1], [2, 3], [4]], read, concurrency=3) == [0, 1, 2, 3, 4]
    assert order[-1] == 0


async def test_two_chunks_are_both_read() -> None:
    async def read(chunk: Sequence[int]) -> list[int]:
        return [x + 1 for x in chunk]

    assert await gather_bounded([[1, 2], [3]], read, concurrency=1) == [2, 3, 4]


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_at_most_concurrency_reads_at_once(concurrency: int) -> None:
    running = 0
    peak = 0

    async def read(chunk: Sequence[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)  # yield so the others can start if allowed
        running -= 1
        return list(chunk)

    chunks = [[i] for i in range(6)]
    assert await gather_bounded(chunks, read, concurrency=concurrency) == list(range(6))
    assert peak == concurrency


async def test_the_first_failure_cancels_the_others_and_is_raised() -> None:
    cancelled: list[int] = []
    started = asyncio.Event()
    boom = oh.APIConnectionError("reset")

    async def read(chunk: Sequence[int]) -> list[int]:
        if chunk[0] == 1:
            await started.wait()
            raise boom
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            cancelled.append(chunk[0])
            raise
        return []

    with pytest.raises(oh.APIConnectionError) as info:
        await gather_bounded([[0], [1], [2]], read, concurrency=3)
    assert info.value is boom
    assert sorted(cancelled) == [0, 2]


async def test_a_failure_returns_only_after_the_others_have_wound_down() -> None:
    """No read is left running behind the caller's back, even one slow to clean up."""
    cleaned: list[int] = []
    started = asyncio.Event()

    async def read(chunk: Sequence[int]) -> list[int]:
        if chunk[0] == 1:
            await started.wait()
            raise oh.APIConnectionError("reset")
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(5):  # clean-up that takes a few turns of the loop
                await asyncio.sleep(0)
            cleaned.append(chunk[0])
            raise
        return []

    with pytest.raises(oh.APIConnectionError):
        await gather_bounded([[0], [1], [2]], read, concurrency=3)
    assert sorted(cleaned) == [0, 2]

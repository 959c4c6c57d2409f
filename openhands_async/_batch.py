"""Batch reads: any number of ids, chunked under the server's cap, order kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .errors import ResponseValidationError

T = TypeVar("T")
R = TypeVar("R")


def check_batch(data: Any, n: int, url: str) -> list[dict[str, Any] | None]:
    """A batch answer must be a list of `n` objects or nulls, in the order asked."""
    if (
        not isinstance(data, list)
        or len(data) != n
        or not all(x is None or isinstance(x, dict) for x in data)
    ):
        got = f"{len(data)} items" if isinstance(data, list) else type(data).__name__
        raise ResponseValidationError(
            f"asked for {n} ids, the server did not answer a list of {n} objects or nulls "
            f"(got {got})",
            method="GET",
            url=url,
            body=data,
        )
    return data


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def gather_bounded(
    chunks: Sequence[Sequence[T]],
    read: Callable[[Sequence[T]], Awaitable[list[R]]],
    *,
    concurrency: int,
) -> list[R]:
    """Run `read` on every chunk, at most `concurrency` at once, and concatenate in order.

    The first failure cancels the chunks still running and is raised.
    """
    if len(chunks) <= 1:
        return list(await read(chunks[0])) if chunks else []
    semaphore = asyncio.Semaphore(concurrency)

    async def one(chunk: Sequence[T]) -> list[R]:
        async with semaphore:
            return await read(chunk)

    tasks = [asyncio.ensure_future(one(chunk)) for chunk in chunks]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [item for chunk_result in results for item in chunk_result]


async def for_each_bounded(
    items: Sequence[T], run: Callable[[T], Awaitable[None]], *, concurrency: int
) -> None:
    """`await run(item)` for every item in order, at most `concurrency` at once (as many
    workers sharing one iterator: no task or semaphore per item). The first failure
    cancels the others and is raised."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await run(item)

    n = min(concurrency, len(items))
    if n <= 1:
        await worker()
        return
    tasks = [asyncio.ensure_future(worker()) for _ in range(n)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

"""`AsyncStream`: what `StartTaskStream` and `EventStream` share.

Async iteration over an async generator, `async with`, `aclose()` (release the connection
first, then close the generator) and a finalizer that releases the connection when a
stream is dropped without being closed. The generator hands over items in batches (a
stream-start read completes dozens of snapshots at once): they wait in a deque, so per
item there is a pop and no hop into the generator's layers.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["AsyncStream"]

T = TypeVar("T")
S = TypeVar("S", bound="AsyncStream[Any]")


class AsyncStream(Generic[T]):
    """Yields the items of `batches`' batches one by one; `release` drops the connection
    (sync, immediate, safe to call twice)."""

    def __init__(
        self, batches: AsyncGenerator[Iterable[T], None], release: Callable[[], None]
    ) -> None:
        self._batches = batches
        self._ready: deque[T] = deque()
        self._release = release
        #: The latest item handed out (None before the first).
        self._latest: T | None = None
        # A plain `async for ... break` drops the stream without closing it: release the
        # connection when the object goes away (a finalizer: no reference cycle keeps it).
        self._finalizer = weakref.finalize(self, release)

    def __aiter__(self: S) -> S:
        return self

    async def __anext__(self) -> T:
        ready = self._ready
        while not ready:
            ready.extend(await self._batches.__anext__())
        item = self._latest = ready.popleft()
        return item

    async def aclose(self) -> None:
        """Stop: close the connection at once (what it followed carries on on the server)."""
        self._ready.clear()
        self._release()
        await self._batches.aclose()

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

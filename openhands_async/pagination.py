"""Cursor pagination (`limit` + `page_id` -> `next_page_id`) as an async iterator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from ._inputs import check_limit, check_page_size
from .models import Page

T = TypeVar("T")

FetchPage = Callable[[str | None, int], Awaitable[Page[T]]]


class AsyncPager(Generic[T]):
    """Iterate every item of a search across pages: `async for item in pager`.

    `limit` caps the total number of items; `page_size` (1..100) is how many one request
    asks for. `pages()` yields whole pages instead. Nothing is sent until iteration starts.
    """

    def __init__(self, fetch: FetchPage[T], *, limit: int | None, page_size: int) -> None:
        self._fetch = fetch
        self._limit = check_limit(limit)
        self._page_size = check_page_size(page_size)

    async def pages(self) -> AsyncIterator[Page[T]]:
        """Yield whole pages (`Page.items`, `Page.next_page_id`) instead of items."""
        remaining = self._limit
        cursor: str | None = None
        while remaining is None or remaining > 0:
            size = self._page_size if remaining is None else min(self._page_size, remaining)
            page = await self._fetch(cursor, size)
            if remaining is not None:
                page = Page(page.items[:remaining], page.next_page_id)
                remaining -= len(page.items)
            yield page
            # An empty page with a cursor would loop forever on a misbehaving server.
            if not page.next_page_id or not page.items:
                return
            cursor = page.next_page_id

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item

    async def to_list(self) -> list[T]:
        """Every item in one list (mind `limit` on a large search):
        `await client.conversations.search(limit=50).to_list()`."""
        return [item async for item in self]

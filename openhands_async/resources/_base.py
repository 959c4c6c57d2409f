from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._batch import check_batch, chunked, gather_bounded
from .._constants import DEFAULT_BATCH_CONCURRENCY, MAX_BATCH_IDS
from .._converter import structure
from .._sansio import normalize_uuids
from ..models import Page
from ..pagination import AsyncPager

if TYPE_CHECKING:
    from ..client import OpenHandsClient

T = TypeVar("T")


class Resource:
    def __init__(self, client: OpenHandsClient) -> None:
        self._client = client

    async def _get_many(
        self,
        path: str,
        ids: Iterable[object],
        model: type[T],
        *,
        param: str = "ids",
        validate_uuid: bool = True,
        concurrency: int = DEFAULT_BATCH_CONCURRENCY,
    ) -> list[T | None]:
        """Batch read: any number of ids, <= 99 per request, order kept, None when missing."""
        wanted = normalize_uuids(ids, param) if validate_uuid else _check_ids(ids, param)
        url = self._client.url(path)

        async def read(chunk: Sequence[str]) -> list[T | None]:
            data = await self._client.request("GET", path, params=[(param, i) for i in chunk])
            raw = check_batch(data, len(chunk), url)
            return structure(raw, list[model | None], method="GET", url=url)  # type: ignore[valid-type]

        return await gather_bounded(chunked(wanted, MAX_BATCH_IDS), read, concurrency=concurrency)

    def _search(
        self,
        path: str,
        model: type[T],
        params: dict[str, Any],
        *,
        limit: int | None,
        page_size: int,
    ) -> AsyncPager[T]:
        url = self._client.url(path)

        async def fetch(cursor: str | None, size: int) -> Page[T]:
            data = await self._client.request(
                "GET", path, params={**params, "page_id": cursor, "limit": size}
            )
            return structure(data, Page[model], method="GET", url=url)  # type: ignore[valid-type]

        return AsyncPager(fetch, limit=limit, page_size=page_size)

    async def _count(self, path: str, params: dict[str, Any]) -> int:
        data = await self._client.request("GET", path, params=params)
        return structure(data, int, method="GET", url=self._client.url(path))


def _check_ids(ids: Iterable[object], name: str) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of ids, not a single string")
    out = []
    for value in ids:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be non-empty strings, got {value!r}")
        out.append(value.strip())
    return out

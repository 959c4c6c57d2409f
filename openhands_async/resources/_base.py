"""`Resource`: what every endpoint group is built from.

Each public resource method is one call to a helper here: `_get/_post/_put/_patch/_delete`
(one request, the answer structured as `cast_to`), `_get_many` (batch read, chunked),
`_get_one` (`_get_many` + NotFoundError), `_read_raw` (one chunk, raw JSON: the poller's
path), `_search` (auto-paging) and `_count`. Resources see only the `BaseClient`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

from .._base_client import BaseClient
from .._batch import check_batch, chunked, gather_bounded
from .._constants import DEFAULT_BATCH_CONCURRENCY, MAX_BATCH_IDS
from .._converter import structure
from .._http import Params
from .._inputs import check_ids, normalize_uuids
from .._retry import Idempotency
from ..errors import NotFoundError
from ..models import Page
from ..pagination import AsyncPager

T = TypeVar("T")

Query = Params | Mapping[str, Any] | None


class Resource:
    """Base of the resources: one endpoint group on a `BaseClient` (`client.conversations`,
    ...). Its helpers (`_get`, `_get_many`, `_search`, `_count`, ...) make each method one call.
    """

    def __init__(self, client: BaseClient) -> None:
        self._client = client

    # ------------------------------------------------------------ one request

    async def _request(
        self,
        method: str,
        path: str,
        *,
        cast_to: Any = None,
        params: Query = None,
        json: Any = None,
        idempotency: Idempotency = Idempotency.SAFE,
    ) -> Any:
        """One request; the decoded answer structured as `cast_to` (raw JSON if None)."""
        data = await self._client.request(
            method, path, params=params, json=json, idempotency=idempotency
        )
        if cast_to is None:
            return data
        return structure(data, cast_to, method=method, url=self._client.url(path))

    @overload
    async def _get(self, path: str, *, cast_to: type[T], params: Query = ...) -> T: ...
    @overload
    async def _get(self, path: str, *, cast_to: None = ..., params: Query = ...) -> Any: ...
    async def _get(self, path: str, *, cast_to: Any = None, params: Query = None) -> Any:
        return await self._request("GET", path, cast_to=cast_to, params=params)

    @overload
    async def _post(
        self,
        path: str,
        *,
        cast_to: type[T],
        params: Query = ...,
        json: Any = ...,
        idempotency: Idempotency = ...,
    ) -> T: ...
    @overload
    async def _post(
        self,
        path: str,
        *,
        cast_to: None = ...,
        params: Query = ...,
        json: Any = ...,
        idempotency: Idempotency = ...,
    ) -> Any: ...
    async def _post(
        self,
        path: str,
        *,
        cast_to: Any = None,
        params: Query = None,
        json: Any = None,
        idempotency: Idempotency = Idempotency.SAFE,
    ) -> Any:
        return await self._request(
            "POST", path, cast_to=cast_to, params=params, json=json, idempotency=idempotency
        )

    @overload
    async def _patch(self, path: str, *, cast_to: type[T], json: Any = ...) -> T: ...
    @overload
    async def _patch(self, path: str, *, cast_to: None = ..., json: Any = ...) -> Any: ...
    async def _patch(self, path: str, *, cast_to: Any = None, json: Any = None) -> Any:
        return await self._request("PATCH", path, cast_to=cast_to, json=json)

    @overload
    async def _put(self, path: str, *, cast_to: type[T], json: Any = ...) -> T: ...
    @overload
    async def _put(self, path: str, *, cast_to: None = ..., json: Any = ...) -> Any: ...
    async def _put(self, path: str, *, cast_to: Any = None, json: Any = None) -> Any:
        return await self._request("PUT", path, cast_to=cast_to, json=json)

    @overload
    async def _delete(self, path: str, *, cast_to: type[T], params: Query = ...) -> T: ...
    @overload
    async def _delete(self, path: str, *, cast_to: None = ..., params: Query = ...) -> None: ...
    async def _delete(self, path: str, *, cast_to: Any = None, params: Query = None) -> Any:
        result = await self._request("DELETE", path, cast_to=cast_to, params=params)
        return None if cast_to is None else result

    # ------------------------------------------------------------ batch reads

    def _wanted(self, ids: Iterable[object], param: str, validate_uuid: bool) -> list[str]:
        return normalize_uuids(ids, param) if validate_uuid else check_ids(ids, param)

    async def _read_raw(
        self, path: str, ids: Sequence[str], *, param: str = "ids"
    ) -> list[dict[str, Any] | None]:
        """One batch request for ids already checked (at most MAX_BATCH_IDS): the answer's
        objects as decoded JSON, in order, None where missing."""
        if len(ids) > MAX_BATCH_IDS:
            raise ValueError(f"at most {MAX_BATCH_IDS} ids per batch request, got {len(ids)}")
        data = await self._client.request("GET", path, params=[(param, i) for i in ids])
        return check_batch(data, len(ids), self._client.url(path))

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
        wanted = self._wanted(ids, param, validate_uuid)
        url = self._client.url(path)

        async def read(chunk: Sequence[str]) -> list[T | None]:
            raw = await self._read_raw(path, chunk, param=param)
            return structure(raw, list[model | None], method="GET", url=url)  # type: ignore[valid-type]

        return await gather_bounded(chunked(wanted, MAX_BATCH_IDS), read, concurrency=concurrency)

    def _parse(self, path: str, raw: Any, model: type[T]) -> T:
        """One object of a `_read_raw` answer, structured."""
        return structure(raw, model, method="GET", url=self._client.url(path))

    async def _get_one(
        self,
        path: str,
        id_: object,
        model: type[T],
        *,
        what: str,
        param: str = "ids",
        validate_uuid: bool = True,
    ) -> T:
        """`_get_many` of one id; NotFoundError (naming `what` and the id) if it is missing."""
        (wanted,) = self._wanted([id_], param, validate_uuid)
        (item,) = await self._get_many(path, [wanted], model, param=param, validate_uuid=False)
        if item is None:
            raise NotFoundError(
                f"{what} {wanted} not found", status=404, method="GET", url=self._client.url(path)
            )
        return item

    # ------------------------------------------------------------ searches

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
        return await self._get(path, cast_to=int, params=params)

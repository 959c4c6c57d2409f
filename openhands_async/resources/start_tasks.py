"""Start tasks: batch and single reads, search and count."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from .._constants import MAX_PAGE_SIZE
from .._inputs import normalize_uuid
from ..models import StartTask
from ..pagination import AsyncPager
from ._base import Resource

_PATH = "/api/v1/app-conversations/start-tasks"

StartTaskOrder = Literal["CREATED_AT", "CREATED_AT_DESC", "UPDATED_AT", "UPDATED_AT_DESC"]


class StartTasks(Resource):
    """Start tasks: a conversation's start-up, from WORKING to READY or ERROR."""

    async def get_many(self, ids: Iterable[str]) -> list[StartTask | None]:
        """Read any number of start tasks; the list keeps input order, None where missing."""
        return await self._get_many(_PATH, list(ids), StartTask)

    async def get(self, task_id: str) -> StartTask:
        """Read one start task; NotFoundError if the server does not have it."""
        return await self._get_one(_PATH, task_id, StartTask, what="start task")

    async def read_raw(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """One batch read of at most 99 normalized ids, as decoded JSON (for the poller,
        which structures only what changed: see `parse_raw`)."""
        return await self._read_raw(_PATH, ids)

    def parse_raw(self, raw: Any) -> StartTask:
        """A `StartTask` from an object `read_raw` returned."""
        return self._parse(_PATH, raw, StartTask)

    def search(
        self,
        *,
        conversation_id: str | None = None,
        created_after: datetime | None = None,
        order: StartTaskOrder = "CREATED_AT_DESC",
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[StartTask]:
        """All matching start tasks, across pages.

        Note: the server matches `conversation_id` only against READY tasks.
        """
        filters = _filters(conversation_id, created_after)
        filters["sort_order"] = order
        return self._search(f"{_PATH}/search", StartTask, filters, limit=limit, page_size=page_size)

    async def count(
        self, *, conversation_id: str | None = None, created_after: datetime | None = None
    ) -> int:
        """How many start tasks match (the filters of `search`)."""
        return await self._count(f"{_PATH}/count", _filters(conversation_id, created_after))


def _filters(conversation_id: str | None, created_after: datetime | None) -> dict[str, Any]:
    """The query of the filters search and count share."""
    return {
        "conversation_id__eq": None
        if conversation_id is None
        else normalize_uuid(conversation_id, "conversation_id"),
        "created_at__gte": created_after,
    }

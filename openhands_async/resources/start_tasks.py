from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from .._constants import MAX_PAGE_SIZE
from .._sansio import normalize_uuid
from ..errors import NotFoundError
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
        (task,) = await self.get_many([task_id])
        if task is None:
            raise NotFoundError(
                f"start task {normalize_uuid(task_id, 'task_id')} not found",
                status=404,
                method="GET",
                url=self._client.url(_PATH),
            )
        return task

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
        return self._search(
            f"{_PATH}/search",
            StartTask,
            {
                "conversation_id__eq": _opt_uuid(conversation_id, "conversation_id"),
                "created_at__gte": created_after,
                "sort_order": order,
            },
            limit=limit,
            page_size=page_size,
        )

    async def count(
        self, *, conversation_id: str | None = None, created_after: datetime | None = None
    ) -> int:
        return await self._count(
            f"{_PATH}/count",
            {
                "conversation_id__eq": _opt_uuid(conversation_id, "conversation_id"),
                "created_at__gte": created_after,
            },
        )


def _opt_uuid(value: str | None, name: str) -> str | None:
    return None if value is None else normalize_uuid(value, name)

"""A conversation's events: search, count, batch reads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from .._constants import MAX_PAGE_SIZE
from .._inputs import normalize_uuid
from ..models import Event
from ..pagination import AsyncPager
from ._base import Resource

EventOrder = Literal["TIMESTAMP", "TIMESTAMP_DESC"]


def _path(conversation_id: str) -> str:
    return f"/api/v1/conversation/{normalize_uuid(conversation_id, 'conversation_id')}/events"


class Events(Resource):
    """A conversation's events (messages, actions, observations, state updates)."""

    def search(
        self,
        conversation_id: str,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: EventOrder = "TIMESTAMP",
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[Event]:
        """Matching events across pages, oldest first by default (`limit` caps the total).

        `kind` is an event class name such as "MessageEvent"; `since` is inclusive and
        `until` exclusive.
        """
        return self._search(
            f"{_path(conversation_id)}/search",
            Event,
            {**_filters(kind, since, until), "sort_order": order},
            limit=limit,
            page_size=page_size,
        )

    async def count(
        self,
        conversation_id: str,
        *,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many of the conversation's events match (the filters of `search`)."""
        return await self._count(f"{_path(conversation_id)}/count", _filters(kind, since, until))

    async def get_many(self, conversation_id: str, ids: Iterable[str]) -> list[Event | None]:
        """Read events by id (any number, <= 99 per request); None where missing.

        Event ids are opaque strings, not necessarily UUIDs.
        """
        return await self._get_many(
            _path(conversation_id), list(ids), Event, param="id", validate_uuid=False
        )

    async def last_agent_message(self, conversation_id: str) -> str | None:
        """What the agent said last: the newest agent MessageEvent's text or FinishAction
        message (the open-source server records a final answer as a FinishAction), or None."""
        async for event in self.search(conversation_id, order="TIMESTAMP_DESC"):
            if event.source == "agent" and event.kind in ("MessageEvent", "ActionEvent"):
                text = event.text
                if text is not None:
                    return text
        return None


def _filters(kind: str | None, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    return {"kind__eq": kind, "timestamp__gte": since, "timestamp__lt": until}

"""A conversation's events: search / count / batch get (the event list itself: `_events`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .._constants import EVENT_KINDS, EVENT_SORTS, MAX_EVENT_IDS, MAX_PAGE_SIZE
from .._events import visible, wire_event
from .._responses import json_response, page_of
from .._routing import RouteGroup, route
from .._state import ConversationRecord
from .._validation import BadRequest, QueryReader

BASE = "/api/v1/conversation/{conversation_id}/events"


class EventRoutes(RouteGroup):
    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        return self.ctx.conversation(request.match_info["conversation_id"])

    def _render(self, event: dict[str, Any]) -> dict[str, Any]:
        return wire_event(event, self.ctx.clock)

    def _matches(self, query: QueryReader, conv: ConversationRecord) -> list[dict[str, Any]]:
        kind = query.text("kind__eq")
        if kind is not None:
            kind = query.choice("kind__eq", kind, EVENT_KINDS)
        gte = query.datetime_us("timestamp__gte")
        lt = query.datetime_us("timestamp__lt")
        query.check()
        wall_us = self.ctx.clock.wall_us
        out = []
        for event in visible(conv, self.ctx.now()):
            us = wall_us(event["_at"])
            if kind is not None and event["kind"] != kind:
                continue
            if (gte is not None and us < gte) or (lt is not None and us >= lt):
                continue
            out.append(event)
        return out

    @route("GET", f"{BASE}/search", "search_events")
    async def search_events(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        query = QueryReader(request.query)
        order = query.choice("sort_order", "TIMESTAMP", EVENT_SORTS)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        if conv is None:
            # openhands-ai 1.11.0 lists no events for an unknown conversation (no 404).
            query.check()
            return json_response({"items": [], "next_page_id": None})
        matches = sorted(self._matches(query, conv), key=lambda e: e["_at"])
        if order == "TIMESTAMP_DESC":
            matches.reverse()
        return json_response(page_of(matches, page_id, limit, self._render))

    @route("GET", f"{BASE}/count", "count_events")
    async def count_events(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        query = QueryReader(request.query)
        if conv is None:
            # openhands-ai 1.11.0 counts 0 events for an unknown conversation (no 404).
            query.check()
            return json_response(0)
        return json_response(len(self._matches(query, conv)))

    @route("GET", BASE, "get_events")
    async def get_events(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        query = QueryReader(request.query)
        ids = query.required_list("id")
        query.check()
        if len(ids) > MAX_EVENT_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_EVENT_IDS}.")
        if conv is None:
            # openhands-ai 1.11.0: every event of an unknown conversation is missing (no 404).
            return json_response([None] * len(ids))
        by_id = {e["id"]: e for e in visible(conv, self.ctx.now())}
        return json_response([self._render(by_id[i]) if i in by_id else None for i in ids])

"""Conversations: batch get / search / count, the web app's page for one, and one
conversation's endpoints (send-message, update, delete, download, git changes/diff, file)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import attrs
from aiohttp import web

from .._constants import MAX_CONVERSATION_IDS, MAX_PAGE_SIZE
from .._events import visible, without_time
from .._render import conversation_title
from .._responses import json_response, not_found, page_of
from .._routing import RouteGroup, route
from .._state import ConversationRecord
from .._timeline import send_message
from .._validation import BadRequest, Invalid, QueryReader, error
from .._wire import uuid_hex

BASE = "/api/v1/app-conversations"
ONE = f"{BASE}/{{conversation_id}}"
WORKSPACE_FILE = "hello.txt"
WORKSPACE_TEXT = "hello\n"
UPDATABLE = ("title", "public", "selected_repository", "selected_branch", "git_provider")
# The Cloud's answer to any path its API does not own: the web app's shell page.
WEB_APP_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <title>OpenHands</title>
    <script type="module" crossorigin src="/assets/index.js"></script>
  </head>
  <body>
    <div id="root"></div>
  </body>
</html>
"""


@attrs.frozen
class _Filters:
    title_contains: str | None
    created_gte: int | None
    created_lt: int | None
    updated_gte: int | None
    updated_lt: int | None
    sandbox_id: str | None


class ConversationRoutes(RouteGroup):
    # Fixed paths (here and in StartRoutes, registered before) come before `{conversation_id}`.

    @route("GET", BASE, "get_conversations")
    async def get_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        ids = query.required_list("ids")
        query.check()
        if len(ids) > MAX_CONVERSATION_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_CONVERSATION_IDS}.")
        parsed = [uuid_hex(raw) for raw in ids]
        bad = [raw for raw, hex_id in zip(ids, parsed, strict=True) if hex_id is None]
        if bad:
            raise BadRequest(f"Invalid UUID format for ids: {bad!r}")
        conversations = self.ctx.store.conversations
        now = self.ctx.now()
        render = self.ctx.render.conversation
        found = (conversations.get(conv_id or "") for conv_id in parsed)
        return json_response([render(c, now) if c else None for c in found])

    @route("GET", f"{BASE}/search", "search_conversations")
    async def search_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        filters = _filters(query)
        page_id = query.text("page_id")
        limit = query.integer("limit", MAX_PAGE_SIZE, gt=0, le=MAX_PAGE_SIZE)
        include_sub = query.boolean("include_sub_conversations", False)
        query.check()
        now = self.ctx.now()
        matches = self._matches(filters, now, include_sub=include_sub)
        render = self.ctx.render.conversation
        return json_response(page_of(matches, page_id, limit, lambda c: render(c, now)))

    @route("GET", f"{BASE}/count", "count_conversations")
    async def count_conversations(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        filters = _filters(query)
        query.check()
        now = self.ctx.now()
        return json_response(len(self._matches(filters, now, include_sub=False)))

    def _matches(
        self, filters: _Filters, now: float, *, include_sub: bool
    ) -> list[ConversationRecord]:
        wall_us = self.ctx.clock.wall_us
        needle = filters.title_contains.lower() if filters.title_contains is not None else None

        def keep(conv: ConversationRecord) -> bool:
            if now < conv.created:
                return False
            if not include_sub and conv.task.request.get("parent_conversation_id"):
                return False
            if needle is not None and needle not in conversation_title(conv).lower():
                return False
            if filters.sandbox_id is not None and conv.task.sandbox_id != filters.sandbox_id:
                return False
            return _in_range(wall_us(conv.created), filters.created_gte, filters.created_lt) and (
                (filters.updated_gte is None and filters.updated_lt is None)
                or _in_range(wall_us(conv.updated(now)), filters.updated_gte, filters.updated_lt)
            )

        matches = [conv for conv in reversed(self.ctx.store.conversations.values()) if keep(conv)]
        # Newest first; the stable sort keeps later-created first among equal timestamps.
        matches.sort(key=lambda conv: conv.created, reverse=True)
        return matches

    @route("GET", ONE, "conversation_page", access="open")
    async def conversation_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=WEB_APP_PAGE, content_type="text/html")

    # -- one conversation --------------------------------------------------------------

    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        return self.ctx.conversation(request.match_info["conversation_id"])

    @route("POST", f"{ONE}/send-message", "send_message")
    async def send_message(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        content = body.get("content")
        if not isinstance(content, list) or not content:
            raise Invalid(
                [
                    error(
                        "too_short",
                        ("body", "content"),
                        "List should have at least 1 item",
                        content,
                    )
                ]
            )
        run = body.get("run", True)
        conv = self._conversation(request)
        if conv is None:
            return not_found("Conversation not found")
        store, now = self.ctx.store, self.ctx.now()
        if conv.task.sandbox_id not in store.sandboxes:
            return json_response({"detail": "Conversation is archived"}, 410)
        view = conv.view(now)
        status = view[0] if view else "MISSING"
        if status == "ERROR":
            return json_response({"detail": "Sandbox is in error state"}, 503)
        if status != "RUNNING":
            return json_response(
                {
                    "detail": f"Sandbox {conv.task.sandbox_id} is {status}. "
                    "Resume it first via POST /sandboxes/{id}/resume"
                },
                409,
            )
        texts = [
            c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)
        ]
        send_message(store, conv, "\n".join(texts) or "(image)", now, run=bool(run))
        return json_response({"success": True, "sandbox_status": "RUNNING", "message": None})

    @route("PATCH", ONE, "update_conversation")
    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        conv = self._conversation(request)
        if conv is None:
            return not_found()
        for key in UPDATABLE:
            if key in body:
                conv.task.request[key] = body[key]
        return json_response(self.ctx.render.conversation(conv, self.ctx.now()))

    @route("DELETE", ONE, "delete_conversation")
    async def delete(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found()
        self.ctx.store.remove(conv)
        return json_response({"success": True})

    @route("GET", f"{ONE}/download", "download_conversation")
    async def download(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found()
        events = visible(conv, self.ctx.now())
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("meta.json", json.dumps({"id": conv.id}))
            for i, event in enumerate(events):
                archive.writestr(f"events/event-{i:05d}.json", json.dumps(without_time(event)))
            archive.writestr(WORKSPACE_FILE, WORKSPACE_TEXT)
        return web.Response(
            body=buffer.getvalue(),
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{conv.id}.zip"'},
        )

    @route("GET", f"{ONE}/git/changes", "git_changes")
    async def git_changes(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        query.text("ref")
        if query.text("path") is None:
            query.errors.append(error("missing", ("query", "path"), "Field required", None))
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return not_found()
        done = self.ctx.now() >= conv.outcome_at
        return json_response([{"status": "ADDED", "path": WORKSPACE_FILE}] if done else [])

    @route("GET", f"{ONE}/git/diff", "git_diff")
    async def git_diff(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        path = query.text("path")
        if path is None:
            query.errors.append(error("missing", ("query", "path"), "Field required", None))
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return not_found()
        modified = WORKSPACE_TEXT if path == WORKSPACE_FILE else ""
        return json_response({"original": "", "modified": modified})

    @route("GET", f"{ONE}/file", "read_file")
    async def read_file(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        file_path = query.text("file_path")
        query.check()
        # Like the real server (and the spec's description): an unknown conversation or a
        # missing file reads as "", never a 404.
        conv = self._conversation(request)
        found = conv is not None and file_path == WORKSPACE_FILE
        return json_response(WORKSPACE_TEXT if found else "")


def _filters(query: QueryReader) -> _Filters:
    return _Filters(
        title_contains=query.text("title__contains"),
        created_gte=query.datetime_us("created_at__gte"),
        created_lt=query.datetime_us("created_at__lt"),
        updated_gte=query.datetime_us("updated_at__gte"),
        updated_lt=query.datetime_us("updated_at__lt"),
        sandbox_id=query.text("sandbox_id__eq"),
    )


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise Invalid([error("json_invalid", ("body",), "JSON decode error", None)]) from None
    if not isinstance(body, dict):
        raise Invalid(
            [error("model_attributes_type", ("body",), "Input should be an object", body)]
        )
    return body

"""The V0 routes of older self-hosted servers (/api/conversations), always on.

They share the V1 state: a V0 conversation is an app conversation, so a V0 create shows up
in V1 search too, and V0 stop/start pause and resume its sandbox.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .._constants import MAX_PAGE_SIZE
from .._events import visible
from .._plan import MarkerError, plan_start
from .._render import conversation_title
from .._responses import json_response, not_found, page_of
from .._routing import RouteGroup, route
from .._state import ConversationRecord
from .._timeline import pause, resume
from .._validation import Invalid, QueryReader, error
from .._wire import uuid_hex

BASE = "/api/conversations"
ONE = f"{BASE}/{{conversation_id}}"
_STATUS = {"STARTING": "STARTING", "RUNNING": "RUNNING", "PAUSED": "STOPPED", "ERROR": "ERROR"}


class LegacyRoutes(RouteGroup):
    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        return self.ctx.conversation(request.match_info["conversation_id"])

    def _info(self, conv: ConversationRecord, now: float) -> dict[str, Any]:
        view = conv.view(now)
        sandbox = view[0] if view else "STARTING"
        request = conv.task.request
        clock = self.ctx.clock
        return {
            "conversation_id": conv.id,
            "title": conversation_title(conv),
            "last_updated_at": clock.iso(conv.updated(now)),
            "status": _STATUS.get(sandbox, "STOPPED"),
            "runtime_status": "STATUS$READY" if sandbox == "RUNNING" else None,
            "selected_repository": request.get("selected_repository"),
            "selected_branch": request.get("selected_branch"),
            "git_provider": request.get("git_provider"),
            "trigger": "gui",
            "num_connections": 0,
            "url": None,
            "session_api_key": None,
            "created_at": clock.iso(conv.created),
            "pr_number": [],
        }

    def _response(self, conv: ConversationRecord, message: str | None = None) -> dict[str, Any]:
        view = conv.view(self.ctx.now())
        return {
            "status": "ok",
            "conversation_id": conv.id,
            "message": message,
            "conversation_status": _STATUS.get(view[0] if view else "STARTING", "STOPPED"),
        }

    @route("POST", BASE, "legacy_create")
    async def create(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise Invalid([error("json_invalid", ("body",), "JSON decode error", None)]) from None
        if not isinstance(body, dict):
            raise Invalid([error("dict_type", ("body",), "Input should be an object", body)])
        text = body.get("initial_user_msg")
        ctx = self.ctx
        try:
            plan = plan_start(ctx.timing(), text)
        except MarkerError as exc:
            loc = ("body", "initial_user_msg")
            raise Invalid([error("value_error", loc, f"Value error, {exc}", text)]) from None
        echo: dict[str, Any] = {
            "selected_repository": body.get("repository"),
            "selected_branch": body.get("selected_branch"),
            "git_provider": body.get("git_provider"),
        }
        if isinstance(text, str) and text:
            echo["initial_message"] = {"content": [{"type": "text", "text": text}]}
        chosen = uuid_hex(body["conversation_id"]) if body.get("conversation_id") else None
        now = ctx.now()
        task = ctx.store.add_start(now, plan, echo, chosen)
        conv = ctx.store.conversations[task.conversation_id]
        return json_response(
            {
                "status": "ok",
                "conversation_id": conv.id,
                "message": None,
                "conversation_status": "STARTING",
            }
        )

    @route("GET", BASE, "legacy_search")
    async def search(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", 20, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        now = self.ctx.now()
        convs = [c for c in reversed(self.ctx.store.conversations.values()) if c.created <= now]
        info = self._info
        return json_response(page_of(convs, page_id, limit, lambda c: info(c, now), key="results"))

    @route("GET", ONE, "legacy_get")
    async def get(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        # V0 answers null (200) for an unknown conversation.
        return json_response(None if conv is None else self._info(conv, self.ctx.now()))

    @route("DELETE", ONE, "legacy_delete")
    async def delete(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return json_response(False)
        self.ctx.store.remove(conv)
        return json_response(True)

    @route("POST", f"{ONE}/start", "legacy_start")
    async def start(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found("Conversation not found")
        resume(self.ctx.store, conv, self.ctx.now())
        return json_response(self._response(conv))

    @route("POST", f"{ONE}/stop", "legacy_stop")
    async def stop(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found("Conversation not found")
        pause(self.ctx.store, conv, self.ctx.now())
        return json_response(self._response(conv))

    @route("GET", f"{ONE}/events", "legacy_events")
    async def events(self, request: web.Request) -> web.StreamResponse:
        query = QueryReader(request.query)
        start_id = query.integer("start_id", 0, gt=-1, le=10**9)
        end_id = query.text("end_id")
        reverse = query.boolean("reverse", False)
        limit = query.integer("limit", 20, gt=0, le=MAX_PAGE_SIZE)
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return not_found("Conversation not found")
        clock = self.ctx.clock
        rendered = [
            _v0_event(i, e, clock.iso(e["_at"], zulu=False))
            for i, e in enumerate(visible(conv, clock.now()))
        ]
        last = int(end_id) if end_id and end_id.isdigit() else len(rendered)
        chosen = [e for e in rendered if start_id <= e["id"] < last]
        if reverse:
            chosen.reverse()
        return json_response({"events": chosen[:limit], "has_more": len(chosen) > limit})


def _v0_event(index: int, event: dict[str, Any], timestamp: str) -> dict[str, Any]:
    out: dict[str, Any] = {"id": index, "timestamp": timestamp, "source": event["source"]}
    llm = event.get("llm_message")
    if isinstance(llm, dict):
        out["action"] = "message"
        out["message"] = "\n".join(c.get("text", "") for c in llm.get("content") or [])
        out["args"] = {"content": out["message"]}
    elif event["kind"] == "ActionEvent":
        out["action"] = "run"
        out["message"] = event.get("summary", "")
        out["args"] = {"command": "ls -la"}
    else:
        out["observation"] = "agent_state_changed"
        out["message"] = ""
        out["extras"] = {"agent_state": event.get("value")}
    return out

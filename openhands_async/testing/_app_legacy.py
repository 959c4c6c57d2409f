"""The V0 routes of older self-hosted servers (/api/conversations), always on.

They share the V1 state: a V0 conversation is an app conversation, so a V0 create shows up
in V1 search too, and V0 stop/start pause and resume its sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._app_conversations import pause, resume
from ._app_events import visible
from ._plan import MarkerError, plan_start
from ._render import conversation_title
from ._state import ConversationRecord
from ._validation import Invalid, QueryReader, error
from ._wire import uuid_hex

if TYPE_CHECKING:
    from ._app import Api, Handler

ROUTES = frozenset(
    {
        "legacy_create",
        "legacy_search",
        "legacy_get",
        "legacy_delete",
        "legacy_start",
        "legacy_stop",
        "legacy_events",
    }
)
_STATUS = {"STARTING": "STARTING", "RUNNING": "RUNNING", "PAUSED": "STOPPED", "ERROR": "ERROR"}


class LegacyRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.cloud = api.cloud

    def routes(self) -> Iterable[tuple[str, str, str, Handler]]:
        base = "/api/conversations"
        one = f"{base}/{{conversation_id}}"
        return (
            ("POST", base, "legacy_create", self.create),
            ("GET", base, "legacy_search", self.search),
            ("GET", one, "legacy_get", self.get),
            ("DELETE", one, "legacy_delete", self.delete),
            ("POST", f"{one}/start", "legacy_start", self.start),
            ("POST", f"{one}/stop", "legacy_stop", self.stop),
            ("GET", f"{one}/events", "legacy_events", self.events),
        )

    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        conv = self.cloud._store.conversations.get(
            uuid_hex(request.match_info["conversation_id"]) or ""
        )
        if conv is None or self.cloud._clock.now() < conv.created:
            return None
        return conv

    def _info(self, conv: ConversationRecord, now: float) -> dict[str, Any]:
        view = conv.view(now)
        sandbox = view[0] if view else "STARTING"
        request = conv.task.request
        clock = self.cloud._clock
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
        view = conv.view(self.cloud._clock.now())
        return {
            "status": "ok",
            "conversation_id": conv.id,
            "message": message,
            "conversation_status": _STATUS.get(view[0] if view else "STARTING", "STOPPED"),
        }

    async def create(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise Invalid([error("json_invalid", ("body",), "JSON decode error", None)]) from None
        if not isinstance(body, dict):
            raise Invalid([error("dict_type", ("body",), "Input should be an object", body)])
        text = body.get("initial_user_msg")
        cloud = self.cloud
        try:
            plan = plan_start(cloud._timing(), text)
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
        now = cloud._clock.now()
        task = cloud._store.add_start(now, plan, echo, chosen)
        conv = cloud._store.conversations[task.conversation_id]
        return json_response(
            {
                "status": "ok",
                "conversation_id": conv.id,
                "message": None,
                "conversation_status": "STARTING",
            }
        )

    async def search(self, request: web.Request) -> web.StreamResponse:
        from ._app import _decode_page, _next_page, json_response

        query = QueryReader(request.query)
        page_id = query.text("page_id")
        limit = query.integer("limit", 20, gt=0, le=100)
        query.check()
        now = self.cloud._clock.now()
        convs = [c for c in reversed(self.cloud._store.conversations.values()) if c.created <= now]
        offset = _decode_page(page_id)
        return json_response(
            {
                "results": [self._info(c, now) for c in convs[offset : offset + limit]],
                "next_page_id": _next_page(offset, limit, len(convs)),
            }
        )

    async def get(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        # V0 answers null (200) for an unknown conversation.
        return json_response(None if conv is None else self._info(conv, self.cloud._clock.now()))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        if conv is None:
            return json_response(False)
        store = self.cloud._store
        store.conversations.pop(conv.id, None)
        store._active.pop(conv.id, None)
        store.sandboxes.pop(conv.task.sandbox_id, None)
        return json_response(True)

    async def start(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        if conv is None:
            return json_response({"detail": "Conversation not found"}, 404)
        resume(self.cloud._store, conv, self.cloud._clock.now())
        return json_response(self._response(conv))

    async def stop(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        if conv is None:
            return json_response({"detail": "Conversation not found"}, 404)
        pause(self.cloud._store, conv, self.cloud._clock.now())
        return json_response(self._response(conv))

    async def events(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        query = QueryReader(request.query)
        start_id = query.integer("start_id", 0, gt=-1, le=10**9)
        end_id = query.text("end_id")
        reverse = query.boolean("reverse", False)
        limit = query.integer("limit", 20, gt=0, le=100)
        query.check()
        conv = self._conversation(request)
        if conv is None:
            return json_response({"detail": "Conversation not found"}, 404)
        clock = self.cloud._clock
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

"""A conversation's controls: pending messages (queued before READY, delivered at READY),
switch_profile / switch_acp_model on a running conversation, and its skills and hooks.

Pending messages follow the real server: they are keyed by the path's id as given (the
web app queues under `task-<start task hex>` until the conversation exists), and only
those queued while the start task is not READY yet are delivered: at READY, in order,
each as a user message (they then show in the conversation's events). At most 10 wait
per id (429 beyond). The switches record the conversation's LLM (its `llm_model`).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from .._account import MAX_PENDING_MESSAGES, PendingRecord
from .._body import check, json_body, json_object, text_field
from .._events import ensure_events, user_message_events
from .._responses import json_response, not_found
from .._routing import RouteGroup, route
from .._state import INF, ConversationRecord
from .._validation import BadRequest
from .._wire import uuid_hex

APP = "/api/v1/app-conversations/{conversation_id}"
PENDING = "/api/v1/conversations/{conversation_id}/pending-messages"
_TASK_PREFIX = "task-"
_SPACING = 1e-4  # between delivered messages, after the initial one, keeping their order
_CONTENT_TYPES = ("text", "image")
SKILLS = [
    {
        "name": "github",
        "type": "knowledge",
        "content": "Use the GitHub API with the GITHUB_TOKEN environment variable.",
        "triggers": ["github", "git"],
    },
    {"name": "repo", "type": "repo", "content": "Run the tests with `make test`.", "triggers": []},
]
HOOKS = [
    {
        "event_type": "stop",
        "matchers": [
            {"matcher": "*", "hooks": [{"type": "command", "command": "echo done", "timeout": 60}]}
        ],
    }
]


def _content_errors(content: Any) -> str | None:
    if not content or not isinstance(content, list):
        return "content must be a non-empty list"
    for item in content:
        if not isinstance(item, dict) or item.get("type", "text") not in _CONTENT_TYPES:
            return "Invalid content format: each item must be a text or image content object"
        if item.get("type", "text") == "text" and not isinstance(item.get("text"), str):
            return "Invalid content format: text content needs a `text` string"
        if item.get("type") == "image" and not isinstance(item.get("image_urls"), list):
            return "Invalid content format: image content needs `image_urls`"
    return None


class ControlRoutes(RouteGroup):
    @route("POST", PENDING, "queue_pending_message")
    async def queue_pending_message(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["conversation_id"]
        try:
            body = json_object(await json_body(request))
        except Exception:
            raise BadRequest("Invalid request body") from None
        problem = _content_errors(body.get("content"))
        if problem is not None:
            raise BadRequest(problem)
        role = body.get("role", "user")
        if not isinstance(role, str):
            raise BadRequest("Invalid request body")
        now = self.ctx.now()
        queue = self.ctx.account.pending.setdefault(key, [])
        waiting = [m for m in queue if m.deliver_at > now]
        if len(waiting) >= MAX_PENDING_MESSAGES:
            detail = "Too many pending messages. Maximum 10 messages per conversation."
            return json_response({"detail": detail}, 429)
        record = PendingRecord(str(uuid.uuid4()), role, list(body["content"]))
        conv = self._starting(key, now)
        if conv is not None:
            record.deliver_at = conv.task.ready_at + _SPACING * (len(waiting) + 1)
            text = "\n".join(c["text"] for c in record.content if isinstance(c.get("text"), str))
            ensure_events(conv)  # the first run's events first: they are made only once
            conv.events.extend(user_message_events(text or "(image)", record.deliver_at))
            conv.events.sort(key=lambda e: e["_at"])
        queue.append(record)
        answer = {"id": record.id, "queued": True, "position": len(waiting) + 1}
        return json_response(answer, 201)

    def _starting(self, key: str, now: float) -> ConversationRecord | None:
        """The conversation of a start task named `task-<hex>` that is not READY yet."""
        if not key.startswith(_TASK_PREFIX):
            return None
        task = self.ctx.store.tasks.get(uuid_hex(key[len(_TASK_PREFIX) :]) or "")
        if task is None or task.ready_at == INF or now >= task.ready_at:
            return None
        conv = self.ctx.store.conversations.get(task.conversation_id)
        return conv if conv is not None and conv.task is task else None

    # -- on a running conversation -----------------------------------------------------

    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        return self.ctx.conversation(request.match_info["conversation_id"])

    def _running(self, conv: ConversationRecord) -> bool:
        view = conv.view(self.ctx.now())
        return view is not None and view[0] == "RUNNING"

    @route("POST", f"{APP}/switch_profile", "switch_profile")
    async def switch_profile(self, request: web.Request) -> web.StreamResponse:
        body = json_object(await json_body(request))
        errors: list[dict[str, Any]] = []
        name = text_field(body, "profile_name", errors)
        check(errors)
        assert name is not None
        conv = self._conversation(request)
        if conv is None:
            return not_found(f"Conversation {request.match_info['conversation_id']} not found")
        llm = self.ctx.account.profile_llm(name)
        if llm is None:
            return not_found(f"Profile '{name}' not found")
        if not self._running(conv):
            detail = "Sandbox is paused; resume it before switching profiles."
            return json_response({"detail": detail}, 409)
        self.ctx.account.conversation_profiles[conv.id] = name
        conv.task.request["llm_model"] = llm.get("model")
        return json_response({"success": True})

    @route("POST", f"{APP}/switch_acp_model", "switch_acp_model")
    async def switch_acp_model(self, request: web.Request) -> web.StreamResponse:
        body = json_object(await json_body(request))
        errors: list[dict[str, Any]] = []
        model = text_field(body, "model", errors)
        check(errors)
        assert model is not None
        conv = self._conversation(request)
        if conv is None:
            return not_found(f"Conversation {request.match_info['conversation_id']} not found")
        if conv.task.request.get("agent_type") != "acp":
            return json_response({"detail": "Agent is not an ACP agent"}, 400)
        if not self._running(conv):
            detail = "Sandbox is paused; resume it before switching models."
            return json_response({"detail": detail}, 409)
        conv.task.request["llm_model"] = model
        return json_response({"success": True})

    @route("GET", f"{APP}/skills", "conversation_skills")
    async def conversation_skills(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found(f"Conversation {request.match_info['conversation_id']} not found")
        return json_response({"skills": SKILLS if self._running(conv) else []})

    @route("GET", f"{APP}/hooks", "conversation_hooks")
    async def conversation_hooks(self, request: web.Request) -> web.StreamResponse:
        conv = self._conversation(request)
        if conv is None:
            return not_found(f"Conversation {request.match_info['conversation_id']} not found")
        return json_response({"hooks": HOOKS if self._running(conv) else []})

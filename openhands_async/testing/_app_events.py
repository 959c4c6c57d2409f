"""Events: a plausible small event list per conversation, and the events endpoints.

A conversation's events are made on first use from its timeline (the user's initial message
at READY, the agent's action when it starts running, "Done: <task>" at its outcome), kept in
`ConversationRecord.events` with the loop time each becomes visible (`_at`), and shown once
that time has passed (frozen while paused). `send-message` appends a new run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._state import INF, ConversationRecord
from ._validation import BadRequest, QueryReader
from ._wire import uuid_hex

if TYPE_CHECKING:
    from ._app import Api, Handler

ROUTES = frozenset({"search_events", "count_events", "get_events"})
MAX_EVENT_IDS = 99
EVENT_SORTS = ("TIMESTAMP", "TIMESTAMP_DESC")
#: `kind__eq` is an enum on the real server (openhands-ai 1.11.0): anything else is a 422.
EVENT_KINDS = (
    "ServerErrorEvent",
    "ACPToolCallEvent",
    "Condensation",
    "CondensationRequest",
    "CondensationSummaryEvent",
    "ConversationErrorEvent",
    "ConversationStateUpdateEvent",
    "HookExecutionEvent",
    "LLMCompletionLogEvent",
    "ActionEvent",
    "MessageEvent",
    "AgentErrorEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "SystemPromptEvent",
    "StreamingDeltaEvent",
    "TokenEvent",
    "InterruptEvent",
    "PauseEvent",
)
_TICK = 1e-6  # spacing between events made at one moment, to keep their order


def _id() -> str:
    return str(uuid.uuid4())


def message_text(request: dict[str, Any]) -> str | None:
    message = request.get("initial_message")
    if not isinstance(message, dict):
        return None
    parts = [
        c["text"]
        for c in message.get("content") or []
        if isinstance(c, dict) and isinstance(c.get("text"), str)
    ]
    return "\n".join(parts) if parts else None


def _message(source: str, role: str, text: str, parent: str | None) -> dict[str, Any]:
    return {
        "id": _id(),
        "source": source,
        "parent_id": parent,
        "llm_message": {
            "role": role,
            "content": [{"cache_prompt": False, "type": "text", "text": text}],
            "tool_calls": None,
            "tool_call_id": None,
            "name": None,
            "reasoning_content": None,
            "thinking_blocks": [],
            "responses_reasoning_item": None,
        },
        "llm_response_id": None if source == "user" else f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "activated_skills": [],
        "extended_content": [],
        "sender": None,
        "critic_result": None,
        "kind": "MessageEvent",
    }


def _state(key: str, value: Any, parent: str | None) -> dict[str, Any]:
    return {
        "id": _id(),
        "source": "environment",
        "parent_id": parent,
        "key": key,
        "value": value,
        "kind": "ConversationStateUpdateEvent",
    }


def _action(task: str, parent: str | None) -> dict[str, Any]:
    call_id = f"call_{uuid.uuid4().hex[:12]}"
    arguments = '{"command": "ls -la"}'
    return {
        "id": _id(),
        "source": "agent",
        "parent_id": parent,
        "thought": [{"type": "text", "text": f"Let me look at the workspace for: {task}"}],
        "reasoning_content": None,
        "thinking_blocks": [],
        "responses_reasoning_item": None,
        "action": {
            "command": "ls -la",
            "is_input": False,
            "timeout": None,
            "kind": "TerminalAction",
        },
        "tool_name": "terminal",
        "tool_call_id": call_id,
        "tool_call": {
            "id": call_id,
            "name": "terminal",
            "arguments": arguments,
            "origin": "completion",
        },
        "llm_response_id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "security_risk": "UNKNOWN",
        "critic_result": None,
        "summary": f"terminal: {arguments}",
        "kind": "ActionEvent",
    }


def _at(at: float, event: dict[str, Any]) -> dict[str, Any]:
    return {"_at": at, **event}


def run_events(
    conv: ConversationRecord, text: str | None, message_at: float
) -> list[dict[str, Any]]:
    """The events of one run: the user's message, the agent's work, its outcome."""
    out: list[dict[str, Any]] = []
    parent = None
    if text is not None:
        user = _message("user", "user", text, None)
        parent = user["id"]
        out.append(_at(message_at, user))
    if conv.running_at < INF:
        out.append(_at(conv.running_at, _state("execution_status", "running", parent)))
        out.append(_at(conv.running_at + _TICK, _action(text or "the task", parent)))
        end = conv.outcome_at
        if conv.outcome == "finished":
            reply = _message("agent", "assistant", f"Done: {text or 'the task'}", parent)
            out.append(_at(end, reply))
        out.append(_at(end + _TICK, _state("execution_status", conv.outcome, parent)))
    return out


def ensure_events(conv: ConversationRecord) -> list[dict[str, Any]]:
    """Make the first run's events (once), from the timeline as it stands now."""
    if not conv.events:
        conv.events.extend(run_events(conv, message_text(conv.task.request), conv.task.ready_at))
    return conv.events


def visible(conv: ConversationRecord, now: float) -> list[dict[str, Any]]:
    horizon = min(now, conv.paused_at)
    return [e for e in ensure_events(conv) if e["_at"] <= horizon]


def shift_after(conv: ConversationRecord, moment: float, delta: float) -> None:
    """Move every event still to come after `moment` by `delta` (a resume)."""
    for event in ensure_events(conv):
        if event["_at"] > moment:
            event["_at"] += delta


class EventRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.cloud = api.cloud

    def routes(self) -> Iterable[tuple[str, str, str, Handler]]:
        base = "/api/v1/conversation/{conversation_id}/events"
        return (
            ("GET", f"{base}/search", "search_events", self.search_events),
            ("GET", f"{base}/count", "count_events", self.count_events),
            ("GET", base, "get_events", self.get_events),
        )

    def _conversation(self, request: web.Request) -> ConversationRecord | None:
        raw = request.match_info["conversation_id"]
        conv = self.cloud._store.conversations.get(uuid_hex(raw) or "")
        if conv is None or self.cloud._clock.now() < conv.created:
            return None
        return conv

    def render(self, event: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in event.items() if k != "_at"}
        # Event timestamps carry no offset on the wire (see the captures).
        stamped = {
            "id": body.pop("id"),
            "timestamp": self.cloud._clock.iso(event["_at"], zulu=False),
        }
        return {**stamped, **body}

    def _matches(self, query: QueryReader, conv: ConversationRecord) -> list[dict[str, Any]]:
        kind = query.text("kind__eq")
        if kind is not None:
            kind = query.choice("kind__eq", kind, EVENT_KINDS)
        gte = query.datetime_us("timestamp__gte")
        lt = query.datetime_us("timestamp__lt")
        query.check()
        wall_us = self.cloud._clock.wall_us
        out = []
        for event in visible(conv, self.cloud._clock.now()):
            us = wall_us(event["_at"])
            if kind is not None and event["kind"] != kind:
                continue
            if (gte is not None and us < gte) or (lt is not None and us >= lt):
                continue
            out.append(event)
        return out

    async def search_events(self, request: web.Request) -> web.StreamResponse:
        from ._app import _decode_page, _next_page, json_response

        conv = self._conversation(request)
        query = QueryReader(request.query)
        order = query.choice("sort_order", "TIMESTAMP", EVENT_SORTS)
        page_id = query.text("page_id")
        limit = query.integer("limit", 100, gt=0, le=100)
        if conv is None:
            # openhands-ai 1.11.0 lists no events for an unknown conversation (no 404).
            query.check()
            return json_response({"items": [], "next_page_id": None})
        matches = sorted(self._matches(query, conv), key=lambda e: e["_at"])
        if order == "TIMESTAMP_DESC":
            matches.reverse()
        offset = _decode_page(page_id)
        return json_response(
            {
                "items": [self.render(e) for e in matches[offset : offset + limit]],
                "next_page_id": _next_page(offset, limit, len(matches)),
            }
        )

    async def count_events(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        query = QueryReader(request.query)
        if conv is None:
            # openhands-ai 1.11.0 counts 0 events for an unknown conversation (no 404).
            query.check()
            return json_response(0)
        return json_response(len(self._matches(query, conv)))

    async def get_events(self, request: web.Request) -> web.StreamResponse:
        from ._app import json_response

        conv = self._conversation(request)
        query = QueryReader(request.query)
        ids = query.required_list("id")
        query.check()
        if len(ids) > MAX_EVENT_IDS:
            raise BadRequest(f"Too many ids requested. Maximum is {MAX_EVENT_IDS}.")
        if conv is None:
            # openhands-ai 1.11.0: every event of an unknown conversation is missing (no 404).
            return json_response([None] * len(ids))
        by_id = {e["id"]: e for e in visible(conv, self.cloud._clock.now())}
        return json_response([self.render(by_id[i]) if i in by_id else None for i in ids])

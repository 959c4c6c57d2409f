"""Events: a plausible small event list per conversation (the routes are in _routes/events.py).

A conversation's events are made on first use from its timeline (the user's initial message
at READY, the agent's action when it starts running, "Done: <task>" at its outcome), kept in
`ConversationRecord.events` with the loop time each becomes visible (`_at`), and shown once
that time has passed (frozen while paused). `send-message` appends a new run.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from ._state import INF, ConversationRecord
from ._wire import Clock

# Spacing between events made at one moment, to keep their order. 10 us, not 1: a timestamp
# goes out in whole microseconds of the wall clock plus a loop time, a float sum good to
# ~0.25 us, so events 1 us apart came out with one timestamp about one time in eight (and a
# `since` one of them then replayed the other).
TICK = 1e-5


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


def message_event(source: str, role: str, text: str, parent: str | None) -> dict[str, Any]:
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


def _observation(action: dict[str, Any], step: int) -> dict[str, Any]:
    command = action["action"]["command"]
    return {
        "id": _id(),
        "source": "environment",
        "parent_id": None,
        "tool_name": "terminal",
        "tool_call_id": action["tool_call_id"],
        "observation": {
            "content": [{"cache_prompt": False, "type": "text", "text": f"total {step}\n"}],
            "is_error": False,
            "command": command,
            "exit_code": 0,
            "timeout": False,
            "metadata": {"exit_code": 0, "working_dir": "/workspace"},
            "full_output_save_dir": None,
            "kind": "TerminalObservation",
        },
        "action_id": action["id"],
        "extended_content": [],
        "kind": "ObservationEvent",
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
        user = message_event("user", "user", text, None)
        parent = user["id"]
        out.append(_at(message_at, user))
    if conv.running_at < INF:
        out.append(_at(conv.running_at, _state("execution_status", "running", parent)))
        steps = max(1, conv.task.plan.steps)
        spacing = (conv.outcome_at - conv.running_at) / (steps + 1)
        # A run that never ends still takes its steps, a second apart; and steps never
        # crowd so close that an observation would overtake the next action.
        spacing = max(spacing if math.isfinite(spacing) else 1.0, 3 * TICK)
        for step in range(steps):
            at = conv.running_at + TICK + step * spacing
            action = _action(text or "the task", parent)
            out.append(_at(at, action))
            out.append(_at(at + TICK, _observation(action, step)))
        end = conv.outcome_at
        if conv.outcome == "finished":
            reply = message_event("agent", "assistant", f"Done: {text or 'the task'}", parent)
            out.append(_at(end, reply))
        out.append(_at(end + TICK, _state("execution_status", conv.outcome, parent)))
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


def user_message_events(text: str, now: float) -> list[dict[str, Any]]:
    """Only the user's message (run=False, or the agent is already working)."""
    return [_at(now, message_event("user", "user", text, None))]


def wire_event(event: dict[str, Any], clock: Clock) -> dict[str, Any]:
    """The event as the V1 events endpoints write it."""
    body = without_time(event)
    # Event timestamps carry no offset on the wire (see the captures).
    stamped = {"id": body.pop("id"), "timestamp": clock.iso(event["_at"], zulu=False)}
    return {**stamped, **body}


def without_time(event: dict[str, Any]) -> dict[str, Any]:
    """The event minus its bookkeeping (`_at`, when it becomes visible)."""
    return {k: v for k, v in event.items() if k != "_at"}

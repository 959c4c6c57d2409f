"""Records as the server writes them: every field, in the captured order, as plain dicts."""

from __future__ import annotations

import re
from typing import Any

from ._events import message_text
from ._state import ConversationRecord, SandboxRecord, StartTaskRecord
from ._wire import Clock, loopback_url, uuid_hex

SANDBOX_SPEC_ID = "ghcr.io/openhands/agent-server:1.34.0-python"
DEFAULT_LLM_MODEL = "openai/fake"
_TOKENS_USED = {"prompt_tokens": 20, "completion_tokens": 10, "per_turn_token": 15}
_NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "per_turn_token": 0}


class Renderer:
    """Turns records into wire dicts at a given loop time.

    `base_url` is the FakeCloud's own address. Agent-server and conversation URLs point back at
    it on a second port, `agents_url` (under `/agent-server/<sandbox id>`), so nothing ever
    reaches beyond loopback: apart from the API's, as the open-source server's agent servers
    listen apart from its app server (captures: localhost:8100, 8101, ...). A client then
    keeps its API connections for the API: a WebSocket upgrade takes the connection it is
    opened on for good, so on one address each watch would use up an idle API connection.
    """

    def __init__(self, clock: Clock, base_url: str, agent_port: int) -> None:
        self.clock = clock
        self.base_url = base_url
        self.agents_url = loopback_url(agent_port)
        self.port = agent_port
        #: Where agent-server URLs point (`agents_url`, or a dead port: see `Context.render`).
        self.agent_base = self.agents_url

    def agent_server_url(self, sandbox_id: str) -> str:
        return f"{self.agent_base}/agent-server/{sandbox_id}"

    def task(self, task: StartTaskRecord, phase: int, *, zulu: bool = True) -> dict[str, Any]:
        """The task as of one phase (`task.phase(t)` for "now").

        `zulu=False` for reads from the database (batch get, search): the real server writes
        those timestamps without the Z.
        """
        plan = task.plan
        status = plan.statuses[phase]
        iso = self.clock.iso
        return {
            "id": task.id,
            "created_by_user_id": None,
            "status": status,
            "detail": plan.detail if status == "ERROR" else None,
            "app_conversation_id": task.conversation_id if phase >= plan.ready_phase else None,
            "sandbox_id": task.sandbox_id if phase >= plan.sandbox_phase else None,
            "agent_server_url": (
                self.agent_server_url(task.sandbox_id) if phase >= plan.server_phase else None
            ),
            "request": task.request,
            "created_at": iso(task.created, zulu=zulu),
            "updated_at": iso(task.updated(phase), zulu=zulu),
        }

    def conversation(self, conv: ConversationRecord, t: float) -> dict[str, Any] | None:
        view = conv.view(t)
        if view is None:
            return None
        sandbox_status, execution_status = view
        running = sandbox_status == "RUNNING"
        request = conv.task.request
        parent = request.get("parent_conversation_id")
        used = t >= conv.outcome_at and conv.outcome != "error"
        agent_url = self.agent_server_url(conv.task.sandbox_id)
        return {
            "id": conv.id,
            "created_by_user_id": None,
            "sandbox_id": conv.task.sandbox_id,
            "selected_repository": request.get("selected_repository"),
            "selected_branch": request.get("selected_branch"),
            "git_provider": request.get("git_provider"),
            "title": conversation_title(conv),
            "trigger": request.get("trigger"),
            "pr_number": request.get("pr_number") or [],
            "llm_model": request.get("llm_model") or DEFAULT_LLM_MODEL,
            "agent_kind": "openhands",
            "metrics": _metrics(_TOKENS_USED if used else _NO_TOKENS),
            "parent_conversation_id": uuid_hex(parent) if parent else None,
            "sub_conversation_ids": list(conv.sub_conversation_ids),
            "public": request.get("public"),
            "tags": {"archiveworkspacepath": "."},
            "created_at": self.clock.iso(conv.created),
            "updated_at": self.clock.iso(conv.updated(t)),
            "sandbox_status": sandbox_status,
            "execution_status": execution_status,
            "conversation_url": f"{agent_url}/api/conversations/{conv.id}" if running else None,
            "session_api_key": conv.session_api_key if running else None,
            "acp_server": None,
            "launched_agent_profile": None,
        }

    def sandbox(self, sandbox: SandboxRecord, t: float) -> dict[str, Any] | None:
        status = sandbox.status(t)
        if status is None:
            return None
        conv = sandbox.conversation if status == "RUNNING" else None
        url = self.agent_server_url(sandbox.id)
        return {
            "id": sandbox.id,
            "created_by_user_id": None,
            "sandbox_spec_id": SANDBOX_SPEC_ID,
            "status": status,
            "session_api_key": conv.session_api_key if conv else None,
            "exposed_urls": (
                [{"name": "AGENT_SERVER", "url": url, "port": self.port}] if conv else None
            ),
            "created_at": self.clock.iso(sandbox.task.sandbox_from),
        }


def conversation_title(conv: ConversationRecord) -> str:
    """The title given at the start; else, as OpenHands Cloud names a conversation after its
    first message, that message's first line (markers removed, cut to `_TITLE_WIDTH`); with
    no text at all, after the id ("Conversation 2bd44"), as a server without an LLM for
    titles does."""
    title = conv.task.request.get("title")
    if isinstance(title, str) and title:
        return title
    text = _MARKER.sub("", message_text(conv.task.request) or "")
    first = " ".join(next((line for line in text.splitlines() if line.strip()), "").split())
    if not first:
        return f"Conversation {conv.id[:5]}"
    return first if len(first) <= _TITLE_WIDTH else first[: _TITLE_WIDTH - 3].rstrip() + "..."


_TITLE_WIDTH = 50
_MARKER = re.compile(r"\[fake:[^\]]*\]")


def _metrics(tokens: dict[str, int]) -> dict[str, Any]:
    return {
        "model_name": "default",
        "accumulated_cost": 0.0,
        "max_budget_per_task": None,
        "accumulated_token_usage": {
            "model": "",
            "prompt_tokens": tokens["prompt_tokens"],
            "completion_tokens": tokens["completion_tokens"],
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "context_window": 0,
            "per_turn_token": tokens["per_turn_token"],
            "response_id": "",
        },
    }

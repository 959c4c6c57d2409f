"""Typed models of what the API sends and takes. Frozen, slotted attrs classes.

Structuring and unstructuring live in `_converter.py`; nothing here knows JSON. Every model
but `Page` has `to_dict()`, `to_json()` and `from_dict()`, which `_converter.py` serves
(it installs itself with `_install_codec`: the converter imports the models, never the
other way round).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs

from ._model_base import _Model, _OpenStrEnum

__all__ = [
    "Conversation",
    "Event",
    "ExecutionStatus",
    "ExposedUrl",
    "ImageContent",
    "Message",
    "MessageInput",
    "Page",
    "Sandbox",
    "SandboxStatus",
    "SendMessageResult",
    "StartRequest",
    "StartTask",
    "StartTaskStatus",
    "TextContent",
    "User",
]

T = TypeVar("T")


class StartTaskStatus(_OpenStrEnum):
    """Where a start is (`StartTask.status`): WORKING ... READY, or ERROR."""

    WORKING = "WORKING"
    WAITING_FOR_SANDBOX = "WAITING_FOR_SANDBOX"
    PREPARING_REPOSITORY = "PREPARING_REPOSITORY"
    RUNNING_SETUP_SCRIPT = "RUNNING_SETUP_SCRIPT"
    SETTING_UP_GIT_HOOKS = "SETTING_UP_GIT_HOOKS"
    SETTING_UP_SKILLS = "SETTING_UP_SKILLS"
    STARTING_CONVERSATION = "STARTING_CONVERSATION"
    READY = "READY"
    ERROR = "ERROR"

    @property
    def is_terminal(self) -> bool:
        """READY or ERROR: the start will not change again."""
        return self in (StartTaskStatus.READY, StartTaskStatus.ERROR)


class SandboxStatus(_OpenStrEnum):
    """A sandbox's state: PAUSED has no agent server (resume it); MISSING: deleted or gone."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    ERROR = "ERROR"
    MISSING = "MISSING"


class ExecutionStatus(_OpenStrEnum):
    """What the agent is doing (`Conversation.execution_status`, state-update events)."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_FOR_CONFIRMATION = "waiting_for_confirmation"
    FINISHED = "finished"
    ERROR = "error"
    STUCK = "stuck"
    DELETING = "deleting"


@attrs.frozen
class TextContent(_Model):
    """A text block of a `Message`: `Message([TextContent("Fix it")])`."""

    text: str
    cache_prompt: bool = False
    type: str = "text"


@attrs.frozen
class ImageContent(_Model):
    """Image URLs as a block of a `Message`."""

    image_urls: list[str]
    cache_prompt: bool = False
    type: str = "image"


Content = TextContent | ImageContent


@attrs.frozen
class Message(_Model):
    """A user message (the spec's SendMessageRequest)."""

    content: list[Content] = attrs.field(factory=list)  # the spec requires none: []
    role: str = "user"
    run: bool = False

    @property
    def text(self) -> str:
        """The text blocks joined by newlines."""
        return "\n".join(c.text for c in self.content if isinstance(c, TextContent))


#: What `start`, `stream_start` and `send_message` take as the message: text, a list of
#: text/image content (str items are text), a `Message`, or None (no initial message).
MessageInput = str | Message | Sequence[str | TextContent | ImageContent] | None
"""What `start`, `send_message` and `ask` take as a message: text, blocks, or a `Message`."""


def _redact(value: dict[str, str] | None) -> str:
    return "None" if value is None else "{" + ", ".join(f"{k!r}: '***'" for k in value) + "}"


@attrs.frozen
class StartRequest(_Model):
    """Body of a start request (the spec's AppConversationStartRequest).

    Fields left at their default are not sent. `secrets` never appear in a repr.
    """

    sandbox_id: str | None = None
    conversation_id: str | None = None
    initial_message: Message | None = None
    system_message_suffix: str | None = None
    processors: list[dict[str, Any]] | None = None
    llm_model: str | None = None
    agent_profile_id: str | None = None
    selected_repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    suggested_task: dict[str, Any] | None = None
    title: str | None = None
    trigger: str | None = None
    pr_number: list[int] = attrs.field(factory=list)
    parent_conversation_id: str | None = None
    agent_type: str = "default"
    public: bool | None = None
    observability_metadata: dict[str, Any] | None = None
    observability_tags: list[str] | None = None
    observability_span_name: str | None = None
    plugins: list[dict[str, Any]] | None = None
    secrets: dict[str, str] | None = attrs.field(default=None, repr=_redact)


@attrs.frozen
class StartTask(_Model):
    """A conversation's start-up (AppConversationStartTask). READY or ERROR are terminal."""

    id: str
    status: StartTaskStatus = StartTaskStatus.WORKING
    created_by_user_id: str | None = None
    detail: str | None = None
    app_conversation_id: str | None = None
    sandbox_id: str | None = None
    agent_server_url: str | None = None
    request: StartRequest | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """READY or ERROR: the start is over (`app_conversation_id` is set once READY)."""
        return self.status.is_terminal


@attrs.frozen
class Conversation(_Model):
    """An app conversation. `execution_status` is None unless the sandbox is RUNNING."""

    id: str
    sandbox_id: str | None = None
    created_by_user_id: str | None = None
    selected_repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    title: str | None = None
    trigger: str | None = None
    pr_number: list[int] = attrs.field(factory=list)
    llm_model: str | None = None
    agent_kind: str | None = None
    metrics: dict[str, Any] | None = None
    parent_conversation_id: str | None = None
    sub_conversation_ids: list[str] = attrs.field(factory=list)
    public: bool | None = None
    tags: dict[str, str] = attrs.field(factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sandbox_status: SandboxStatus = SandboxStatus.MISSING
    execution_status: ExecutionStatus | None = None
    conversation_url: str | None = None
    session_api_key: str | None = attrs.field(default=None, repr=False)
    acp_server: str | None = None
    launched_agent_profile: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """Done for a poller: nothing more will happen by itself (sandbox ERROR or MISSING;
        execution finished, error, stuck, or waiting for a human's confirmation)."""
        if self.sandbox_status in (SandboxStatus.ERROR, SandboxStatus.MISSING):
            return True
        return self.execution_status in _TERMINAL_EXECUTION


_TERMINAL_EXECUTION = frozenset(
    {
        ExecutionStatus.FINISHED,
        ExecutionStatus.ERROR,
        ExecutionStatus.STUCK,
        ExecutionStatus.WAITING_FOR_CONFIRMATION,
    }
)


@attrs.frozen
class ExposedUrl(_Model):
    """A URL a sandbox exposes (the agent server, a VS Code, an app port)."""

    name: str
    url: str
    port: int | None = None


@attrs.frozen
class Sandbox(_Model):
    """A sandbox (`client.sandboxes`): the machine a conversation's agent runs in."""

    id: str
    status: SandboxStatus = SandboxStatus.MISSING
    created_by_user_id: str | None = None
    sandbox_spec_id: str | None = None
    session_api_key: str | None = attrs.field(default=None, repr=False)
    exposed_urls: list[ExposedUrl] | None = None
    created_at: datetime | None = None
    status_detail: str | None = None


@attrs.frozen
class Page(Generic[T]):
    """One page of a search. `next_page_id` is the cursor of the next page, None at the end."""

    items: list[T]
    next_page_id: str | None = None


@attrs.frozen
class SendMessageResult(_Model):
    """The answer to `send_message` (AppSendMessageResponse)."""

    success: bool = True
    sandbox_status: SandboxStatus | None = None
    message: str | None = None


@attrs.frozen
class Event(_Model):
    """One conversation event. `payload` keeps the full raw object the server sent.

    Events have many kinds (MessageEvent, ActionEvent, ObservationEvent, ...); only the
    common fields are typed. `role`/`text` read a message; `command`, `path`, `output`,
    `execution_status` an action, observation or state update (None where absent).
    """

    id: str
    kind: str
    timestamp: datetime
    source: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def role(self) -> str | None:
        """A message event's role ("user", "assistant"), else None."""
        message = self.payload.get("llm_message")
        role = message.get("role") if isinstance(message, dict) else None
        return role if isinstance(role, str) else None

    @property
    def text(self) -> str | None:
        """A MessageEvent's text blocks joined by newlines, or the message of an agent's
        FinishAction (how the real server records a final answer); None for other events."""
        action = self.payload.get("action")
        if isinstance(action, dict) and action.get("kind") == "FinishAction":
            finish = action.get("message")
            return finish if isinstance(finish, str) else None
        message = self.payload.get("llm_message")
        return text_blocks(message.get("content")) if isinstance(message, dict) else None

    @property
    def action(self) -> dict[str, Any] | None:
        """An ActionEvent's action object (its `kind` says which: TerminalAction, ...)."""
        return _object(self.payload.get("action"))

    @property
    def observation(self) -> dict[str, Any] | None:
        """An ObservationEvent's observation object, else None."""
        return _object(self.payload.get("observation"))

    def _field(self, name: str) -> str | None:
        found = [p[name] for p in (self.action, self.observation) if p and name in p]
        return next((str(v) for v in found if isinstance(v, str)), None)

    @property
    def command(self) -> str | None:
        """An action's command, or that of the action an observation answers."""
        return self._field("command")

    @property
    def path(self) -> str | None:
        """The file an action or observation is about, else None."""
        return self._field("path")

    @property
    def output(self) -> str | None:
        """An observation's text (its content joined), or an agent error's message."""
        observation = self.observation
        if observation is None:
            error = self.payload.get("error")
            return error if isinstance(error, str) else None
        content = observation.get("content")
        if isinstance(content, list):
            texts = (b.get("text") for b in content if isinstance(b, dict))
            return "".join(t for t in texts if isinstance(t, str))
        output = observation.get("output", content)
        return output if isinstance(output, str) else None

    @property
    def is_snapshot(self) -> bool:
        """A full-state snapshot (the agent server sends one, a new id, on connect)."""
        return self.kind == "ConversationStateUpdateEvent" and self.payload.get("key") == _FULL

    @property
    def execution_status(self) -> ExecutionStatus | None:
        """The execution status a state update sets (or a snapshot reports), else None."""
        if self.kind != "ConversationStateUpdateEvent":
            return None
        key, value = self.payload.get("key"), self.payload.get("value")
        if key == _FULL and isinstance(value, dict):
            value = value.get("execution_status")
        elif key != "execution_status":
            return None
        return ExecutionStatus(value) if isinstance(value, str) else None

    @property
    def is_terminal(self) -> bool:
        """A state update putting the agent in a terminal status (see `Conversation`)."""
        return self.execution_status in _TERMINAL_EXECUTION


_FULL = "full_state"  # a state update's key for a whole-state snapshot


def text_blocks(value: object) -> str | None:
    """Text content as the server writes it (a string, or `[{"type": "text", "text": ...}]`
    blocks, joined by newlines); None for anything else."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    return "\n".join(
        block["text"]
        for block in value
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    )


def _object(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


@attrs.frozen
class User(_Model):
    """The signed-in user (`/api/v1/users/me`, SaasUserInfo). `payload` keeps every field."""

    id: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    org_id: str | None = None
    org_name: str | None = None
    role: str | None = None
    language: str | None = None
    git_user_name: str | None = None
    git_user_email: str | None = None
    v1_enabled: bool | None = None
    max_budget_per_task: float | None = None
    permissions: list[str] | None = None
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

"""Building a start request from the arguments users pass (shared by start and stream_start)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ._inputs import normalize_repository, normalize_uuid
from .models import ImageContent, Message, MessageInput, StartRequest, TextContent

__all__ = ["MessageInput", "make_message", "make_start_request"]


def make_message(message: MessageInput, *, run: bool) -> Message | None:
    """A str, a list of text/image content, or a Message -> Message. Empty text is refused."""
    if message is None:
        return None
    if isinstance(message, Message):
        content: Sequence[Any] = message.content
    elif isinstance(message, str):
        content = [message]
    elif isinstance(message, Sequence):
        content = message
    else:
        raise TypeError(
            f"message must be a str, a list of TextContent/ImageContent, or a Message, "
            f"not {type(message).__name__}"
        )
    parts: list[TextContent | ImageContent] = []
    for item in content:
        if isinstance(item, str):
            item = TextContent(item)
        if isinstance(item, TextContent):
            if not item.text.strip():
                raise ValueError("message must not be empty")
        elif isinstance(item, ImageContent):
            if not item.image_urls:
                raise ValueError("message: ImageContent needs at least one image URL")
        else:
            raise TypeError(
                f"message content must be str, TextContent or ImageContent, not {item!r}"
            )
        parts.append(item)
    if not parts:
        raise ValueError("message must not be empty")
    role = message.role if isinstance(message, Message) else "user"
    return Message(content=parts, role=role, run=run)


def make_start_request(
    message: MessageInput,
    *,
    repository: str | None = None,
    branch: str | None = None,
    llm_model: str | None = None,
    title: str | None = None,
    run: bool = True,
    conversation_id: str | None = None,
    git_provider: str | None = None,
    sandbox_id: str | None = None,
    system_message_suffix: str | None = None,
    agent_profile_id: str | None = None,
    agent_type: str = "default",
    public: bool | None = None,
    trigger: str | None = None,
    pr_number: Sequence[int] = (),
    parent_conversation_id: str | None = None,
    suggested_task: Mapping[str, Any] | None = None,
    processors: Sequence[Mapping[str, Any]] | None = None,
    plugins: Sequence[Mapping[str, Any]] | None = None,
    secrets: Mapping[str, str] | None = None,
    observability_metadata: Mapping[str, Any] | None = None,
    observability_tags: Sequence[str] | None = None,
    observability_span_name: str | None = None,
) -> StartRequest:
    """A start request with a client-chosen conversation id (minted here unless given).

    The id is what makes a start safely retryable: after a lost response the SDK can
    look for it on the server before deciding to send again.
    """
    if secrets is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
    ):
        raise TypeError("secrets must map str names to str values")
    if any(isinstance(n, bool) or not isinstance(n, int) for n in pr_number):
        raise TypeError("pr_number must be a list of ints")
    return StartRequest(
        conversation_id=normalize_uuid(conversation_id, "conversation_id")
        if conversation_id is not None
        else uuid.uuid4().hex,
        initial_message=make_message(message, run=run),
        selected_repository=normalize_repository(repository) if repository is not None else None,
        selected_branch=_opt_str(branch, "branch"),
        llm_model=_opt_str(llm_model, "llm_model"),
        title=title,
        git_provider=git_provider,
        sandbox_id=_opt_str(sandbox_id, "sandbox_id"),
        system_message_suffix=system_message_suffix,
        agent_profile_id=agent_profile_id,
        agent_type=agent_type,
        public=public,
        trigger=trigger,
        pr_number=list(pr_number),
        parent_conversation_id=normalize_uuid(parent_conversation_id, "parent_conversation_id")
        if parent_conversation_id is not None
        else None,
        suggested_task=dict(suggested_task) if suggested_task is not None else None,
        processors=[dict(p) for p in processors] if processors is not None else None,
        plugins=[dict(p) for p in plugins] if plugins is not None else None,
        secrets=dict(secrets) if secrets is not None else None,
        observability_metadata=dict(observability_metadata)
        if observability_metadata is not None
        else None,
        observability_tags=list(observability_tags) if observability_tags is not None else None,
        observability_span_name=observability_span_name,
    )


def _opt_str(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()

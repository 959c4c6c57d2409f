"""Small conveniences built on the resources: `wait_until_ready`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .._start_request import MessageInput
from ..errors import ResponseValidationError, StreamError
from ..models import StartTaskStatus

if TYPE_CHECKING:
    from .conversations import Conversations

__all__ = ["wait_until_ready"]


class _HasConversations(Protocol):
    @property
    def conversations(self) -> Conversations: ...


async def wait_until_ready(client: _HasConversations, message: MessageInput, **options: Any) -> str:
    """Start a conversation, follow its stream until READY, and return its conversation id.

    Raises `StartTaskFailed` if the start ends in ERROR; `options` are those of
    `client.conversations.stream_start` (except `raise_on_error`, always on here).

        cid = await wait_until_ready(client, "Fix the README", repository="owner/repo")
        reply = await client.conversations.ask(cid, "Now add tests")
    """
    options.pop("raise_on_error", None)
    async with client.conversations.stream_start(message, **options) as stream:
        async for task in stream:
            if task.status is StartTaskStatus.READY:
                if not task.app_conversation_id:
                    raise ResponseValidationError(
                        f"start task {task.id} is READY without an app_conversation_id",
                        body=None,
                    )
                return task.app_conversation_id
    raise StreamError(
        f"the start of conversation {stream.conversation_id} ended without READY "
        f"(last status {stream.task.status if stream.task else None})"
    )

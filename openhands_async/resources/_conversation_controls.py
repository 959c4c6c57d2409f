"""What `Conversations` offers beyond start/read/message: queueing a message before the
conversation is ready, switching a running conversation's LLM, and reading the skills and
hooks it loaded. A mixin, so conversations.py stays one screenful of its own."""

from __future__ import annotations

import uuid

from .._converter import unstructure
from .._inputs import normalize_uuid
from .._retry import Idempotency
from .._start_request import MessageInput, make_message
from ..models import StartTask
from ..models_catalog import (
    ConversationSkill,
    HookEvent,
    HooksAnswer,
    PendingMessage,
    SkillsAnswer,
    Success,
)
from ._base import Resource
from .settings import profile_name

_APP = "/api/v1/app-conversations"
_PENDING = "/api/v1/conversations/{}/pending-messages"
# A start task's id as the pending-message queue names it until the task is READY (the
# real server moves `task-<hex>` messages to the conversation then, and delivers them).
_TASK_PREFIX = "task-"


def pending_target(target: StartTask | str | uuid.UUID, *, conversation: bool) -> str:
    """The queue's name for a start task (`task-<32 hex>`) or, with `conversation=True`, for
    a conversation (its dashed UUID, as the server keys delivered messages)."""
    if isinstance(target, StartTask):
        return _TASK_PREFIX + normalize_uuid(target.id, "start_task_id")
    if isinstance(target, str) and target.startswith(_TASK_PREFIX):
        return _TASK_PREFIX + normalize_uuid(target[len(_TASK_PREFIX) :], "start_task_id")
    if conversation:
        return str(uuid.UUID(normalize_uuid(target, "conversation_id")))
    return _TASK_PREFIX + normalize_uuid(target, "start_task_id")


class ConversationControls(Resource):
    """What `client.conversations` adds for a conversation in progress: queue a message
    before it is ready, switch its LLM, read its skills and hooks.
    """

    async def queue_message(
        self,
        start_task: StartTask | str | uuid.UUID,
        message: MessageInput,
        *,
        conversation: bool = False,
    ) -> PendingMessage:
        """Queue a user message for a conversation that is still starting: the server
        delivers it (the agent runs on it) when the start task reaches READY, after the
        initial message. `start_task` is the `StartTask` or its id (what `start` returns).

        Queue before READY: the server delivers queued messages once, at READY; for a
        conversation that is already running use `send_message`. `conversation=True`
        names a conversation id instead of a start task (for servers that deliver to
        running conversations). At most 10 messages wait per conversation (429 beyond).
        Not retried once it may have reached the server (it would queue twice).
        """
        target = pending_target(start_task, conversation=conversation)
        built = make_message(message, run=True)
        if built is None:
            raise ValueError("queue_message needs a message")
        body = {"role": "user", "content": unstructure(built.content)}
        return await self._post(
            _PENDING.format(target),
            cast_to=PendingMessage,
            json=body,
            idempotency=Idempotency.UNSENT_ONLY,
        )

    async def switch_profile(self, conversation_id: str, profile: str) -> bool:
        """Switch a running conversation's LLM to a saved profile (`settings.profiles`).

        NotFoundError: no such conversation, sandbox or profile; ConflictError: the
        sandbox is not running (resume it first); InternalServerError (502): the agent
        server refused.
        """
        cid = normalize_uuid(conversation_id, "conversation_id")
        body = {"profile_name": _profile(profile)}
        path = f"{_APP}/{cid}/switch_profile"
        return (await self._post(path, cast_to=Success, json=body)).success

    async def switch_acp_model(self, conversation_id: str, model: str) -> bool:
        """Switch a running ACP conversation's model in place.

        BadRequestError: the agent is not ACP or its provider cannot switch; NotFoundError;
        ConflictError: the sandbox is paused; 502/504 from the agent server.
        """
        cid = normalize_uuid(conversation_id, "conversation_id")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty str, got {model!r}")
        path = f"{_APP}/{cid}/switch_acp_model"
        return (await self._post(path, cast_to=Success, json={"model": model})).success

    async def skills(self, conversation_id: str) -> list[ConversationSkill]:
        """The skills the conversation loaded (empty while its sandbox is not running)."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return (await self._get(f"{_APP}/{cid}/skills", cast_to=SkillsAnswer)).skills

    async def hooks(self, conversation_id: str) -> list[HookEvent]:
        """The hooks the conversation runs, by event type (empty while not running)."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return (await self._get(f"{_APP}/{cid}/hooks", cast_to=HooksAnswer)).hooks


def _profile(name: str) -> str:
    profile_name(name)
    return name

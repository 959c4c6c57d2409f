"""App conversations: start (safely), read, search, count, message, update, delete."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import IO, Any, TypeVar

from .._base_client import BaseClient
from .._constants import MAX_PAGE_SIZE, START_LOOKUP_SKEW
from .._converter import unstructure
from .._inputs import normalize_uuid
from .._retry import Idempotency
from .._safe_start import SafeStart
from .._start_request import MessageInput, make_message, make_start_request
from ..errors import APIStatusError, ConflictError, GoneError
from ..models import Conversation, SendMessageResult, StartRequest, StartTask
from ..pagination import AsyncPager
from ._base import Resource
from ._conversation_controls import ConversationControls
from .start_tasks import StartTasks


class _Unset:
    """The default of `update`'s fields: not sent (None is sent as an explicit null)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

E = TypeVar("E", bound=APIStatusError)

log = logging.getLogger("openhands_async")

_PATH = "/api/v1/app-conversations"


class Conversations(ConversationControls, Resource):
    """App conversations: start them, read them, search them (and, from
    `ConversationControls`, queue messages, switch profiles, read skills and hooks)."""

    def __init__(self, client: BaseClient, start_tasks: StartTasks | None = None) -> None:
        super().__init__(client)
        self._start_tasks = start_tasks if start_tasks is not None else StartTasks(client)

    async def start(self, message: MessageInput, **options: Any) -> StartTask:
        """Start a conversation and return its start task (usually still WORKING).

        `message` is a str, a list of `TextContent`/`ImageContent`, a `Message`, or None.
        `options` are the start request's fields: `repository` (`owner/repo` or a URL),
        `branch`, `llm_model`, `title`, `run` (default True), `conversation_id`, and the
        rest of the spec's fields (see `make_start_request`).

        Safe to retry: the request carries a client-chosen `conversation_id`. If the answer
        is lost (timeout, dropped connection, 5xx), the SDK looks for the task on the
        server and sends again only when the server has no trace of it; if it cannot find
        out, it raises `StartUnconfirmedError` instead of risking a second agent.
        """
        request = make_start_request(message, **options)
        return await self.send_start(request)

    def safe_start(self, request: StartRequest) -> SafeStart:
        """The safe-start bookkeeping of one send of `request` (see `_safe_start`)."""
        if request.conversation_id is None:
            raise ValueError("request.conversation_id must be set (make_start_request mints one)")
        cid = normalize_uuid(request.conversation_id, "conversation_id")
        return SafeStart(
            cid,
            self._find_since,
            url=self._client.url(_PATH),
            retry_delay=self._client.retry_policy.initial_delay,
        )

    async def send_start(self, request: StartRequest) -> StartTask:
        """Send a prepared `StartRequest` (see `start`), with the same no-duplicate rule."""
        safe = self.safe_start(request)
        body = unstructure(request)

        async def send() -> StartTask:
            return await self._post(
                _PATH, cast_to=StartTask, json=body, idempotency=Idempotency.UNSENT_ONLY
            )

        return await safe.send(send, max_resends=self._client.retry_policy.max_retries)

    async def _find_since(self, conversation_id: str, created_after: datetime) -> StartTask | None:
        return await self.find_start(conversation_id, created_after=created_after)

    async def find_start(
        self, conversation_id: str, *, created_after: datetime | None = None
    ) -> StartTask | None:
        """The start task that was sent with `conversation_id`, or None if the server has none.

        Looks at tasks created since `created_after` (less a clock-skew margin; default the
        last 24 hours) and matches the id each task's request carried, so a task still
        starting is found too (the server's own conversation-id filter sees only READY ones).
        """
        cid = normalize_uuid(conversation_id, "conversation_id")
        since = (created_after or datetime.now(timezone.utc) - timedelta(days=1)) - timedelta(
            seconds=START_LOOKUP_SKEW
        )
        # Oldest first: if the id was ever sent twice, the original is the one to report.
        async for task in self._start_tasks.search(created_after=since, order="CREATED_AT"):
            sent_id = task.request.conversation_id if task.request else None
            if task.app_conversation_id == cid or (sent_id and _same_uuid(sent_id, cid)):
                return task
        async for task in self._start_tasks.search(conversation_id=cid, limit=1):
            return task
        return None

    async def get_many(self, ids: Iterable[str]) -> list[Conversation | None]:
        """Read any number of conversations; the list keeps input order, None where missing."""
        return await self._get_many(_PATH, list(ids), Conversation)

    async def get(self, conversation_id: str) -> Conversation:
        """Read one conversation (through the batch route: the single-id path is not an API
        route on the Cloud). NotFoundError if the server does not have it."""
        return await self._get_one(_PATH, conversation_id, Conversation, what="conversation")

    async def read_raw(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """One batch read of at most 99 normalized ids, as decoded JSON (for the poller,
        which structures only what changed: see `parse_raw`)."""
        return await self._read_raw(_PATH, ids)

    def parse_raw(self, raw: Any) -> Conversation:
        """A `Conversation` from an object `read_raw` returned."""
        return self._parse(_PATH, raw, Conversation)

    def search(
        self,
        *,
        title_contains: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sandbox_id: str | None = None,
        include_sub_conversations: bool = False,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> AsyncPager[Conversation]:
        """All matching conversations, newest first, across pages (`limit` caps the total)."""
        filters = _filters(
            title_contains, created_after, created_before, updated_after, updated_before, sandbox_id
        )
        filters["include_sub_conversations"] = include_sub_conversations or None
        return self._search(
            f"{_PATH}/search", Conversation, filters, limit=limit, page_size=page_size
        )

    async def count(
        self,
        *,
        title_contains: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sandbox_id: str | None = None,
    ) -> int:
        """How many conversations match these filters (those of `search`):
        `await client.conversations.count(title_contains="README")`."""
        filters = _filters(
            title_contains, created_after, created_before, updated_after, updated_before, sandbox_id
        )
        return await self._count(f"{_PATH}/count", filters)

    # -- one conversation -------------------------------------------------------------

    async def send_message(
        self, conversation_id: str, message: MessageInput, *, run: bool = True
    ) -> SendMessageResult:
        """Send a follow-up user message; with `run=True` the agent works on it.

        `message` is text, a `Message`, or content blocks. Not retried once it may have
        reached the server (a repeat would send the message twice).

        Raises:
            NotFoundError: 404, no such conversation (or its sandbox is unknown).
            ConflictError: 409, the sandbox is not running (e.g. PAUSED); resume it with
                `client.sandboxes.resume(sandbox_id)` and send again.
            GoneError: 410, the conversation is archived (its sandbox no longer exists).
            ServiceUnavailableError: 503, the sandbox is in error or its agent server is
                unavailable.
        """
        cid = normalize_uuid(conversation_id, "conversation_id")
        path = f"{_PATH}/{cid}/send-message"
        built = make_message(message, run=run)
        if built is None:
            raise ValueError("send_message needs a message")
        body = {"role": "user", "content": unstructure(built.content), "run": run}
        try:
            return await self._post(
                path, cast_to=SendMessageResult, json=body, idempotency=Idempotency.UNSENT_ONLY
            )
        except ConflictError as exc:
            raise _reworded(
                exc,
                f"the sandbox of conversation {cid} is not running; resume it with "
                f"`await client.sandboxes.resume(sandbox_id)` (the conversation's sandbox_id) "
                f"and send again (server: {exc.message})",
            ) from exc
        except GoneError as exc:
            raise _reworded(
                exc,
                f"conversation {cid} is archived: its sandbox no longer exists "
                f"(server: {exc.message})",
            ) from exc

    async def update(
        self,
        conversation_id: str,
        *,
        title: str | None = UNSET,
        public: bool | None = UNSET,
        selected_repository: str | None = UNSET,
        selected_branch: str | None = UNSET,
        git_provider: str | None = UNSET,
    ) -> Conversation:
        """Change a conversation's metadata; only the fields given are sent (None included,
        as an explicit null). Returns the updated conversation."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        fields = {
            "title": title,
            "public": public,
            "selected_repository": selected_repository,
            "selected_branch": selected_branch,
            "git_provider": git_provider,
        }
        body = {k: v for k, v in fields.items() if v is not UNSET}
        if not body:
            raise TypeError("update() needs at least one field to change")
        return await self._patch(f"{_PATH}/{cid}", cast_to=Conversation, json=body)

    async def delete(self, conversation_id: str) -> None:
        """Delete a conversation (and its sandbox). NotFoundError if unknown."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        await self._delete(f"{_PATH}/{cid}")

    async def download(self, conversation_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """Stream the conversation's archive (a zip) to a path or a binary file object,
        chunk by chunk. Returns the number of bytes written."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return await self._client.download(f"{_PATH}/{cid}/download", dest)

    async def git_changes(
        self, conversation_id: str, path: str = ".", *, ref: str | None = None
    ) -> Any:
        """The workspace's git changes under `path` (as the server reports them)."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return await self._get(f"{_PATH}/{cid}/git/changes", params={"path": path, "ref": ref})

    async def git_diff(
        self, conversation_id: str, path: str, *, ref: str | None = None
    ) -> dict[str, Any]:
        """The git diff of one file: `{"original": ..., "modified": ...}`."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return await self._get(
            f"{_PATH}/{cid}/git/diff", cast_to=dict[str, Any], params={"path": path, "ref": ref}
        )

    async def read_file(self, conversation_id: str, file_path: str) -> str:
        """The text of a file in the conversation's workspace; "" if it (or the conversation)
        does not exist, as the server answers that way rather than with a 404."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        return await self._get(f"{_PATH}/{cid}/file", cast_to=str, params={"file_path": file_path})


def _filters(
    title_contains: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    updated_after: datetime | None,
    updated_before: datetime | None,
    sandbox_id: str | None,
) -> dict[str, Any]:
    return {
        "title__contains": title_contains,
        "created_at__gte": created_after,
        "created_at__lt": created_before,
        "updated_at__gte": updated_after,
        "updated_at__lt": updated_before,
        "sandbox_id__eq": sandbox_id,
    }


def _reworded(exc: E, message: str) -> E:
    """The same status error with a message that tells the user what to do."""
    return type(exc)(
        message,
        status=exc.status,
        body=exc.body,
        headers=exc.headers,
        method=exc.request_method,
        url=exc.request_url,
    )


def _same_uuid(value: str, normalized: str) -> bool:
    try:
        return normalize_uuid(value) == normalized
    except ValueError:
        return False

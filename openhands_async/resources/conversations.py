from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import IO, Any, TypeVar

from .._constants import MAX_PAGE_SIZE, START_LOOKUP_SKEW
from .._converter import structure, unstructure
from .._retry import Idempotency
from .._sansio import normalize_uuid
from .._start_request import MessageInput, make_message, make_start_request
from ..errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ConflictError,
    GoneError,
    InternalServerError,
    NotFoundError,
    StartUnconfirmedError,
)
from ..models import Conversation, SendMessageResult, StartRequest, StartTask
from ..pagination import AsyncPager
from ..streaming import DEFAULT_POLL_INTERVAL, StartTaskStream
from ._base import Resource


class _Unset:
    """The default of `update`'s fields: not sent (None is sent as an explicit null)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

E = TypeVar("E", bound=APIStatusError)

log = logging.getLogger("openhands_async")

_PATH = "/api/v1/app-conversations"
# How many times to look for a start whose response was lost before sending it again:
# the server records the task as soon as it takes the request, but give it a moment.
_LOOKUPS_BEFORE_RESEND = 3


class Conversations(Resource):
    """App conversations: start them, read them, search them."""

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

    def stream_start(
        self,
        message: MessageInput,
        *,
        raise_on_error: bool = True,
        recover: bool = True,
        idle_timeout: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **options: Any,
    ) -> StartTaskStream:
        """Start a conversation and follow its start task live (`POST .../stream-start`).

        Use as `async for task in client.conversations.stream_start(...)` or inside
        `async with ... as stream`. Each `StartTask` snapshot is yielded as soon as the
        server writes it. `options` are those of `start`.

        - `raise_on_error`: after yielding a final ERROR task, raise `StartTaskFailed`.
        - `recover`: if the stream breaks or stays silent for `idle_timeout` seconds (default
          `Timeouts.stream_idle`), carry on by polling the task every `poll_interval`
          seconds (looking it up by conversation id first if no element had arrived). The
          start is never sent twice. With `recover=False` the break is raised
          (`StreamError`, `APIConnectionError`/`APITimeoutError`).
        """
        request = make_start_request(message, **options)
        return StartTaskStream(
            self._client,
            request,
            raise_on_error=raise_on_error,
            recover=recover,
            idle_timeout=idle_timeout,
            poll_interval=poll_interval,
        )

    async def send_start(self, request: StartRequest) -> StartTask:
        """Send a prepared `StartRequest` (see `start`), with the same no-duplicate rule."""
        if request.conversation_id is None:
            raise ValueError("request.conversation_id must be set (make_start_request mints one)")
        cid = normalize_uuid(request.conversation_id, "conversation_id")
        url = self._client.url(_PATH)
        body = unstructure(request)
        sent_after = datetime.now(timezone.utc)
        policy = self._client.retry_policy
        resends = 0
        while True:
            try:
                data = await self._client.request(
                    "POST", _PATH, json=body, idempotency=Idempotency.UNSENT_ONLY
                )
            except (APIConnectionError, InternalServerError) as exc:
                if isinstance(exc, APIConnectionError) and not exc.may_have_been_sent:
                    raise
                task = await self._look_for_lost_start(cid, sent_after, exc)
                if task is not None:
                    return task
                if resends >= policy.max_retries:
                    raise
                resends += 1
                log.info("start %s left no trace on the server; sending it again", cid)
                continue
            return structure(data, StartTask, method="POST", url=url)

    async def _look_for_lost_start(
        self, conversation_id: str, sent_after: datetime, cause: APIError
    ) -> StartTask | None:
        delay = self._client.retry_policy.initial_delay
        for look in range(_LOOKUPS_BEFORE_RESEND):
            if look:
                await asyncio.sleep(delay * 2 ** (look - 1))
            try:
                task = await self.find_start(conversation_id, created_after=sent_after)
            except APIError as exc:
                raise StartUnconfirmedError(
                    f"the start of conversation {conversation_id} may have reached the server "
                    f"({cause}), and looking for it failed ({exc}); it was not sent again",
                    method="POST",
                    url=self._client.url(_PATH),
                    conversation_id=conversation_id,
                ) from exc
            if task is not None:
                log.info("found start of %s after a lost answer: task %s", conversation_id, task.id)
                return task
        return None

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
        async for task in self._client.start_tasks.search(created_after=since, order="CREATED_AT"):
            sent_id = task.request.conversation_id if task.request else None
            if task.app_conversation_id == cid or (sent_id and _same_uuid(sent_id, cid)):
                return task
        async for task in self._client.start_tasks.search(conversation_id=cid, limit=1):
            return task
        return None

    async def get_many(self, ids: Iterable[str]) -> list[Conversation | None]:
        """Read any number of conversations; the list keeps input order, None where missing."""
        return await self._get_many(_PATH, list(ids), Conversation)

    async def get(self, conversation_id: str) -> Conversation:
        """Read one conversation (through the batch route: the single-id path is not an API
        route on the Cloud). NotFoundError if the server does not have it."""
        (conversation,) = await self.get_many([conversation_id])
        if conversation is None:
            raise NotFoundError(
                f"conversation {normalize_uuid(conversation_id, 'conversation_id')} not found",
                status=404,
                method="GET",
                url=self._client.url(_PATH),
            )
        return conversation

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
        return self._search(
            f"{_PATH}/search",
            Conversation,
            {
                **_filters(
                    title_contains,
                    created_after,
                    created_before,
                    updated_after,
                    updated_before,
                    sandbox_id,
                ),
                "include_sub_conversations": include_sub_conversations or None,
            },
            limit=limit,
            page_size=page_size,
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
        return await self._count(
            f"{_PATH}/count",
            _filters(
                title_contains,
                created_after,
                created_before,
                updated_after,
                updated_before,
                sandbox_id,
            ),
        )

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
            data = await self._client.request(
                "POST", path, json=body, idempotency=Idempotency.UNSENT_ONLY
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
        return structure(data, SendMessageResult, method="POST", url=self._client.url(path))

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
        path = f"{_PATH}/{cid}"
        data = await self._client.request("PATCH", path, json=body)
        return structure(data, Conversation, method="PATCH", url=self._client.url(path))

    async def delete(self, conversation_id: str) -> None:
        """Delete a conversation (and its sandbox). NotFoundError if unknown."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        await self._client.request("DELETE", f"{_PATH}/{cid}")

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
        return await self._client.request(
            "GET", f"{_PATH}/{cid}/git/changes", params={"path": path, "ref": ref}
        )

    async def git_diff(
        self, conversation_id: str, path: str, *, ref: str | None = None
    ) -> dict[str, Any]:
        """The git diff of one file: `{"original": ..., "modified": ...}`."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        data = await self._client.request(
            "GET", f"{_PATH}/{cid}/git/diff", params={"path": path, "ref": ref}
        )
        return structure(data, dict[str, Any], url=self._client.url(f"{_PATH}/{cid}/git/diff"))

    async def read_file(self, conversation_id: str, file_path: str) -> str:
        """The text of a file in the conversation's workspace; "" if it (or the conversation)
        does not exist, as the server answers that way rather than with a 404."""
        cid = normalize_uuid(conversation_id, "conversation_id")
        path = f"{_PATH}/{cid}/file"
        data = await self._client.request("GET", path, params={"file_path": file_path})
        return structure(data, str, method="GET", url=self._client.url(path))


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

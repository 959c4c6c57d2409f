"""The exception tree. Every failure the SDK reports is an `OpenHandsError`.

`asyncio.CancelledError` is never caught or wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import StartTask

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConcurrencyLimitError",
    "ConflictError",
    "ConversationNotRunning",
    "ConversationPaused",
    "GoneError",
    "InternalServerError",
    "JournalLeaseLost",
    "JournalLockedError",
    "JournalUnavailableError",
    "NotFoundError",
    "OpenHandsError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseValidationError",
    "ServiceUnavailableError",
    "StartStalledError",
    "StartTaskFailed",
    "StartUnconfirmedError",
    "StreamError",
    "StreamTruncated",
    "UnprocessableEntityError",
]


class OpenHandsError(Exception):
    """Root of every error this SDK raises."""


class APIError(OpenHandsError):
    """A request went wrong. Carries the method and the URL (never credentials)."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.request_method = method
        self.request_url = url

    def __str__(self) -> str:
        if self.request_method:
            return f"{self.message} ({self.request_method} {self.request_url})"
        return self.message


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before a full answer.

    `may_have_been_sent` is False only when the request provably never left (the
    connection could not be made): only then is a start safe to send again blindly.
    """

    def __init__(
        self, message: str, *, method: str = "", url: str = "", may_have_been_sent: bool = True
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.may_have_been_sent = may_have_been_sent


class APITimeoutError(APIConnectionError):
    """A timeout fired. `kind` is connect, read, total or stream-idle; `seconds` its value."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        kind: str = "total",
        seconds: float | None = None,
        may_have_been_sent: bool = True,
    ) -> None:
        super().__init__(message, method=method, url=url, may_have_been_sent=may_have_been_sent)
        self.kind = kind
        self.seconds = seconds


class StartUnconfirmedError(APIConnectionError):
    """A start request may have reached the server, and whether it did could not be found out.

    It was not re-sent (that could start a second agent). Look it up later by
    `conversation_id`, e.g. with `client.conversations.find_start(conversation_id)`.
    """

    def __init__(self, message: str, *, method: str, url: str, conversation_id: str) -> None:
        super().__init__(message, method=method, url=url)
        self.conversation_id = conversation_id


class APIStatusError(APIError):
    """The server answered with a non-2xx status. `body` is the parsed JSON (or the text)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})


class BadRequestError(APIStatusError):
    """400: e.g. an id that is not a UUID, or too many ids in one batch read."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404, or a single read of an id the server does not have."""


class ConflictError(APIStatusError):
    """409: e.g. sending a message to a conversation whose sandbox is not running (resume it)."""


class GoneError(APIStatusError):
    """410: the conversation is archived."""


class UnprocessableEntityError(APIStatusError):
    """422: the server rejected the request body or parameters; `errors` lists why."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The validation errors of the 422's `detail` (`loc`, `msg`, `type`), else []."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return [e for e in detail if isinstance(e, dict)] if isinstance(detail, list) else []


class RateLimitError(APIStatusError):
    """429: too many requests. `retry_after` is in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ConcurrencyLimitError(RateLimitError):
    """429 CONCURRENCY_LIMIT_REACHED: the account runs its maximum of conversations.

    Wait for a running conversation to end; retrying on a timer does not help.
    """

    def __init__(self, message: str, *, limit: int | None, current: int | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.current = current


class InternalServerError(APIStatusError):
    """5xx."""


class ServiceUnavailableError(InternalServerError):
    """503: e.g. the conversation's sandbox is in error."""


class ResponseValidationError(APIError):
    """A 2xx answer that is not what the API promises (HTML, wrong JSON shape, bad values)."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        content_type: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.content_type = content_type
        self.body = body


class StreamError(APIError):
    """The stream-start body broke off or is not a JSON array of objects."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        offset: int | None = None,
        excerpt: bytes = b"",
        items_received: int = 0,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.offset = offset
        self.excerpt = excerpt
        self.items_received = items_received


class StreamTruncated(StreamError):
    """The body ended (cleanly, at EOF) in the middle of the array: a `StreamError`."""


class StartStalledError(StreamError):
    """A stream-start broke or went silent, and the start task it was following stopped moving.

    After the break the SDK polls the task (it never sends the start again); this is raised
    once the task has shown the same status and `updated_at` for `stall_timeout` seconds.
    The open-source server (openhands-ai 1.11.0) runs the start inside the stream-start
    response, so when that connection closes it drops the start part-way and the task stays
    in its last status for good (a silent stream is therefore kept open until this is
    raised). `task` is the last snapshot read, `conversation_id` the id
    the start asked for. The start was NOT sent again: look at the task later with
    `client.start_tasks.get(task.id)`; if it never moves, start anew (a new conversation id).
    """

    def __init__(
        self,
        task: StartTask,
        *,
        conversation_id: str,
        stall_timeout: float,
        method: str = "",
        url: str = "",
        items_received: int = 0,
    ) -> None:
        self.task = task
        self.conversation_id = conversation_id
        self.stall_timeout = stall_timeout
        super().__init__(
            f"start task {task.id} (conversation {conversation_id}) stalled: its stream-start "
            f"broke or went silent, and since then it has stayed {task.status.value} with no "
            f"update for {stall_timeout:g} s (the open-source server drops a start whose "
            f"stream connection closed). The start was not sent again; look at it later with "
            f"client.start_tasks.get({task.id!r}), or start anew with a new conversation id",
            method=method,
            url=url,
            items_received=items_received,
        )


class StartTaskFailed(OpenHandsError):
    """A start task ended in ERROR (the server still answered 200). Carries the task."""

    def __init__(self, task: StartTask) -> None:
        self.task = task
        self.detail = task.detail or ""
        super().__init__(
            f"start task {task.id} ended in ERROR: {self.detail or '(no detail given)'}"
        )


class ConversationNotRunning(OpenHandsError):
    """The conversation's sandbox is not running (ERROR or MISSING; see `ConversationPaused`),
    so it has no agent server to follow. Carries the id and the sandbox status."""

    def __init__(self, message: str, *, conversation_id: str, sandbox_status: str) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.sandbox_status = sandbox_status


class ConversationPaused(ConversationNotRunning):
    """The conversation's sandbox is PAUSED (its agent server is stopped, its session key
    null). `events.follow(..., resume=True)` resumes it instead of raising this."""


class JournalLeaseLost(OpenHandsError):
    """A shared journal's job is no longer this worker's: its lease lapsed and another
    worker adopted it (this worker was stalled or cut off from the database). Stop following
    the job; its new owner does."""

    def __init__(self, key: str, worker: str) -> None:
        super().__init__(f"job {key!r} is no longer held by worker {worker!r} (lease lapsed)")
        self.key = key
        self.worker = worker


class JournalLockedError(OpenHandsError):
    """Another run holds this batch journal: two runs on one journal would start jobs twice."""


class JournalUnavailableError(OpenHandsError):
    """The batch journal's database cannot be reached (a shared PostgreSQL journal): the
    batch started nothing. The message names the host, never the DSN's password."""

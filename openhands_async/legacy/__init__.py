"""Deprecated: a client for the V0 API of older self-hosted OpenHands servers.

`LegacyClient` wraps an `OpenHandsClient` and sends every request through its
`request` method, so authentication, retries, timeouts and rate limits are the same.
New code should use `openhands_async.OpenHandsClient` (the V1 API).
"""

from __future__ import annotations

import warnings
from datetime import datetime
from types import TracebackType
from typing import Any

import attrs

from .._converter import structure
from .._retry import Idempotency
from ..client import OpenHandsClient
from ..errors import NotFoundError
from ..models import Page
from ..pagination import AsyncPager

__all__ = ["LegacyClient", "LegacyConversation", "LegacyConversationResponse"]

_PATH = "/api/conversations"
_warned = False


@attrs.frozen
class LegacyConversation:
    """A V0 conversation (ConversationInfo)."""

    conversation_id: str
    title: str = ""
    last_updated_at: datetime | None = None
    status: str | None = None
    runtime_status: str | None = None
    selected_repository: str | None = None
    selected_branch: str | None = None
    git_provider: str | None = None
    trigger: str | None = None
    num_connections: int = 0
    url: str | None = None
    session_api_key: str | None = attrs.field(default=None, repr=False)
    created_at: datetime | None = None
    pr_number: list[int] = attrs.field(factory=list)


@attrs.frozen
class LegacyConversationResponse:
    """The answer to a V0 create, start or stop (ConversationResponse)."""

    status: str
    conversation_id: str
    message: str | None = None
    conversation_status: str | None = None


def _warn_once() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "openhands_async.legacy.LegacyClient speaks the deprecated V0 API of old self-hosted "
        "servers; use openhands_async.OpenHandsClient (the V1 API) instead",
        DeprecationWarning,
        stacklevel=3,
    )


class LegacyClient:
    """Deprecated V0 client. Pass `client=` to share an `OpenHandsClient`, or the same
    arguments as `OpenHandsClient` to have one made (and closed) for you."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        client: OpenHandsClient | None = None,
        **client_kwargs: Any,
    ) -> None:
        _warn_once()
        if client is not None and (api_key is not None or client_kwargs):
            raise TypeError("pass client= or client arguments, not both")
        self._owns = client is None
        self.client = client if client is not None else OpenHandsClient(api_key, **client_kwargs)

    async def __aenter__(self) -> LegacyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the wrapped client if this LegacyClient made it."""
        if self._owns:
            await self.client.aclose()

    def __repr__(self) -> str:
        return f"LegacyClient(base_url={self.client.base_url!r})"

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        return await self.client.request(method, path, **kw)

    async def create_conversation(
        self,
        initial_user_msg: str | None = None,
        *,
        repository: str | None = None,
        selected_branch: str | None = None,
        git_provider: str | None = None,
        conversation_id: str | None = None,
    ) -> LegacyConversationResponse:
        """POST /api/conversations: create (and start) a conversation. Sent once."""
        body = {
            "initial_user_msg": initial_user_msg,
            "repository": repository,
            "selected_branch": selected_branch,
            "git_provider": git_provider,
            "conversation_id": conversation_id,
        }
        data = await self._call(
            "POST",
            _PATH,
            json={k: v for k, v in body.items() if v is not None},
            idempotency=Idempotency.UNSENT_ONLY,
        )
        return structure(data, LegacyConversationResponse, method="POST", url=self._url(_PATH))

    async def get_conversation(self, conversation_id: str) -> LegacyConversation:
        """GET /api/conversations/{id}; NotFoundError if the server answers null."""
        path = f"{_PATH}/{_seg(conversation_id)}"
        data = await self._call("GET", path)
        if data is None:
            raise NotFoundError(
                f"conversation {conversation_id} not found",
                status=404,
                method="GET",
                url=self._url(path),
            )
        return structure(data, LegacyConversation, method="GET", url=self._url(path))

    def search_conversations(
        self, *, limit: int | None = None, page_size: int = 20
    ) -> AsyncPager[LegacyConversation]:
        """GET /api/conversations, following `next_page_id` (`limit` caps the total)."""

        async def fetch(cursor: str | None, size: int) -> Page[LegacyConversation]:
            data = await self._call("GET", _PATH, params={"page_id": cursor, "limit": size})
            results = data.get("results") if isinstance(data, dict) else None
            items = structure(results, list[LegacyConversation], method="GET", url=self._url(_PATH))
            return Page(items=items, next_page_id=data.get("next_page_id"))

        return AsyncPager(fetch, limit=limit, page_size=page_size)

    async def start_conversation(self, conversation_id: str) -> LegacyConversationResponse:
        """POST /api/conversations/{id}/start: (re)start its runtime."""
        return await self._action(conversation_id, "start")

    async def stop_conversation(self, conversation_id: str) -> LegacyConversationResponse:
        """POST /api/conversations/{id}/stop: stop its runtime."""
        return await self._action(conversation_id, "stop")

    async def delete_conversation(self, conversation_id: str) -> bool:
        path = f"{_PATH}/{_seg(conversation_id)}"
        return bool(await self._call("DELETE", path))

    async def get_events(
        self,
        conversation_id: str,
        *,
        start_id: int = 0,
        end_id: int | None = None,
        reverse: bool = False,
        limit: int = 20,
    ) -> dict[str, Any]:
        """GET /api/conversations/{id}/events: `{"events": [...], "has_more": bool}`."""
        path = f"{_PATH}/{_seg(conversation_id)}/events"
        data = await self._call(
            "GET",
            path,
            params={"start_id": start_id, "end_id": end_id, "reverse": reverse, "limit": limit},
        )
        return structure(data, dict[str, Any], method="GET", url=self._url(path))

    async def _action(self, conversation_id: str, action: str) -> LegacyConversationResponse:
        path = f"{_PATH}/{_seg(conversation_id)}/{action}"
        data = await self._call("POST", path, json={})
        return structure(data, LegacyConversationResponse, method="POST", url=self._url(path))

    def _url(self, path: str) -> str:
        return self.client.url(path)


def _seg(conversation_id: str) -> str:
    value = conversation_id.strip() if isinstance(conversation_id, str) else ""
    if not value or "/" in value:
        raise ValueError(f"conversation_id must be a non-empty id, got {conversation_id!r}")
    return value
